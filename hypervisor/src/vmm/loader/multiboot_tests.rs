//! Host tests of the multiboot loader: header and ELF32 parsing, the information structure,
//! the memory map.

use super::*;
use alloc::collections::BTreeMap;
use alloc::vec;

/// A flag-16 kernel: header at file offset 0x40, loaded at 1 MiB.
fn aout(flags: u32, load_end: u32, bss_end: u32, entry: u32) -> Vec<u8> {
    let mut f = vec![0x90u8; 0x200];
    let h = 0x40;
    let words = [
        HEADER_MAGIC,
        flags,
        0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
        0x10_0040, // header_addr
        0x10_0000, // load_addr
        load_end,
        bss_end,
        entry,
    ];
    for (i, w) in words.iter().enumerate() {
        f[h + 4 * i..h + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    f
}

#[test]
fn aout_kludge_loads_at_the_header_addresses() {
    let f = aout(0x10003, 0x10_0100, 0x10_2000, 0x10_0080);
    let m = parse(&f, 0, 16 << 20).expect("valid");
    assert!(m.aout_kludge);
    assert_eq!(m.image.entry, 0x10_0080);
    let s = &m.image.segments[0];
    assert_eq!((s.gpa, s.data.len(), s.mem_size), (0x10_0000, 0x100, 0x2000));
    // load_end_addr 0: the whole file; bss_end_addr 0: no bss.
    let f = aout(0x10000, 0, 0, 0x10_0080);
    let m = parse(&f, 0, 16 << 20).expect("valid");
    assert_eq!(m.image.segments[0].mem_size, 0x200);
}

#[test]
fn malformed_headers_are_refused() {
    assert_eq!(parse(&[0u8; 64], 0, 16 << 20), Err(MultibootError::NoHeader));
    assert_eq!(parse(&[], 0, 16 << 20), Err(MultibootError::NoHeader));
    let mut f = aout(0x10000, 0, 0, 0x10_0080);
    f[0x48] ^= 1; // checksum
    assert_eq!(parse(&f, 0, 16 << 20), Err(MultibootError::BadChecksum { offset: 0x40 }));
    // Truncated inside the address fields.
    let f = aout(0x10000, 0, 0, 0x10_0080);
    assert_eq!(
        parse(&f[..0x50], 0, 16 << 20),
        Err(MultibootError::TruncatedHeader { offset: 0x40 })
    );
    // Truncated right after the magic.
    assert_eq!(
        parse(&f[..0x44], 0, 16 << 20),
        Err(MultibootError::TruncatedHeader { offset: 0x40 })
    );
    // An unknown requirement bit (3).
    let f = aout(0x10008, 0, 0, 0x10_0080);
    assert_eq!(parse(&f, 0, 16 << 20), Err(MultibootError::UnknownRequirements { bits: 8 }));
    // A header past the first 8 KiB is not looked for.
    let mut far = vec![0u8; SEARCH_BYTES];
    far.extend_from_slice(&aout(0x10000, 0, 0, 0x10_0080));
    assert_eq!(parse(&far, 0, 16 << 20), Err(MultibootError::NoHeader));
}

#[test]
fn bad_addresses_are_refused() {
    let cases = [
        aout(0x10000, 0x10_0000 - 1, 0, 0x10_0080), // load_end below load
        aout(0x10000, 0x10_1000, 0, 0x10_0080),     // past the file
        aout(0x10000, 0, 0x10_0100, 0x10_0080),     // bss_end inside the data
    ];
    for f in cases {
        assert!(matches!(parse(&f, 0, 16 << 20), Err(MultibootError::BadAddresses { .. })));
    }
    // Entry outside the image; image outside 1 MiB of RAM.
    let f = aout(0x10000, 0, 0, 0x20_0000);
    assert!(matches!(
        parse(&f, 0, 16 << 20),
        Err(MultibootError::Elf(ElfError::EntryNotInCode { .. }))
    ));
    let f = aout(0x10000, 0, 0, 0x10_0080);
    assert!(matches!(
        parse(&f, 0, 1 << 20),
        Err(MultibootError::Elf(ElfError::SegmentOutsideRam { .. }))
    ));
}

/// An ELF32 kernel with one PT_LOAD at 1 MiB and a flag-0 multiboot header in it.
fn elf32_kernel() -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
    (f[4], f[5], f[6]) = (1, 1, 1);
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&EM_386.to_le_bytes());
    f[24..28].copy_from_slice(&0x10_0010u32.to_le_bytes()); // e_entry
    f[28..32].copy_from_slice(&52u32.to_le_bytes()); // e_phoff
    f[42..44].copy_from_slice(&32u16.to_le_bytes());
    f[44..46].copy_from_slice(&1u16.to_le_bytes());
    let ph = [1u32, 0x100, 0x10_0000, 0x10_0000, 0x200, 0x800, 5];
    for (i, w) in ph.iter().enumerate() {
        f[52 + 4 * i..56 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    let h = 0x100;
    for (i, w) in [HEADER_MAGIC, 3, 0u32.wrapping_sub(HEADER_MAGIC + 3)].iter().enumerate() {
        f[h + 4 * i..h + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    f
}

#[test]
fn elf32_kernels_load_their_segments() {
    let f = elf32_kernel();
    let m = parse(&f, 0, 16 << 20).expect("valid");
    assert!(!m.aout_kludge);
    assert_eq!(m.image.entry, 0x10_0010);
    let s = &m.image.segments[0];
    assert_eq!((s.gpa, s.data.len(), s.mem_size), (0x10_0000, 0x200, 0x800));
}

#[test]
fn malformed_elf32_kernels_are_refused() {
    let mut f = elf32_kernel();
    f[4] = 2; // ELFCLASS64 without flag 16
    assert!(matches!(parse(&f, 0, 16 << 20), Err(MultibootError::NotElf32 { .. })));
    let mut f = elf32_kernel();
    f[18] = 62; // x86_64
    assert!(matches!(parse(&f, 0, 16 << 20), Err(MultibootError::NotElf32 { .. })));
    let mut f = elf32_kernel();
    f[52 + 16..52 + 20].copy_from_slice(&0x1000u32.to_le_bytes()); // filesz past the file
    assert!(matches!(
        parse(&f, 0, 16 << 20),
        Err(MultibootError::Elf(ElfError::SegmentOutsideFile { .. }))
    ));
    let mut f = elf32_kernel();
    f[28..32].copy_from_slice(&0xff00u32.to_le_bytes()); // phoff past the file
    assert!(matches!(
        parse(&f, 0, 16 << 20),
        Err(MultibootError::Elf(ElfError::PhTableOutsideFile { .. }))
    ));
    let mut f = elf32_kernel();
    f[24..28].copy_from_slice(&0x20_0000u32.to_le_bytes()); // entry outside
    assert!(matches!(
        parse(&f, 0, 16 << 20),
        Err(MultibootError::Elf(ElfError::EntryNotInCode { .. }))
    ));
    // Every truncation of a valid kernel is refused or parsed, never a panic.
    let f = elf32_kernel();
    for cut in 0..f.len() {
        let _ = parse(&f[..cut], 0, 16 << 20);
    }
}

#[test]
fn info_structure_follows_the_spec() {
    let mut mem = BTreeMap::new();
    let info = write_info(
        |gpa, bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                mem.insert(gpa + i as u64, *b);
            }
            Ok::<(), ()>(())
        },
        0x6000,
        &[(0, 32 << 20)],
        "console=ttyS0",
        &[
            ModuleEntry { start: 0x20_0000, end: 0x20_0123, string: "env NR_CPUS=1" },
            ModuleEntry { start: 0x20_1000, end: 0x20_1000, string: "empty" },
        ],
        &[],
    )
    .expect("writes succeed");
    let u32_at = |a: u64| u32::from_le_bytes(core::array::from_fn(|i| mem[&(a + i as u64)]));
    let u64_at = |a: u64| u64::from(u32_at(a)) | (u64::from(u32_at(a + 4)) << 32);
    assert_eq!(info, 0x6000);
    let flags = u32_at(info);
    assert_eq!(flags, 1 | 4 | 8 | 64 | 512);
    assert_eq!(u32_at(info + 4), 639);
    assert_eq!(u32_at(info + 8), 31 * 1024);
    let cmdline = u64::from(u32_at(info + 16));
    let text: Vec<u8> = (0..13).map(|i| mem[&(cmdline + i)]).collect();
    assert_eq!(&text, b"console=ttyS0");
    assert_eq!(mem[&(cmdline + 13)], 0);
    let (len, addr) = (u32_at(info + 44), u64::from(u32_at(info + 48)));
    assert_eq!(len, 4 * 24);
    let last = addr + 3 * 24;
    assert_eq!(u32_at(last), 20);
    assert_eq!((u64_at(last + 4), u64_at(last + 12), u32_at(last + 20)), (1 << 20, 31 << 20, 1));
    // The modules: count, list, strings (§3.3: mod_start, mod_end, string, reserved).
    let string_at =
        |a: u64| -> Vec<u8> { (a..).map(|i| mem[&i]).take_while(|&b| b != 0).collect() };
    let (count, list) = (u32_at(info + 20), u64::from(u32_at(info + 24)));
    assert_eq!(count, 2);
    assert_eq!((u32_at(list), u32_at(list + 4), u32_at(list + 12)), (0x20_0000, 0x20_0123, 0));
    assert_eq!(string_at(u64::from(u32_at(list + 8))), b"env NR_CPUS=1");
    assert_eq!((u32_at(list + 16), u32_at(list + 20)), (0x20_1000, 0x20_1000));
    assert_eq!(string_at(u64::from(u32_at(list + 24))), b"empty");
    // Nothing the structure points at overlaps anything else it points at.
    let mut spans = [
        (info, info + 88),
        (list, list + 32),
        (addr, addr + u64::from(len)),
        (cmdline, cmdline + 14),
        (u64::from(u32_at(info + 64)), u64::from(u32_at(info + 64)) + 8),
        (u64::from(u32_at(list + 8)), u64::from(u32_at(list + 8)) + 14),
        (u64::from(u32_at(list + 24)), u64::from(u32_at(list + 24)) + 6),
    ];
    spans.sort_unstable();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:x?}");
}

#[test]
fn module_count_and_strings_are_bounded() {
    let mut mem = BTreeMap::new();
    let long = "m".repeat(400);
    let many = [ModuleEntry { start: 0x20_0000, end: 0x20_0001, string: &long }; 12];
    let info = write_info(
        |gpa, bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                mem.insert(gpa + i as u64, *b);
            }
            Ok::<(), ()>(())
        },
        0,
        &[(0, 32 << 20)],
        "",
        &many,
        &[],
    )
    .unwrap();
    let u32_at = |a: u64| u32::from_le_bytes(core::array::from_fn(|i| mem[&(a + i as u64)]));
    assert_eq!(u32_at(info + 20), MODULES_MAX as u32);
    let last = u64::from(u32_at(u64::from(u32_at(info + 24)) + 16 * 7 + 8));
    assert_eq!(mem[&(last + MODULE_STRING_MAX as u64)], 0);
    // Nothing written past the information page.
    assert!(mem.keys().all(|&a| a < 0x6000 + INFO_BYTES), "{:#x}", mem.keys().max().unwrap());
}

