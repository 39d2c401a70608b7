//! `msr-ports-vmx`: forbidden MSRs (#GP), ports a partition is not given (all-ones, writes
//! ignored, even the ones that reset or stop the machine), and VMX/SVM instructions (#UD);
//! then hostile values in the MSRs the CPU uses by itself (SYSCALL's, KERNEL_GS_BASE, PAT),
//! kept live across many time slices, so a neighbour whose values leaked to would fail.

use core::arch::asm;

use guest_rt::exception::{GP, UD, vector_name};
use guest_rt::hvabi::exit::{BOCHS_SHUTDOWN_PORT, QEMU_EXIT_FAILURE, QEMU_EXIT_PORT};
use guest_rt::instr::{self, inb, inl, outb, outl};
use guest_rt::{Checks, Exception, checks::Why, expect_exception};

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_BIOS_UPDT_TRIG: u32 = 0x79;
const EFER: u32 = 0xc000_0080;
const VM_CR: u32 = 0xc001_0114;
const VM_HSAVE_PA: u32 = 0xc001_0117;
const STAR: u32 = 0xc000_0081;
const LSTAR: u32 = 0xc000_0082;
const FMASK: u32 = 0xc000_0084;
const KERNEL_GS_BASE: u32 = 0xc000_0102;
const PAT: u32 = 0x277;
const EFER_SVME: u64 = 1 << 12;
const CR4_VMXE: u64 = 1 << 13;

/// Runs every check; returns the number that failed.
pub fn run() -> u64 {
    let mut c = Checks::new();
    msrs(&mut c);
    ports(&mut c);
    instructions(&mut c);
    hostile_msrs(&mut c);
    c.summary("attack")
}

fn expect(e: Option<Exception>, vector: u8) -> Result<(), Why> {
    match e {
        Some(e) if e.vector == vector => Ok(()),
        Some(e) => Err(guest_rt::why!("raised {e}, want {}", vector_name(vector))),
        None => Err(guest_rt::why!("no exception, want {}", vector_name(vector))),
    }
}

fn msrs(c: &mut Checks) {
    let mut name = [0u8; 24];
    for msr in 0x480u32..=0x491 {
        // SAFETY: the VMX capability MSRs are forbidden: RDMSR raises #GP and reads nothing.
        let e = expect_exception(|| unsafe {
            instr::rdmsr(msr);
        });
        c.check(hex_name(&mut name, "rdmsr-", msr), expect(e, GP));
    }
    let writes = [
        (IA32_FEATURE_CONTROL, 0x5, "wrmsr-feature-control"),
        (IA32_BIOS_UPDT_TRIG, 0x20_0000, "wrmsr-bios-updt-trig"),
        (VM_CR, 1 << 4, "wrmsr-vm-cr"),
        (VM_HSAVE_PA, 0x10_0000, "wrmsr-vm-hsave-pa"),
    ];
    for (msr, value, name) in writes {
        // SAFETY: forbidden MSRs: WRMSR raises #GP and changes nothing.
        let e = expect_exception(|| unsafe { instr::wrmsr(msr, value) });
        c.check(name, expect(e, GP));
    }
    // SAFETY: reading VM_CR is forbidden too: #GP.
    let e = expect_exception(|| unsafe {
        instr::rdmsr(VM_CR);
    });
    c.check("rdmsr-vm-cr", expect(e, GP));
    // SAFETY: EFER is readable; setting SVME (hidden by CPUID) must raise #GP and change
    // nothing. If it does not fault, SVME is cleared again at once.
    let e = expect_exception(|| unsafe {
        let efer = instr::rdmsr(EFER);
        instr::wrmsr(EFER, efer | EFER_SVME);
        instr::wrmsr(EFER, efer & !EFER_SVME);
    });
    c.check("wrmsr-efer-svme", expect(e, GP));
    let cr4 = instr::read_cr4();
    // SAFETY: VMX is hidden, so CR4.VMXE is reserved: the write raises #GP and changes nothing.
    // If it does not fault, the old CR4 is put back at once.
    let e = expect_exception(|| unsafe {
        instr::write_cr4(cr4 | CR4_VMXE);
        instr::write_cr4(cr4);
    });
    c.check("cr4-vmxe", expect(e, GP));
}

