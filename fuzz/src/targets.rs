//! The fuzz targets: each takes the fuzzer's bytes, drives one parser or state machine of the
//! hypervisor through its public entry points, checks what the architecture or the format
//! promises of any answer, and returns an outcome signature (which answer it gave, coarsely),
//! which the driver uses to keep inputs that reached something new. A panic is a finding.
//!
//! Each is `fn(&[u8]) -> u64`, the shape libFuzzer's `fuzz_target!` takes.

use std::cell::RefCell;
use std::rc::Rc;

use arbitrary::{Result, Unstructured};
use hypervisor::devices::clock::{Clock, ManualClock};
use hypervisor::devices::pcmisc::{PciNone, PostPort, SysCtlA};
use hypervisor::devices::pic8259::PicPair;
use hypervisor::devices::pit8254::{Pit, PitPort61};
use hypervisor::devices::rtc::Rtc;
use hypervisor::devices::shared::shared;
use hypervisor::devices::uart16550::Uart16550;
use hypervisor::vmm::bus::Device;
use hypervisor::vmm::decode::{self, CpuMode, MAX_INSN_LEN};
use hypervisor::vmm::loader::{elf, linux, mb_modules, multiboot};

/// A target: its name (the corpus folder) and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> u64,
}

pub const TARGETS: &[Target] = &[
    Target { name: "decode", run: decode },
    Target { name: "manifest", run: manifest },
    Target { name: "elf", run: elf },
    Target { name: "multiboot", run: multiboot },
    Target { name: "linux", run: linux },
    Target { name: "pack", run: pack },
    Target { name: "cmdline", run: cmdline },
    Target { name: "uart", run: uart },
    Target { name: "pic", run: pic },
    Target { name: "pit", run: pit },
    Target { name: "rtc", run: rtc },
    Target { name: "pcmisc", run: pcmisc },
];

// Note: `Unstructured` gives the lower bound of a range once its bytes run out, so each
// operation loop below runs while bytes are left (every step takes at least one).

/// A signature of an error: its variant or message, numbers left out (which error, not which
/// values: a new kind of refusal is what is worth keeping an input for).
fn kind(e: &impl std::fmt::Debug) -> u64 {
    let text = format!("{e:?}");
    // Quoted text (a manifest's bad value) is left out too.
    let words: String = text
        .chars()
        .take_while(|&c| c != '"' && c != '\'')
        .filter(|c| !c.is_ascii_digit())
        .take(48)
        .collect();
    sig(&words.bytes().map(u64::from).collect::<Vec<_>>())
}

/// A signature from a few small numbers.
fn sig(parts: &[u64]) -> u64 {
    parts.iter().fold(0xcbf2_9ce4_8422_2325, |h, &p| (h ^ p).wrapping_mul(0x100_0000_01b3))
}

/// The first byte picks the CPU mode; the rest are instruction bytes. The length decoder, the
/// MMIO decoder and the MOV-CR decoder must agree with each other and with the 15-byte limit.
fn decode(data: &[u8]) -> u64 {
    let Some((&m, bytes)) = data.split_first() else { return 0 };
    let mode = [CpuMode::Real, CpuMode::Protected16, CpuMode::Protected32, CpuMode::Long64]
        [usize::from(m & 3)];
    let len = decode::insn_len(bytes, mode);
    if let Ok(n) = len {
        assert!((1..=MAX_INSN_LEN).contains(&n) && n <= bytes.len(), "length {n} of {bytes:02x?}");
    }
    let mmio = decode::decode_mmio(bytes, mode);
    if let Ok(insn) = mmio {
        assert!(matches!(insn.size, 1 | 2 | 4 | 8), "size {} of {bytes:02x?}", insn.size);
        assert_eq!(len, Ok(insn.len), "insn_len and decode_mmio disagree on {bytes:02x?}");
        let _ = insn.load_result(0x1122_3344_5566_7788, u64::MAX);
        let _ = insn.store_value(|r| u64::from(r) * 0x0101_0101_0101_0101);
    }
    let cr = decode::decode_mov_cr(bytes, mode);
    if let Ok(c) = cr {
        assert!(c.cr < 16 && c.gpr < 16 && c.len <= MAX_INSN_LEN, "{c:?} of {bytes:02x?}");
    }
    sig(&[
        len.map_or(99, |n| n as u64),
        u64::from(mmio.is_ok()),
        u64::from(cr.is_ok()),
        u64::from(m & 3),
    ])
}

