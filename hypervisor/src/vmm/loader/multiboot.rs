//! Multiboot 1 kernels (Multiboot Specification 0.6.96), loaded as GRUB and QEMU `-kernel` load
//! them, so that existing small test kernels run as partitions unchanged.
//!
//! The header (§3.1) lies 4-byte aligned in the first 8192 bytes: magic 0x1BADB002, flags and a
//! checksum that makes the three sum to 0. Flag 16 ("a.out kludge", §3.1.3) gives the load
//! addresses in the header itself and lets any file format load; without it the file must be
//! an ELF32 executable (§3.1.3: "the boot loader ... uses the ELF header"), whose `PT_LOAD`
//! segments load at their physical addresses. Flags 0 (page-aligned modules) and 1 (memory
//! information) are honoured: modules always start on a page ([`super::mb_modules`] places
//! them), and memory information is always given. Flag 2 (video mode) is a request a loader may ignore: it is. Any other bit in 15:0
//! is a requirement this loader does not know, so the kernel is refused (§3.1.2).
//!
//! The machine state at entry (§3.2) is set by the partition builder: 32-bit protected mode,
//! paging off, flat CS/DS/ES/FS/GS/SS, EAX = 0x2BADB002, EBX = the information structure
//! (§3.3) written by [`write_info`].

use super::elf::{self, ElfError, ElfImage, Segment, SegmentFlags};
use alloc::vec::Vec;
use core::fmt;

/// The header's magic (§3.1.1).
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// EAX at entry (§3.2).
pub const BOOT_MAGIC: u32 = 0x2bad_b002;
/// The header lies in the first this many bytes.
pub const SEARCH_BYTES: usize = 8192;

const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_ADDRESSES: u32 = 1 << 16;
/// Requirement bits (15:0) this loader meets or may ignore.
const KNOWN_REQUIREMENTS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

/// The room [`write_info`] needs for the information structure and what it points to, from
/// the address the caller picked (free RAM the kernel's image does not use: `super::place`).
pub const INFO_BYTES: u64 = 0x1000;
const MMAP_OFFSET: u64 = 0x100;
const CMDLINE_OFFSET: u64 = 0x400;
const LOADER_NAME_OFFSET: u64 = 0x600;
/// The module list: [`MODULES_MAX`] entries of 16 bytes.
const MODS_OFFSET: u64 = 0x700;
/// The modules' strings, [`MODULE_STRING_SLOT`] bytes each, to the end of the page.
const MOD_STRINGS_OFFSET: u64 = 0x800;
const MODULE_STRING_SLOT: u64 = 0x100;
/// Most modules the structure lists (the manifest's limit).
pub const MODULES_MAX: usize = hvmanifest::MODULES_MAX;
/// Longest module string (the rest of its slot holds the NUL).
pub const MODULE_STRING_MAX: usize = MODULE_STRING_SLOT as usize - 1;
/// Most memory-map entries (the room between the fixed part and the command line).
pub const MMAP_MAX: usize = ((CMDLINE_OFFSET - MMAP_OFFSET) / 24) as usize;
/// The loader's name in the information structure.
pub const LOADER_NAME: &str = "microhv";
/// Longest command line passed (the rest of its page holds the loader name).
pub const CMDLINE_MAX: usize = 0x1ff;

/// A validated multiboot kernel: what to load and where to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultibootImage<'a> {
    /// The segments and the 32-bit entry point.
    pub image: ElfImage<'a>,
    /// The header's flags.
    pub flags: u32,
    /// True when the load addresses came from the header (flag 16), false for ELF32.
    pub aout_kludge: bool,
}

