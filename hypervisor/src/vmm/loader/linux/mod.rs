//! Linux bzImage kernels by the x86 boot protocol (the kernel's `Documentation/arch/x86/boot.rst`,
//! "boot.rst" below, and `zero-page.rst` for the rest of `struct boot_params`), loaded the way a
//! 32/64-bit boot loader loads them: the real-mode setup code never runs, the protected-mode
//! kernel is copied to its load address and entered with ESI/RSI = the zero page.
//!
//! Three steps, each pure: [`parse`] checks the setup header (boot flag 0xAA55, "HdrS",
//! protocol ≥ 2.12, LOADED_HIGH, the lengths `setup_sects` and `syssize` give), [`plan`] places
//! the kernel, initrd, command line and zero page in the partition's RAM, [`load`] writes them
//! through the caller's guest-memory accessor. Anything a bad image or a bad manifest can cause is a
//! [`LinuxError`] naming the field, never a panic.
//!
//! Entry (boot.rst "32-bit Boot Protocol" / "64-bit Boot Protocol"), set up by the caller: a GDT
//! with flat 4 GiB descriptors at selectors 0x10 (`__BOOT_CS`, execute/read) and 0x18
//! (`__BOOT_DS`, read/write), CS = 0x10, DS = ES = SS = 0x18, interrupts off, ESI/RSI =
//! [`Layout::boot_params`]. 32-bit: protected mode, paging off, EBP = EDI = EBX = 0, EIP =
//! [`Layout::entry32`]. 64-bit: long mode with the kernel's window ([`Layout::kernel`],
//! [`Layout::kernel_window`] bytes), the zero page and the command line identity-mapped, RIP =
//! the 64-bit entry ([`Layout::require_entry64`]).

use super::Size;
use core::fmt;

mod zero_page;

pub use zero_page::{E820Entry, boot_params, e820_map, load};

#[cfg(test)]
mod tests;

/// Where [`load`] puts the zero page (`struct boot_params`, 4 KiB): low RAM above the caller's
/// boot structures (guest-physical `[0, 0x7000)`), below 1 MiB.
pub const BOOT_PARAMS_GPA: u64 = 0x1_0000;
/// Where [`load`] puts the command line: low RAM (boot.rst "The Kernel Command Line": below
/// 0xA0000, not in high memory), up to [`LOW_RAM_END`].
pub const CMDLINE_GPA: u64 = 0x2_0000;
/// The command line ends below the EBDA KiB (639 KiB up) that the e820 map reserves, as
/// [`memory_map`](super::multiboot::memory_map) does.
pub const LOW_RAM_END: u64 = 639 << 10;
/// The oldest protocol accepted: 2.12 has `xloadflags` and the `ext_*` high halves.
pub const MIN_PROTOCOL: u16 = 0x020c;
/// Size of the zero page.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// Entries the zero page's `e820_table` holds (zero-page.rst: 0x2D0, 20 bytes each).
pub const E820_MAX: usize = 128;
/// The 64-bit entry point's offset from the load address (boot.rst "64-bit Boot Protocol").
pub const ENTRY64_OFFSET: u64 = 0x200;

// Setup header fields (boot.rst "The Real-Mode Kernel Header"), offsets in the image and in the
// zero page alike.
const SETUP_SECTS: usize = 0x1f1;
const SYSSIZE: usize = 0x1f4;
const BOOT_FLAG: usize = 0x1fe;
const JUMP_OFFSET: usize = 0x201;
const HEADER: usize = 0x202;
const VERSION: usize = 0x206;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const INITRD_ADDR_MAX: usize = 0x22c;
const KERNEL_ALIGNMENT: usize = 0x230;
const RELOCATABLE_KERNEL: usize = 0x234;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;
/// A 2.12 header ends after `handover_offset` (0x264/4).
const HEADER_END_2_12: usize = 0x268;

const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "HdrS".
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// loadflags bit 0: the protected-mode kernel loads at 1 MiB (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// loadflags bit 7: `heap_end_ptr` is valid (only the real-mode setup code reads it).
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// xloadflags bit 0: the 64-bit entry at load address + 0x200 exists.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// xloadflags bit 1: kernel, boot_params, command line and ramdisk may lie above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// `type_of_loader` for a loader without an assigned id (boot.rst: "0xFF = undefined").
pub const LOADER_UNDEFINED: u8 = 0xff;
/// `vid_mode` "normal" (boot.rst "Special Command Line Options", `vga=normal`).
pub const VID_MODE_NORMAL: u16 = 0xffff;
/// e820 types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

