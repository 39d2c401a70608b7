//! `barepc`: a conformance kernel for the bare PC. It knows nothing of any hypervisor; it
//! checks, one `PASS name` or `FAIL name: why` line each and always in this order, what a
//! kernel written for the bare machine relies on, then prints `barepc: N checks, M failed` and
//! writes M to QEMU's isa-debug-exit port (0xf4; QEMU exits with `(M << 1) | 1`), then Bochs'
//! shutdown port, then halts. `cargo xtask test` boots it bare under QEMU (the reference) and
//! as the management partition, and compares the lines (`docs/guests.md`).
//!
//! | check | passes when |
//! |-------|-------------|
//! | `multiboot` | EAX was 0x2BADB002 and EBX an information structure with memory sizes |
//! | `load-16mib` | the image runs where it is linked, 16 MiB: its entry's bytes are there |
//! | `low-segment` | the segment linked at 0x8000 holds its 256 bytes |
//! | `module` | a multiboot module named `barepc-mod` whose text ends in a right `sum` line |
//! | `syscall` | SYSCALL from ring 3 lands on LSTAR at CPL 0 with RCX, R11, CS, SS as the SDM says |
//! | `sysret` | SYSRETQ returns to ring 3 (CS 0x2b) with the value in RAX |
//! | `rsdp` | an RSDP with valid checksums in the EBDA or 0xE0000-0xFFFFF |
//! | `acpi-tables` | the RSDT (and XSDT) and every table listed have valid checksums |
//! | `fadt` | a FADT is listed |
//! | `madt-cpu` | a MADT is listed and has an enabled local APIC entry with this CPU's APIC ID |
//! | `lapic-timer` | the local APIC timer (base from IA32_APIC_BASE), one-shot, interrupts once |
//! | `self-ipi` | a fixed IPI to self through the ICR arrives |
//! | `ioapic` | the MADT lists an I/O APIC whose version register gives at least 16 entries |
//! | `ioapic-disk-irq` | with the 8259s masked, the disk's IRQ 14 arrives through the I/O APIC |
//! | `ata-read` | sector 0 of the primary master reads `MICROHV TEST DISK` ... 0xaa55 |
#![no_std]
#![no_main]

mod acpi;
mod apic;
mod ata;
mod boot;
mod checks;
mod cpu;
mod idt;
mod serial;
mod user;

use checks::{Checks, Why};
use cpu::{cli, phys_byte, sti};

const MB_BOOT_MAGIC: u32 = 0x2bad_b002;
/// Vectors the checks use.
const TIMER_VECTOR: u8 = 0x40;
const IPI_VECTOR: u8 = 0x41;
const DISK_VECTOR: u8 = 0x50;
/// Iterations of a PAUSE loop while waiting for an interrupt (about a second on QEMU TCG).
const WAIT_BUDGET: u32 = 20_000_000;
/// The name the module must carry (its command line names it).
const MODULE_NAME: &str = "barepc-mod";

/// The bytes of the low segment: a line of text, then `i * 7 + 3` for byte `i`.
const LOW_LEN: usize = 256;
const fn low_pattern() -> [u8; LOW_LEN] {
    let text = b"barepc real-mode segment @0x8000";
    let mut out = [0u8; LOW_LEN];
    let mut i = 0;
    while i < LOW_LEN {
        out[i] = if i < text.len() { text[i] } else { (i * 7 + 3) as u8 };
        i += 1;
    }
    out
}
const LOW_PATTERN: [u8; LOW_LEN] = low_pattern();
#[used]
#[unsafe(link_section = ".lowseg")]
static LOW_SEGMENT: [u8; LOW_LEN] = LOW_PATTERN;

unsafe extern "C" {
    static __load_start: u8;
    static barepc_start: u8;
}

