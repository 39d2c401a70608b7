//! ELF64 guest images: validate an executable and list what to load where.
//!
//! Layouts from the ELF-64 Object File Format (v1.5): the file header (section 3, `Elf64_Ehdr`,
//! 64 bytes) and the program header table (section 6, `Elf64_Phdr`, 56 bytes each); the machine
//! number from the System V ABI AMD64 supplement (section 4.1.1, `EM_X86_64` = 62).
//!
//! Everything is checked before anything is copied: a bad image is refused with an [`ElfError`]
//! that names the offending field or segment, and never panics the hypervisor. Segments are placed
//! at their physical address (`p_paddr`): the vCPU starts with paging off or identity-mapped.

use super::Size;
use alloc::vec::Vec;
use bitflags::bitflags;
use core::fmt;
use core::ops::Range;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: u16 = 56;
const MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
/// `e_phnum` value meaning "the real count is in section header 0" (not supported).
const PN_XNUM: u16 = 0xffff;

bitflags! {
    /// Segment permissions (`p_flags`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SegmentFlags: u32 {
        const X = 1;
        const W = 2;
        const R = 4;
    }
}

/// A validated ELF executable, borrowing its bytes from the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage<'a> {
    /// Guest-physical address of the first instruction, inside an executable segment.
    pub entry: u64,
    /// The non-empty `PT_LOAD` segments, in program-header order; no two overlap.
    pub segments: Vec<Segment<'a>>,
}

/// One loadable segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Guest-physical load address (`p_paddr`).
    pub gpa: u64,
    /// The bytes from the file (`p_filesz` of them); the rest up to `mem_size` is zero.
    pub data: &'a [u8],
    /// Size in guest memory (`p_memsz`), at least `data.len()`.
    pub mem_size: u64,
    pub flags: SegmentFlags,
}

impl Segment<'_> {
    /// The guest-physical range the segment occupies.
    pub fn range(&self) -> Range<u64> {
        self.gpa..self.gpa + self.mem_size
    }
}

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than the 64-byte file header.
    TooShort {
        len: usize,
    },
    BadMagic {
        found: [u8; 4],
    },
    /// `EI_CLASS` is not `ELFCLASS64`.
    NotElf64 {
        class: u8,
    },
    /// `EI_DATA` is not `ELFDATA2LSB`.
    NotLittleEndian {
        data: u8,
    },
    /// `EI_VERSION` or `e_version` is not `EV_CURRENT`.
    BadVersion {
        ident: u8,
        version: u32,
    },
    WrongMachine {
        machine: u16,
    },
    /// `e_type` is not `ET_EXEC` (relocatable, shared object, core...).
    NotExecutable {
        kind: u16,
    },
    /// `e_phentsize` is not 56.
    BadPhEntrySize {
        size: u16,
    },
    /// `e_phnum` is `PN_XNUM` (extended numbering).
    TooManyProgramHeaders,
    /// The program header table does not fit in the file.
    PhTableOutsideFile {
        offset: u64,
        count: u16,
        file_len: usize,
    },
    /// A segment's file bytes do not fit in the file.
    SegmentOutsideFile {
        index: usize,
        offset: u64,
        size: u64,
        file_len: usize,
    },
    /// `p_filesz` > `p_memsz`.
    FileLargerThanMemory {
        index: usize,
        file_size: u64,
        mem_size: u64,
    },
    /// `[gpa, gpa + mem_size)` is not inside `[0, ram_size)`.
    SegmentOutsideRam {
        index: usize,
        gpa: u64,
        mem_size: u64,
        ram_size: u64,
    },
    /// Two segments share guest memory.
    SegmentsOverlap {
        first: usize,
        second: usize,
        at: u64,
    },
    /// `e_entry` is in no executable segment.
    EntryNotInCode {
        entry: u64,
    },
    /// No non-empty `PT_LOAD` segment.
    NoLoadableSegment,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => {
                write!(f, "image is {len} bytes, shorter than an ELF64 header ({EHDR_SIZE})")
            }
            Self::BadMagic { found } => write!(f, "not an ELF file (magic {found:02x?})"),
            Self::NotElf64 { class } => write!(f, "not a 64-bit ELF file (class {class})"),
            Self::NotLittleEndian { data } => {
                write!(f, "not a little-endian ELF file (data encoding {data})")
            }
            Self::BadVersion { ident, version } => {
                write!(f, "unknown ELF version (ident {ident}, header {version})")
            }
            Self::WrongMachine { machine } => {
                write!(f, "not an x86_64 executable (machine {machine}, expected {EM_X86_64})")
            }
            Self::NotExecutable { kind } => {
                write!(f, "not an executable (type {kind}, expected {ET_EXEC})")
            }
            Self::BadPhEntrySize { size } => {
                write!(f, "program header entries are {size} bytes, expected {PHDR_SIZE}")
            }
            Self::TooManyProgramHeaders => {
                f.write_str("extended program header numbering is not supported")
            }
            Self::PhTableOutsideFile { offset, count, file_len } => write!(
                f,
                "program header table ({count} entries at {offset:#x}) lies outside the \
                 {file_len}-byte file"
            ),
            Self::SegmentOutsideFile { index, offset, size, file_len } => write!(
                f,
                "segment {index} file bytes [{offset:#x}, {:#x}) lie outside the {file_len}-byte \
                 file",
                u128::from(offset) + u128::from(size)
            ),
            Self::FileLargerThanMemory { index, file_size, mem_size } => write!(
                f,
                "segment {index} has {file_size:#x} file bytes but only {mem_size:#x} in memory"
            ),
            Self::SegmentOutsideRam { index, gpa, mem_size, ram_size } => write!(
                f,
                "segment {index} [{gpa:#x}, {:#x}) lies outside the partition's {} of RAM",
                u128::from(gpa) + u128::from(mem_size),
                Size(ram_size)
            ),
            Self::SegmentsOverlap { first, second, at } => {
                write!(f, "segments {first} and {second} overlap at {at:#x}")
            }
            Self::EntryNotInCode { entry } => {
                write!(f, "entry point {entry:#x} is not in an executable segment")
            }
            Self::NoLoadableSegment => f.write_str("no loadable segment"),
        }
    }
}

