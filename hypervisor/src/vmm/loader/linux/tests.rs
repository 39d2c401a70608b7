//! Host tests on synthetic setup headers built byte by byte from boot.rst.

use super::*;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The fields a synthetic bzImage is made from.
#[derive(Clone, Copy)]
struct Spec {
    version: u16,
    setup_sects: u8,
    loadflags: u8,
    xloadflags: u16,
    pref_address: u64,
    kernel_alignment: u32,
    relocatable: u8,
    init_size: u32,
    initrd_addr_max: u32,
    cmdline_size: u32,
    kernel_len: usize,
}

const SPEC: Spec = Spec {
    version: 0x020f,
    setup_sects: 4,
    loadflags: LOADED_HIGH,
    xloadflags: XLF_KERNEL_64,
    pref_address: 16 * MIB,
    kernel_alignment: 2 << 20,
    relocatable: 1,
    init_size: 4 << 20,
    initrd_addr_max: 0x7fff_ffff,
    cmdline_size: 2047,
    kernel_len: 0x2000,
};

/// Bytes the synthetic image carries after its `syssize` paragraphs (as a signed kernel does).
const TRAILER: usize = 16;

/// A bzImage: boot sector and setup code with the header, then `kernel_len` bytes of kernel
/// (`syssize` = kernel_len / 16), then a trailer that is not part of the kernel.
fn image(s: Spec) -> Vec<u8> {
    let sects = if s.setup_sects == 0 { 4 } else { usize::from(s.setup_sects) };
    let setup = (sects + 1) * 512;
    let mut f = vec![0u8; setup + s.kernel_len + TRAILER];
    let mut put = |at: usize, b: &[u8]| f[at..at + b.len()].copy_from_slice(b);
    put(0x1f1, &[s.setup_sects]);
    put(0x1f2, &0x1234u16.to_le_bytes()); // root_flags: a marker the zero page must copy
    put(0x1f4, &((s.kernel_len / 16) as u32).to_le_bytes());
    put(0x1fe, &0xaa55u16.to_le_bytes());
    put(0x200, &[0xeb, 0x6a]); // jmp to 0x26c: the header ends there
    put(0x202, b"HdrS");
    put(0x206, &s.version.to_le_bytes());
    put(0x211, &[s.loadflags]);
    put(0x214, &0x10_0000u32.to_le_bytes());
    put(0x22c, &s.initrd_addr_max.to_le_bytes());
    put(0x230, &s.kernel_alignment.to_le_bytes());
    put(0x234, &[s.relocatable, 21]);
    put(0x236, &s.xloadflags.to_le_bytes());
    put(0x238, &s.cmdline_size.to_le_bytes());
    put(0x258, &s.pref_address.to_le_bytes());
    put(0x260, &s.init_size.to_le_bytes());
    put(0x26c, &[0xfa, 0xfc]); // setup code after the header: cli; cld
    for (i, b) in f[setup..].iter_mut().enumerate() {
        *b = (i as u8) ^ 0x5a;
    }
    f
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n].iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x))
}

#[test]
fn a_valid_image_parses() {
    let f = image(SPEC);
    let k = parse(&f).expect("valid");
    assert!(is_bzimage(&f));
    assert_eq!(k.version, 0x020f);
    assert_eq!(k.setup_sects, 4);
    assert_eq!(k.header.len(), 0x26c - 0x1f1);
    assert_eq!(k.header[0x202 - 0x1f1..0x206 - 0x1f1], *b"HdrS");
    assert_eq!(k.kernel.len(), 0x2000, "syssize paragraphs, not the trailer");
    assert_eq!(k.kernel.as_ptr(), f[5 * 512..].as_ptr());
    assert_eq!(
        (k.pref_address, k.kernel_alignment, k.relocatable_kernel, k.init_size),
        (16 * MIB, 2 << 20, true, 4 << 20)
    );
    assert_eq!((k.initrd_addr_max, k.cmdline_size, k.xloadflags), (0x7fff_ffff, 2047, 1));
    assert_eq!((k.loadflags, k.code32_start), (LOADED_HIGH, 0x10_0000));
    assert!(k.has_64bit_entry());
    assert_eq!(k.window(), 4 * MIB);
    // setup_sects 0 means 4; more sectors move the kernel.
    let f = image(Spec { setup_sects: 0, ..SPEC });
    let k = parse(&f).unwrap();
    assert_eq!((k.setup_sects, k.kernel.as_ptr()), (4, f[5 * 512..].as_ptr()));
    let f = image(Spec { setup_sects: 30, ..SPEC });
    assert_eq!(parse(&f).unwrap().kernel.as_ptr(), f[31 * 512..].as_ptr());
    // A window at least the image, page-rounded.
    let f = image(Spec { init_size: 0x1000, kernel_len: 0x2010, ..SPEC });
    assert_eq!(parse(&f).unwrap().window(), 0x3000);
}

