//! The hypercall ABI, one for both vendors (VMCALL on Intel, VMMCALL on AMD).
//!
//! | register | on entry            | on return                    |
//! |----------|---------------------|------------------------------|
//! | RAX      | call number         | [`Status`] (0 = success)     |
//! | RDI      | argument 1          | preserved                    |
//! | RSI      | argument 2          | preserved                    |
//! | RDX      | argument 3          | result value (where defined) |
//! | R8       | argument 4          | preserved                    |
//!
//! Buffers are guest-physical addresses inside the caller's own RAM; the hypervisor checks
//! every byte of the range before touching it. The table lives in `docs/hypercalls.md`.

/// Version reported by [`Call::Version`]: major in bits 31:16, minor in bits 15:0. Minor 1:
/// [`CreateRequest::vcpus`] (a caller that sees minor 0 sends the request without it), and the
/// `pause` exit kind in [`StatsRecord`] (192 bytes; a caller passes its size in RDX, and a
/// minor-0 caller, which passes 0, still gets the 184-byte layout it knows).
pub const VERSION: u64 = 0x0001_0001;

/// The signature in CPUID leaf 0x4000_0000 (EBX, ECX, EDX): `"MicroHVisor!"`.
pub const CPUID_SIGNATURE: [u8; 12] = *b"MicroHVisor!";
/// Highest hypervisor CPUID leaf (EAX of leaf 0x4000_0000).
pub const CPUID_MAX_LEAF: u32 = 0x4000_0010;

/// Hypercall numbers (RAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Call {
    /// Returns [`VERSION`] in RDX.
    Version = 0,
    /// Writes RSI bytes at guest-physical RDI to the partition's console.
    ConsoleWrite = 1,
    /// Gives up the rest of the time slice.
    Yield = 2,
    /// Stops the calling partition; RDI is its exit status (0 = success).
    Shutdown = 3,
    /// Returns the caller's partition id in RDX.
    PartitionId = 4,
    /// Arms the partition's one-shot timer: after RDI TSC ticks, interrupt vector RSI (32..=255)
    /// is injected when RFLAGS.IF allows. RDI = 0 disarms it. HLT sleeps until then.
    SetTimer = 5,
    /// Management only. Writes up to RSI bytes of [`PartitionInfo`] records to guest-physical
    /// RDI; RDX = the number of partitions (which may exceed what fitted).
    PartitionList = 0x10,
    /// Management only. Creates a partition from the [`CreateRequest`] at guest-physical RDI
    /// (stopped until [`Call::PartitionStart`]); RSI = the request's size in bytes
    /// ([`CREATE_REQUEST_SIZE`], or 0 or [`CREATE_REQUEST_SIZE_V0`] for the layout without
    /// `vcpus`: one vCPU); RDX = its id.
    PartitionCreate = 0x11,
    /// Management only. Starts created partition RDI.
    PartitionStart = 0x12,
    /// Management only. Pauses partition RDI.
    PartitionPause = 0x13,
    /// Management only. Resumes paused partition RDI.
    PartitionResume = 0x14,
    /// Management only. Destroys partition RDI and frees its memory.
    PartitionDestroy = 0x15,
    /// Management only. Moves up to RDX bytes of partition RDI's console output (oldest first)
    /// to guest-physical RSI; RDX = bytes copied.
    ConsoleRead = 0x16,
    /// Management only. Writes partition RDI's [`StatsRecord`] to guest-physical RSI; RDX = the
    /// record's size ([`STATS_RECORD_SIZE`], or 0 or [`STATS_RECORD_SIZE_V0`] for the 1.0
    /// layout without the `pause` count).
    PartitionStats = 0x17,
    /// Management only. Creates a channel between the caller and partition RDI (see
    /// `hvabi::channel`); RDX = channel id. Its page appears in both at
    /// `channel::gpa(id)`.
    ChannelCreate = 0x18,
    /// Any partition. RDX = the id of the first channel the caller is an end of.
    ChannelQuery = 0x19,
    /// Any end of channel RDI: interrupt vector RSI (32..=255) signals the caller when the other
    /// end notifies (0 = no interrupt; poll the rings).
    ChannelBind = 0x1a,
    /// Any end of channel RDI: signals the other end.
    ChannelNotify = 0x1b,
}

/// Partition states in [`PartitionInfo::state`].
pub mod state {
    pub const CREATED: u32 = 0;
    pub const RUNNING: u32 = 1;
    pub const PAUSED: u32 = 2;
    pub const HALTED: u32 = 3;
    pub const SHUT_DOWN: u32 = 4;
    pub const KILLED: u32 = 5;
    /// Names by value.
    pub const NAMES: [&str; 6] = ["created", "running", "paused", "halted", "shut down", "killed"];
}