/// Reads little-endian fields at fixed offsets; callers check the bounds first.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(b)
    }
    fn u64(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }
}

/// Validates `image` as an x86_64 executable whose segments all fit in `[0, ram_size)`.
pub fn parse(image: &[u8], ram_size: u64) -> Result<ElfImage<'_>, ElfError> {
    parse_at(image, 0, ram_size)
}

/// Validates `image` for RAM at guest-physical `[ram_base, ram_base + ram_size)` (the
/// management partition's RAM is identity-mapped, so it does not start at 0).
pub fn parse_at(image: &[u8], ram_base: u64, ram_size: u64) -> Result<ElfImage<'_>, ElfError> {
    if image.len() < EHDR_SIZE {
        return Err(ElfError::TooShort { len: image.len() });
    }
    let h = Fields(image);
    let found = [image[0], image[1], image[2], image[3]];
    if found != MAGIC {
        return Err(ElfError::BadMagic { found });
    }
    if image[4] != ELFCLASS64 {
        return Err(ElfError::NotElf64 { class: image[4] });
    }
    if image[5] != ELFDATA2LSB {
        return Err(ElfError::NotLittleEndian { data: image[5] });
    }
    let version = h.u32(20);
    if u32::from(image[6]) != EV_CURRENT || version != EV_CURRENT {
        return Err(ElfError::BadVersion { ident: image[6], version });
    }
    let machine = h.u16(18);
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine { machine });
    }
    let kind = h.u16(16);
    if kind != ET_EXEC {
        return Err(ElfError::NotExecutable { kind });
    }
    let entry = h.u64(24);
    let phoff = h.u64(32);
    let phentsize = h.u16(54);
    let phnum = h.u16(56);
    if phentsize != PHDR_SIZE {
        return Err(ElfError::BadPhEntrySize { size: phentsize });
    }
    if phnum == PN_XNUM {
        return Err(ElfError::TooManyProgramHeaders);
    }
    let table = file_range(image, phoff, u64::from(phnum) * u64::from(PHDR_SIZE)).ok_or(
        ElfError::PhTableOutsideFile { offset: phoff, count: phnum, file_len: image.len() },
    )?;

    let mut segments = Vec::new();
    // Virtual ranges, only to translate a virtual entry point.
    let mut virt = Vec::new();
    for (index, ph) in table.chunks_exact(usize::from(PHDR_SIZE)).enumerate() {
        let p = Fields(ph);
        if p.u32(0) != PT_LOAD {
            continue;
        }
        let flags = SegmentFlags::from_bits_truncate(p.u32(4));
        let (offset, vaddr, paddr) = (p.u64(8), p.u64(16), p.u64(24));
        let (file_size, mem_size) = (p.u64(32), p.u64(40));
        let data = file_range(image, offset, file_size).ok_or(ElfError::SegmentOutsideFile {
            index,
            offset,
            size: file_size,
            file_len: image.len(),
        })?;
        if file_size > mem_size {
            return Err(ElfError::FileLargerThanMemory { index, file_size, mem_size });
        }
        if mem_size == 0 {
            continue;
        }
        if paddr < ram_base
            || paddr.checked_add(mem_size).is_none_or(|end| end - ram_base > ram_size)
        {
            return Err(ElfError::SegmentOutsideRam { index, gpa: paddr, mem_size, ram_size });
        }
        segments.push((index, Segment { gpa: paddr, data, mem_size, flags }));
        virt.push(vaddr);
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegment);
    }
    check_overlap(&segments)?;
    let entry = entry_gpa(entry, &segments, &virt)?;
    Ok(ElfImage { entry, segments: segments.into_iter().map(|(_, s)| s).collect() })
}