#[test]
fn malformed_images_get_their_own_errors() {
    let f = image(SPEC);
    let mut no_flag = f.clone();
    no_flag[0x1fe] = 0;
    assert_eq!(
        parse(&no_flag),
        Err(LinuxError::NotBzImage { boot_flag: 0xaa00, header: HDRS_MAGIC })
    );
    assert!(!is_bzimage(&no_flag));
    let mut no_hdrs = f.clone();
    no_hdrs[0x205] = b'Z';
    assert_eq!(
        parse(&no_hdrs),
        Err(LinuxError::NotBzImage { boot_flag: 0xaa55, header: 0x5a726448 })
    );
    assert_eq!(parse(&[0u8; 100]), Err(LinuxError::NotBzImage { boot_flag: 0, header: 0 }));
    let old = image(Spec { version: 0x020b, ..SPEC });
    assert_eq!(parse(&old), Err(LinuxError::ProtocolTooOld { found: 0x020b, need: 0x020c }));
    assert!(is_bzimage(&old), "an old bzImage is still a bzImage");
    let zimage = image(Spec { loadflags: 0, ..SPEC });
    assert_eq!(parse(&zimage), Err(LinuxError::NotLoadedHigh { loadflags: 0 }));
    assert!(!is_bzimage(&zimage));
    assert_eq!(parse(&f[..0x240]), Err(LinuxError::TooShort { len: 0x240, need: 0x268 }));
    // Shorter than the setup code; the kernel cut short of syssize.
    assert_eq!(parse(&f[..0x400]), Err(LinuxError::Truncated { len: 0x400, need: 0x2a00 }));
    let cut = 5 * 512 + 0x2000 - 1;
    assert_eq!(parse(&f[..cut]), Err(LinuxError::Truncated { len: cut, need: 5 * 512 + 0x2000 }));
    let mut short_header = f.clone();
    short_header[0x201] = 0x10;
    assert_eq!(parse(&short_header), Err(LinuxError::BadHeaderLength { end: 0x212 }));
    short_header[0x201] = 0x80; // a backward jump
    assert_eq!(parse(&short_header), Err(LinuxError::BadHeaderLength { end: 0x182 }));
    let odd = image(Spec { kernel_alignment: 0x30_0000, ..SPEC });
    assert_eq!(parse(&odd), Err(LinuxError::BadKernelAlignment { alignment: 0x30_0000 }));
    // kernel_alignment only matters for a relocatable kernel.
    assert!(parse(&image(Spec { kernel_alignment: 0, relocatable: 0, ..SPEC })).is_ok());
}

#[test]
fn errors_name_the_field_and_the_values() {
    let text = |e: LinuxError| e.to_string();
    assert!(text(LinuxError::ProtocolTooOld { found: 0x020b, need: 0x020c }).contains("2.11"));
    assert!(text(LinuxError::ProtocolTooOld { found: 0x020b, need: 0x020c }).contains("2.12"));
    assert!(text(LinuxError::NotBzImage { boot_flag: 0, header: 0 }).contains("0xaa55"));
    assert!(text(LinuxError::NotBzImage { boot_flag: 0xaa55, header: 0 }).contains("HdrS"));
    let long = text(LinuxError::CmdlineTooLong { len: 3000, max: 2047 });
    assert!(long.contains("3000") && long.contains("cmdline_size: 2047"));
    let ram = text(LinuxError::RamTooSmall { need: 64 * MIB, from: 16 * MIB, have: 16 * MIB });
    assert!(ram.contains("64 MiB") && ram.contains("init_size") && ram.contains("0x1000000"));
    assert!(text(LinuxError::No64BitEntry { xloadflags: 0 }).contains("XLF_KERNEL_64"));
    let rd = text(LinuxError::InitrdTooLarge { size: 40 * MIB, limit: 32 * MIB, largest: MIB });
    assert!(rd.contains("40 MiB") && rd.contains("initrd_addr_max"));
}

