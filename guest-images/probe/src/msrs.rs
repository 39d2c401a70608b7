//! The MSRs the CPU uses by itself (SYSCALL's, KERNEL_GS_BASE, PAT) hold this partition's
//! values while it runs, across time slices and other partitions' runs; EFER writes follow the
//! SDM; CPUID and the MSR allow-list agree (no MSR the CPUID says exists raises #GP).

use guest_rt::exception::GP;
use guest_rt::hypercall::yield_now;
use guest_rt::instr::{self, cpuid};
use guest_rt::{Checks, StartInfo, checks::Why, ensure, expect_exception, syscall};

use crate::cpu::faulted;

const MCG_CAP: u32 = 0x179;
const MCG_STATUS: u32 = 0x17a;
const MISC_ENABLE: u32 = 0x1a0;
const PAT: u32 = 0x277;
const EFER: u32 = 0xc000_0080;
const STAR: u32 = 0xc000_0081;
const LSTAR: u32 = 0xc000_0082;
const FMASK: u32 = 0xc000_0084;
const GS_BASE: u32 = 0xc000_0101;
const KERNEL_GS_BASE: u32 = 0xc000_0102;
const TSC_AUX: u32 = 0xc000_0103;
const AMD_PERF_EVTSEL0: u32 = 0xc001_0000;
const AMD_PERF_CTR0: u32 = 0xc001_0004;

const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_AC: u64 = 1 << 18;
/// SYSCALL's CS and SS come from STAR[47:32]: the start-up GDT's code (0x08) and data (0x10).
const STAR_VALUE: u64 = 0x08 << 32;

pub fn run(c: &mut Checks, info: &StartInfo) {
    efer_checks(c);
    syscall_checks(c, info.partition_id);
    swapgs_checks(c);
    pat_checks(c);
    c.check("msr-cpuid-agree", cpuid_msr_agreement());
    boot_msrs(c);
}

/// RDMSR that reports a fault instead of taking it.
fn read(msr: u32) -> Result<u64, Why> {
    let mut v = 0;
    // SAFETY: a #GP is caught; reading an MSR changes nothing.
    let e = expect_exception(|| v = unsafe { instr::rdmsr(msr) });
    match e {
        None => Ok(v),
        Some(e) => Err(guest_rt::why!("RDMSR {msr:#x} raised {e}")),
    }
}

/// WRMSR that reports a fault instead of taking it.
///
/// # Safety
/// As [`instr::wrmsr`], minus the #GP, which is caught.
unsafe fn write(msr: u32, v: u64) -> Result<(), Why> {
    // SAFETY: per the caller.
    let e = expect_exception(|| unsafe { instr::wrmsr(msr, v) });
    match e {
        None => Ok(()),
        Some(e) => Err(guest_rt::why!("WRMSR {msr:#x} <- {v:#x} raised {e}")),
    }
}

/// Spends about `ticks` TSC ticks, yielding first: other partitions and other time slices run
/// in between.
fn busy(ticks: u64) {
    let _ = yield_now();
    let start = instr::rdtsc();
    while instr::rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
    let _ = yield_now();
}

fn efer_checks(c: &mut Checks) {
    let Ok(efer) = read(EFER) else { return };
    // SAFETY: clearing LME with paging on must raise #GP (SDM Vol. 3A §2.2.1) and change
    // nothing; were it accepted, the write is undone right away.
    let e = expect_exception(|| unsafe { instr::wrmsr(EFER, efer & !EFER_LME) });
    let now = read(EFER).unwrap_or(0);
    if e.is_none() {
        // SAFETY: puts back what we read.
        let _ = unsafe { write(EFER, efer) };
    }
    c.check(
        "efer-lme-clear-gp",
        faulted(e, GP, Some(0))
            .and_then(|()| ensure!(now == efer, "EFER {now:#x} after the refused write")),
    );
    // LMA is read-only: a write without it keeps it (and the CPU in long mode).
    // SAFETY: the same EFER but LMA; the CPU ignores the LMA bit of the value.
    let r = unsafe { write(EFER, efer & !EFER_LMA) };
    let now = read(EFER).unwrap_or(0);
    c.check(
        "efer-lma-read-only",
        r.and_then(|()| {
            ensure!(now == efer, "EFER {now:#x} after writing {:#x}", efer & !EFER_LMA)
        }),
    );
}

