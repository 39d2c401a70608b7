//! The start-info page the hypervisor writes into each `elf64` partition (see
//! `docs/guest-contract.md`), and the fixed guest-physical layout around it.

/// Guest-physical address of the GDT the hypervisor prepares.
pub const GDT_GPA: u64 = 0x1000;
/// Guest-physical address of the PML4 of the initial identity map.
pub const PML4_GPA: u64 = 0x2000;
/// Guest-physical address of the [`StartInfo`] page (passed in RDI).
pub const START_INFO_GPA: u64 = 0x5000;
/// Images must load at or above this guest-physical address.
pub const IMAGE_MIN_GPA: u64 = 0x10_0000;
/// Initial RSP is `ram_size - STACK_GAP`.
pub const STACK_GAP: u64 = 0x1000;
/// Code selector at entry.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data selector at entry.
pub const DATA_SELECTOR: u16 = 0x10;

/// Where our management kernel (`guest-images/mgmt`) links. The management partition's RAM is
/// identity-mapped (guest-physical = host-physical, so that device DMA works without an
/// IOMMU) over all host RAM the hypervisor and the other partitions do not use; an image loads
/// at its link address when that is such RAM.
pub const MGMT_IMAGE_BASE: u64 = 0x0420_0000;
/// Guest-physical address of the management partition's start-info page (after four page
/// directories that map the first 4 GiB).
pub const MGMT_START_INFO_GPA: u64 = 0x8000;

/// Guest-physical base of the sysinfo MMIO device.
pub const SYSINFO_GPA: u64 = 0xfeb0_0000;
/// Its magic, read as a 32-bit value at offset 0.
pub const SYSINFO_MAGIC: u32 = 0x4d48_5653;
/// Offset of the partition id (64-bit, read-only).
pub const SYSINFO_ID: u64 = 0x8;
/// Offset of the scratch register (64-bit, read/write).
pub const SYSINFO_SCRATCH: u64 = 0x10;
/// Offset of the read counter (64-bit, read-only).
pub const SYSINFO_READS: u64 = 0x18;

/// `StartInfo::magic`.
pub const START_MAGIC: u64 = 0x4f46_4e49_5452_5453; // "STRTINFO"

/// What a partition learns at start, at [`START_INFO_GPA`].
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StartInfo {
    pub magic: u64,
    pub partition_id: u64,
    pub ram_size: u64,
    /// Length of `name` in bytes.
    pub name_len: u64,
    pub name: [u8; 32],
    /// Length of `cmdline` in bytes.
    pub cmdline_len: u64,
    pub cmdline: [u8; 256],
    /// The TSC when the hypervisor started (for the boot-to-guest benchmark).
    pub hv_start_tsc: u64,
}

impl StartInfo {
    /// The partition's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..(self.name_len as usize).min(32)]).unwrap_or("")
    }

    /// The partition's command line.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..(self.cmdline_len as usize).min(256)]).unwrap_or("")
    }
}