/// `prefix` and `n` in hex, in `buf`.
fn hex_name<'a>(buf: &'a mut [u8; 24], prefix: &'a str, n: u32) -> &'a str {
    let p = prefix.as_bytes();
    buf[..p.len()].copy_from_slice(p);
    let mut len = p.len();
    buf[len..len + 2].copy_from_slice(b"0x");
    len += 2;
    let digits = (32 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        buf[len] = b"0123456789abcdef"[((n >> (i * 4)) & 0xf) as usize];
        len += 1;
    }
    core::str::from_utf8(&buf[..len]).unwrap_or(prefix)
}

fn ports(c: &mut Checks) {
    // Writes first, the dangerous ones included: each would reset or stop the machine if it
    // reached hardware (keyboard-controller reset, the emulators' exit ports), or reprogram the
    // PIC, PIT, CMOS or PCI configuration. The PIC, PIT, CMOS, port 0x92 and PCI configuration
    // ports reach this partition's own virtual PC (so they are not read back as absent below;
    // its reset controls, 0x92 bit 0 and 0xcf9 bit 2, would reset this partition, as on a PC,
    // so those bits are left alone); the host's devices stay the hypervisor's, which the
    // neighbour's run and the power-off show.
    // SAFETY: none of these ports is given to a partition: writes must be ignored.
    unsafe {
        outb(0x20, 0x11);
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        outb(0x43, 0x34);
        outb(0x40, 0x00);
        outb(0x70, 0x8f);
        outb(0x71, 0x00);
        outl(0xcf8, 0x8000_0000);
        outl(0xcfc, 0xffff_ffff);
        for p in 0x1f0..=0x1f7 {
            outb(p, 0x00);
        }
        outb(0x60, 0xf4);
        outb(0x64, 0xfe);
        outb(0xcf9, 0x02);
        outb(0x92, 0x02);
        outb(QEMU_EXIT_PORT, QEMU_EXIT_FAILURE as u8);
        for b in b"Shutdown" {
            outb(BOCHS_SHUTDOWN_PORT, *b);
        }
    }
    let byte_ports: [u16; 13] = [
        0x1f0,
        0x1f1,
        0x1f2,
        0x1f3,
        0x1f4,
        0x1f5,
        0x1f6,
        0x1f7,
        0x60,
        0x64,
        QEMU_EXIT_PORT,
        BOCHS_SHUTDOWN_PORT,
        0x2f8,
    ];
    let mut name = [0u8; 24];
    for port in byte_ports {
        // SAFETY: an absent port: the read returns all-ones and changes nothing.
        let v = unsafe { inb(port) };
        c.check_eq(hex_name(&mut name, "port-", u32::from(port)), v, 0xff);
    }
    // SAFETY: as above: the PCI configuration data port of a PC without PCI devices.
    let v = unsafe { inl(0xcfc) };
    c.check_eq(hex_name(&mut name, "port32-", 0xcfc), v, 0xffff_ffff);
    // Its own virtual PC: the PCI address register holds what it wrote, port 0x92 its A20 bit,
    // and CMOS register 0x0f (the index written above, NMI bit aside) the firmware's 0.
    // SAFETY: the partition's own virtual devices; reads change nothing.
    let (address, sysctl, cmos) = unsafe { (inl(0xcf8), inb(0x92), inb(0x71)) };
    c.check_eq("own-pci-address", address, 0x8000_0000);
    c.check_eq("own-port-0x92", sysctl, 0x02);
    c.check_eq("own-cmos-0x0f", cmos, 0x00);
}

/// Runs one instruction (the `asm!` arguments) and checks it raised #UD.
macro_rules! expect_ud {
    ($c:expr, $name:literal, $($asm:tt)*) => {{
        let e = expect_exception(|| {
            // SAFETY: VMX and SVM are hidden, so the instruction raises #UD in either backend
            // (a hypervisor that let it through would be the bug under test); its operands
            // point at the caller's own data.
            unsafe { asm!($($asm)*) }
        });
        $c.check($name, expect(e, UD));
    }};
}