#[test]
fn memory_map_of_a_guest_and_of_identity_blocks() {
    assert_eq!(
        memory_map(&[(0, 32 << 20)]),
        [
            (0, 639 << 10, 1),
            (639 << 10, 0xa0000 - (639 << 10), 2),
            (0xf0000, 0x10000, 2),
            (1 << 20, 31 << 20, 1)
        ]
    );
    // The management partition: low memory, then host RAM around the hypervisor's.
    let blocks = [(0, 0x9f000), (1 << 20, 15 << 20), (20 << 20, 100 << 20)];
    assert_eq!(
        memory_map(&blocks),
        [(0, 0x9f000, 1), (1 << 20, 15 << 20, 1), (20 << 20, 100 << 20, 1)]
    );
    let mut mem = BTreeMap::new();
    let info = write_info(
        |gpa, bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                mem.insert(gpa + i as u64, *b);
            }
            Ok::<(), ()>(())
        },
        0x20_0000,
        &blocks,
        "",
        &[],
        &[(0x9_fc00, 0x400, 2), (0x7ff_0000, 0x1_0000, 3)],
    )
    .unwrap();
    let u32_at = |a: u64| u32::from_le_bytes(core::array::from_fn(|i| mem[&(a + i as u64)]));
    assert_eq!(info, 0x20_0000);
    assert_eq!((u32_at(info + 4), u32_at(info + 8)), (0x9f000 >> 10, 15 << 10));
    // The firmware's entries with their types: the EBDA reserved, ACPI tables type 3.
    assert_eq!(u32_at(info + 44), 5 * 24);
    let mmap = u64::from(u32_at(info + 48));
    let entry = |i: u64| (u32_at(mmap + 24 * i + 4), u32_at(mmap + 24 * i + 20));
    assert_eq!(entry(1), (0x9_fc00, 2));
    assert_eq!(entry(4), (0x7ff_0000, 3));
}

