//! Host tests of the ELF64 loader: header and program-header checks (every prefix and every
//! single-byte corruption of a good image is refused or loaded without a panic), loading.

use super::*;
use alloc::vec;

const MIB: u64 = 1 << 20;

/// One program header for [`build`].
#[derive(Clone, Copy)]
struct Ph {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn load(flags: u32, offset: u64, paddr: u64, filesz: u64, memsz: u64) -> Ph {
    Ph { kind: PT_LOAD, flags, offset, vaddr: paddr, paddr, filesz, memsz }
}

/// Assembles a file: header, program headers at 64, then `body` at 0x100.
fn build(entry: u64, phs: &[Ph], body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x100];
    f[0..4].copy_from_slice(&MAGIC);
    f[4] = ELFCLASS64;
    f[5] = ELFDATA2LSB;
    f[6] = 1;
    f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&PHDR_SIZE.to_le_bytes());
    f[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
    let mut table = Vec::new();
    for p in phs {
        table.extend_from_slice(&p.kind.to_le_bytes());
        table.extend_from_slice(&p.flags.to_le_bytes());
        for v in [p.offset, p.vaddr, p.paddr, p.filesz, p.memsz, 0x1000] {
            table.extend_from_slice(&v.to_le_bytes());
        }
    }
    f.truncate(64);
    f.extend_from_slice(&table);
    f.resize(0x100.max(f.len()), 0);
    f.extend_from_slice(body);
    f
}

const RX: u32 = 5;
const RW: u32 = 6;

/// Code at 1 MiB (16 bytes), data with bss at 2 MiB.
fn good() -> Vec<u8> {
    let body: Vec<u8> = (0..32).collect();
    let note = Ph { kind: 4, flags: 4, offset: 0, vaddr: 0, paddr: 0, filesz: 0, memsz: 0 };
    build(
        MIB + 4,
        &[load(RX, 0x100, MIB, 16, 16), note, load(RW, 0x110, 2 * MIB, 16, 0x1000)],
        &body,
    )
}

#[test]
fn parses_a_good_image() {
    let f = good();
    let img = parse(&f, 16 * MIB).unwrap();
    assert_eq!(img.entry, MIB + 4);
    assert_eq!(img.segments.len(), 2);
    let (code, data) = (&img.segments[0], &img.segments[1]);
    assert_eq!((code.gpa, code.mem_size), (MIB, 16));
    assert_eq!(code.data, &f[0x100..0x110]);
    assert_eq!(code.flags, SegmentFlags::R | SegmentFlags::X);
    assert_eq!((data.gpa, data.mem_size, data.data.len()), (2 * MIB, 0x1000, 16));
    assert_eq!(data.flags, SegmentFlags::R | SegmentFlags::W);
    assert_eq!(img.extent(), MIB..2 * MIB + 0x1000);
}