#[unsafe(no_mangle)]
extern "C" fn barepc_main(magic: u32, info: u32) -> ! {
    serial::init();
    idt::init();
    cpu::load_tss();
    mask_8259s();
    idt::set_hook(TIMER_VECTOR, apic::eoi);
    idt::set_hook(IPI_VECTOR, apic::eoi);
    idt::set_hook(DISK_VECTOR, || {
        ata::acknowledge();
        apic::eoi();
    });
    println!("barepc: a kernel for the bare PC; multiboot info at {info:#x}");
    let info = u64::from(info);
    let mut c = Checks::default();
    c.check("multiboot", multiboot(magic, info));
    c.check("load-16mib", load_16mib());
    c.check("low-segment", low_segment());
    c.check("module", module(magic, info));
    let (syscall, sysret) = syscall_round_trip();
    c.check("syscall", syscall);
    c.check("sysret", sysret);
    let rsdp = acpi::find_rsdp();
    c.check(
        "rsdp",
        rsdp.map(|_| ()).ok_or_else(|| why!("no valid RSDP in the EBDA or 0xE0000-0xFFFFF")),
    );
    let tables = match rsdp {
        Some(r) => guarded_value(|| acpi::walk(r).map_err(Why::from)),
        None => Err(why!("no RSDP")),
    };
    let tables = tables.map_err(|w| {
        c.check("acpi-tables", Err(w));
    });
    if let Ok(t) = &tables {
        println!(
            "barepc: RSDP {:#x} rev {}, RSDT {:#x}, XSDT {:#x}, {} tables",
            t.rsdp, t.revision, t.rsdt, t.xsdt, t.listed
        );
        c.check("acpi-tables", Ok(()));
    }
    let t = tables.unwrap_or_default();
    c.check("fadt", ensure!(t.fadt != 0, "no FADT (\"FACP\") listed"));
    let apic_id = cpu::apic_id();
    let madt = (t.madt != 0).then(|| acpi::madt(t.madt, apic_id));
    c.check(
        "madt-cpu",
        match &madt {
            None => Err(why!("no MADT (\"APIC\") listed")),
            Some(m) => ensure!(m.lists_us, "{} CPUs listed, none with APIC ID {apic_id}", m.cpus),
        },
    );
    c.check("lapic-timer", lapic_timer());
    c.check("self-ipi", self_ipi());
    let ioapic = madt.and_then(|m| m.ioapic.map(|(a, base)| (apic::IoApic(a), base, m.irq14)));
    c.check("ioapic", ioapic_present(ioapic.map(|(io, base, _)| (io, base))));
    let (irq, read) = disk(ioapic, apic_id);
    c.check("ioapic-disk-irq", irq);
    c.check("ata-read", read);
    println!("barepc: {} checks, {} failed", c.run, c.failed);
    exit(c.failed)
}

/// Runs `f` under the exception guard; a fault becomes its `Why`.
fn guarded_value<T>(mut f: impl FnMut() -> Result<T, Why>) -> Result<T, Why> {
    let mut out = None;
    match idt::guarded(|| out = Some(f())) {
        Ok(()) => out.unwrap_or_else(|| Err(why!("no result"))),
        Err(fault) => Err(fault.into()),
    }
}

/// Both 8259As initialised (vectors 0x20-0x2f, out of the way of exceptions) and fully
/// masked: every interrupt here comes through the local APIC (8259A datasheet, ICW1-ICW4, OCW1).
fn mask_8259s() {
    for (cmd, data, base, cascade) in [(0x20, 0x21, 0x20, 0x04), (0xa0, 0xa1, 0x28, 0x02)] {
        cpu::outb(cmd, 0x11);
        cpu::outb(data, base);
        cpu::outb(data, cascade);
        cpu::outb(data, 0x01);
        cpu::outb(data, 0xff);
    }
}

fn u32_at(addr: u64) -> u32 {
    u32::from_le_bytes([0, 1, 2, 3].map(|i| phys_byte(addr + i)))
}

fn multiboot(magic: u32, info: u64) -> Result<(), Why> {
    ensure!(magic == MB_BOOT_MAGIC, "EAX was {magic:#x}, not {MB_BOOT_MAGIC:#x}")?;
    let flags = u32_at(info);
    ensure!(flags & 1 != 0, "information flags {flags:#x} lack memory sizes (bit 0)")?;
    println!("barepc: mem_lower {} KiB, mem_upper {} KiB", u32_at(info + 4), u32_at(info + 8));
    Ok(())
}

fn load_16mib() -> Result<(), Why> {
    let start = &raw const __load_start as u64;
    let entry = &raw const barepc_start as u64;
    let here = load_16mib as *const () as u64;
    ensure!(start == 0x100_0000 && entry == start, "linked at {start:#x}, entry {entry:#x}")?;
    // The entry's first instructions, CLI (0xFA) and CLD (0xFC), must be at 16 MiB.
    let bytes = [phys_byte(start), phys_byte(start + 1)];
    ensure!(bytes == [0xfa, 0xfc], "bytes at 16 MiB are {bytes:02x?}, not the entry's")?;
    ensure!(here > start && here < start + (16 << 20), "running at {here:#x}")
}

