//! Reaching a channel's shared page (`hvabi::channel`) from either end.
//!
//! The page lies at `hvabi::channel::gpa(id)`, above RAM, where the start-up identity map of a
//! guest does not reach: [`page`] maps the 2 MiB window around it first (write-back: on the
//! host side it is ordinary RAM shared by the two partitions).

use core::fmt;

use hvabi::channel::{MAX_CHANNELS, Page, gpa};

use crate::paging::{self, Caching, MapError, PAGE_2M};

/// Why [`page`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The id is not below `hvabi::channel::MAX_CHANNELS`.
    BadId(u64),
    /// The window could not be mapped.
    Map(MapError),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadId(id) => write!(f, "channel id {id} is not below {MAX_CHANNELS}"),
            Self::Map(e) => write!(f, "cannot map the channel window: {e}"),
        }
    }
}

/// Maps channel `id`'s page and returns it. Mapping the same window again is harmless.
///
/// Where a 1 GiB page already covers the window (a management partition whose start-up tables
/// map the whole first 4 GiB that way) the existing mapping is used as it is.
pub fn page(id: u64) -> Result<&'static Page, ChannelError> {
    if id >= MAX_CHANNELS {
        return Err(ChannelError::BadId(id));
    }
    let addr = gpa(id);
    let window = addr & !(PAGE_2M - 1);
    // SAFETY: the channel window (`hvabi::channel::BASE_GPA`, just below 4 GiB) lies above any
    // partition's RAM, so no code, stack or data of ours is in it; it holds only channel pages,
    // which are RAM on the host side and mapped identically by every call.
    match unsafe { paging::map_2m(window, window, Caching::WriteBack) } {
        Ok(()) | Err(MapError::HugePageInTheWay) => {}
        Err(e) => return Err(ChannelError::Map(e)),
    }
    // SAFETY: the page is mapped (above) and the hypervisor shares it for the channel's
    // lifetime; `Page` is only atomics and `UnsafeCell` bytes, so the other end writing it
    // concurrently is the protocol, not a data race.
    Ok(unsafe { &*(addr as *const Page) })
}
