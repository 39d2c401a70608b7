//! What the boot path hands to the hypervisor: one shape whatever the firmware was.

use core::ops::Range;

/// Which boot protocol brought us here (printed in the banner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    /// Multiboot1: QEMU `-kernel` or GRUB.
    Multiboot,
    /// UEFI through the `bootloader` crate.
    Uefi,
}

impl core::fmt::Display for BootPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Multiboot => "multiboot",
            Self::Uefi => "uefi",
        })
    }
}

/// Most memory regions, reserved ranges and modules the boot info can hold.
pub const MAX_REGIONS: usize = 128;
/// Most boot modules.
pub const MAX_MODULES: usize = 16;
/// Longest command line kept (longer ones are cut, with a warning).
pub const MAX_CMDLINE: usize = 512;
/// Longest module name kept.
pub const MAX_NAME: usize = 48;

/// A fixed-capacity list that needs no heap (the heap does not exist yet at boot).
#[derive(Clone, Copy, Debug)]
pub struct FixedVec<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
    /// How many pushes did not fit.
    pub dropped: usize,
}

impl<T: Copy + Default, const N: usize> Default for FixedVec<T, N> {
    fn default() -> Self {
        Self { items: [T::default(); N], len: 0, dropped: 0 }
    }
}

impl<T: Copy + Default, const N: usize> FixedVec<T, N> {
    /// Appends, or counts the item as dropped when full.
    pub fn push(&mut self, item: T) {
        if self.len < N {
            self.items[self.len] = item;
            self.len += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// The items pushed so far.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    /// Mutable view of the items.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }
}

/// A boot module (a guest image, a manifest): where it can be read now.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    name: [u8; MAX_NAME],
    name_len: usize,
    /// Virtual address of the first byte (mapped for the hypervisor's whole life).
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Default for Module {
    fn default() -> Self {
        Self { name: [0; MAX_NAME], name_len: 0, addr: 0, len: 0 }
    }
}

impl Module {
    /// A module called `name` (cut to [`MAX_NAME`] bytes at a character boundary).
    pub fn new(name: &str, addr: u64, len: u64) -> Self {
        let mut m = Self { addr, len, ..Self::default() };
        let mut n = name.len().min(MAX_NAME);
        while !name.is_char_boundary(n) {
            n -= 1;
        }
        m.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        m.name_len = n;
        m
    }

    /// The module's name (for multiboot: the last path component of its string).
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// The module's bytes.
    ///
    /// # Safety
    /// `addr..addr+len` must be mapped and not written while the slice lives. The boot paths
    /// guarantee this for the modules they report: the memory is reserved from the frame
    /// allocator and stays mapped.
    pub unsafe fn bytes(&self) -> &'static [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees the range is mapped and immutable.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len as usize) }
    }
}

/// A physical address range, half open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn as_range(&self) -> Range<u64> {
        self.start..self.end
    }
}

/// Everything the hypervisor learns from the boot path.
#[derive(Debug)]
pub struct BootInfo {
    pub path: BootPath,
    /// RAM the firmware reports as usable (may overlap `reserved`).
    pub usable: FixedVec<PhysRange, MAX_REGIONS>,
    /// Ranges inside usable RAM that must never be handed out: the kernel image, the boot
    /// modules, the boot information itself.
    pub reserved: FixedVec<PhysRange, MAX_REGIONS>,
    /// Highest physical address the firmware mentioned (any kind), for the direct map.
    pub max_phys: u64,
    pub modules: FixedVec<Module, MAX_MODULES>,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// True when the command line was longer than [`MAX_CMDLINE`].
    pub cmdline_truncated: bool,
    /// The firmware's memory that is not usable RAM, with its types (e820's), for the
    /// management partition (`vmm::firmware`). Ranges past its capacity are dropped.
    pub firmware: crate::vmm::firmware::FirmwareMap,
    /// How many firmware ranges did not fit in `firmware`.
    pub firmware_dropped: usize,
    /// ACPI RSDP physical address, where the firmware gave one.
    pub rsdp: Option<u64>,
    /// High-half PML4 entries of the boot page tables that must be kept when the hypervisor
    /// installs its own (the UEFI kernel image, its stack and the boot info live there).
    pub keep_high_half: bool,
    /// The hypervisor image's physical pages (including its `.bss`), where the boot path
    /// knows them (multiboot); empty otherwise. Boot modules below it are moved above it.
    pub image: PhysRange,
    /// Where the multiboot loader put the image before it moved itself up (free now).
    pub relocated_from: Option<PhysRange>,
}

impl BootInfo {
    /// An empty boot info for `path`.
    pub fn new(path: BootPath) -> Self {
        Self {
            path,
            usable: FixedVec::default(),
            reserved: FixedVec::default(),
            max_phys: 0,
            modules: FixedVec::default(),
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            cmdline_truncated: false,
            firmware: crate::vmm::firmware::FirmwareMap::default(),
            firmware_dropped: 0,
            rsdp: None,
            keep_high_half: false,
            image: PhysRange::new(0, 0),
            relocated_from: None,
        }
    }

    /// Sets the command line (cut at [`MAX_CMDLINE`] bytes).
    pub fn set_cmdline(&mut self, s: &str) {
        let mut n = s.len().min(MAX_CMDLINE);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.cmdline_truncated = n < s.len();
        self.cmdline[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.cmdline_len = n;
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Keeps a firmware range that is not usable RAM (`kind` as e820's).
    pub fn push_firmware(&mut self, start: u64, end: u64, kind: u32) {
        if !self.firmware.push(start, end, kind) {
            self.firmware_dropped += 1;
        }
    }

    /// Total usable RAM in bytes, before reservations.
    pub fn usable_bytes(&self) -> u64 {
        self.usable.as_slice().iter().map(PhysRange::len).sum()
    }
}
