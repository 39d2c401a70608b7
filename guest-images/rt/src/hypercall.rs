//! Hypercalls (`hvabi::hypercall`): VMCALL on Intel, VMMCALL elsewhere, picked once by the
//! CPUID vendor string.
//!
//! The calls of ABI 1.0 return the raw [`Reply`]; the management and channel calls have typed
//! wrappers returning `Result<_, Status>` (a status word this ABI does not define reads as
//! [`Status::UnknownCall`]). Buffers are passed by pointer: under the start-up identity map a
//! pointer into RAM is its own guest-physical address.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use hvabi::hypercall::{Call, CreateRequest, PartitionInfo, StatsRecord, Status};

use crate::instr;

const UNKNOWN: u8 = 0;
const VMCALL: u8 = 1;
const VMMCALL: u8 = 2;

/// Which instruction makes a hypercall; decided by [`init`] (or the first call).
static FLAVOUR: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Picks VMCALL (`GenuineIntel`) or VMMCALL (anything else).
pub fn init() {
    let flavour = if &instr::cpu_vendor() == b"GenuineIntel" { VMCALL } else { VMMCALL };
    FLAVOUR.store(flavour, Ordering::Relaxed);
}

/// True when hypercalls use VMCALL (Intel), false for VMMCALL.
pub fn uses_vmcall() -> bool {
    if FLAVOUR.load(Ordering::Relaxed) == UNKNOWN {
        init();
    }
    FLAVOUR.load(Ordering::Relaxed) == VMCALL
}

/// What a hypercall returned: RAX and RDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// RAX: a [`Status`] word.
    pub status: u64,
    /// RDX: the result value, where the call defines one.
    pub value: u64,
}

impl Reply {
    /// The decoded status (`None` for a word the ABI does not define).
    pub fn status(&self) -> Option<Status> {
        Status::from_u64(self.status)
    }

    /// True when the status is `want`.
    pub fn is(&self, want: Status) -> bool {
        self.status == want as u64
    }

    /// The value on success, else the whole reply.
    pub fn ok(self) -> Result<u64, Reply> {
        if self.is(Status::Success) { Ok(self.value) } else { Err(self) }
    }