const PAGE: u64 = 4096;
const ONE_MIB: u64 = 0x10_0000;
const FOUR_GIB: u64 = 1 << 32;

/// A checked bzImage, borrowing its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BzImage<'a> {
    /// Boot protocol version, `(major << 8) | minor`.
    pub version: u16,
    /// Sectors of real-mode setup code after the boot sector (0 in the file means 4).
    pub setup_sects: u8,
    /// The setup header as the file has it, offsets 0x1F1 up to its end (0x202 + the byte at
    /// 0x201): what the zero page starts from.
    pub header: &'a [u8],
    /// The protected-mode kernel: `syssize` paragraphs from offset `(setup_sects + 1) * 512`.
    pub kernel: &'a [u8],
    pub loadflags: u8,
    pub xloadflags: u16,
    /// The address the kernel was linked to run at (`LOAD_PHYSICAL_ADDR`).
    pub pref_address: u64,
    pub kernel_alignment: u32,
    pub relocatable_kernel: bool,
    /// Contiguous bytes from the runtime start the kernel needs before it reads the memory map.
    pub init_size: u32,
    /// Highest address the initrd may occupy (its last byte).
    pub initrd_addr_max: u32,
    /// Longest command line, without the terminating NUL.
    pub cmdline_size: u32,
    pub code32_start: u32,
}

impl BzImage<'_> {
    /// The kernel has the 64-bit entry at load address + 0x200.
    pub fn has_64bit_entry(&self) -> bool {
        self.xloadflags & XLF_KERNEL_64 != 0
    }

    /// Bytes the kernel occupies from its load address until it has read the memory map:
    /// `init_size` (at least the image), page-rounded.
    pub fn window(&self) -> u64 {
        let len = u64::from(self.init_size).max(self.kernel.len() as u64);
        len.div_ceil(PAGE) * PAGE
    }
}