#[test]
fn extra_entries_paint_over_the_ram_map() {
    let ram = [(0, 0x9_f000), (1 << 20, 15 << 20)];
    assert_eq!(
        memory_map_with(&ram, &[(0x9_fc00, 0x400, 2), (0xf_0000, 0x1_0000, 2), (0, 0, 4)]),
        [(0, 0x9_f000, 1), (0x9_fc00, 0x400, 2), (0xf_0000, 0x1_0000, 2), (1 << 20, 15 << 20, 1)]
    );
    // NVS over reserved over RAM; neighbours of one type merge.
    assert_eq!(
        memory_map_with(
            &[(1 << 20, 3 << 20)],
            &[(0x20_0000, 0x2000, 2), (0x20_1000, 0x2000, 4), (0x20_3000, 0x1000, 4)]
        ),
        [
            (1 << 20, 1 << 20, 1),
            (0x20_0000, 0x1000, 2),
            (0x20_1000, 0x3000, 4),
            (0x20_4000, 0x1f_c000, 1)
        ]
    );
}

#[test]
fn the_hypervisors_ranges_are_listed_reserved() {
    let ram = [(0, 0x9_f000), (1 << 20, 15 << 20), (20 << 20, 100 << 20)];
    assert_eq!(
        memory_map_with(&ram, &[(16 << 20, 4 << 20, 2), (120 << 20, 8 << 20, 2)]),
        [
            (0, 0x9_f000, 1),
            (1 << 20, 15 << 20, 1),
            (16 << 20, 4 << 20, 2),
            (20 << 20, 100 << 20, 1),
            (120 << 20, 8 << 20, 2)
        ]
    );
}