#[test]
fn loads_file_bytes_and_zeroes_bss() {
    let f = good();
    let img = parse(&f, 4 * MIB).unwrap();
    let mut ram = vec![0xaau8; 4 * MIB as usize];
    let mut zeroed = Vec::new();
    img.load_into::<()>(
        |gpa, bytes| {
            let at = gpa as usize;
            ram[at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        },
        |gpa, len| {
            zeroed.push((gpa, len));
            Ok(())
        },
    )
    .unwrap();
    let m = MIB as usize;
    assert_eq!(&ram[m..m + 16], &(0..16).collect::<Vec<u8>>()[..]);
    assert_eq!(&ram[2 * m..2 * m + 16], &(16..32).collect::<Vec<u8>>()[..]);
    assert_eq!(zeroed, [(2 * MIB + 16, 0x1000 - 16)]);
    assert_eq!(img.load_into(|_, _| Err("full"), |_, _| Ok(())), Err("full"));
}

#[test]
fn every_prefix_is_refused_without_panicking() {
    let f = good();
    for len in 0..f.len() {
        assert!(parse(&f[..len], 16 * MIB).is_err(), "prefix {len}");
    }
    assert!(parse(&f, 16 * MIB).is_ok());
}

#[test]
fn every_single_byte_corruption_is_handled() {
    let f = good();
    for at in 0..f.len() {
        for v in [0u8, 0x7f, 0xff] {
            let mut g = f.clone();
            g[at] = v;
            let _ = parse(&g, 16 * MIB);
        }
    }
}

/// Parses [`good`] after `patch`, returning the entry point.
fn with_header(patch: impl FnOnce(&mut Vec<u8>)) -> Result<u64, ElfError> {
    let mut f = good();
    patch(&mut f);
    parse(&f, 16 * MIB).map(|img| img.entry)
}

#[test]
fn refuses_bad_headers() {
    assert_eq!(
        with_header(|f| f[0] = b'M').unwrap_err(),
        ElfError::BadMagic { found: [b'M', b'E', b'L', b'F'] }
    );
    assert_eq!(with_header(|f| f[4] = 1).unwrap_err(), ElfError::NotElf64 { class: 1 });
    assert_eq!(with_header(|f| f[5] = 2).unwrap_err(), ElfError::NotLittleEndian { data: 2 });
    assert_eq!(
        with_header(|f| f[20] = 2).unwrap_err(),
        ElfError::BadVersion { ident: 1, version: 2 }
    );
    assert_eq!(with_header(|f| f[18] = 3).unwrap_err(), ElfError::WrongMachine { machine: 3 });
    assert_eq!(with_header(|f| f[16] = 3).unwrap_err(), ElfError::NotExecutable { kind: 3 });
    assert_eq!(with_header(|f| f[54] = 64).unwrap_err(), ElfError::BadPhEntrySize { size: 64 });
    assert_eq!(
        with_header(|f| f[56..58].copy_from_slice(&[0xff, 0xff])).unwrap_err(),
        ElfError::TooManyProgramHeaders
    );
    let far = u64::MAX - 8;
    assert!(matches!(
        with_header(|f| f[32..40].copy_from_slice(&far.to_le_bytes())).unwrap_err(),
        ElfError::PhTableOutsideFile { offset, count: 3, .. } if offset == far
    ));
    assert!(matches!(
        with_header(|f| f[56] = 200).unwrap_err(),
        ElfError::PhTableOutsideFile { count: 200, .. }
    ));
}

/// Parses a file with these program headers and 64 bytes of body, returning the entry point.
fn one(entry: u64, phs: &[Ph]) -> Result<u64, ElfError> {
    parse(&build(entry, phs, &[0x90; 64]), 16 * MIB).map(|img| img.entry)
}

#[test]
fn refuses_segment_outside_file() {
    let err = one(MIB, &[load(RX, 0x100, MIB, 65, 65)]).unwrap_err();
    assert_eq!(
        err,
        ElfError::SegmentOutsideFile { index: 0, offset: 0x100, size: 65, file_len: 0x140 }
    );
    let err = one(MIB, &[load(RX, u64::MAX, MIB, 2, 2)]).unwrap_err();
    assert!(matches!(err, ElfError::SegmentOutsideFile { offset: u64::MAX, .. }));
    let err = one(MIB, &[load(RX, 0x100, MIB, u64::MAX, u64::MAX)]).unwrap_err();
    assert!(matches!(err, ElfError::SegmentOutsideFile { size: u64::MAX, .. }));
}

#[test]
fn refuses_file_larger_than_memory() {
    let err = one(MIB, &[load(RX, 0x100, MIB, 16, 8)]).unwrap_err();
    assert_eq!(err, ElfError::FileLargerThanMemory { index: 0, file_size: 16, mem_size: 8 });
}

#[test]
fn refuses_segment_outside_ram() {
    let code = load(RX, 0x100, MIB, 16, 16);
    let err = one(MIB, &[code, code, load(RW, 0x100, 2 * MIB, 16, 0x220_0000)]).unwrap_err();
    assert_eq!(
        err,
        ElfError::SegmentOutsideRam {
            index: 2,
            gpa: 2 * MIB,
            mem_size: 0x220_0000,
            ram_size: 16 * MIB
        }
    );
    assert_eq!(
        err.to_string(),
        "segment 2 [0x200000, 0x2400000) lies outside the partition's 16 MiB of RAM"
    );
    // Ends exactly at the top of RAM: fine.
    assert!(one(MIB, &[code, load(RW, 0, 15 * MIB, 0, MIB)]).is_ok());
    let err = one(MIB, &[code, load(RW, 0, 15 * MIB, 0, MIB + 1)]).unwrap_err();
    assert!(matches!(err, ElfError::SegmentOutsideRam { index: 1, .. }));
}

#[test]
fn refuses_overflowing_sizes() {
    let code = load(RX, 0x100, MIB, 16, 16);
    let err = one(MIB, &[code, load(RW, 0, 2 * MIB, 0, u64::MAX)]).unwrap_err();
    assert!(matches!(err, ElfError::SegmentOutsideRam { index: 1, mem_size: u64::MAX, .. }));
    assert_eq!(
        err.to_string(),
        "segment 1 [0x200000, 0x100000000001fffff) lies outside the partition's 16 MiB of RAM"
    );
    let err = one(MIB, &[code, load(RW, 0, u64::MAX, 0, 1)]).unwrap_err();
    assert!(matches!(err, ElfError::SegmentOutsideRam { gpa: u64::MAX, .. }));
}

#[test]
fn refuses_overlapping_segments() {
    let err = one(MIB, &[load(RW, 0, 2 * MIB, 0, 0x1000), load(RX, 0x100, MIB, 16, MIB + 1)])
        .unwrap_err();
    assert_eq!(err, ElfError::SegmentsOverlap { first: 0, second: 1, at: 2 * MIB });
    // Touching is not overlapping.
    assert!(one(MIB, &[load(RX, 0x100, MIB, 16, MIB), load(RW, 0, 2 * MIB, 0, 1)]).is_ok());
}

#[test]
fn refuses_entry_outside_code() {
    let code = load(RX, 0x100, MIB, 16, 16);
    let data = load(RW, 0, 2 * MIB, 0, 16);
    for entry in [0, MIB - 1, MIB + 16, 2 * MIB, u64::MAX] {
        assert_eq!(
            one(entry, &[code, data]).unwrap_err(),
            ElfError::EntryNotInCode { entry },
            "{entry:#x}"
        );
    }
    assert_eq!(one(MIB + 15, &[code, data]).unwrap(), MIB + 15);
}

#[test]
fn translates_a_virtual_entry_point() {
    let high = 0xffff_ffff_8000_0000;
    let code = Ph { vaddr: high, ..load(RX, 0x100, MIB, 16, 16) };
    assert_eq!(one(high + 8, &[code]).unwrap(), MIB + 8);
    assert_eq!(one(MIB + 8, &[code]).unwrap(), MIB + 8);
    assert!(one(high + 16, &[code]).is_err());
}

#[test]
fn refuses_images_without_loadable_segments() {
    assert_eq!(one(MIB, &[]).unwrap_err(), ElfError::NoLoadableSegment);
    let note = Ph { kind: 4, ..load(RX, 0x100, MIB, 16, 16) };
    assert_eq!(one(MIB, &[note]).unwrap_err(), ElfError::NoLoadableSegment);
    let empty = load(RX, 0, MIB, 0, 0);
    assert_eq!(one(MIB, &[empty]).unwrap_err(), ElfError::NoLoadableSegment);
}

#[test]
fn too_short_message() {
    assert_eq!(parse(&[], MIB).unwrap_err(), ElfError::TooShort { len: 0 });
    assert_eq!(
        ElfError::TooShort { len: 3 }.to_string(),
        "image is 3 bytes, shorter than an ELF64 header (64)"
    );
}