fn syscall_checks(c: &mut Checks, partition: u64) {
    let has_syscall = cpuid(0x8000_0001, 0).edx & (1 << 11) != 0;
    if !has_syscall {
        return;
    }
    let saved = [EFER, STAR, LSTAR, FMASK].map(|m| read(m).unwrap_or(0));
    let entry = syscall::entry(partition);
    let set = [(EFER, saved[0] | EFER_SCE), (STAR, STAR_VALUE), (LSTAR, entry), (FMASK, RFLAGS_DF)];
    for (m, v) in set {
        // SAFETY: SCE only enables SYSCALL; STAR/LSTAR/FMASK only matter to SYSCALL, which
        // only `syscall::call` executes, with LSTAR at one of its entries.
        if let Err(why) = unsafe { write(m, v) } {
            c.check("syscall", Err::<(), _>(why));
            return;
        }
    }
    let want = partition % 4;
    // SAFETY: SCE is set and LSTAR is `syscall::entry(partition)`.
    let (seen, ret) = unsafe { syscall::call() };
    c.check(
        "syscall-lstar",
        ensure!(seen.entry == want, "entry {} ran, LSTAR names {want}", seen.entry as i64),
    );
    c.check(
        "syscall-rcx-r11",
        ensure!(seen.rcx == ret, "RCX {:#x}, the next instruction is {ret:#x}", seen.rcx).and_then(
            |()| {
                let r11 = seen.r11;
                ensure!(
                    r11 & (RFLAGS_AC | RFLAGS_DF) == RFLAGS_AC | RFLAGS_DF && r11 & RFLAGS_RF == 0,
                    "R11 {r11:#x}: want the caller's RFLAGS (AC, DF set)"
                )
            },
        ),
    );
    c.check(
        "syscall-fmask",
        ensure!(
            seen.rflags & RFLAGS_DF == 0 && seen.rflags & RFLAGS_AC != 0,
            "RFLAGS {:#x} in the entry: FMASK clears DF only",
            seen.rflags
        ),
    );
    c.check(
        "syscall-star",
        ensure!(
            seen.cs == 0x08 && seen.ss == 0x10,
            "CS {:#x} SS {:#x}, STAR says 0x8/0x10",
            seen.cs,
            seen.ss
        ),
    );
    // Other partitions (and other time slices of ours) run in between: ours must stay.
    busy(6_000_000);
    // SAFETY: as above; if our LSTAR were lost, another entry (or worse) would run.
    let (again, _) = unsafe { syscall::call() };
    let kept = [STAR, LSTAR, FMASK].map(|m| read(m).unwrap_or(0));
    c.check(
        "syscall-msrs-across-slices",
        ensure!(again.entry == want, "entry {} ran, LSTAR names {want}", again.entry as i64)
            .and_then(|()| {
                ensure!(kept == [STAR_VALUE, entry, RFLAGS_DF], "STAR/LSTAR/FMASK read {kept:#x?}")
            }),
    );
    for (m, v) in [(EFER, saved[0]), (STAR, saved[1]), (LSTAR, saved[2]), (FMASK, saved[3])] {
        // SAFETY: puts back the values read above.
        let _ = unsafe { write(m, v) };
    }
}