/// Why a kernel was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultibootError {
    /// No header magic in the first 8192 bytes.
    NoHeader,
    /// The magic is there but magic + flags + checksum is not 0.
    BadChecksum { offset: usize },
    /// The header ends past the end of the file.
    TruncatedHeader { offset: usize },
    /// Bits in 15:0 this loader does not know.
    UnknownRequirements { bits: u32 },
    /// Flag 16: the address fields are inconsistent with each other or with the file.
    BadAddresses { why: &'static str },
    /// Without flag 16 the file must be an ELF32 x86 executable.
    NotElf32 { why: &'static str },
    /// An ELF-level problem (segments, entry point).
    Elf(ElfError),
}

impl fmt::Display for MultibootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoHeader => write!(
                f,
                "no multiboot header (magic {HEADER_MAGIC:#x}) in the first {SEARCH_BYTES} bytes"
            ),
            Self::BadChecksum { offset } => {
                write!(f, "multiboot header at {offset:#x} has a bad checksum")
            }
            Self::TruncatedHeader { offset } => {
                write!(f, "multiboot header at {offset:#x} runs past the end of the file")
            }
            Self::UnknownRequirements { bits } => {
                write!(f, "multiboot header requires features this loader lacks (flags {bits:#x})")
            }
            Self::BadAddresses { why } => write!(f, "multiboot address fields: {why}"),
            Self::NotElf32 { why } => {
                write!(f, "without multiboot flag 16 the kernel must be ELF32 x86: {why}")
            }
            Self::Elf(e) => write!(f, "{e}"),
        }
    }
}

impl From<ElfError> for MultibootError {
    fn from(e: ElfError) -> Self {
        Self::Elf(e)
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// True when `image` carries a multiboot 1 header (for error messages that suggest a format).
pub fn has_header(image: &[u8]) -> bool {
    find_header(image).is_ok()
}

/// The header's offset and flags.
fn find_header(image: &[u8]) -> Result<(usize, u32), MultibootError> {
    let end = image.len().min(SEARCH_BYTES);
    for offset in (0..end.saturating_sub(3)).step_by(4) {
        if u32_at(image, offset) != Some(HEADER_MAGIC) {
            continue;
        }
        let (Some(flags), Some(sum)) = (u32_at(image, offset + 4), u32_at(image, offset + 8))
        else {
            return Err(MultibootError::TruncatedHeader { offset });
        };
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(sum) != 0 {
            return Err(MultibootError::BadChecksum { offset });
        }
        return Ok((offset, flags));
    }
    Err(MultibootError::NoHeader)
}

/// Validates `image` as a multiboot 1 kernel for RAM at `[ram_base, ram_base + ram_size)`.
pub fn parse(
    image: &[u8],
    ram_base: u64,
    ram_size: u64,
) -> Result<MultibootImage<'_>, MultibootError> {
    let (offset, flags) = find_header(image)?;
    let unknown = flags & 0xffff & !KNOWN_REQUIREMENTS;
    if unknown != 0 {
        return Err(MultibootError::UnknownRequirements { bits: unknown });
    }
    let aout_kludge = flags & FLAG_ADDRESSES != 0;
    let parsed = if aout_kludge {
        addresses(image, offset, ram_base, ram_size)?
    } else {
        elf32(image, ram_base, ram_size)?
    };
    if parsed.entry > u64::from(u32::MAX) {
        return Err(MultibootError::BadAddresses { why: "entry point above 4 GiB" });
    }
    Ok(MultibootImage { image: parsed, flags, aout_kludge })
}

/// Flag 16 (§3.1.3): the file from `header_addr - (load_addr - file offset)` is loaded at
/// `load_addr` up to `load_end_addr` (0: the end of the file), zeroed up to `bss_end_addr`
/// (0: no bss), entered at `entry_addr`.
fn addresses(
    image: &[u8],
    offset: usize,
    ram_base: u64,
    ram_size: u64,
) -> Result<ElfImage<'_>, MultibootError> {
    let bad = |why| MultibootError::BadAddresses { why };
    let field = |i: usize| u32_at(image, offset + 12 + 4 * i).map(u64::from);
    let (Some(header), Some(load), Some(load_end), Some(bss_end), Some(entry)) =
        (field(0), field(1), field(2), field(3), field(4))
    else {
        return Err(MultibootError::TruncatedHeader { offset });
    };
    if load > header {
        return Err(bad("load_addr is above header_addr"));
    }
    // The file offset that loads at load_addr.
    let start = (offset as u64)
        .checked_sub(header - load)
        .ok_or(bad("header_addr - load_addr is larger than the header's offset in the file"))?;
    let file_end = if load_end == 0 {
        image.len() as u64
    } else {
        if load_end < load {
            return Err(bad("load_end_addr is below load_addr"));
        }
        start + (load_end - load)
    };
    let data = usize::try_from(start)
        .ok()
        .zip(usize::try_from(file_end).ok())
        .and_then(|(s, e)| image.get(s..e))
        .ok_or(bad("load_end_addr lies past the end of the file"))?;
    let loaded_end = load + data.len() as u64;
    let mem_end = if bss_end == 0 { loaded_end } else { bss_end };
    if mem_end < loaded_end {
        return Err(bad("bss_end_addr is below the end of the loaded data"));
    }
    let mem_size = mem_end - load;
    if mem_size == 0 {
        return Err(MultibootError::Elf(ElfError::NoLoadableSegment));
    }
    if load < ram_base || mem_end - ram_base > ram_size {
        return Err(MultibootError::Elf(ElfError::SegmentOutsideRam {
            index: 0,
            gpa: load,
            mem_size,
            ram_size,
        }));
    }
    if !(load..mem_end).contains(&entry) {
        return Err(MultibootError::Elf(ElfError::EntryNotInCode { entry }));
    }
    let flags = SegmentFlags::R | SegmentFlags::W | SegmentFlags::X;
    Ok(ElfImage { entry, segments: alloc::vec![Segment { gpa: load, data, mem_size, flags }] })
}