fn low_segment() -> Result<(), Why> {
    let at = &raw const LOW_SEGMENT as u64;
    ensure!(at < 0x10_0000, "the segment is linked at {at:#x}")?;
    match (0..LOW_LEN).find(|&i| phys_byte(at + i as u64) != LOW_PATTERN[i]) {
        None => Ok(()),
        Some(i) => Err(why!(
            "byte {i} at {:#x} is {:#04x}, want {:#04x}",
            at + i as u64,
            phys_byte(at + i as u64),
            LOW_PATTERN[i]
        )),
    }
}

/// The multiboot module (Multiboot Specification §3.3, flags bit 3): its string names
/// [`MODULE_NAME`]; its text starts `barepc module` and ends with a line `sum XXXXXXXX`, the
/// 32-bit wrapping sum of every byte before that line, in hex.
fn module(magic: u32, info: u64) -> Result<(), Why> {
    ensure!(magic == MB_BOOT_MAGIC, "no multiboot information")?;
    let flags = u32_at(info);
    ensure!(flags & 8 != 0, "no modules (flags {flags:#x}, bit 3 clear)")?;
    let count = u32_at(info + 20);
    ensure!(count >= 1, "mods_count is 0")?;
    let m = u64::from(u32_at(info + 24));
    let (start, end, string) =
        (u64::from(u32_at(m)), u64::from(u32_at(m + 4)), u64::from(u32_at(m + 8)));
    let mut name = [0u8; 96];
    let mut len = 0;
    while string != 0 && len < name.len() && phys_byte(string + len as u64) != 0 {
        name[len] = phys_byte(string + len as u64);
        len += 1;
    }
    let name = core::str::from_utf8(&name[..len]).unwrap_or("(not UTF-8)");
    println!("barepc: {count} module(s); the first {start:#x}-{end:#x} \"{name}\"");
    ensure!(name.contains(MODULE_NAME), "its string {name:?} does not name {MODULE_NAME}")?;
    ensure!(end > start && end - start <= 1 << 20, "bad extent {start:#x}-{end:#x}")?;
    let byte = |i: u64| phys_byte(start + i);
    let size = end - start;
    let head = b"barepc module";
    ensure!(
        size > 30 && (0..head.len() as u64).all(|i| byte(i) == head[i as usize]),
        "it does not start with \"barepc module\""
    )?;
    // The last line: "sum " and 8 hex digits, then a newline.
    let line = size - 13;
    let tail: [u8; 13] = core::array::from_fn(|i| byte(line + i as u64));
    ensure!(tail.starts_with(b"sum ") && tail[12] == b'\n', "no `sum` line at its end")?;
    let hex = core::str::from_utf8(&tail[4..12]).unwrap_or("");
    let want = u32::from_str_radix(hex, 16).map_err(|_| why!("sum {hex:?} is not hex"))?;
    let got = (0..line).fold(0u32, |s, i| s.wrapping_add(u32::from(byte(i))));
    ensure!(got == want, "bytes sum to {got:08x}, the module says {want:08x}")
}

fn syscall_round_trip() -> (Result<(), Why>, Result<(), Why>) {
    let mut rec = user::Record::default();
    if let Err(f) = idt::guarded(|| rec = user::round_trip()) {
        let w: Why = f.into();
        return (Err(why!("{w}")), Err(why!("no round trip")));
    }
    let syscall = ensure!(
        rec.entry_rcx == rec.expect_rcx && rec.entry_cs == 0x08 && rec.entry_ss == 0x10,
        "entry RCX {:#x} (want {:#x}), CS {:#x}, SS {:#x}",
        rec.entry_rcx,
        rec.expect_rcx,
        rec.entry_cs,
        rec.entry_ss
    )
    .and_then(|()| {
        ensure!(
            rec.entry_r11 & !0x10000 == 0x2,
            "R11 {:#x}, not ring 3's RFLAGS 0x2",
            rec.entry_r11
        )
    });
    let sysret = ensure!(
        rec.user_rax == user::PONG && rec.user_cs == 0x2b,
        "after SYSRETQ RAX {:#x} (want {:#x}), CS {:#x} (want 0x2b)",
        rec.user_rax,
        user::PONG,
        rec.user_cs
    );
    (syscall, sysret)
}

