//! The channels this partition serves (`hvabi::channel`): every message a guest sends on its
//! `to_mgmt` ring is sent back unchanged on `to_guest`, then the guest is notified. A message
//! that does not fit the guest's ring yet waits (one per channel) until the guest has made
//! room; nothing else is read from that channel meanwhile.

use guest_rt::hypercall as hc;
use hvabi::channel::{MAX_MESSAGE, Page, SendError};
use hvabi::hypercall::Status;

use crate::idle::CHANNEL_VECTOR;

/// Most channels served at once.
pub const MAX_SERVED: usize = 8;
/// Most messages echoed on one channel per [`Channels::service`] call, so that the shell
/// stays responsive however fast a guest sends.
const BURST: u32 = 64;

/// One channel being served.
pub struct Served {
    pub id: u64,
    /// The other end's partition id and name.
    pub partner: u64,
    name: [u8; 32],
    name_len: usize,
    page: &'static Page,
    /// Messages echoed, and their bytes.
    pub echoed: u64,
    pub bytes: u64,
    /// A message received but not yet echoed (the guest's ring was full): its length in `held`.
    pending: Option<usize>,
    held: [u8; MAX_MESSAGE],
    /// The hypervisor no longer knows the channel (its partner was destroyed).
    pub closed: bool,
}

impl Served {
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// Echoes what is waiting; returns how many messages went back.
    fn echo(&mut self) -> u32 {
        let mut sent = 0;
        for _ in 0..BURST {
            if let Some(len) = self.pending {
                match self.page.to_guest.send(&self.held[..len]) {
                    Ok(()) => {
                        self.pending = None;
                        self.echoed += 1;
                        self.bytes += len as u64;
                        sent += 1;
                    }
                    Err(SendError::Full) => break,
                    // Cannot happen (`held` is MAX_MESSAGE long); drop the message if it does.
                    Err(SendError::TooLong) => self.pending = None,
                }
            }
            match self.page.to_mgmt.recv(&mut self.held) {
                Some(len) => self.pending = Some(len),
                None => break,
            }
        }
        sent
    }
}

/// Why a channel could not be set up.
pub enum OpenError {
    /// Every slot is in use.
    NoSlot,
    /// A hypercall refused.
    Call(&'static str, Status),
    /// The page could not be mapped.
    Map(guest_rt::channel::ChannelError),
}

/// The channels served.
pub struct Channels {
    slots: [Option<Served>; MAX_SERVED],
}

impl Channels {
    pub const fn new() -> Self {
        Self { slots: [const { None }; MAX_SERVED] }
    }

    /// Creates a channel with partition `partner` (called `name`), maps it, binds our vector.
    /// Returns the channel id.
    pub fn open(&mut self, partner: u64, name: &str) -> Result<u64, OpenError> {
        let slot = self.slots.iter_mut().find(|s| s.is_none()).ok_or(OpenError::NoSlot)?;
        let id = hc::channel_create(partner).map_err(|s| OpenError::Call("ChannelCreate", s))?;
        let page = guest_rt::channel::page(id).map_err(OpenError::Map)?;
        hc::channel_bind(id, CHANNEL_VECTOR).map_err(|s| OpenError::Call("ChannelBind", s))?;
        let mut stored = [0u8; 32];
        let name_len = name.len().min(32);
        stored[..name_len].copy_from_slice(&name.as_bytes()[..name_len]);
        *slot = Some(Served {
            id,
            partner,
            name: stored,
            name_len,
            page,
            echoed: 0,
            bytes: 0,
            pending: None,
            held: [0; MAX_MESSAGE],
            closed: false,
        });
        Ok(id)
    }

    /// Echoes what every channel has waiting and notifies the guests that got messages back;
    /// true when anything was done.
    pub fn service(&mut self) -> bool {
        let mut busy = false;
        for c in self.slots.iter_mut().flatten().filter(|c| !c.closed) {
            if c.echo() > 0 {
                busy = true;
                if hc::channel_notify(c.id) == Err(Status::NotFound) {
                    c.closed = true;
                }
            }
        }
        busy
    }

    /// Stops serving the channels of partition `partner` (it was destroyed).
    pub fn forget_partner(&mut self, partner: u64) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|c| c.partner == partner) {
                *slot = None;
            }
        }
    }

    /// The channels served, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Served> {
        self.slots.iter().flatten()
    }
}