const ELF32_EHDR: usize = 52;
const ELF32_PHDR: usize = 32;
const EM_386: u16 = 3;

/// An ELF32 x86 executable (System V ABI, Intel386 supplement): `PT_LOAD` segments at their
/// physical addresses, the entry point inside one of them.
fn elf32(image: &[u8], ram_base: u64, ram_size: u64) -> Result<ElfImage<'_>, MultibootError> {
    let not = |why| MultibootError::NotElf32 { why };
    if image.len() < ELF32_EHDR || image[..4] != [0x7f, b'E', b'L', b'F'] {
        return Err(not("no ELF header"));
    }
    if image[4] != 1 {
        return Err(not("not ELFCLASS32 (give a 64-bit kernel the address fields, flag 16)"));
    }
    if image[5] != 1 {
        return Err(not("not little-endian"));
    }
    let header = |at| u16_at(image, at).unwrap_or(0);
    if header(16) != 2 {
        return Err(not("not an executable (e_type)"));
    }
    if header(18) != EM_386 {
        return Err(not("not an x86 (EM_386) executable"));
    }
    let word = |at| u64::from(u32_at(image, at).unwrap_or(0));
    let (entry, phoff) = (word(24), word(28));
    if usize::from(header(42)) != ELF32_PHDR {
        return Err(not("program header entries are not 32 bytes"));
    }
    let phnum = usize::from(header(44));
    let table = usize::try_from(phoff)
        .ok()
        .and_then(|o| image.get(o..o.checked_add(phnum * ELF32_PHDR)?))
        .ok_or(MultibootError::Elf(ElfError::PhTableOutsideFile {
            offset: phoff,
            count: phnum as u16,
            file_len: image.len(),
        }))?;
    let mut segments = Vec::new();
    let mut virt = Vec::new();
    for (index, ph) in table.chunks_exact(ELF32_PHDR).enumerate() {
        let f = |at| u64::from(u32_at(ph, at).unwrap_or(0));
        if f(0) != 1 {
            continue; // not PT_LOAD
        }
        let (offset, vaddr, paddr, file_size, mem_size) = (f(4), f(8), f(12), f(16), f(20));
        let data = usize::try_from(offset)
            .ok()
            .and_then(|o| image.get(o..o.checked_add(usize::try_from(file_size).ok()?)?))
            .ok_or(ElfError::SegmentOutsideFile {
                index,
                offset,
                size: file_size,
                file_len: image.len(),
            })?;
        if file_size > mem_size {
            return Err(ElfError::FileLargerThanMemory { index, file_size, mem_size }.into());
        }
        if mem_size == 0 {
            continue;
        }
        if paddr < ram_base || paddr + mem_size - ram_base > ram_size {
            return Err(
                ElfError::SegmentOutsideRam { index, gpa: paddr, mem_size, ram_size }.into()
            );
        }
        let flags = SegmentFlags::from_bits_truncate(f(24) as u32);
        segments.push((index, Segment { gpa: paddr, data, mem_size, flags }));
        virt.push(vaddr);
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegment.into());
    }
    elf::check_overlap(&segments)?;
    let entry = elf::entry_gpa(entry, &segments, &virt)?;
    Ok(ElfImage { entry, segments: segments.into_iter().map(|(_, s)| s).collect() })
}