/// Waits with interrupts on until `vector` has been taken `n` times; false at the budget.
fn wait_for(vector: u8, n: u32) -> bool {
    sti();
    let mut budget = WAIT_BUDGET;
    while idt::count(vector) < n && budget > 0 {
        cpu::pause();
        budget -= 1;
    }
    cli();
    idt::count(vector) >= n
}

fn lapic_timer() -> Result<(), Why> {
    guarded_value(|| {
        let base = apic::base().map_err(Why::from)?;
        println!("barepc: local APIC at {base:#x}, version {:#x}", {
            apic::enable();
            apic::read(0x30)
        });
        let current = apic::one_shot(TIMER_VECTOR, 100_000);
        ensure!(current <= 100_000, "current count {current} after arming with 100000")?;
        let arrived = wait_for(TIMER_VECTOR, 1);
        ensure!(arrived, "no interrupt at vector {TIMER_VECTOR:#x}")?;
        // One-shot: nothing more, and the count stays at 0.
        sti();
        for _ in 0..200_000 {
            cpu::pause();
        }
        cli();
        let (n, left) = (idt::count(TIMER_VECTOR), apic::read(0x390));
        apic::stop_timer();
        ensure!(n == 1 && left == 0, "{n} interrupts, current count {left} (one-shot)")
    })
}

fn self_ipi() -> Result<(), Why> {
    if !apic::found() {
        return Err(why!("no local APIC (see lapic-timer)"));
    }
    guarded_value(|| {
        apic::self_ipi(IPI_VECTOR);
        ensure!(wait_for(IPI_VECTOR, 1), "no interrupt at vector {IPI_VECTOR:#x}")
    })
}

fn ioapic_present(io: Option<(apic::IoApic, u32)>) -> Result<(), Why> {
    let Some((io, base)) = io else { return Err(why!("no I/O APIC in the MADT")) };
    guarded_value(|| {
        let (id, version) = (io.read(0), io.read(1));
        println!(
            "barepc: I/O APIC at {:#x}, GSI base {base}, ID {}, version {:#x}",
            io.0,
            id >> 24,
            version
        );
        let max = io.max_entry();
        ensure!(
            (15..240).contains(&max),
            "version {version:#x}: {} entries, fewer than 16",
            max + 1
        )
    })
}

/// An I/O APIC from the MADT: the chip, its GSI base, ISA IRQ 14's override (GSI, flags).
type IoApicFound = (apic::IoApic, u32, Option<(u32, u16)>);

/// IRQ 14 through the I/O APIC (the pin the MADT's override names, else 14), then the data.
fn disk(io: Option<IoApicFound>, apic_id: u32) -> (Result<(), Why>, Result<(), Why>) {
    let mut sector = [0u8; 512];
    let irq = match io {
        None => Err(why!("no I/O APIC")),
        Some((io, base, over)) => {
            let (gsi, flags) = over.unwrap_or((14, 0));
            let pin = gsi.wrapping_sub(base);
            guarded_value(|| {
                io.route(pin, DISK_VECTOR, apic_id, flags);
                let started = ata::start_read().map_err(Why::from);
                let arrived = wait_for(DISK_VECTOR, 1);
                io.mask(pin);
                started?;
                let pic = (0x20..0x30).map(idt::count).sum::<u32>();
                ensure!(arrived, "no interrupt at vector {DISK_VECTOR:#x} (pin {pin})")?;
                ensure!(pic == 0, "{pic} interrupts through the masked 8259s")
            })
        }
    };
    if io.is_none() {
        // Still read the sector (polled), so that the disk check stands on its own.
        let _ = ata::start_read();
    }
    let read = ata::finish_read(&mut sector).map_err(Why::from).and_then(|()| {
        let magic = b"MICROHV TEST DISK";
        let sig = u16::from_le_bytes([sector[510], sector[511]]);
        ensure!(
            sector.starts_with(magic) && sig == 0xaa55,
            "sector 0 starts {:?}, signature {sig:#06x}",
            core::str::from_utf8(&sector[..17]).unwrap_or("(binary)")
        )
    });
    (irq, read)
}

/// Ends the run: status `code` to QEMU's isa-debug-exit, else Bochs' shutdown port, else halt.
pub fn exit(code: u32) -> ! {
    serial::drain();
    cpu::outl(0xf4, code);
    for b in b"Shutdown" {
        cpu::outb(0x8900, *b);
    }
    loop {
        cli();
        // SAFETY: halting with interrupts off ends this kernel's work.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("FAIL panic: {}", info.message());
    exit(255)
}