/// A partition with RAM from 0.
fn ram(size: u64) -> [(u64, u64); 1] {
    [(0, size)]
}

#[test]
fn the_kernel_goes_at_pref_address_when_it_fits() {
    let f = image(SPEC);
    let k = parse(&f).unwrap();
    let l = plan(&k, &ram(256 * MIB), None, 20).unwrap();
    assert_eq!((l.kernel, l.kernel_window, l.entry32), (16 * MIB, 4 * MIB, 16 * MIB));
    assert_eq!(l.entry64, Some(16 * MIB + 0x200));
    assert_eq!(l.require_entry64(&k), Ok(16 * MIB + 0x200));
    assert_eq!((l.cmdline, l.boot_params, l.initrd), (CMDLINE_GPA, BOOT_PARAMS_GPA, None));
    // Exactly enough RAM.
    assert_eq!(plan(&k, &ram(20 * MIB), None, 0).unwrap().kernel, 16 * MIB);
    // No 64-bit entry without XLF_KERNEL_64.
    let f = image(Spec { xloadflags: 0, ..SPEC });
    let k = parse(&f).unwrap();
    let l = plan(&k, &ram(256 * MIB), None, 0).unwrap();
    assert_eq!(l.entry64, None);
    assert_eq!(l.require_entry64(&k), Err(LinuxError::No64BitEntry { xloadflags: 0 }));
}

#[test]
fn a_relocatable_kernel_moves_up_aligned_when_pref_address_is_not_ram() {
    let f = image(SPEC);
    let k = parse(&f).unwrap();
    let blocks = [(0, 640 << 10), (0x3010_0000, 256 * MIB)];
    let l = plan(&k, &blocks, None, 0).unwrap();
    assert_eq!(l.kernel, 0x3020_0000, "the first 2 MiB boundary in the block");
    // A block above pref_address too small for init_size is skipped for the next one.
    let blocks = [(0, MIB), (16 * MIB, 3 * MIB), (40 * MIB + 0x1000, 8 * MIB)];
    assert_eq!(plan(&k, &blocks, None, 0).unwrap().kernel, 42 * MIB);
    // Never below pref_address: the decompressor would move the kernel up to it.
    let blocks = [(0, 15 * MIB), (16 * MIB, MIB)];
    assert_eq!(
        plan(&k, &blocks, None, 0),
        Err(LinuxError::RamTooSmall { need: 4 * MIB, from: 16 * MIB, have: MIB })
    );
    // Nor at or above 4 GiB.
    assert!(matches!(
        plan(&k, &[(0, MIB), (4 * GIB, GIB)], None, 0),
        Err(LinuxError::RamTooSmall { have: 0, .. })
    ));
}

#[test]
fn ram_smaller_than_init_size_is_refused() {
    let f = image(Spec { init_size: 64 << 20, ..SPEC });
    let k = parse(&f).unwrap();
    assert_eq!(
        plan(&k, &ram(32 * MIB), None, 0),
        Err(LinuxError::RamTooSmall { need: 64 * MIB, from: 16 * MIB, have: 16 * MIB })
    );
    assert_eq!(plan(&k, &ram(80 * MIB), None, 0).unwrap().kernel, 16 * MIB);
}

#[test]
fn a_fixed_kernel_runs_at_pref_address_or_nowhere() {
    let f = image(Spec { relocatable: 0, pref_address: 0x30_0000, ..SPEC });
    let k = parse(&f).unwrap();
    assert_eq!(plan(&k, &ram(64 * MIB), None, 0).unwrap().kernel, 0x30_0000);
    assert_eq!(
        plan(&k, &[(0, MIB), (8 * MIB, 64 * MIB)], None, 0),
        Err(LinuxError::FixedAddressNotInRam { pref_address: 0x30_0000, need: 4 * MIB })
    );
}