/// Why a kernel, initrd or command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxError {
    /// Too short to hold the fields read at this point.
    TooShort {
        len: usize,
        need: usize,
    },
    /// No boot flag 0xAA55 at 0x1FE or no "HdrS" at 0x202.
    NotBzImage {
        boot_flag: u16,
        header: u32,
    },
    ProtocolTooOld {
        found: u16,
        need: u16,
    },
    /// loadflags LOADED_HIGH clear: a zImage, loaded at 0x10000.
    NotLoadedHigh {
        loadflags: u8,
    },
    /// The jump at 0x200 puts the header's end before the 2.12 fields end.
    BadHeaderLength {
        end: usize,
    },
    /// The file ends before the setup code and `syssize` paragraphs of kernel.
    Truncated {
        len: usize,
        need: u64,
    },
    /// A relocatable kernel whose `kernel_alignment` is not a power of two.
    BadKernelAlignment {
        alignment: u32,
    },
    /// The 64-bit entry was asked for and xloadflags lacks XLF_KERNEL_64.
    No64BitEntry {
        xloadflags: u16,
    },
    CmdlineTooLong {
        len: usize,
        max: u64,
    },
    /// The zero page and command line need RAM at `[start, end)`.
    LowRamMissing {
        start: u64,
        end: u64,
    },
    /// No RAM block holds `need` bytes from an aligned address at or above `from` below 4 GiB.
    RamTooSmall {
        need: u64,
        from: u64,
        have: u64,
    },
    /// A non-relocatable kernel whose `[pref_address, + need)` is not RAM.
    FixedAddressNotInRam {
        pref_address: u64,
        need: u64,
    },
    /// No free page-aligned range of `size` bytes in RAM from 1 MiB up to `limit`.
    InitrdTooLarge {
        size: u64,
        limit: u64,
        largest: u64,
    },
    TooManyE820Entries {
        count: usize,
    },
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |p: u16| (p >> 8, p & 0xff);
        match *self {
            Self::TooShort { len, need } => write!(
                f,
                "the image is {len} bytes, too short for a bzImage setup header (up to {need:#x})"
            ),
            Self::NotBzImage { boot_flag, header } if boot_flag != BOOT_FLAG_MAGIC => write!(
                f,
                "not a Linux bzImage: boot_flag at 0x1fe is {boot_flag:#06x}, not 0xaa55 \
                 (header at 0x202 is {header:#x})"
            ),
            Self::NotBzImage { header, .. } => write!(
                f,
                "not a Linux bzImage: header at 0x202 is {header:#x}, not \"HdrS\" (0x53726448)"
            ),
            Self::ProtocolTooOld { found, need } => write!(
                f,
                "Linux boot protocol {}.{:02} (setup header version {found:#06x}) is too old: \
                 {}.{:02} or later is needed",
                v(found).0,
                v(found).1,
                v(need).0,
                v(need).1
            ),
            Self::NotLoadedHigh { loadflags } => write!(
                f,
                "the kernel is a zImage (setup header loadflags {loadflags:#04x}, LOADED_HIGH \
                 clear): only bzImage kernels are supported"
            ),
            Self::BadHeaderLength { end } => write!(
                f,
                "the setup header's jump (byte at 0x201) puts its end at {end:#x}, before the \
                 protocol 2.12 fields end at {HEADER_END_2_12:#x}"
            ),
            Self::Truncated { len, need } => write!(
                f,
                "the image is truncated: {len} bytes, but setup_sects and syssize say the setup \
                 code and kernel take {need}"
            ),
            Self::BadKernelAlignment { alignment } => write!(
                f,
                "setup header kernel_alignment {alignment:#x} of a relocatable kernel is not a \
                 power of two"
            ),
            Self::No64BitEntry { xloadflags } => write!(
                f,
                "the kernel has no 64-bit entry point (setup header xloadflags {xloadflags:#x}, \
                 XLF_KERNEL_64 clear)"
            ),
            Self::CmdlineTooLong { len, max } => write!(
                f,
                "the command line is {len} bytes, longer than the kernel accepts \
                 (setup header cmdline_size: {max})"
            ),
            Self::LowRamMissing { start, end } => write!(
                f,
                "the partition's RAM does not cover [{start:#x}, {end:#x}), where the zero page \
                 and the command line go"
            ),
            Self::RamTooSmall { need, from, have } => write!(
                f,
                "the kernel needs {} of contiguous RAM (setup header init_size) from {from:#x} \
                 (pref_address) up, aligned to kernel_alignment, below 4 GiB; the partition's \
                 RAM has at most {} there",
                Size(need),
                Size(have)
            ),
            Self::FixedAddressNotInRam { pref_address, need } => write!(
                f,
                "the kernel is not relocatable and runs at pref_address {pref_address:#x}, but \
                 the {} it needs there (init_size) are not RAM of the partition below 4 GiB",
                Size(need)
            ),
            Self::InitrdTooLarge { size, limit, largest } => write!(
                f,
                "the initrd ({}) does not fit in the partition's RAM between 1 MiB and {limit:#x} \
                 (setup header initrd_addr_max) beside the kernel: the largest free range there \
                 is {}",
                Size(size),
                Size(largest)
            ),
            Self::TooManyE820Entries { count } => write!(
                f,
                "the memory map has {count} entries, more than the {E820_MAX} the zero page holds"
            ),
        }
    }
}

