//! The CPU as the partition sees it: CPUID, MSRs, faulting instructions, XSETBV, caches, TSC.

use core::arch::asm;

use guest_rt::exception::{BP, GP, PF, UD};
use guest_rt::hvabi::hypercall::{CPUID_MAX_LEAF, CPUID_SIGNATURE};
use guest_rt::instr::{self, cpuid};
use guest_rt::{Checks, Exception, checks::Why, ensure, expect_exception};

const IA32_VMX_BASIC: u32 = 0x480;
const VM_CR: u32 = 0xc001_0114;
const EFER: u32 = 0xc000_0080;
const FS_BASE: u32 = 0xc000_0100;
const KERNEL_GS_BASE: u32 = 0xc000_0102;

const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const EFER_SVME: u64 = 1 << 12;
const CR4_OSXSAVE: u64 = 1 << 18;

pub fn run(c: &mut Checks) {
    cpuid_checks(c);
    msr_checks(c);
    idt_checks(c);
    virtualization_instructions(c);
    xsetbv_checks(c);
    c.check("wbinvd", no_fault(expect_exception(instr::wbinvd)));
    // SAFETY: INVD runs under the hypervisor, which must intercept it (contract: sensitive
    // instructions trap); on bare metal it could drop dirty lines, which we accept in a test.
    c.check("invd", no_fault(expect_exception(|| unsafe { instr::invd() })));
    c.check("rdtsc-increases", rdtsc_increases());
}

/// `Ok` when the closure ran without an exception.
fn no_fault(e: Option<Exception>) -> Result<(), Why> {
    match e {
        None => Ok(()),
        Some(e) => Err(guest_rt::why!("raised {e}")),
    }
}

/// `Ok` when the closure raised `vector` with error code `error_code` (if given).
pub fn faulted(e: Option<Exception>, vector: u8, error_code: Option<u64>) -> Result<(), Why> {
    let name = guest_rt::exception::vector_name(vector);
    match e {
        None => Err(guest_rt::why!("no exception, want {name}")),
        Some(e) if e.vector != vector => Err(guest_rt::why!("raised {e}, want {name}")),
        Some(e) => match error_code {
            Some(code) if code != e.error_code => {
                Err(guest_rt::why!("raised {e}, want error code {code:#x}"))
            }
            _ => Ok(()),
        },
    }
}

fn cpuid_checks(c: &mut Checks) {
    c.check("cpuid-basic", cpuid_basic());
    let l1 = cpuid(1, 0);
    c.check(
        "cpuid-hv-bit",
        ensure!(l1.ecx & (1 << 31) != 0, "leaf 1 ECX {:#x} lacks bit 31", l1.ecx),
    );
    c.check(
        "cpuid-vmx-hidden",
        ensure!(l1.ecx & (1 << 5) == 0, "leaf 1 ECX {:#x} has VMX", l1.ecx),
    );
    let ext_max = cpuid(0x8000_0000, 0).eax;
    let ext1 = if ext_max >= 0x8000_0001 { cpuid(0x8000_0001, 0).ecx } else { 0 };
    c.check(
        "cpuid-svm-hidden",
        ensure!(ext1 & (1 << 2) == 0, "leaf 0x80000001 ECX {ext1:#x} has SVM"),
    );
    let hv = cpuid(0x4000_0000, 0);
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&hv.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&hv.ecx.to_le_bytes());
    sig[8..12].copy_from_slice(&hv.edx.to_le_bytes());
    c.check(
        "cpuid-hv-signature",
        ensure!(
            sig == CPUID_SIGNATURE,
            "signature {:?}",
            core::str::from_utf8(&sig).unwrap_or("(not UTF-8)")
        ),
    );
    c.check_eq("cpuid-hv-max-leaf", hv.eax, CPUID_MAX_LEAF);
}

fn cpuid_basic() -> Result<(), Why> {
    let l0 = cpuid(0, 0);
    ensure!(l0.eax >= 1, "leaf 0 max {:#x} < 1", l0.eax)?;
    let vendor = instr::cpu_vendor();
    ensure!(vendor.iter().all(|b| b.is_ascii_graphic()), "vendor {vendor:02x?} is not printable")?;
    ensure!(cpuid(0, 0) == l0, "leaf 0 changed between two calls")?;
    let l1 = cpuid(1, 0);
    let again = cpuid(1, 0);
    // EBX[31:24] is the initial APIC id, stable on one vCPU: the whole leaf must repeat.
    ensure!(l1 == again, "leaf 1 changed between two calls: {l1:x?} vs {again:x?}")
}

fn msr_checks(c: &mut Checks) {
    // SAFETY: a forbidden MSR raises #GP, caught by expect_exception; reading changes nothing.
    let e = expect_exception(|| unsafe {
        instr::rdmsr(IA32_VMX_BASIC);
    });
    c.check("msr-vmx-basic-gp", faulted(e, GP, Some(0)));
    // SAFETY: VM_CR is outside the allow-list: the write raises #GP and changes nothing.
    let e = expect_exception(|| unsafe { instr::wrmsr(VM_CR, 1 << 4) });
    c.check("msr-vm-cr-gp", faulted(e, GP, Some(0)));

    let mut efer = 0;
    // SAFETY: EFER is readable in every partition (contract); a #GP would be caught.
    let e = expect_exception(|| efer = unsafe { instr::rdmsr(EFER) });
    c.check(
        "efer",
        no_fault(e).and_then(|()| {
            let want = EFER_LME | EFER_LMA | EFER_NXE;
            ensure!(efer & want == want, "EFER {efer:#x} lacks LME|LMA|NXE")
        }),
    );
    c.check("efer-svme-hidden", ensure!(efer & EFER_SVME == 0, "EFER {efer:#x} shows SVME"));
    c.check("msr-kernel-gs-base", msr_round_trip(KERNEL_GS_BASE, 0xffff_8000_1234_5000));
    c.check("msr-fs-base", msr_round_trip(FS_BASE, 0x0000_7fff_dead_b000));
}