/// One entry of [`Call::PartitionList`].
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct PartitionInfo {
    pub id: u64,
    /// One of [`state`].
    pub state: u32,
    /// 1 for the management partition.
    pub management: u32,
    pub memory_bytes: u64,
    /// The shutdown status, when `state` is [`state::SHUT_DOWN`].
    pub exit_status: u64,
    pub name_len: u64,
    pub name: [u8; 32],
}

/// The argument of [`Call::PartitionCreate`].
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct CreateRequest {
    /// New partition's name (unique, `[a-z0-9_-]`, 1..=31 bytes) and its length.
    pub name: [u8; 32],
    pub name_len: u64,
    /// The boot module holding its image: an ELF64 guest, a Linux bzImage or a multiboot
    /// kernel (the hypervisor tells them apart by their headers).
    pub image: [u8; 32],
    pub image_len: u64,
    pub cmdline: [u8; 128],
    pub cmdline_len: u64,
    /// RAM in MiB (even, 2..=1024).
    pub memory_mib: u64,
    /// The boot module holding a Linux image's initial RAM disk (`initrd_len` 0: none); for a
    /// multiboot image, its boot modules' names, `+`-separated (each module's string is its
    /// name).
    pub initrd: [u8; 32],
    pub initrd_len: u64,
    /// Host CPUs of its own, as a mask of host CPU indices (bit i: CPU i; CPU 0 is never
    /// pinnable); 0: time-sliced on the boot CPU with the management partition.
    pub cpus: u64,
    /// vCPUs, 1..=[`MAX_VCPUS`] (ABI minor 1; a request of [`CREATE_REQUEST_SIZE_V0`] bytes
    /// has no such field and gets 1).
    pub vcpus: u64,
}

/// Most vCPUs of one partition (the manifest's `vcpus` bound too).
pub const MAX_VCPUS: u64 = 8;
/// The size of a [`CreateRequest`], which the caller passes in RSI.
pub const CREATE_REQUEST_SIZE: u64 = core::mem::size_of::<CreateRequest>() as u64;
/// The size of the first layout, which ended at `cpus` (ABI 1.0): still understood, as one
/// vCPU, as is RSI = 0 (what every 1.0 caller passed).
pub const CREATE_REQUEST_SIZE_V0: u64 = CREATE_REQUEST_SIZE - 8;
const _: () = assert!(
    CREATE_REQUEST_SIZE == 280
        && CREATE_REQUEST_SIZE_V0 == 272
        && core::mem::offset_of!(CreateRequest, vcpus) == 272
);

/// Names of the exit kinds counted in [`StatsRecord::exits`], by index.
pub const EXIT_KIND_NAMES: [&str; 20] = [
    "cpuid",
    "rdmsr",
    "wrmsr",
    "cr-access",
    "xsetbv",
    "invd/wbinvd",
    "hlt",
    "hypercall",
    "virt-insn",
    "io",
    "npf/ept",
    "preempt",
    "host-intr",
    "intr-window",
    "triple-fault",
    "init",
    "unsupported",
    "unknown",
    "rdpmc",
    "pause",
];

/// The result of [`Call::PartitionStats`].
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct StatsRecord {
    pub exits_total: u64,
    /// Exit counts by kind, named by [`EXIT_KIND_NAMES`].
    pub exits: [u64; 20],
    pub absent_ports: u64,
    pub absent_mmio: u64,
    /// Refused MSR accesses, VMX/SVM instructions and the like.
    pub refused: u64,
}

/// The size of a [`StatsRecord`], which the caller passes in RDX.
pub const STATS_RECORD_SIZE: u64 = core::mem::size_of::<StatsRecord>() as u64;
/// The size of the ABI 1.0 record, with 19 exit counts (no `pause`): still written, in that
/// layout, for RDX = 0 (what every 1.0 caller passed) or this size.
pub const STATS_RECORD_SIZE_V0: u64 = STATS_RECORD_SIZE - 8;
const _: () = assert!(STATS_RECORD_SIZE == 192 && STATS_RECORD_SIZE_V0 == 184);

impl StatsRecord {
    /// The record as the 64-bit words of the layout a caller's RDX asks for (`size`: 0 or
    /// [`STATS_RECORD_SIZE_V0`], the 1.0 layout; [`STATS_RECORD_SIZE`], this one) and how many
    /// of them there are; `None` for any other size.
    pub fn words(&self, size: u64) -> Option<([u64; 24], usize)> {
        let kinds = match size {
            STATS_RECORD_SIZE => self.exits.len(),
            0 | STATS_RECORD_SIZE_V0 => self.exits.len() - 1,
            _ => return None,
        };
        let mut w = [0u64; 24];
        w[0] = self.exits_total;
        w[1..=kinds].copy_from_slice(&self.exits[..kinds]);
        w[kinds + 1] = self.absent_ports;
        w[kinds + 2] = self.absent_mmio;
        w[kinds + 3] = self.refused;
        Some((w, kinds + 4))
    }
}