#[test]
fn the_command_line_is_checked_against_cmdline_size() {
    let f = image(Spec { cmdline_size: 16, ..SPEC });
    let k = parse(&f).unwrap();
    assert!(plan(&k, &ram(64 * MIB), None, 16).is_ok());
    assert_eq!(
        plan(&k, &ram(64 * MIB), None, 17),
        Err(LinuxError::CmdlineTooLong { len: 17, max: 16 })
    );
    // A huge cmdline_size is capped by the low RAM the command line has.
    let f = image(Spec { cmdline_size: u32::MAX, ..SPEC });
    let k = parse(&f).unwrap();
    let room = LOW_RAM_END - CMDLINE_GPA - 1;
    assert!(plan(&k, &ram(64 * MIB), None, room as usize).is_ok());
    assert_eq!(
        plan(&k, &ram(64 * MIB), None, room as usize + 1),
        Err(LinuxError::CmdlineTooLong { len: room as usize + 1, max: room })
    );
    // The zero page and the command line need low RAM.
    assert_eq!(
        plan(&k, &[(16 * MIB, 64 * MIB)], None, 0),
        Err(LinuxError::LowRamMissing { start: BOOT_PARAMS_GPA, end: BOOT_PARAMS_GPA + 4096 })
    );
}

/// `[a, a + al)` and `[b, b + bl)` share no byte.
fn disjoint((a, al): (u64, u64), (b, bl): (u64, u64)) -> bool {
    a + al <= b || b + bl <= a
}

#[test]
fn the_initrd_goes_high_page_aligned_below_initrd_addr_max() {
    let f = image(SPEC);
    let k = parse(&f).unwrap();
    let size = 0x12345;
    let l = plan(&k, &ram(256 * MIB), Some(size), 10).unwrap();
    let (at, len) = l.initrd.unwrap();
    assert_eq!((at, len), ((256 * MIB - size) & !0xfff, size));
    assert!(disjoint((at, len), (l.kernel, l.kernel_window)));
    // initrd_addr_max is the last byte it may occupy.
    let f = image(Spec { initrd_addr_max: (64 << 20) - 1, ..SPEC });
    let k = parse(&f).unwrap();
    let (at, _) = plan(&k, &ram(256 * MIB), Some(MIB), 0).unwrap().initrd.unwrap();
    assert_eq!(at, 63 * MIB);
    // RAM ending inside the kernel's window above: the initrd goes below the kernel.
    let f = image(Spec { init_size: 16 << 20, ..SPEC });
    let k = parse(&f).unwrap();
    let l = plan(&k, &ram(32 * MIB), Some(size), 0).unwrap();
    let (at, len) = l.initrd.unwrap();
    assert_eq!(at, (16 * MIB - size) & !0xfff);
    for other in [(l.kernel, l.kernel_window), (0, MIB)] {
        assert!(disjoint((at, len), other));
    }
    // An empty initrd is none.
    assert_eq!(plan(&k, &ram(32 * MIB), Some(0), 0).unwrap().initrd, None);
}

#[test]
fn an_initrd_too_large_for_ram_below_initrd_addr_max_is_refused() {
    let f = image(Spec { initrd_addr_max: (32 << 20) - 1, ..SPEC });
    let k = parse(&f).unwrap();
    // Below 32 MiB: [1, 16) MiB free, the kernel's window at [16, 20), then [20, 32).
    assert_eq!(
        plan(&k, &ram(GIB), Some(16 * MIB), 0),
        Err(LinuxError::InitrdTooLarge { size: 16 * MIB, limit: 32 * MIB, largest: 15 * MIB })
    );
    assert_eq!(plan(&k, &ram(GIB), Some(15 * MIB), 0).unwrap().initrd, Some((MIB, 15 * MIB)));
    // A kernel that takes its ramdisk anywhere gets it as high as RAM goes.
    let xlf = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    let f = image(Spec { initrd_addr_max: (32 << 20) - 1, xloadflags: xlf, ..SPEC });
    let k = parse(&f).unwrap();
    let blocks = [(0, GIB), (4 * GIB, GIB)];
    let l = plan(&k, &blocks, Some(16 * MIB), 0).unwrap();
    assert_eq!(l.initrd, Some((5 * GIB - 16 * MIB, 16 * MIB)));
    assert!(plan(&k, &ram(64 * MIB), Some(64 * MIB), 0).is_err());
}