/// The manifest parser, through its public entry point only (it is being rewritten): any bytes
/// give a manifest or an error, never a panic; the error prints.
fn manifest(data: &[u8]) -> u64 {
    match hypervisor::vmm::manifest::parse_bytes(data) {
        Ok(_) => 1,
        Err(e) => {
            // What was refused: the message after the last `: ` (line, partition and field
            // come before it), its quoted value left out by `kind`.
            let text = e.to_string();
            let what = text.rsplit(": ").next().unwrap_or("");
            let words: Vec<&str> = what
                .split_whitespace()
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .take(3)
                .collect();
            sig(&[2, kind(&words)])
        }
    }
}

/// RAM sizes a partition may have: 2 MiB to 1 GiB.
fn ram_size(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(u64::from(u.int_in_range(1u32..=512)?) << 21)
}

/// A fake guest memory of `size` bytes at `base` that checks every write lands inside it.
struct FakeRam {
    base: u64,
    size: u64,
}

impl FakeRam {
    fn write(&self, gpa: u64, len: u64) -> std::result::Result<(), ()> {
        let end = gpa.checked_add(len).expect("a load range wraps");
        assert!(
            gpa >= self.base && end <= self.base + self.size,
            "load of {len:#x} bytes at {gpa:#x} outside RAM {:#x}+{:#x}",
            self.base,
            self.size
        );
        Ok(())
    }
}

/// ELF64 for a partition of a random RAM size: what parses lies inside RAM, with the entry in
/// a segment, and loads inside RAM.
fn elf(data: &[u8]) -> u64 {
    let mut u = Unstructured::new(data.get(..2).unwrap_or(&[]));
    let size = ram_size(&mut u).unwrap_or(16 << 20);
    let image = data.get(2..).unwrap_or(&[]);
    match elf::parse(image, size) {
        Ok(img) => {
            let ram = FakeRam { base: 0, size };
            let extent = img.extent();
            assert!(extent.end <= size, "extent {extent:x?} past RAM {size:#x}");
            assert!(img.segments.iter().any(|s| s.range().contains(&img.entry)), "entry outside");
            let _ =
                img.load_into(|gpa, b| ram.write(gpa, b.len() as u64), |gpa, n| ram.write(gpa, n));
            sig(&[1, img.segments.len() as u64])
        }
        Err(e) => sig(&[2, kind(&e)]),
    }
}

/// Multiboot 1 kernels for RAM at a random base and size; the information structure for a
/// random RAM layout and command line.
fn multiboot(data: &[u8]) -> u64 {
    let mut u = Unstructured::new(data.get(..3).unwrap_or(&[]));
    let size = ram_size(&mut u).unwrap_or(16 << 20);
    let base = if u.arbitrary::<bool>().unwrap_or(false) { 0x10_0000 } else { 0 };
    let image = data.get(3..).unwrap_or(&[]);
    let outcome = match multiboot::parse(image, base, size) {
        Ok(mb) => {
            let ram = FakeRam { base, size };
            let extent = mb.image.extent();
            assert!(extent.start >= base && extent.end <= base + size, "extent {extent:x?}");
            let _ = mb.image.load_into(|g, b| ram.write(g, b.len() as u64), |g, n| ram.write(g, n));
            sig(&[1, u64::from(mb.aout_kludge), mb.image.segments.len() as u64])
        }
        Err(e) => sig(&[2, kind(&e)]),
    };
    let blocks = ram_blocks(&mut Unstructured::new(image)).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(image.get(..64).unwrap_or(image));
    let _ = multiboot::memory_map(&blocks);
    // Boot modules of random sizes placed beside a random kernel range, then listed.
    let mut u = Unstructured::new(image.get(64..).unwrap_or(&[]));
    let taken: Vec<(u64, u64)> = (0..u.int_in_range(0..=2u8).unwrap_or(0))
        .filter_map(|_| {
            let start = u.int_in_range(0..=1u64 << 33).ok()?;
            Some((start, start.saturating_add(u.int_in_range(0..=64u64 << 20).ok()?)))
        })
        .collect();
    let sizes: Vec<u64> =
        (0..u.int_in_range(0..=10u8).unwrap_or(0)).filter_map(|_| u.arbitrary().ok()).collect();
    let mut modules = Vec::new();
    if let Ok(starts) = mb_modules::place(&blocks, &taken, &sizes) {
        for (&start, &len) in starts.iter().zip(&sizes) {
            let end = start + len;
            assert!(start % 4096 == 0 && end <= 1 << 32, "module at {start:#x}..{end:#x}");
            assert!(blocks.iter().any(|&(b, n)| start >= b && end <= b + n), "outside RAM");
            assert!(taken.iter().all(|&(a, b)| end <= a || start >= b || a == b), "on the kernel");
            modules.push(multiboot::ModuleEntry { start, end, string: &cmdline });
        }
    }
    // The firmware's ranges over the RAM, as a management partition's map lists them.
    let firmware: Vec<(u64, u64, u32)> =
        taken.iter().map(|&(a, b)| (a, b - a, u32::from(a as u8 % 5 + 1))).collect();
    let map = multiboot::memory_map_with(&blocks, &firmware);
    assert!(map.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0), "overlapping map {map:x?}");
    let _ = multiboot::write_info(
        |_, _| Ok::<(), ()>(()),
        0x6000,
        &blocks,
        &cmdline,
        &modules,
        &firmware,
    );
    // Boot structures go in pages of the blocks that the image's segments leave free.
    if let Ok(mb) = multiboot::parse(image, base, size) {
        let taken: Vec<_> = mb.image.segments.iter().map(|s| s.range()).collect();
        let mut free = hypervisor::vmm::loader::place::BootPlacer::new(&blocks, &taken);
        for len in [1, 0x1000, 0x4000, 0x10_0000] {
            if let Some(at) = free.take(len, 1 << 32) {
                let end = at + len;
                assert!(at % 0x1000 == 0 && at != 0 && end <= 1 << 32, "placed at {at:#x}");
                assert!(blocks.iter().any(|&(s, l)| s <= at && end <= s + l), "outside RAM");
                assert!(!taken.iter().any(|t| t.start < end && t.end > at), "over a segment");
            }
        }
    }
    outcome
}