/// Writes `value` to an allowed MSR, reads it back, restores the old value.
fn msr_round_trip(msr: u32, value: u64) -> Result<(), Why> {
    let mut old = 0;
    let mut got = 0;
    // SAFETY: FS_BASE and KERNEL_GS_BASE change only segment bases this guest does not use
    // (no TLS, no SWAPGS); the old value is put back before the closure ends.
    let e = expect_exception(|| unsafe {
        old = instr::rdmsr(msr);
        instr::wrmsr(msr, value);
        got = instr::rdmsr(msr);
        instr::wrmsr(msr, old);
    });
    no_fault(e)?;
    ensure!(got == value, "MSR {msr:#x}: wrote {value:#x}, read {got:#x}")
}

fn idt_checks(c: &mut Checks) {
    // SAFETY: INT3 traps to our own IDT; nothing else happens.
    let e = expect_exception(|| unsafe { asm!("int3", options(nomem, nostack)) });
    c.check("idt-int3", faulted(e, BP, None));
    // SAFETY: UD2 raises #UD into our own IDT; nothing else happens.
    let e = expect_exception(|| unsafe { asm!("ud2", options(nomem, nostack)) });
    c.check("idt-ud2", faulted(e, UD, None));

    // PML4 slot 224 is empty in the start-up identity map: a not-present read, error code 0.
    let va: u64 = 0x0000_7000_0000_0000;
    // SAFETY: the address is unmapped, so the read raises #PF, caught by expect_exception.
    let e = expect_exception(|| unsafe {
        (va as *const u64).read_volatile();
    });
    let r = faulted(e, PF, Some(0)).and_then(|()| {
        let cr2 = e.map_or(0, |e| e.cr2);
        ensure!(cr2 == va, "CR2 {cr2:#x}, want {va:#x}")
    });
    c.check("page-fault", r);
}

fn virtualization_instructions(c: &mut Checks) {
    #[repr(C, align(4096))]
    struct Region([u8; 4096]);
    let region = Region([0; 4096]);
    let pa = &raw const region as u64;
    // SAFETY: with VMX hidden, VMXON raises #UD (in either backend) and changes nothing.
    let e = expect_exception(|| unsafe {
        asm!("vmxon qword ptr [{}]", in(reg) &pa, options(nostack));
    });
    c.check("vmxon-ud", faulted(e, UD, None));
    // SAFETY: with SVM hidden, VMRUN raises #UD (in either backend) and changes nothing.
    let e = expect_exception(|| unsafe {
        asm!("vmrun rax", in("rax") pa, options(nostack));
    });
    c.check("vmrun-ud", faulted(e, UD, None));
}

fn xsetbv_checks(c: &mut Checks) {
    let has_xsave = cpuid(1, 0).ecx & (1 << 26) != 0;
    let cr4 = instr::read_cr4();
    // SAFETY: CR4.OSXSAVE is clear, so XSETBV raises #UD and changes nothing.
    let e = expect_exception(|| unsafe { instr::xsetbv(0, 1) });
    c.check("xsetbv-no-osxsave-ud", faulted(e, UD, None));
    if !has_xsave {
        // SAFETY: without XSAVE, CR4.OSXSAVE is reserved: the write raises #GP, nothing changes.
        let e = expect_exception(|| unsafe { instr::write_cr4(cr4 | CR4_OSXSAVE) });
        c.check("cr4-osxsave-gp", faulted(e, GP, Some(0)));
        return;
    }
    // SAFETY: the CPU has XSAVE, so OSXSAVE is a valid CR4 bit; it only enables XGETBV/XSETBV.
    let e = expect_exception(|| unsafe { instr::write_cr4(cr4 | CR4_OSXSAVE) });
    let now = instr::read_cr4();
    c.check(
        "cr4-osxsave",
        no_fault(e)
            .and_then(|()| ensure!(now & CR4_OSXSAVE != 0, "CR4 {now:#x} after setting OSXSAVE")),
    );
    let mirrored = cpuid(1, 0).ecx & (1 << 27) != 0;
    c.check(
        "cpuid-osxsave-mirror",
        ensure!(mirrored, "leaf 1 ECX.OSXSAVE stays 0 with CR4.OSXSAVE set"),
    );
    // SAFETY: XCR0 = 1 (x87 only) is always valid; this guest uses no SSE/AVX state.
    let e = expect_exception(|| unsafe { instr::xsetbv(0, 1) });
    let xcr0 = instr::xgetbv(0);
    c.check(
        "xsetbv-valid",
        no_fault(e).and_then(|()| ensure!(xcr0 == 1, "XCR0 reads {xcr0:#x} after writing 1")),
    );
    // SAFETY: XCR0 bit 0 must be 1: the write raises #GP(0) and changes nothing.
    let e = expect_exception(|| unsafe { instr::xsetbv(0, 0) });
    c.check("xsetbv-invalid-gp", faulted(e, GP, Some(0)));
}

fn rdtsc_increases() -> Result<(), Why> {
    let first = instr::rdtsc();
    let mut last = first;
    for _ in 0..100 {
        // CPUID exits to the hypervisor, so time passes between reads.
        cpuid(0, 0);
        let now = instr::rdtsc();
        ensure!(now >= last, "TSC went back from {last:#x} to {now:#x}")?;
        last = now;
    }
    ensure!(last > first, "TSC stuck at {first:#x}")
}