fn swapgs_checks(c: &mut Checks) {
    let (a, b) = (0x0000_1234_5678_0000u64, 0xffff_8000_4321_0000u64);
    let saved = [GS_BASE, KERNEL_GS_BASE].map(|m| read(m).unwrap_or(0));
    // SAFETY: this runtime does not use GS; both bases are put back below.
    let r = unsafe { write(GS_BASE, a).and_then(|()| write(KERNEL_GS_BASE, b)) };
    if let Err(why) = r {
        c.check("swapgs", Err::<(), _>(why));
        return;
    }
    let pair = || [GS_BASE, KERNEL_GS_BASE].map(|m| read(m).unwrap_or(0));
    // SAFETY: GS is ours (see above); we swap back before restoring.
    unsafe { syscall::swapgs() };
    let swapped = pair();
    c.check(
        "swapgs",
        ensure!(
            swapped == [b, a],
            "GS/KERNEL_GS_BASE {swapped:#x?} after SWAPGS, want [{b:#x}, {a:#x}]"
        ),
    );
    busy(3_000_000);
    let later = pair();
    // SAFETY: as above.
    unsafe { syscall::swapgs() };
    let back = pair();
    c.check(
        "swapgs-across-slices",
        ensure!(later == [b, a], "GS/KERNEL_GS_BASE {later:#x?} after other slices")
            .and_then(|()| ensure!(back == [a, b], "{back:#x?} after swapping back")),
    );
    for (m, v) in [(GS_BASE, saved[0]), (KERNEL_GS_BASE, saved[1])] {
        // SAFETY: the values read above.
        let _ = unsafe { write(m, v) };
    }
}

fn pat_checks(c: &mut Checks) {
    let Ok(old) = read(PAT) else {
        c.check("pat", Err::<(), _>(guest_rt::why!("RDMSR PAT faulted")));
        return;
    };
    // PA7 (no mapping of ours selects it) becomes write-combining (1).
    let new = (old & !(0xff << 56)) | (1 << 56);
    // SAFETY: only PA7 changes, which none of our page-table entries selects.
    let r = unsafe { write(PAT, new) };
    let got = read(PAT).unwrap_or(0);
    c.check("pat", r.and_then(|()| ensure!(got == new, "PAT {got:#x} after writing {new:#x}")));
    // SAFETY: type 2 is undefined: #GP(0) and no change (SDM Vol. 3A §13.12.2).
    let e = expect_exception(|| unsafe { instr::wrmsr(PAT, (old & !(0xff << 56)) | (2 << 56)) });
    let after = read(PAT).unwrap_or(0);
    c.check(
        "pat-invalid-gp",
        faulted(e, GP, Some(0))
            .and_then(|()| ensure!(after == new, "PAT {after:#x} after the refused write")),
    );
    // SAFETY: the value read above.
    let _ = unsafe { write(PAT, old) };
}