#[test]
fn e820_lists_ram_and_reserved_sorted_and_disjoint() {
    let reserved = [(0xfee0_0000, 0x1000, 2), (0, 0x7000, 2), (64 * MIB, 0x2000, 2)];
    let map = e820_map(&ram(256 * MIB), &reserved).unwrap();
    assert_eq!(
        map,
        [
            (0, 0x7000, E820_RESERVED),
            (0x7000, (639 << 10) - 0x7000, E820_RAM),
            (639 << 10, 0x400, E820_RESERVED),
            (0xf_0000, 0x1_0000, E820_RESERVED),
            (MIB, 63 * MIB, E820_RAM),
            (64 * MIB, 0x2000, E820_RESERVED),
            (64 * MIB + 0x2000, 192 * MIB - 0x2000, E820_RAM),
            (0xfee0_0000, 0x1000, E820_RESERVED),
        ]
    );
    for w in map.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "sorted and disjoint: {w:?}");
    }
    // Adjacent blocks of one type merge; too many entries is an error.
    let blocks = [(0, 640 << 10), (MIB, MIB), (2 * MIB, MIB)];
    let map = e820_map(&blocks, &[]).unwrap();
    assert_eq!(map.last(), Some(&(MIB, 2 * MIB, E820_RAM)));
    let many: Vec<E820Entry> = (0..200).map(|i| (2 * MIB + i * 0x2000, 0x1000, 2)).collect();
    assert_eq!(
        e820_map(&ram(GIB), &many),
        Err(LinuxError::TooManyE820Entries { count: 3 + 1 + 200 + 200 })
    );
}

/// Runs [`plan`] and [`load`] and returns the writes by address.
fn load_all(
    f: &[u8],
    blocks: &[(u64, u64)],
    initrd: Option<&[u8]>,
    cmdline: &str,
    reserved: &[E820Entry],
) -> (Layout, alloc::collections::BTreeMap<u64, Vec<u8>>) {
    let k = parse(f).unwrap();
    let l = plan(&k, blocks, initrd.map(|d| d.len() as u64), cmdline.len()).unwrap();
    let mut writes = alloc::collections::BTreeMap::new();
    load(&k, &l, initrd, cmdline, blocks, reserved, |gpa, bytes: &[u8]| {
        assert!(writes.insert(gpa, bytes.to_vec()).is_none(), "one write per address");
        Ok::<(), ()>(())
    })
    .unwrap();
    (l, writes)
}