    /// The value on success, else the status (an undefined word reads as
    /// [`Status::UnknownCall`]).
    pub fn result(self) -> Result<u64, Status> {
        match self.status() {
            Some(Status::Success) => Ok(self.value),
            Some(s) => Err(s),
            None => Err(Status::UnknownCall),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status() {
            Some(s) => write!(f, "status {s:?}")?,
            None => write!(f, "status {:#x} (undefined)", self.status)?,
        }
        write!(f, ", rdx {:#x}", self.value)
    }
}

/// Makes hypercall `call` with arguments RDI, RSI, RDX, R8.
///
/// # Safety
/// A call that writes guest memory must be given buffers this guest owns; calls that stop or
/// reconfigure the partition take effect at once. (No call of ABI 1.0 writes guest memory;
/// `PartitionList`, `ConsoleRead` and `PartitionStats` do.)
pub unsafe fn hypercall(call: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> Reply {
    let (status, value);
    if uses_vmcall() {
        // SAFETY: the caller vouches for the arguments; the ABI changes only RAX and RDX.
        unsafe {
            asm!("vmcall", inlateout("rax") call => status, in("rdi") a1, in("rsi") a2,
                inlateout("rdx") a3 => value, in("r8") a4, options(nostack));
        }
    } else {
        // SAFETY: as above.
        unsafe {
            asm!("vmmcall", inlateout("rax") call => status, in("rdi") a1, in("rsi") a2,
                inlateout("rdx") a3 => value, in("r8") a4, options(nostack));
        }
    }
    Reply { status, value }
}

fn call(c: Call, a1: u64, a2: u64) -> Reply {
    // SAFETY: the calls wrapped here read at most the caller's own buffers and write no memory.
    unsafe { hypercall(c as u64, a1, a2, 0, 0) }
}

/// `Version`: RDX is [`hvabi::hypercall::VERSION`].
pub fn version() -> Reply {
    call(Call::Version, 0, 0)
}

/// `ConsoleWrite` of `bytes` (a pointer into RAM is its own GPA under the identity map).
pub fn console_write(bytes: &[u8]) -> Reply {
    call(Call::ConsoleWrite, bytes.as_ptr() as u64, bytes.len() as u64)
}

/// `Yield`: gives up the rest of the time slice.
pub fn yield_now() -> Reply {
    call(Call::Yield, 0, 0)
}

/// `Shutdown` with `status`; returns only if the hypervisor refused.
pub fn shutdown(status: u64) -> Reply {
    call(Call::Shutdown, status, 0)
}

/// `PartitionId`: RDX is the caller's id.
pub fn partition_id() -> Reply {
    call(Call::PartitionId, 0, 0)
}

/// `SetTimer`: inject `vector` after `ticks` TSC ticks (0 disarms).
pub fn set_timer(ticks: u64, vector: u8) -> Reply {
    call(Call::SetTimer, ticks, u64::from(vector))
}

/// A call whose arguments are plain numbers or buffers the caller lends (see each wrapper).
fn call3(c: Call, a1: u64, a2: u64, a3: u64) -> Reply {
    // SAFETY: every wrapper below passes either plain numbers or a buffer it borrows for the
    // call (`&mut` when the hypervisor writes it), so the hypervisor touches only memory this
    // guest lends it; the management calls act on other partitions, never on this one's memory.
    unsafe { hypercall(c as u64, a1, a2, a3, 0) }
}

/// `PartitionList` (management only): fills `buf` with as many records as fit and returns the
/// number of partitions, which may be larger than `buf.len()`.
pub fn partition_list(buf: &mut [PartitionInfo]) -> Result<usize, Status> {
    let bytes = core::mem::size_of_val(buf) as u64;
    call3(Call::PartitionList, buf.as_mut_ptr() as u64, bytes, 0).result().map(|n| n as usize)
}

/// `PartitionList` (management only) with no buffer (address 0, length 0): only the number of
/// partitions; the hypervisor does not look at an address it writes nothing to.
pub fn partition_count() -> Result<usize, Status> {
    call3(Call::PartitionList, 0, 0, 0).result().map(|n| n as usize)
}

/// `PartitionCreate` (management only): a new partition, stopped until [`partition_start`];
/// returns its id. RSI carries the request's size (`CREATE_REQUEST_SIZE`: the layout with
/// `vcpus`).
pub fn partition_create(req: &CreateRequest) -> Result<u64, Status> {
    let size = hvabi::hypercall::CREATE_REQUEST_SIZE;
    call3(Call::PartitionCreate, req as *const CreateRequest as u64, size, 0).result()
}

/// `PartitionStart` (management only) of a created partition.
pub fn partition_start(id: u64) -> Result<(), Status> {
    call3(Call::PartitionStart, id, 0, 0).result().map(drop)
}

/// `PartitionPause` (management only).
pub fn partition_pause(id: u64) -> Result<(), Status> {
    call3(Call::PartitionPause, id, 0, 0).result().map(drop)
}

/// `PartitionResume` (management only) of a paused partition.
pub fn partition_resume(id: u64) -> Result<(), Status> {
    call3(Call::PartitionResume, id, 0, 0).result().map(drop)
}

/// `PartitionDestroy` (management only): stops the partition and frees its memory.
pub fn partition_destroy(id: u64) -> Result<(), Status> {
    call3(Call::PartitionDestroy, id, 0, 0).result().map(drop)
}

/// `ConsoleRead` (management only): moves up to `buf.len()` bytes of partition `id`'s console
/// output (oldest first) into `buf`; returns how many (0 when there is nothing new).
pub fn console_read(id: u64, buf: &mut [u8]) -> Result<usize, Status> {
    let len = buf.len() as u64;
    call3(Call::ConsoleRead, id, buf.as_mut_ptr() as u64, len).result().map(|n| n as usize)
}

/// `PartitionStats` (management only): partition `id`'s exit counts.
pub fn partition_stats(id: u64) -> Result<StatsRecord, Status> {
    let mut rec = StatsRecord::default();
    let size = hvabi::hypercall::STATS_RECORD_SIZE;
    call3(Call::PartitionStats, id, &raw mut rec as u64, size).result().map(|_| rec)
}

/// `ChannelCreate` (management only): a channel between the caller and partition `guest_id`;
/// returns the channel id (its page is at `hvabi::channel::gpa(id)` in both).
pub fn channel_create(guest_id: u64) -> Result<u64, Status> {
    call3(Call::ChannelCreate, guest_id, 0, 0).result()
}

/// `ChannelQuery`: the first channel this partition is an end of ([`Status::NotFound`] while
/// there is none).
pub fn channel_query() -> Result<u64, Status> {
    call3(Call::ChannelQuery, 0, 0, 0).result()
}

/// `ChannelBind`: interrupt `vector` (32..=255; 0 = none, poll the rings) signals this end of
/// channel `id` when the other end notifies.
pub fn channel_bind(id: u64, vector: u8) -> Result<(), Status> {
    call3(Call::ChannelBind, id, u64::from(vector), 0).result().map(drop)
}

/// `ChannelNotify`: signals the other end of channel `id`.
pub fn channel_notify(id: u64) -> Result<(), Status> {
    call3(Call::ChannelNotify, id, 0, 0).result().map(drop)
}

/// Why [`create_request`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The name is empty or longer than 31 bytes.
    Name,
    /// The image name is empty or longer than 32 bytes.
    Image,
    /// The command line is longer than 128 bytes.
    Cmdline,
    /// The initrd's name (after `+`) is empty or longer than 32 bytes.
    Initrd,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Name => "the name must be 1..=31 bytes",
            Self::Image => "the image name must be 1..=32 bytes",
            Self::Cmdline => "the command line must be at most 128 bytes",
            Self::Initrd => "the initrd name after + must be 1..=32 bytes",
        })
    }
}