/// Up to eight `(start, len)` RAM blocks, sorted and apart, as a partition's map gives them.
fn ram_blocks(u: &mut Unstructured<'_>) -> Result<Vec<(u64, u64)>> {
    let mut blocks = Vec::new();
    let mut at = 0u64;
    for _ in 0..u.int_in_range(1u8..=8)? {
        let gap = u64::from(u.int_in_range(0u32..=4096)?) << 12;
        let len = u64::from(u.int_in_range(1u32..=65536)?) << 12;
        let start = at.checked_add(gap).ok_or(arbitrary::Error::IncorrectFormat)?;
        blocks.push((start, len));
        at = start + len;
    }
    Ok(blocks)
}

/// Linux bzImages: the header parser, the placement for a random RAM layout, initrd and
/// command line (what it places lies in RAM and apart), the zero page and the e820 map.
fn linux(data: &[u8]) -> u64 {
    let (head, image) = data.split_at(data.len().min(16));
    let mut u = Unstructured::new(head);
    let blocks = ram_blocks(&mut u).unwrap_or_else(|_| vec![(0, 64 << 20)]);
    let initrd_len = u.arbitrary::<Option<u32>>().ok().flatten().map(u64::from);
    let cmdline_len = usize::from(u.arbitrary::<u16>().unwrap_or(0) & 0xfff);
    let _ = linux::is_bzimage(image);
    let img = match linux::parse(image) {
        Ok(img) => img,
        Err(e) => return sig(&[2, kind(&e)]),
    };
    let _ = (img.has_64bit_entry(), img.window());
    let layout = match linux::plan(&img, &blocks, initrd_len, cmdline_len) {
        Ok(l) => l,
        Err(e) => return sig(&[3, kind(&e)]),
    };
    let inside = |start: u64, len: u64| {
        let end = start.checked_add(len).expect("a planned range wraps");
        blocks.iter().any(|&(s, l)| start >= s && end <= s + l)
    };
    assert!(inside(layout.kernel, img.kernel.len() as u64), "kernel outside RAM: {layout:x?}");
    if let Some((at, len)) = layout.initrd {
        assert!(inside(at, len), "initrd outside RAM: {layout:x?}");
    }
    let _ = layout.require_entry64(&img);
    let e820 = linux::e820_map(&blocks, &[(0xfeb0_0000, 0x1000, 2)]);
    if let Ok(map) = &e820 {
        let _ = linux::boot_params(&img, &layout, layout.initrd, map);
    }
    let initrd = vec![0u8; initrd_len.unwrap_or(0).min(4096) as usize];
    let cmdline = "x".repeat(cmdline_len);
    let _ = linux::load(&img, &layout, Some(&initrd), &cmdline, &blocks, &[], |g, b| {
        assert!(inside(g, b.len() as u64), "write of {:#x} bytes at {g:#x} outside RAM", b.len());
        Ok::<(), ()>(())
    });
    sig(&[1, u64::from(layout.entry64.is_some()), u64::from(e820.is_ok())])
}