/// Every MSR whose existence this CPUID announces reads without #GP; TSC_AUX, announced by
/// neither RDTSCP nor RDPID, raises it.
fn cpuid_msr_agreement() -> Result<(), Why> {
    let l1 = cpuid(1, 0);
    let max = cpuid(0, 0).eax;
    let l7 = if max >= 7 { cpuid(7, 0) } else { Default::default() };
    let pmu_version = if max >= 0xa { cpuid(0xa, 0).eax & 0xff } else { 0 };
    let xsaves = max >= 0xd && cpuid(0xd, 1).eax & (1 << 3) != 0;
    let x1 = cpuid(0x8000_0001, 0);
    let amd = &instr::cpu_vendor() == b"AuthenticAMD";
    let has = |r: u32, b: u32| r & (1 << b) != 0;
    let claims: [(bool, u32, &str); 20] = [
        (has(l1.edx, 14), MCG_CAP, "MCA"),
        (has(l1.edx, 14), MCG_STATUS, "MCA"),
        (has(l1.edx, 12), 0xfe, "MTRR"),
        (has(l1.edx, 12), 0x2ff, "MTRR"),
        (has(l1.edx, 16), PAT, "PAT"),
        (has(l1.edx, 11), 0x174, "SEP"),
        (has(l1.edx, 9), 0x1b, "APIC"),
        (has(l1.ecx, 24), 0x6e0, "TSC deadline"),
        (has(l1.ecx, 15), 0x345, "PDCM"),
        (has(l1.edx, 21), 0x600, "DS"),
        (has(l7.ebx, 1), 0x3b, "TSC_ADJUST"),
        (has(l7.edx, 26), 0x48, "IBRS"),
        (has(l7.edx, 29), 0x10a, "ARCH_CAPABILITIES"),
        (has(l7.edx, 20) || has(l7.ecx, 7), 0x6a2, "CET"),
        (pmu_version != 0, 0xc1, "PMU"),
        (pmu_version != 0, 0x186, "PMU"),
        (has(x1.edx, 27) || has(l7.ecx, 22), TSC_AUX, "RDTSCP/RDPID"),
        (xsaves, 0xda0, "XSAVES"),
        (amd, AMD_PERF_EVTSEL0 + 3, "AMD legacy PMU"),
        (amd, AMD_PERF_CTR0 + 3, "AMD legacy PMU"),
    ];
    for (claimed, msr, feature) in claims {
        if claimed {
            read(msr).map_err(|why| guest_rt::why!("CPUID has {feature}: {why}"))?;
        }
    }
    if !has(x1.edx, 27) && !has(l7.ecx, 22) {
        ensure!(read(TSC_AUX).is_err(), "TSC_AUX reads without RDTSCP or RDPID in CPUID")?;
    }
    Ok(())
}

/// MSRs a stock kernel's start-up reads, with the values the contract gives.
fn boot_msrs(c: &mut Checks) {
    if cpuid(1, 0).edx & (1 << 14) != 0 {
        // SAFETY: writing 0 to MCG_STATUS is what a kernel does at start-up; 1 must fault.
        let r = unsafe { write(MCG_STATUS, 0) };
        // SAFETY: the contract refuses it with #GP, caught here; nothing changes.
        let e = expect_exception(|| unsafe { instr::wrmsr(MCG_STATUS, 1) });
        let cap = read(MCG_CAP).unwrap_or(u64::MAX);
        c.check(
            "msr-mcg",
            r.and_then(|()| faulted(e, GP, Some(0)))
                .and_then(|()| ensure!(cap == 0, "MCG_CAP {cap:#x}, want 0 (no banks)")),
        );
    }
    match &instr::cpu_vendor() {
        b"GenuineIntel" => {
            let r = read(MISC_ENABLE);
            c.check(
                "msr-misc-enable",
                r.and_then(|v| ensure!(v & 1 != 0, "MISC_ENABLE {v:#x} lacks fast strings")),
            );
        }
        b"AuthenticAMD" => {
            c.check("msr-amd-perf-storage", amd_perf_storage());
        }
        _ => {}
    }
}

/// The legacy AMD counters keep what is written (and never count: the event is left off).
fn amd_perf_storage() -> Result<(), Why> {
    let (sel, ctr) = (0x43_0076u64, 0x1234_5678_9abcu64);
    // SAFETY: the event select stays disabled (bit 22 clear): nothing counts or interrupts.
    unsafe { write(AMD_PERF_EVTSEL0 + 1, sel)? };
    // SAFETY: a counter of a disabled event.
    unsafe { write(AMD_PERF_CTR0 + 1, ctr)? };
    let got = (read(AMD_PERF_EVTSEL0 + 1)?, read(AMD_PERF_CTR0 + 1)?);
    // SAFETY: back to the reset values.
    unsafe { write(AMD_PERF_EVTSEL0 + 1, 0).and_then(|()| write(AMD_PERF_CTR0 + 1, 0))? };
    ensure!(got == (sel, ctr), "PerfEvtSel1/PerfCtr1 read {got:#x?}, wrote {sel:#x}/{ctr:#x}")
}