#[test]
fn the_zero_page_has_each_field_at_its_offset() {
    let mut f = image(Spec { loadflags: LOADED_HIGH | CAN_USE_HEAP, ..SPEC });
    f[0x250] = 0x77; // a setup_data pointer in the file is not passed on
    f[0x1f0] = 0x99; // before the header: not copied
    let rd = vec![0xa5u8; 0x3000];
    let (l, w) = load_all(&f, &ram(256 * MIB), Some(&rd), "console=ttyS0", &[(0, 0x7000, 2)]);
    let zp = &w[&BOOT_PARAMS_GPA];
    assert_eq!(zp.len(), 4096);
    let kernel = &f[5 * 512..5 * 512 + 0x2000];
    assert_eq!(w[&l.kernel], kernel);
    assert_eq!(w[&CMDLINE_GPA], b"console=ttyS0\0");
    let (rd_at, rd_len) = l.initrd.unwrap();
    assert_eq!((w[&rd_at].as_slice(), rd_len), (rd.as_slice(), 0x3000));
    assert!(zp[..0x1e8].iter().chain(&zp[0x1e9..0x1f1]).all(|&b| b == 0), "zeros before");
    // The header as the file has it, the loader's fields written over it.
    assert_eq!(zp[0x1f1], 4);
    assert_eq!(le(zp, 0x1f2, 2), 0x1234, "root_flags copied");
    assert_eq!(&zp[0x202..0x206], b"HdrS");
    assert_eq!(le(zp, 0x206, 2), 0x020f);
    assert_eq!(le(zp, 0x1fa, 2), 0xffff, "vid_mode normal");
    assert_eq!(zp[0x210], 0xff, "type_of_loader");
    assert_eq!(zp[0x211], LOADED_HIGH, "loadflags without CAN_USE_HEAP");
    assert_eq!(le(zp, 0x224, 2), 0, "heap_end_ptr");
    assert_eq!(le(zp, 0x214, 4), l.kernel, "code32_start");
    assert_eq!((le(zp, 0x218, 4), le(zp, 0x21c, 4)), (rd_at, 0x3000));
    assert_eq!((le(zp, 0x0c0, 4), le(zp, 0x0c4, 4)), (0, 0));
    assert_eq!((le(zp, 0x228, 4), le(zp, 0x0c8, 4)), (CMDLINE_GPA, 0));
    assert_eq!(le(zp, 0x230, 4), 2 << 20, "kernel_alignment as read");
    assert_eq!(le(zp, 0x238, 4), 2047);
    assert_eq!(le(zp, 0x250, 8), 0, "setup_data");
    assert_eq!(le(zp, 0x258, 8), 16 * MIB);
    assert!(zp[0x26c..0x2d0].iter().all(|&b| b == 0), "nothing past the header's end");
    // The memory map: count at 0x1e8, 20-byte entries from 0x2d0.
    let map = e820_map(&ram(256 * MIB), &[(0, 0x7000, 2)]).unwrap();
    assert_eq!(zp[0x1e8] as usize, map.len());
    for (i, &(start, len, kind)) in map.iter().enumerate() {
        let at = 0x2d0 + 20 * i;
        assert_eq!(
            (le(zp, at, 8), le(zp, at + 8, 8), le(zp, at + 16, 4)),
            (start, len, kind.into())
        );
    }
    assert!(zp[0x2d0 + 20 * map.len()..].iter().all(|&b| b == 0));
}

#[test]
fn an_initrd_above_4_gib_fills_the_high_halves() {
    let xlf = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    let f = image(Spec { initrd_addr_max: (32 << 20) - 1, xloadflags: xlf, ..SPEC });
    let rd = vec![1u8; 20 << 20];
    let blocks = [(0, GIB), (4 * GIB, GIB)];
    let (l, w) = load_all(&f, &blocks, Some(&rd), "", &[]);
    let zp = &w[&BOOT_PARAMS_GPA];
    let at = 5 * GIB - (20 << 20);
    assert_eq!(l.initrd, Some((at, 20 << 20)));
    assert_eq!((le(zp, 0x218, 4), le(zp, 0x0c0, 4)), (at & 0xffff_ffff, 1));
    assert_eq!((le(zp, 0x21c, 4), le(zp, 0x0c4, 4)), (20 << 20, 0));
    assert_eq!(w[&CMDLINE_GPA], b"\0");
}

/// Any byte mutation of a valid image: `parse`, `plan` and `load` refuse or succeed, never
/// panic, and what they accept stays inside the partition's RAM.
#[test]
fn mutated_images_never_panic() {
    let base = image(Spec { setup_sects: 1, kernel_len: 0x400, ..SPEC });
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let blocks = [(0, 64 * MIB), (4 * GIB, 64 * MIB)];
    let (mut parsed, mut planned) = (0, 0);
    for _ in 0..20_000 {
        let mut f = base.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly the header, sometimes anywhere.
            let at = if next() % 4 == 0 {
                next() as usize % f.len()
            } else {
                0x1f0 + next() as usize % 0x80
            };
            f[at] = next() as u8;
        }
        if next() % 16 == 0 {
            f.truncate(next() as usize % f.len());
        }
        let Ok(k) = parse(&f) else { continue };
        parsed += 1;
        let initrd = (next() % 2 == 0).then(|| next() % (128 * MIB));
        let Ok(l) = plan(&k, &blocks, initrd, (next() % 4096) as usize) else { continue };
        planned += 1;
        assert!(in_ram(&blocks, l.kernel, l.kernel_window));
        if let Some((at, len)) = l.initrd {
            assert!(in_ram(&blocks, at, len) && disjoint((at, len), (l.kernel, l.kernel_window)));
        }
        load(&k, &l, None, "x", &blocks, &[], |_, _| Ok::<(), ()>(())).unwrap();
    }
    assert!(parsed > 1000 && planned > 500, "mutations reach plan: {parsed} {planned}");
}