/// `image[offset..offset + size]`, or `None` where that is not inside the image.
fn file_range(image: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    image.get(start..end)
}

pub(super) fn check_overlap(segments: &[(usize, Segment<'_>)]) -> Result<(), ElfError> {
    let mut order: Vec<usize> = (0..segments.len()).collect();
    order.sort_by_key(|&i| segments[i].1.gpa);
    for pair in order.windows(2) {
        let (a, b) = (&segments[pair[0]], &segments[pair[1]]);
        if b.1.gpa < a.1.range().end {
            let (first, second) = (a.0.min(b.0), a.0.max(b.0));
            return Err(ElfError::SegmentsOverlap { first, second, at: b.1.gpa });
        }
    }
    Ok(())
}

/// The entry point as a guest-physical address: `e_entry` inside an executable segment's
/// physical range, or else inside its virtual range (translated to physical).
pub(super) fn entry_gpa(
    entry: u64,
    segments: &[(usize, Segment<'_>)],
    virt: &[u64],
) -> Result<u64, ElfError> {
    let code = || segments.iter().zip(virt).filter(|((_, s), _)| s.flags.contains(SegmentFlags::X));
    if code().any(|((_, s), _)| s.range().contains(&entry)) {
        return Ok(entry);
    }
    code()
        .find_map(|((_, s), &v)| {
            let offset = entry.checked_sub(v)?;
            // `then`, not `then_some`: the sum exists only for an offset inside the segment
            // (an entry far past it overflowed here; the fuzzer's find).
            (offset < s.mem_size).then(|| s.gpa + offset)
        })
        .ok_or(ElfError::EntryNotInCode { entry })
}

impl ElfImage<'_> {
    /// The lowest and highest guest-physical bytes the image occupies (bss included).
    pub fn extent(&self) -> Range<u64> {
        let start = self.segments.iter().map(|s| s.gpa).min().unwrap_or(0);
        let end = self.segments.iter().map(|s| s.range().end).max().unwrap_or(0);
        start..end
    }

    /// Copies every segment through the caller's guest-memory accessors: `write(gpa, bytes)` for
    /// the file bytes, then `zero(gpa, len)` for the rest of the segment (bss). Stops at the
    /// first error. `parse` has already checked every range against the partition's RAM.
    pub fn load_into<E>(
        &self,
        mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
        mut zero: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        for s in &self.segments {
            let file_size = s.data.len() as u64;
            if file_size > 0 {
                write(s.gpa, s.data)?;
            }
            if s.mem_size > file_size {
                zero(s.gpa + file_size, s.mem_size - file_size)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "elf_tests.rs"]
mod tests;