/// A [`CreateRequest`] for [`partition_create`], of one vCPU and no CPUs of its own; checks
/// only that the strings fit (the hypervisor checks the rest: characters, uniqueness, the
/// image, the memory size, a `vcpus` set afterwards). `image`
/// may name an initial RAM disk after a `+` (`vmlinuz+initrd.gz`, a Linux image).
pub fn create_request(
    name: &str,
    image: &str,
    cmdline: &str,
    memory_mib: u64,
) -> Result<CreateRequest, RequestError> {
    fn fill<const N: usize>(s: &str, max: usize) -> Option<([u8; N], u64)> {
        let mut out = [0u8; N];
        out.get_mut(..s.len()).filter(|_| s.len() <= max)?.copy_from_slice(s.as_bytes());
        Some((out, s.len() as u64))
    }
    let (name, name_len) = fill(name, 31).filter(|&(_, n)| n > 0).ok_or(RequestError::Name)?;
    let (image, initrd) = match image.split_once('+') {
        Some((image, initrd)) => (image, Some(initrd)),
        None => (image, None),
    };
    let (image, image_len) = fill(image, 32).filter(|&(_, n)| n > 0).ok_or(RequestError::Image)?;
    let (initrd, initrd_len) = match initrd {
        Some(i) => fill(i, 32).filter(|&(_, n)| n > 0).ok_or(RequestError::Initrd)?,
        None => ([0; 32], 0),
    };
    let (cmdline, cmdline_len) = fill(cmdline, 128).ok_or(RequestError::Cmdline)?;
    Ok(CreateRequest {
        name,
        name_len,
        image,
        image_len,
        cmdline,
        cmdline_len,
        memory_mib,
        initrd,
        initrd_len,
        cpus: 0,
        vcpus: 1,
    })
}

/// The name in a [`PartitionInfo`] record (`"?"` when it is not valid UTF-8).
pub fn partition_name(info: &PartitionInfo) -> &str {
    let len = (info.name_len as usize).min(info.name.len());
    core::str::from_utf8(&info.name[..len]).unwrap_or("?")
}