impl Call {
    /// True for calls only the management partition may make.
    pub const fn privileged(self) -> bool {
        matches!(
            self,
            Self::PartitionList
                | Self::PartitionCreate
                | Self::PartitionStart
                | Self::PartitionPause
                | Self::PartitionResume
                | Self::PartitionDestroy
                | Self::ConsoleRead
                | Self::PartitionStats
                | Self::ChannelCreate
        )
    }

    /// Decodes a call number; `None` for numbers this hypervisor does not know.
    pub const fn from_u64(n: u64) -> Option<Self> {
        Some(match n {
            0 => Self::Version,
            1 => Self::ConsoleWrite,
            2 => Self::Yield,
            3 => Self::Shutdown,
            4 => Self::PartitionId,
            5 => Self::SetTimer,
            0x10 => Self::PartitionList,
            0x11 => Self::PartitionCreate,
            0x12 => Self::PartitionStart,
            0x13 => Self::PartitionPause,
            0x14 => Self::PartitionResume,
            0x15 => Self::PartitionDestroy,
            0x16 => Self::ConsoleRead,
            0x17 => Self::PartitionStats,
            0x18 => Self::ChannelCreate,
            0x19 => Self::ChannelQuery,
            0x1a => Self::ChannelBind,
            0x1b => Self::ChannelNotify,
            _ => return None,
        })
    }
}

/// Status returned in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Status {
    Success = 0,
    /// The call number is not defined.
    UnknownCall = 1,
    /// An argument is out of range.
    InvalidArgument = 2,
    /// The caller's partition may not make this call.
    PermissionDenied = 3,
    /// A buffer is not entirely inside the caller's RAM.
    BadAddress = 4,
    /// The named object does not exist.
    NotFound = 5,
}

impl Status {
    /// Decodes a status word; unknown values map to `None`.
    pub const fn from_u64(n: u64) -> Option<Self> {
        Some(match n {
            0 => Self::Success,
            1 => Self::UnknownCall,
            2 => Self::InvalidArgument,
            3 => Self::PermissionDenied,
            4 => Self::BadAddress,
            5 => Self::NotFound,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_numbers_round_trip() {
        for n in 0..64 {
            if let Some(c) = Call::from_u64(n) {
                assert_eq!(c as u64, n);
            }
        }
        assert_eq!(Call::from_u64(0xdead), None);
    }

    #[test]
    fn status_round_trip() {
        for n in 0..16 {
            if let Some(s) = Status::from_u64(n) {
                assert_eq!(s as u64, n);
            }
        }
        assert_eq!(Status::from_u64(99), None);
    }

    #[test]
    fn a_stats_record_is_written_in_the_layout_its_caller_knows() {
        let mut r = StatsRecord {
            exits_total: 7,
            absent_ports: 100,
            absent_mmio: 101,
            refused: 102,
            ..Default::default()
        };
        for (k, e) in r.exits.iter_mut().enumerate() {
            *e = k as u64 + 1;
        }
        let (w, n) = r.words(STATS_RECORD_SIZE).unwrap();
        assert_eq!(n * 8, STATS_RECORD_SIZE as usize);
        assert_eq!((w[0], w[1], w[20], w[21], w[22], w[23]), (7, 1, 20, 100, 101, 102));
        for old in [0, STATS_RECORD_SIZE_V0] {
            let (w, n) = r.words(old).unwrap();
            assert_eq!(n * 8, STATS_RECORD_SIZE_V0 as usize);
            // 1.0: 19 counts (up to rdpmc), then the three totals where a 1.0 caller reads them.
            assert_eq!((w[19], w[20], w[21], w[22]), (19, 100, 101, 102));
        }
        assert_eq!(r.words(8), None);
        assert_eq!(r.words(STATS_RECORD_SIZE + 8), None);
    }

    #[test]
    fn stats_record_has_a_count_per_named_exit_kind() {
        let r = StatsRecord::default();
        assert_eq!(r.exits.len(), EXIT_KIND_NAMES.len());
        assert_eq!(EXIT_KIND_NAMES.last(), Some(&"pause"));
        // docs/hypercalls.md gives the size the management partition's buffer needs.
        assert_eq!(core::mem::size_of::<StatsRecord>(), 192);
    }
}