fn u8_at(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// boot.rst "Loading The Rest of The Kernel": `is_bzImage = (protocol >= 0x0200) &&
/// (loadflags & 0x01)`, after the boot flag and "HdrS" (for messages that suggest a format).
pub fn is_bzimage(image: &[u8]) -> bool {
    u16_at(image, BOOT_FLAG) == Some(BOOT_FLAG_MAGIC)
        && u32_at(image, HEADER) == Some(HDRS_MAGIC)
        && u16_at(image, VERSION).is_some_and(|v| v >= 0x0200)
        && u8_at(image, LOADFLAGS).is_some_and(|l| l & LOADED_HIGH != 0)
}

/// Checks `image` as a bzImage of protocol 2.12 or later and finds its parts.
pub fn parse(image: &[u8]) -> Result<BzImage<'_>, LinuxError> {
    let len = image.len();
    let short = |need: usize| LinuxError::TooShort { len, need };
    let boot_flag = u16_at(image, BOOT_FLAG).unwrap_or(0);
    let header = u32_at(image, HEADER).unwrap_or(0);
    if boot_flag != BOOT_FLAG_MAGIC || header != HDRS_MAGIC {
        return Err(LinuxError::NotBzImage { boot_flag, header });
    }
    let version = u16_at(image, VERSION).ok_or(short(VERSION + 2))?;
    if version < MIN_PROTOCOL {
        return Err(LinuxError::ProtocolTooOld { found: version, need: MIN_PROTOCOL });
    }
    let loadflags = u8_at(image, LOADFLAGS).ok_or(short(LOADFLAGS + 1))?;
    if loadflags & LOADED_HIGH == 0 {
        return Err(LinuxError::NotLoadedHigh { loadflags });
    }
    if len < HEADER_END_2_12 {
        return Err(short(HEADER_END_2_12));
    }
    // boot.rst "32-bit Boot Protocol": the header ends at 0x0202 + the byte at 0x0201 (the
    // signed offset of the jump at 0x200). It cannot reach past 0x281, inside boot_params' hole
    // for it (up to 0x290).
    let end = (HEADER as isize + isize::from(image[JUMP_OFFSET] as i8)) as usize;
    if end < HEADER_END_2_12 {
        return Err(LinuxError::BadHeaderLength { end });
    }
    let word = |at| u32_at(image, at).unwrap_or(0);
    let setup_sects = match image[SETUP_SECTS] {
        0 => 4,
        n => n,
    };
    // The protected-mode kernel starts at (setup_sects + 1) * 512 and is syssize 16-byte
    // paragraphs long (protocol 2.04+); what follows (a signature) is not loaded.
    let setup_len = (usize::from(setup_sects) + 1) * 512;
    let syssize = u64::from(word(SYSSIZE)) * 16;
    let rest = image.get(setup_len..).unwrap_or(&[]);
    let kernel_len = if syssize == 0 { rest.len() as u64 } else { syssize };
    if kernel_len == 0 || kernel_len > rest.len() as u64 {
        let need = setup_len as u64 + kernel_len.max(1);
        return Err(LinuxError::Truncated { len, need });
    }
    let relocatable_kernel = image[RELOCATABLE_KERNEL] != 0;
    let kernel_alignment = word(KERNEL_ALIGNMENT);
    if relocatable_kernel && !kernel_alignment.is_power_of_two() {
        return Err(LinuxError::BadKernelAlignment { alignment: kernel_alignment });
    }
    Ok(BzImage {
        version,
        setup_sects,
        header: image.get(SETUP_SECTS..end).ok_or(short(end))?,
        kernel: &rest[..kernel_len as usize],
        loadflags,
        xloadflags: u16_at(image, XLOADFLAGS).unwrap_or(0),
        pref_address: u64_at(image, PREF_ADDRESS).unwrap_or(0),
        kernel_alignment,
        relocatable_kernel,
        init_size: word(INIT_SIZE),
        initrd_addr_max: word(INITRD_ADDR_MAX),
        cmdline_size: word(CMDLINE_SIZE),
        code32_start: word(CODE32_START),
    })
}

/// Where everything goes in the partition's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Load address of the protected-mode kernel (also `code32_start`).
    pub kernel: u64,
    /// Bytes from [`Layout::kernel`] the kernel uses before it reads the memory map
    /// ([`BzImage::window`]): identity-map them for the 64-bit entry.
    pub kernel_window: u64,
    /// Guest-physical start and length of the initrd.
    pub initrd: Option<(u64, u64)>,
    /// The command line, [`CMDLINE_GPA`].
    pub cmdline: u64,
    /// The zero page, [`BOOT_PARAMS_GPA`]: ESI/RSI at entry.
    pub boot_params: u64,
    /// The 32-bit entry: the load address.
    pub entry32: u64,
    /// The 64-bit entry (load address + 0x200), where xloadflags has XLF_KERNEL_64.
    pub entry64: Option<u64>,
}

impl Layout {
    /// The 64-bit entry, or why there is none.
    pub fn require_entry64(&self, img: &BzImage) -> Result<u64, LinuxError> {
        self.entry64.ok_or(LinuxError::No64BitEntry { xloadflags: img.xloadflags })
    }
}

/// A RAM block's range, clipped to `[lo, hi)`; `None` when empty.
fn clip(block: (u64, u64), lo: u64, hi: u64) -> Option<(u64, u64)> {
    let (start, end) = (block.0.max(lo), block.0.saturating_add(block.1).min(hi));
    (start < end).then_some((start, end))
}

fn in_ram(ram: &[(u64, u64)], start: u64, len: u64) -> bool {
    let end = start.saturating_add(len);
    ram.iter().any(|&b| clip(b, start, end) == Some((start, end)))
}