/// The memory map a PC loader reports for RAM blocks `ram` (guest-physical `(start, size)`,
/// sorted): each block as available, except that the legacy hole `[639 KiB, 1 MiB)` is never
/// RAM; the EBDA's KiB and the BIOS area `[0xf0000, 1 MiB)` listed reserved when RAM comes up
/// to them. Entries are `(base_addr, length, type)`, type 1 available and 2 reserved.
pub fn memory_map(ram: &[(u64, u64)]) -> Vec<(u64, u64, u32)> {
    const HOLE: core::ops::Range<u64> = (LOW_KIB << 10)..0x10_0000;
    let mut map = Vec::new();
    for &(start, size) in ram {
        let end = start.saturating_add(size);
        for (a, b) in [(start, end.min(HOLE.start)), (start.max(HOLE.end), end)] {
            if a < b {
                map.push((a, b - a, 1));
            }
        }
        if start < HOLE.start && end >= HOLE.start {
            map.push((HOLE.start, 0xa0000 - HOLE.start, 2));
        }
        if start < HOLE.end && end > 0xf0000 {
            map.push((0xf0000, 0x10000, 2));
        }
    }
    map.sort_unstable();
    map
}

/// Conventional memory below 1 MiB.
const LOW_KIB: u64 = 639;

/// [`memory_map`] for `ram` with `extra` entries `(start, length, type)` over it (the
/// firmware's own ranges, ranges the hypervisor keeps): sorted, non-overlapping, neighbours of
/// one type merged; where entries overlap, the higher type wins (anything over RAM, ACPI NVS
/// over reserved), as a PC firmware's map never lists a byte twice.
pub fn memory_map_with(ram: &[(u64, u64)], extra: &[(u64, u64, u32)]) -> Vec<(u64, u64, u32)> {
    let mut pieces = memory_map(ram);
    pieces.extend(extra.iter().filter(|e| e.1 != 0));
    let mut cuts: Vec<u64> =
        pieces.iter().flat_map(|&(s, l, _)| [s, s.saturating_add(l)]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut map: Vec<(u64, u64, u32)> = Vec::new();
    for pair in cuts.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let kind = pieces
            .iter()
            .filter(|&&(s, l, _)| s <= a && b <= s.saturating_add(l))
            .map(|p| p.2)
            .max();
        let Some(kind) = kind else { continue };
        match map.last_mut() {
            Some(last) if last.2 == kind && last.0 + last.1 == a => last.1 += b - a,
            _ => map.push((a, b - a, kind)),
        }
    }
    map
}

/// A boot module as the information structure lists it (§3.3 `mods_addr`): where it lies,
/// `[start, end)`, and its string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleEntry<'a> {
    pub start: u64,
    pub end: u64,
    pub string: &'a str,
}