/// The boot pack: what parses has every entry inside the blob; and packs made from random
/// files (`packed_len`, `write`) parse back to the same files.
fn pack(data: &[u8]) -> u64 {
    use hvabi::pack::{self, Pack};
    let outcome = match Pack::parse(data) {
        Ok(p) => {
            assert_eq!(p.entries().count(), p.len());
            for (name, _) in p.entries() {
                assert!(!name.is_empty() && p.get(name).is_some(), "entry {name:?}");
            }
            sig(&[1, p.len() as u64])
        }
        Err(e) => sig(&[2, kind(&e)]),
    };
    let mut u = Unstructured::new(data);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    while files.len() < 4 {
        let Ok(len) = u.int_in_range(0usize..=200) else { break };
        let Ok(bytes) = u.bytes(len) else { break };
        files.push((format!("f{}", files.len()), bytes.to_vec()));
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let lens: Vec<usize> = refs.iter().map(|(_, b)| b.len()).collect();
    let mut blob = vec![0u8; pack::packed_len(&lens)];
    pack::write(&refs, &mut blob);
    let back = Pack::parse(&blob).expect("a written pack parses");
    for (name, bytes) in &refs {
        assert_eq!(back.get(name), Some(*bytes), "{name} round trip");
    }
    outcome
}

/// The kernel command line (any bytes, as UTF-8 with replacements).
fn cmdline(data: &[u8]) -> u64 {
    let line = String::from_utf8_lossy(data);
    let line = hypervisor::cmdline::strip_image_path(&line);
    let mut problems = 0u64;
    let o = hypervisor::cmdline::parse(line, |p| {
        let _ = p.to_string();
        problems += 1;
    });
    sig(&[problems.min(4), format!("{o:?}").len() as u64])
}

/// The 16550 UART: register reads and writes, input pushed, output drained; output stays
/// bounded however much is written.
fn uart(data: &[u8]) -> u64 {
    let mut u = Unstructured::new(data);
    let mut uart = Uart16550::new();
    let mut steps = 0u64;
    while !u.is_empty() {
        let op = u.int_in_range(0u8..=5).unwrap_or(0);
        let offset = u.int_in_range(0u8..=7).unwrap_or(0);
        let v = u.arbitrary::<u8>().unwrap_or(0);
        match op {
            0 | 1 => {
                uart.read(offset);
            }
            2 | 3 => uart.write(offset, v),
            4 => {
                if uart.input_room() > 0 {
                    uart.push_input(v);
                }
            }
            _ => {
                let n = uart.drain_output().count();
                assert!(n <= 1 << 20, "{n} bytes of output");
            }
        }
        let _ = (uart.interrupt_pending(), uart.irq_line(), uart.divisor(), uart.baud());
        steps += 1;
    }
    sig(&[steps.min(64), u64::from(uart.irq_line()), uart.lost_output().min(1)])
}

/// The 8259A pair: port writes (initialisation, masks, EOIs, poll), input levels, interrupt
/// acknowledgement; a pending vector is what the acknowledgement returns.
fn pic(data: &[u8]) -> u64 {
    let mut u = Unstructured::new(data);
    let mut pic = PicPair::default();
    let mut acks = 0u64;
    while !u.is_empty() {
        let op = u.int_in_range(0u8..=4).unwrap_or(0);
        let port = [0x20u16, 0x21, 0xa0, 0xa1][usize::from(u.int_in_range(0u8..=3).unwrap_or(0))];
        let v = u.arbitrary::<u8>().unwrap_or(0);
        match op {
            0 => pic.write(port, v),
            1 => {
                pic.read(port);
            }
            2 => pic.set_irq(v & 15, v & 0x80 != 0),
            3 => {
                if let Some(vector) = pic.pending_vector() {
                    let got = pic.acknowledge();
                    assert_eq!(got, vector, "acknowledged vector differs from the pending one");
                    acks += 1;
                }
            }
            _ => {
                let _ = (pic.take_eois(), pic.unmasked(), pic.any_requested(), pic.describe());
            }
        }
    }
    sig(&[acks.min(16), u64::from(pic.unmasked().count_ones())])
}

/// A clock the device models read, moved by the input.
fn clock() -> (Rc<ManualClock>, Rc<dyn Clock>) {
    let c = Rc::new(ManualClock::new(1_000_000_000));
    c.set(1 << 40);
    let dynamic: Rc<dyn Clock> = c.clone();
    (c, dynamic)
}

/// The 8254 PIT and port 0x61 at 1 GHz: port accesses between random advances of time; a
/// deadline is never in the past.
fn pit(data: &[u8]) -> u64 {
    let mut u = Unstructured::new(data);
    let (c, clock) = clock();
    let pit = shared(Pit::new(clock));
    let mut p61 = PitPort61(pit.clone());
    let mut edges = 0u64;
    while !u.is_empty() {
        let op = u.int_in_range(0u8..=5).unwrap_or(0);
        let v = u.arbitrary::<u8>().unwrap_or(0);
        match op {
            0 => pit.borrow_mut().write_port(v & 3, u.arbitrary().unwrap_or(0)),
            1 => {
                pit.borrow_mut().read_port(v & 3);
            }
            2 => p61.write(0, 1, u64::from(v)),
            3 => {
                p61.read(0, 1);
            }
            4 => c.advance(u64::from(u.arbitrary::<u32>().unwrap_or(0))),
            _ => edges += pit.borrow_mut().irq0_edges(),
        }
        if let Some(d) = pit.borrow().next_irq0_deadline() {
            assert!(d >= c.now() || op == 4, "deadline {d} before now {}", c.now());
        }
    }
    sig(&[edges.min(8), u64::from(pit.borrow().next_irq0_deadline().is_some())])
}

/// The MC146818 RTC/CMOS: index and data ports between random advances of time.
fn rtc(data: &[u8]) -> u64 {
    let mut u = Unstructured::new(data);
    let (c, clock) = clock();
    let epoch = u.arbitrary::<u64>().unwrap_or(0) >> 20;
    let mut rtc = Rtc::new(clock, epoch, 1 << 40);
    rtc.set_memory_sizes(640, 15 << 10, 100 << 10);
    let mut irqs = 0u64;
    while !u.is_empty() {
        let op = u.int_in_range(0u8..=4).unwrap_or(0);
        let v = u.arbitrary::<u8>().unwrap_or(0);
        match op {
            0 => rtc.write(0, 1, u64::from(v)),
            1 => rtc.write(1, 1, u64::from(v)),
            2 => {
                rtc.read(u64::from(v & 1), 1);
            }
            3 => c.advance(u64::from(u.arbitrary::<u32>().unwrap_or(0)) << 4),
            _ => irqs += u64::from(rtc.irq8_pending()),
        }
        let _ = (rtc.next_irq8_deadline(), rtc.nmi_masked());
    }
    sig(&[irqs.min(8)])
}

/// Port 0x92, the PCI configuration ports without devices and the POST port, at every offset
/// and size their ranges allow (and past them: the bus passes any offset it claims).
fn pcmisc(data: &[u8]) -> u64 {
    let mut u = Unstructured::new(data);
    let sysctl = Rc::new(RefCell::new(SysCtlA::new()));
    let pci = Rc::new(RefCell::new(PciNone::new()));
    let mut devices: [Box<dyn Device>; 3] =
        [Box::new(sysctl.clone()), Box::new(pci.clone()), Box::new(PostPort::new())];
    let mut resets = 0u64;
    while !u.is_empty() {
        let which = u.int_in_range(0usize..=2).unwrap_or(0);
        let offset = u64::from(u.int_in_range(0u8..=8).unwrap_or(0));
        let size = [1u8, 2, 4][usize::from(u.int_in_range(0u8..=2).unwrap_or(0))];
        let v = u.arbitrary::<u32>().unwrap_or(0);
        if u.arbitrary::<bool>().unwrap_or(false) {
            devices[which].write(offset, size, u64::from(v));
        } else {
            let r = devices[which].read(offset, size);
            assert!(size == 8 || r >> (8 * u32::from(size)) == 0, "{r:#x} wider than {size}");
        }
        resets += u64::from(sysctl.borrow_mut().reset_requested());
        resets += u64::from(pci.borrow_mut().reset_requested());
    }
    let _ = (sysctl.borrow().a20(), pci.borrow().address());
    sig(&[resets.min(4)])
}