fn instructions(c: &mut Checks) {
    #[repr(C, align(4096))]
    struct Region([u8; 4096]);
    let region = Region([0; 4096]);
    let pa = &raw const region as u64;
    let mut desc = [0u64; 2];
    let p = &raw const pa;
    let d = desc.as_mut_ptr();
    expect_ud!(c, "vmxon", "vmxon qword ptr [{}]", in(reg) p, options(nostack));
    expect_ud!(c, "vmxoff", "vmxoff", options(nostack));
    expect_ud!(c, "vmclear", "vmclear qword ptr [{}]", in(reg) p, options(nostack));
    expect_ud!(c, "vmptrld", "vmptrld qword ptr [{}]", in(reg) p, options(nostack));
    expect_ud!(c, "vmptrst", "vmptrst qword ptr [{}]", in(reg) d, options(nostack));
    expect_ud!(c, "vmlaunch", "vmlaunch", options(nostack));
    expect_ud!(c, "vmresume", "vmresume", options(nostack));
    expect_ud!(c, "vmread", "vmread {}, {}", out(reg) _, in(reg) 0x6800u64, options(nostack));
    expect_ud!(c, "vmwrite", "vmwrite {}, {}", in(reg) 0x6800u64, in(reg) 0u64, options(nostack));
    expect_ud!(c, "invept", "invept {}, xmmword ptr [{}]", in(reg) 2u64, in(reg) d, options(nostack));
    expect_ud!(c, "invvpid", "invvpid {}, xmmword ptr [{}]", in(reg) 2u64, in(reg) d, options(nostack));
    expect_ud!(c, "vmfunc", "vmfunc", in("eax") 0, in("ecx") 0, options(nostack));
    expect_ud!(c, "vmrun", "vmrun rax", in("rax") pa, options(nostack));
    expect_ud!(c, "vmload", "vmload rax", in("rax") pa, options(nostack));
    expect_ud!(c, "vmsave", "vmsave rax", in("rax") pa, options(nostack));
    expect_ud!(c, "clgi", "clgi", options(nostack));
    expect_ud!(c, "stgi", "stgi", options(nostack));
    expect_ud!(c, "invlpga", "invlpga rax, ecx", in("rax") 0u64, in("ecx") 1, options(nostack));
    // Last: on hardware that ran it, SKINIT would re-initialise the CPU.
    expect_ud!(c, "skinit", "skinit eax", in("eax") pa as u32, options(nostack));
}

/// Values no neighbour could live with: a SYSCALL into unmapped space with the wrong segments
/// and every flag cleared, a foreign KERNEL_GS_BASE, every memory type uncacheable.
const HOSTILE: [(u32, u64); 5] = [
    (STAR, 0x0023_0033_0000_0000),
    (LSTAR, 0xffff_8000_dead_0000),
    (FMASK, 0xffff_ffff),
    (KERNEL_GS_BASE, 0xffff_8000_bad0_0000),
    (PAT, 0),
];

/// Sets [`HOSTILE`] (swapping GS too) and keeps them through many time slices; checks that
/// this partition keeps them while others run.
fn hostile_msrs(c: &mut Checks) {
    let mut kept = true;
    for _ in 0..24 {
        for (msr, v) in HOSTILE {
            // SAFETY: this guest never executes SYSCALL and does not use GS; PAT 0 makes its
            // own memory uncacheable, which is only slow.
            unsafe { instr::wrmsr(msr, v) };
        }
        // SAFETY: GS is not used by this guest.
        unsafe { guest_rt::syscall::swapgs() };
        let _ = guest_rt::hypercall::yield_now();
        let start = instr::rdtsc();
        while instr::rdtsc().wrapping_sub(start) < 500_000 {
            core::hint::spin_loop();
        }
        for (msr, v) in HOSTILE {
            // The SWAPGS moved our KERNEL_GS_BASE value into GS.base.
            let msr = if msr == KERNEL_GS_BASE { 0xc000_0101 } else { msr };
            // SAFETY: all of these are readable.
            kept &= unsafe { instr::rdmsr(msr) } == v;
        }
    }
    c.check("hostile-msrs-kept", guest_rt::ensure!(kept, "our own MSR values changed under us"));
}