/// Writes the multiboot information structure (§3.3) for a partition whose RAM is the blocks
/// `ram` (guest-physical `(start, size)`, sorted), the structure itself at `at` ([`INFO_BYTES`]
/// of free RAM below 4 GiB): flags 0 (mem_lower/mem_upper), 2 (cmdline), 3 (the modules: at
/// most [`MODULES_MAX`], each string cut to [`MODULE_STRING_MAX`] bytes; the caller checks
/// both), 6 (the memory map, §3.3 "mmap_*", from [`memory_map_with`]: `ram`, and the `extra`
/// entries over it (the firmware's ranges, the host RAM the hypervisor keeps, type 2); at
/// most [`MMAP_MAX`] entries) and 9 (the loader's name). mem_lower is the RAM from 0 (at most 639
/// KiB), mem_upper the contiguous RAM from 1 MiB, both in KiB. Returns the structure's
/// address, for EBX.
pub fn write_info<E>(
    mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
    at: u64,
    ram: &[(u64, u64)],
    cmdline: &str,
    modules: &[ModuleEntry<'_>],
    extra: &[(u64, u64, u32)],
) -> Result<u64, E> {
    const MEM: u32 = 1 << 0;
    const CMDLINE: u32 = 1 << 2;
    const MODS: u32 = 1 << 3;
    const MMAP: u32 = 1 << 6;
    const LOADER_NAME: u32 = 1 << 9;
    let ranges = memory_map_with(ram, extra);
    let kib_from = |at: u64| ranges.iter().find(|r| r.0 == at && r.2 == 1).map_or(0, |r| r.1 >> 10);
    let (lower_kib, upper_kib) = (kib_from(0), kib_from(0x10_0000));
    let mut mmap = Vec::with_capacity(ranges.len() * 24);
    for (addr, len, kind) in ranges.into_iter().take(MMAP_MAX) {
        // Each entry: size (of the rest: 20), base_addr, length, type (§3.3).
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&addr.to_le_bytes());
        mmap.extend_from_slice(&len.to_le_bytes());
        mmap.extend_from_slice(&kind.to_le_bytes());
    }
    let cmd = &cmdline.as_bytes()[..cmdline.len().min(CMDLINE_MAX)];
    let mut cmd_z = Vec::with_capacity(cmd.len() + 1);
    cmd_z.extend_from_slice(cmd);
    cmd_z.push(0);
    let mut name_z = Vec::from(self::LOADER_NAME.as_bytes());
    name_z.push(0);
    // The fixed part: 23 u32 fields up to and including boot_loader_name (offset 64).
    let mut info = [0u32; 23];
    info[0] = MEM | CMDLINE | MODS | MMAP | LOADER_NAME;
    info[1] = lower_kib as u32;
    info[2] = upper_kib.min(u64::from(u32::MAX)) as u32;
    info[4] = (at + CMDLINE_OFFSET) as u32;
    let modules = &modules[..modules.len().min(MODULES_MAX)];
    info[5] = modules.len() as u32; // mods_count
    info[6] = (at + MODS_OFFSET) as u32; // mods_addr
    info[11] = mmap.len() as u32; // mmap_length
    info[12] = (at + MMAP_OFFSET) as u32; // mmap_addr
    info[16] = (at + LOADER_NAME_OFFSET) as u32;
    let mut bytes = Vec::with_capacity(info.len() * 4);
    for w in info {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    write(at, &bytes)?;
    write(at + MMAP_OFFSET, &mmap)?;
    write(at + CMDLINE_OFFSET, &cmd_z)?;
    write(at + LOADER_NAME_OFFSET, &name_z)?;
    for (i, m) in modules.iter().enumerate() {
        let string_at = at + MOD_STRINGS_OFFSET + i as u64 * MODULE_STRING_SLOT;
        // Each entry: mod_start, mod_end, string, reserved (0).
        let mut entry = [0u8; 16];
        for (k, w) in [m.start, m.end, string_at].into_iter().enumerate() {
            entry[4 * k..4 * k + 4].copy_from_slice(&(w as u32).to_le_bytes());
        }
        write(at + MODS_OFFSET + 16 * i as u64, &entry)?;
        let text = &m.string.as_bytes()[..m.string.len().min(MODULE_STRING_MAX)];
        let mut z = Vec::with_capacity(text.len() + 1);
        z.extend_from_slice(text);
        z.push(0);
        write(string_at, &z)?;
    }
    Ok(at)
}

#[cfg(test)]
#[path = "multiboot_tests.rs"]
mod tests;