/// Places the kernel, the initrd (`initrd_len` bytes), the command line (`cmdline_len` bytes
/// without its NUL) and the zero page in a partition whose RAM is `ram` (guest-physical
/// `(start, len)` blocks). The caller's reserved ranges are not known here: keep them below
/// [`BOOT_PARAMS_GPA`] or outside `ram`, since the kernel and initrd may go anywhere in RAM from
/// 1 MiB up (the e820 map does keep a KASLR kernel out of them).
pub fn plan(
    img: &BzImage,
    ram: &[(u64, u64)],
    initrd_len: Option<u64>,
    cmdline_len: usize,
) -> Result<Layout, LinuxError> {
    let max = u64::from(img.cmdline_size).min(LOW_RAM_END - CMDLINE_GPA - 1);
    if cmdline_len as u64 > max {
        return Err(LinuxError::CmdlineTooLong { len: cmdline_len, max });
    }
    let low = [(BOOT_PARAMS_GPA, ZERO_PAGE_SIZE as u64), (CMDLINE_GPA, cmdline_len as u64 + 1)];
    for (start, len) in low {
        if !in_ram(ram, start, len) {
            return Err(LinuxError::LowRamMissing { start, end: start + len });
        }
    }
    let window = img.window();
    let kernel = place_kernel(img, ram, window)?;
    let initrd = match initrd_len {
        None | Some(0) => None,
        Some(size) => Some((place_initrd(img, ram, size, (kernel, kernel + window))?, size)),
    };
    Ok(Layout {
        kernel,
        kernel_window: window,
        initrd,
        cmdline: CMDLINE_GPA,
        boot_params: BOOT_PARAMS_GPA,
        entry32: kernel,
        entry64: img.has_64bit_entry().then_some(kernel + ENTRY64_OFFSET),
    })
}

/// The kernel goes at `pref_address` when its window is RAM there, otherwise (relocatable
/// kernels) at the lowest `kernel_alignment`-aligned address above it with room. Never below
/// `pref_address`: the decompressor (arch/x86/boot/compressed/head_64.S, startup_32 and
/// startup_64) runs the kernel at `max(align_up(load, kernel_alignment), LOAD_PHYSICAL_ADDR)`,
/// and `pref_address` is `LOAD_PHYSICAL_ADDR`, so a kernel loaded lower moves up to it anyway.
/// Below 4 GiB: `code32_start` and the 32-bit entry are 32 bits.
fn place_kernel(img: &BzImage, ram: &[(u64, u64)], window: u64) -> Result<u64, LinuxError> {
    if !img.relocatable_kernel {
        // boot.rst "pref_address": a non-relocatable kernel moves itself there.
        let pref = if img.pref_address == 0 { ONE_MIB } else { img.pref_address };
        let fits = pref >= ONE_MIB && pref.checked_add(window).is_some_and(|e| e <= FOUR_GIB);
        return if fits && in_ram(ram, pref, window) {
            Ok(pref)
        } else {
            Err(LinuxError::FixedAddressNotInRam { pref_address: pref, need: window })
        };
    }
    let pref = img.pref_address.max(ONE_MIB);
    let align = u64::from(img.kernel_alignment);
    let (mut best, mut have) = (None::<u64>, 0);
    for &block in ram {
        let Some((start, end)) = clip(block, pref, FOUR_GIB) else { continue };
        let Some(at) = start.checked_next_multiple_of(align).filter(|&a| a < end) else {
            continue;
        };
        have = have.max(end - at);
        if end - at >= window && best.is_none_or(|b| at < b) {
            best = Some(at);
        }
    }
    best.ok_or(LinuxError::RamTooSmall { need: window, from: pref, have })
}

/// The initrd goes as high as it fits, page-aligned, in RAM from 1 MiB to `initrd_addr_max`
/// (its last byte), outside the kernel's window; when nothing there fits and the kernel may
/// have its ramdisk above 4 GiB (XLF_CAN_BE_LOADED_ABOVE_4G), as high as it fits in any RAM.
fn place_initrd(
    img: &BzImage,
    ram: &[(u64, u64)],
    size: u64,
    kernel: (u64, u64),
) -> Result<u64, LinuxError> {
    let limit = u64::from(img.initrd_addr_max) + 1;
    let highest = |limit: u64| {
        let (mut best, mut largest) = (None::<u64>, 0);
        let free = ram.iter().filter_map(|&b| clip(b, ONE_MIB, limit)).flat_map(|(s, e)| {
            // The block minus the kernel's window: what lies below it and what lies above it.
            [(s, e.min(kernel.0)), (s.max(kernel.1), e)]
        });
        for (s, e) in free.filter(|(s, e)| s < e) {
            largest = largest.max(e - s);
            let at = (e.saturating_sub(size) / PAGE) * PAGE;
            if e - s >= size && at >= s && best.is_none_or(|b| at > b) {
                best = Some(at);
            }
        }
        (best, largest)
    };
    let (best, largest) = highest(limit);
    let above_4g = img.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0;
    best.or_else(|| above_4g.then(|| highest(u64::MAX).0).flatten())
        .ok_or(LinuxError::InitrdTooLarge { size, limit, largest })
}
