//! The `vcpus=2` mode (scenario `vcpus2`): this vCPU, the bootstrap processor, starts vCPU 1
//! the way a PC's firmware or kernel starts an application processor, INIT, then two
//! start-up IPIs (SDM Vol. 3A §9.4.4.1), into a real-mode trampoline below 1 MiB; then checks
//! that it reports in at the SIPI's address, that its APIC timer fires, that fixed IPIs
//! arrive both ways, that a second INIT-SIPI restarts it, and that an NMI IPI wakes it from
//! HLT and its answer, an NMI IPI back, arrives here.
//!
//! Both vCPUs drive their local APIC through the x2APIC MSRs (SDM Vol. 3A §11.12): the
//! application processor stays in real mode, where the xAPIC page at 0xFEE0_0000 is out of
//! reach and WRMSR is not. Its interrupt vectors go through a real-mode IVT in the trampoline
//! page (its IDTR points there).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, Ordering};

use guest_rt::exception::{InterruptFrame, register_handler};
use guest_rt::{Checks, checks::Why, ensure, instr};

/// Where the trampoline goes, and the start-up IPI's vector that names it (0x08 -> 0x8000).
const TRAMPOLINE: u64 = 0x8000;
const SIPI_VECTOR: u64 = TRAMPOLINE >> 12;
/// Offsets in the trampoline page: the IVT (256 four-byte entries), the IDTR image, the
/// shared counters (written by the application processor, read here).
const IVT: u64 = 0x400;
const IDTR: u64 = 0xf80;
const UP: u64 = 0x800;
const TIMER_HITS: u64 = 0x804;
const IPI_HITS: u64 = 0x808;
const CS_SEEN: u64 = 0x80c;
/// NMIs vCPU 1 took, and the IP its last one interrupted (16 bits).
const NMI_HITS: u64 = 0x814;
const NMI_IP: u64 = 0x818;
/// The x87 control word vCPU 1 loads (at 0x810), and where its timer handler stores the one it
/// has (0x812).
const AP_FCW: u64 = 0x810;
const AP_FCW_SEEN: u64 = 0x812;
/// Control words, every exception masked: vCPU 1's (round toward zero) and this vCPU's (53-bit
/// precision; neither is what FNINIT gives).
const AP_FCW_VALUE: u16 = 0x0c7f;
const BSP_FCW_VALUE: u16 = 0x027f;
/// The application processor's vectors: its APIC timer and the IPI from here; and the IPI it
/// sends back.
const AP_TIMER_VECTOR: u8 = 0x40;
const AP_IPI_VECTOR: u8 = 0x41;
/// vCPU 1 counts without exits until told to stop ([`pause_yields`]).
const AP_BUSY_VECTOR: u8 = 0x44;
/// vCPU 1 writes its CR2, waits for vCPU 0 to write its own, and reads its CR2 back
/// ([`cr2_kept`]); the words it uses.
const AP_CR2_VECTOR: u8 = 0x47;
const CR2_READY: u64 = 0x840;
const CR2_GO: u64 = 0x844;
const CR2_READ: u64 = 0x848;
const AP_CR2: u32 = 0x5a5a_5000;
const BSP_CR2: u64 = 0x1234_5000;
const BUSY_COUNT: u64 = 0x81c;
const BUSY_STOP: u64 = 0x820;
const BUSY_DONE: u64 = 0x824;
const BSP_IPI_VECTOR: u8 = 0x42;
/// What vCPU 1's CPUID and x2APIC ID register say (written before its timer is armed).
const AP_CPUID_1_EBX: u64 = 0x828;
const AP_CPUID_B_EDX: u64 = 0x82c;
const AP_X2APIC_ID: u64 = 0x830;
const X2APIC_ID: u32 = 0x802;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_ICR: u32 = 0x830;
/// ICR (x2APIC: destination in bits 63:32): delivery modes, level assert, level trigger.
const ICR_INIT: u64 = 5 << 8;
const ICR_STARTUP: u64 = 6 << 8;
const ICR_ASSERT: u64 = 1 << 14;
const ICR_LEVEL: u64 = 1 << 15;
pub(crate) const AP_APIC_ID: u64 = 1;
/// ICR delivery mode NMI (the vector field is ignored).
const ICR_NMI: u64 = 4 << 8;
const NMI_VECTOR: u8 = 2;

/// How long to wait for the other vCPU, in TSC ticks (it runs when this one's slice ends).
const WAIT_TICKS: u64 = 400_000_000;
/// With `parallel` (host CPUs of their own), ten times as long: the other vCPU's CPU may sleep
/// in HLT, and an emulator on a busy host wakes its thread late (QEMU's TSC follows the host's
/// clock; Bochs' counts instructions and needs no more).
static WAIT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(WAIT_TICKS);

fn wait_ticks() -> u64 {
    WAIT.load(Ordering::Relaxed)
}

static REPLIES: AtomicU32 = AtomicU32::new(0);
static NMI_REPLIES: AtomicU32 = AtomicU32::new(0);

// The application processor's code, copied to TRAMPOLINE and entered in real mode with CS =
// 0x0800, IP = 0. DS = SS = CS; counters at fixed offsets (the constants above).
global_asm!(
    ".pushsection .text.ap_trampoline, \"ax\"",
    ".global probe_ap_start",
    ".global probe_ap_end",
    ".global probe_ap_timer",
    ".global probe_ap_ipi",
    ".global probe_ap_nmi",
    ".global probe_ap_after_hlt",
    ".global probe_ap_pingpong",
    ".global probe_ap_busy",
    ".global probe_ap_cr2",
    ".code16",
    "probe_ap_start:",
    "cli",
    "mov ax, cs",
    "mov ds, ax",
    "mov ss, ax",
    "mov sp, 0xf00",
    "mov word ptr [0x80c], ax",
    "lidt [0xf80]",
    "lock inc dword ptr [0x800]",
    // Its own x87 control word (the one at 0x810), which vCPU 0 must not see.
    "fninit",
    "fldcw word ptr [0x810]",
    // x2APIC on (IA32_APIC_BASE bits 10 and 11), software-enabled (SVR 0x1FF).
    "mov ecx, 0x1b",
    "rdmsr",
    "or eax, 0xc00",
    "wrmsr",
    "xor edx, edx",
    "mov ecx, 0x80f",
    "mov eax, 0x1ff",
    "wrmsr",
    // Who CPUID says it is: leaf 1 EBX (at 0x828), leaf 0xB.0 EDX (0x82c), and its x2APIC
    // ID register (0x830).
    "mov eax, 1",
    "cpuid",
    "mov dword ptr [0x828], ebx",
    "mov eax, 0xb",
    "xor ecx, ecx",
    "cpuid",
    "mov dword ptr [0x82c], edx",
    "mov ecx, 0x802",
    "rdmsr",
    "mov dword ptr [0x830], eax",
    // Timer: divide by 1, one-shot on vector 0x40, 50,000 bus-clock ticks.
    "mov ecx, 0x83e",
    "mov eax, 0xb",
    "wrmsr",
    "mov ecx, 0x832",
    "mov eax, 0x40",
    "wrmsr",
    "mov ecx, 0x838",
    "mov eax, 50000",
    "wrmsr",
    "sti",
    "2:",
    "hlt",
    "probe_ap_after_hlt:",
    "jmp 2b",
    // Vector 0x40: count, EOI.
    "probe_ap_timer:",
    "push eax",
    "push ecx",
    "push edx",
    "lock inc dword ptr [0x804]",
    "fnstcw word ptr [0x812]",
    "xor eax, eax",
    "xor edx, edx",
    "mov ecx, 0x80b",
    "wrmsr",
    "pop edx",
    "pop ecx",
    "pop eax",
    "iret",
    // Vector 0x41: count, EOI, answer with a fixed IPI on vector 0x42 to APIC ID 0.
    "probe_ap_ipi:",
    "push eax",
    "push ecx",
    "push edx",
    "lock inc dword ptr [0x808]",
    "xor eax, eax",
    "xor edx, edx",
    "mov ecx, 0x80b",
    "wrmsr",
    "mov eax, 0x42",
    "mov ecx, 0x830",
    "wrmsr",
    "pop edx",
    "pop ecx",
    "pop eax",
    "iret",
    // Vector 2 (NMI): count, note the interrupted IP, answer with an NMI IPI to APIC ID 0.
    "probe_ap_nmi:",
    "push eax",
    "push ecx",
    "push edx",
    "push bp",
    "mov bp, sp",
    "mov ax, word ptr [bp + 14]",
    "mov word ptr [0x818], ax",
    "lock inc dword ptr [0x814]",
    "xor edx, edx",
    "mov eax, 0x400",
    "mov ecx, 0x830",
    "wrmsr",
    "pop bp",
    "pop edx",
    "pop ecx",
    "pop eax",
    "iret",
    // Vector 0x44: count at 0x81c, without an exit, until 0x820 is set; then say so at 0x824,
    // EOI.
    "probe_ap_busy:",
    "push eax",
    "push ecx",
    "push edx",
    "3:",
    "lock inc dword ptr [0x81c]",
    "cmp dword ptr [0x820], 0",
    "je 3b",
    "lock inc dword ptr [0x824]",
    "xor eax, eax",
    "xor edx, edx",
    "mov ecx, 0x80b",
    "wrmsr",
    "pop edx",
    "pop ecx",
    "pop eax",
    "iret",
    // Vector 0x43: EOI, then count at 0x828 until vCPU 0 says stop at 0x82c
    // (`crate::parallel`).
    "probe_ap_pingpong:",
    "push eax",
    "push ecx",
    "push edx",
    "xor eax, eax",
    "xor edx, edx",
    "mov ecx, 0x80b",
    "wrmsr",
    "3:",
    "lock inc dword ptr [0x828]",
    "cmp dword ptr [0x82c], 0",
    "je 3b",
    "pop edx",
    "pop ecx",
    "pop eax",
    "iret",
    // Vector 0x47: EOI, CR2 = 0x5a5a5000, say so at 0x840, wait (PAUSE) for 0x844, then read
    // CR2 back into 0x848 (`cr2_kept`).
    "probe_ap_cr2:",
    "push eax",
    "push ecx",
    "push edx",
    "xor eax, eax",
    "xor edx, edx",
    "mov ecx, 0x80b",
    "wrmsr",
    "mov eax, 0x5a5a5000",
    "mov cr2, eax",
    "lock inc dword ptr [0x840]",
    "3:",
    "pause",
    "cmp dword ptr [0x844], 0",
    "je 3b",
    "mov eax, cr2",
    "mov dword ptr [0x848], eax",
    "pop edx",
    "pop ecx",
    "pop eax",
    "iret",
    "probe_ap_end:",
    ".code64",
    ".popsection",
);

unsafe extern "C" {
    static probe_ap_start: u8;
    static probe_ap_end: u8;
    static probe_ap_timer: u8;
    static probe_ap_ipi: u8;
    static probe_ap_nmi: u8;
    static probe_ap_after_hlt: u8;
    static probe_ap_pingpong: u8;
    static probe_ap_busy: u8;
    static probe_ap_cr2: u8;
}

/// Offsets in the trampoline: the handlers of the timer, the fixed IPI and the NMI, and the
/// instruction after its HLT.
pub struct Offsets {
    timer: u16,
    ipi: u16,
    nmi: u16,
    after_hlt: u16,
    pingpong: u16,
    busy: u16,
    cr2: u16,
}

/// The trampoline's bytes, and offsets in it.
fn trampoline() -> (&'static [u8], Offsets) {
    // SAFETY: the symbols delimit the assembled trampoline in this image's text, which is
    // mapped and never written.
    unsafe {
        let start = &raw const probe_ap_start;
        let len = (&raw const probe_ap_end).offset_from(start) as usize;
        let at = |p: *const u8| p.offset_from(start) as u16;
        let offsets = Offsets {
            timer: at(&raw const probe_ap_timer),
            ipi: at(&raw const probe_ap_ipi),
            nmi: at(&raw const probe_ap_nmi),
            after_hlt: at(&raw const probe_ap_after_hlt),
            pingpong: at(&raw const probe_ap_pingpong),
            busy: at(&raw const probe_ap_busy),
            cr2: at(&raw const probe_ap_cr2),
        };
        (core::slice::from_raw_parts(start, len), offsets)
    }
}

pub(crate) fn shared(offset: u64) -> &'static AtomicU32 {
    // SAFETY: the trampoline page is RAM below 1 MiB that nothing else uses, identity-mapped;
    // the counters are 4-byte aligned and only touched atomically (here and by LOCK INC).
    unsafe { &*((TRAMPOLINE + offset) as *const AtomicU32) }
}

pub(crate) fn icr(value: u64) {
    // SAFETY: the x2APIC is on (checked before); an ICR write only sends an IPI.
    unsafe { instr::wrmsr(X2APIC_ICR, value) };
}

/// Each vCPU keeps its own CR2: vCPU 1 writes one, waits (PAUSE: where the vCPUs share a CPU
/// its turn goes to this one) while this vCPU writes another, and reads its own back. VM entry
/// does not load CR2 under VMX, so the hypervisor switches it with the vCPUs.
fn cr2_kept(c: &mut Checks) {
    for at in [CR2_READY, CR2_GO, CR2_READ] {
        shared(at).store(0, Ordering::SeqCst);
    }
    icr((AP_APIC_ID << 32) | u64::from(AP_CR2_VECTOR));
    let ready = wait_for(|| shared(CR2_READY).load(Ordering::SeqCst) >= 1);
    // SAFETY: CR2 only reports page-fault addresses; this vCPU takes no page fault it needs
    // the address of here.
    unsafe { core::arch::asm!("mov cr2, {}", in(reg) BSP_CR2, options(nostack, nomem)) };
    shared(CR2_GO).store(1, Ordering::SeqCst);
    let read = wait_for(|| shared(CR2_READ).load(Ordering::SeqCst) != 0);
    let got = shared(CR2_READ).load(Ordering::SeqCst);
    c.check(
        "vcpus2-cr2-kept",
        ensure!(
            ready && read && got == AP_CR2,
            "vCPU 1 read CR2 {got:#x} (wrote {AP_CR2:#x}; vCPU 0 wrote {BSP_CR2:#x} meanwhile; ready {ready}, read {read})"
        ),
    );
}

/// Loads the x87 control word.
fn set_fcw(v: u16) {
    // SAFETY: FLDCW changes only x87 rounding, precision and exception masks; this guest does
    // no x87 arithmetic, and every exception stays masked in the values used here.
    unsafe { core::arch::asm!("fldcw word ptr [{}]", in(reg) &v, options(nostack, readonly)) };
}

/// The x87 control word.
fn fcw() -> u16 {
    let mut v: u16 = 0;
    // SAFETY: FNSTCW stores two bytes into `v`.
    unsafe { core::arch::asm!("fnstcw word ptr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn on_nmi_reply(_: &mut InterruptFrame) {
    NMI_REPLIES.fetch_add(1, Ordering::SeqCst);
}

fn on_reply(_: &mut InterruptFrame) {
    REPLIES.fetch_add(1, Ordering::SeqCst);
    // SAFETY: EOI of the interrupt being handled.
    unsafe { instr::wrmsr(X2APIC_EOI, 0) };
}

/// Waits (interrupts on, so that the reply IPI comes in) until `done`, or the time runs out.
fn wait_for(done: impl Fn() -> bool) -> bool {
    let start = instr::rdtsc();
    while !done() {
        if instr::rdtsc().wrapping_sub(start) > wait_ticks() {
            return false;
        }
        instr::sti();
        core::hint::spin_loop();
        instr::cli();
    }
    true
}

/// Round trips of [`spin_round_trips`].
const SPIN_ROUNDS: u32 = 16;
/// Most turns of its spin loop a round trip may take on average. With both vCPUs on one CPU
/// and the directed yield, the sender's slice ends at its ICR write and the answer is waiting
/// when it runs again: a turn or two. Without it the sender spins out the rest of its slice
/// (2,000,000 TSC ticks, `vmm/run.rs`): tens of thousands of turns. The count, not the time,
/// is checked: under QEMU without -icount the TSC follows the host's clock.
const SPIN_TURNS_PER_ROUND: u64 = 2_000;

/// Fixed IPIs to vCPU 1 (halted), each answered by one back, waited for by spinning with
/// interrupts on (as Linux's `csd_lock_wait` does): the answer must come without the spin loop
/// running out a time slice (`vmm/ipi.rs`, `ipi::yields_to`). `parallel`: the vCPUs have host
/// CPUs of their own (`crate::parallel`), there is no slice to hand over, and the spin loop
/// turns while vCPU 1's CPU wakes from HLT (an emulator's host thread wakes in milliseconds
/// on a busy host): every answer must come, the turns are not counted.
fn spin_round_trips(c: &mut Checks, parallel: bool) {
    let base = REPLIES.load(Ordering::SeqCst);
    let (mut turns, start) = (0u64, instr::rdtsc());
    for k in 1..=SPIN_ROUNDS {
        icr((AP_APIC_ID << 32) | u64::from(AP_IPI_VECTOR));
        instr::sti();
        while REPLIES.load(Ordering::SeqCst) < base + k {
            turns += 1;
            if instr::rdtsc().wrapping_sub(start) > wait_ticks() {
                break;
            }
            core::hint::spin_loop();
        }
        instr::cli();
    }
    let ticks = instr::rdtsc().wrapping_sub(start);
    let got = REPLIES.load(Ordering::SeqCst) - base;
    guest_rt::println!(
        "vcpus2: {SPIN_ROUNDS} spin-wait IPI round trips: {ticks} TSC ticks, {turns} spin turns"
    );
    c.check(
        "vcpus2-ipi-spin-roundtrip",
        ensure!(
            got == SPIN_ROUNDS
                && (parallel || turns <= SPIN_TURNS_PER_ROUND * u64::from(SPIN_ROUNDS)),
            "{got} of {SPIN_ROUNDS} answers, {turns} turns of the spin loop, {ticks} TSC ticks"
        ),
    );
}

/// Counts vCPU 1 makes in [`pause_yields`] (about three instructions each: several time slices
/// under Bochs), or TSC ticks it may take (under QEMU's TCG without `-icount`, where the TSC
/// follows the host's clock and counting is slower: about 25 slices), whichever comes first.
const BUSY_TARGET: u32 = 3_000_000;
const BUSY_TICKS: u64 = 50_000_000;

/// vCPU 1, told by an IPI, counts without exits (runnable, not halted); this vCPU spins with
/// PAUSE until the count reaches [`BUSY_TARGET`] (or [`BUSY_TICKS`] passed). Where PAUSE exits (VMX PAUSE-loop exiting,
/// SVM's PAUSE intercept) the spinning vCPU hands vCPU 1 the rest of each turn, so this loop
/// turns a tiny share of vCPU 1's counts; without, each of its turns spins out a whole time
/// slice, a third as many turns as vCPU 1 counts or more. Turns against counts, not time: the
/// same on every emulator. `parallel`: each vCPU has a host CPU (no PAUSE exits, nothing to
/// hand over): vCPU 1 must count and stop, the turns are not compared.
fn pause_yields(c: &mut Checks, parallel: bool) {
    for at in [BUSY_COUNT, BUSY_STOP, BUSY_DONE] {
        shared(at).store(0, Ordering::SeqCst);
    }
    icr((AP_APIC_ID << 32) | u64::from(AP_BUSY_VECTOR));
    // With CPUs of their own, vCPU 1's CPU may first wake from HLT (late on a busy host).
    let (target, limit) = if parallel { (1_000, wait_ticks()) } else { (BUSY_TARGET, BUSY_TICKS) };
    let (mut turns, start) = (0u64, instr::rdtsc());
    while shared(BUSY_COUNT).load(Ordering::SeqCst) < target {
        turns += 1;
        if instr::rdtsc().wrapping_sub(start) > limit {
            break;
        }
        core::hint::spin_loop();
    }
    let counted = shared(BUSY_COUNT).load(Ordering::SeqCst);
    shared(BUSY_STOP).store(1, Ordering::SeqCst);
    let stopped = wait_for(|| shared(BUSY_DONE).load(Ordering::SeqCst) >= 1);
    guest_rt::println!("vcpus2: PAUSE spin: {turns} turns while vCPU 1 counted {counted}");
    c.check(
        "vcpus2-pause-yields",
        ensure!(
            stopped && counted > 0 && (parallel || turns * 50 < u64::from(counted)),
            "vCPU 1 counted {counted}{}; this vCPU's PAUSE loop turned {turns} times (want under 1/50 of that)",
            if stopped { "" } else { " and never stopped" }
        ),
    );
}

/// INIT (assert, de-assert), then two start-up IPIs, to APIC ID 1.
fn init_sipi_sipi() {
    let dest = AP_APIC_ID << 32;
    icr(dest | ICR_INIT | ICR_ASSERT | ICR_LEVEL);
    icr(dest | ICR_INIT | ICR_LEVEL);
    icr(dest | ICR_STARTUP | SIPI_VECTOR);
    icr(dest | ICR_STARTUP | SIPI_VECTOR);
}

/// Turns this vCPU's APIC to x2APIC mode.
fn x2apic_on() -> Result<(), Why> {
    let has = instr::cpuid(1, 0).ecx & (1 << 21) != 0;
    ensure!(has, "CPUID.1:ECX.x2APIC is clear")?;
    // SAFETY: IA32_APIC_BASE with the x2APIC offered: xAPIC -> x2APIC is a legal transition
    // (SDM Vol. 3A §11.12.5); SVR enables the APIC.
    unsafe {
        let base = instr::rdmsr(IA32_APIC_BASE);
        instr::wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        instr::wrmsr(X2APIC_SVR, 0x1ff);
    }
    Ok(())
}

/// Turns the x2APIC on, puts the trampoline in place and starts vCPU 1 with INIT-SIPI-SIPI
/// (checks in `c`); `None` when it did not report in. vCPU 1 then halts, answering each fixed
/// IPI on [`AP_IPI_VECTOR`] ([`to_ap`]) with one on [`BSP_IPI_VECTOR`] (counted by
/// [`replies`]).
pub fn start(c: &mut Checks) -> Option<Offsets> {
    if !c.check("vcpus2-x2apic", x2apic_on()) {
        return None;
    }
    register_handler(BSP_IPI_VECTOR, on_reply);
    register_handler(NMI_VECTOR, on_nmi_reply);
    let (code, at) = trampoline();
    // SAFETY: the trampoline page below 1 MiB is RAM no part of the image uses (the contract's
    // boot structures end at 0x6000), identity-mapped; the other vCPU waits for a SIPI.
    unsafe {
        let page = TRAMPOLINE as *mut u8;
        core::ptr::write_bytes(page, 0, 4096);
        core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len());
        let ivt = (TRAMPOLINE + IVT) as *mut u16;
        let segment = (TRAMPOLINE >> 4) as u16;
        for (vector, offset) in [
            (AP_TIMER_VECTOR, at.timer),
            (AP_IPI_VECTOR, at.ipi),
            (NMI_VECTOR, at.nmi),
            (crate::parallel::VECTOR, at.pingpong),
            (AP_BUSY_VECTOR, at.busy),
            (AP_CR2_VECTOR, at.cr2),
        ] {
            ivt.add(2 * usize::from(vector)).write(offset);
            ivt.add(2 * usize::from(vector) + 1).write(segment);
        }
        ((TRAMPOLINE + AP_FCW) as *mut u16).write(AP_FCW_VALUE);
        let idtr = (TRAMPOLINE + IDTR) as *mut u16;
        idtr.write(0x3ff);
        idtr.add(1).cast::<u32>().write_unaligned((TRAMPOLINE + IVT) as u32);
    }
    c.check("vcpus2-trampoline-fits", ensure!(code.len() < IVT as usize, "{} bytes", code.len()));

    set_fcw(BSP_FCW_VALUE);
    init_sipi_sipi();
    let up = wait_for(|| shared(UP).load(Ordering::SeqCst) >= 1);
    c.check("vcpus2-ap-started", ensure!(up, "vCPU 1 never reported in after INIT-SIPI-SIPI"));
    up.then_some(at)
}

/// Sends vCPU 1 the fixed IPI it answers.
pub fn to_ap() {
    icr((AP_APIC_ID << 32) | u64::from(AP_IPI_VECTOR));
}

/// Answers from vCPU 1 so far.
pub fn replies() -> u32 {
    REPLIES.load(Ordering::SeqCst)
}

/// The checks; `parallel`: the vCPUs have host CPUs of their own, and the check that they run
/// at once ([`crate::parallel`]) follows.
pub fn run(c: &mut Checks, parallel: bool) {
    if parallel {
        WAIT.store(10 * WAIT_TICKS, Ordering::Relaxed);
    }
    let Some(at) = start(c) else { return };
    let cs = shared(CS_SEEN).load(Ordering::SeqCst) & 0xffff;
    c.check_eq("vcpus2-ap-real-mode-cs", u64::from(cs), SIPI_VECTOR << 8);
    let fired = wait_for(|| shared(TIMER_HITS).load(Ordering::SeqCst) >= 1);
    c.check("vcpus2-ap-apic-timer", ensure!(fired, "vCPU 1's one-shot APIC timer never fired"));
    // Both ran since: each still has its own x87 control word.
    let ap_fcw = shared(AP_FCW_SEEN - 2).load(Ordering::SeqCst) >> 16;
    let bsp_fcw = fcw();
    c.check(
        "vcpus2-fpu-isolated",
        ensure!(
            bsp_fcw == BSP_FCW_VALUE && ap_fcw == u32::from(AP_FCW_VALUE),
            "x87 control words: vCPU 0 {bsp_fcw:#06x} (set {BSP_FCW_VALUE:#06x}), vCPU 1 {ap_fcw:#06x} (set {AP_FCW_VALUE:#06x})"
        ),
    );
    if fired {
        cpuid_identity(c);
    }
    let ups = shared(UP).load(Ordering::SeqCst);
    c.check("vcpus2-second-sipi-ignored", ensure!(ups == 1, "vCPU 1 started {ups} times"));

    icr((AP_APIC_ID << 32) | u64::from(AP_IPI_VECTOR));
    let got = wait_for(|| shared(IPI_HITS).load(Ordering::SeqCst) >= 1);
    c.check("vcpus2-ipi-to-ap", ensure!(got, "vCPU 1 never took the fixed IPI on 0x41"));
    let back = wait_for(|| REPLIES.load(Ordering::SeqCst) >= 1);
    c.check("vcpus2-ipi-to-bsp", ensure!(back, "the fixed IPI on 0x42 from vCPU 1 never came"));

    spin_round_trips(c, parallel);
    pause_yields(c, parallel);
    cr2_kept(c);

    // INIT and SIPI again: the application processor starts over at the trampoline.
    init_sipi_sipi();
    let again = wait_for(|| shared(UP).load(Ordering::SeqCst) >= 2);
    c.check("vcpus2-init-restarts", ensure!(again, "vCPU 1 did not start again after INIT"));
    let timer_again = wait_for(|| shared(TIMER_HITS).load(Ordering::SeqCst) >= 2);
    c.check(
        "vcpus2-ap-timer-after-init",
        ensure!(timer_again, "vCPU 1's timer did not fire after its restart"),
    );

    // vCPU 1 now halts with nothing armed: an NMI IPI wakes it (its handler runs with the
    // HLT's successor as return address) and it answers with one.
    icr((AP_APIC_ID << 32) | ICR_NMI);
    let woke = wait_for(|| shared(NMI_HITS).load(Ordering::SeqCst) >= 1);
    let ip = shared(NMI_IP).load(Ordering::SeqCst) & 0xffff;
    c.check(
        "vcpus2-nmi-wakes-hlt",
        ensure!(
            woke && ip == u32::from(at.after_hlt),
            "vCPU 1 took {} NMIs, last at IP {ip:#x} (after its HLT: {:#x})",
            shared(NMI_HITS).load(Ordering::SeqCst),
            at.after_hlt
        ),
    );
    let back = wait_for(|| NMI_REPLIES.load(Ordering::SeqCst) >= 1);
    c.check("vcpus2-nmi-to-bsp", ensure!(back, "the NMI IPI from vCPU 1 never came"));
    let (ap, bsp) = (shared(NMI_HITS).load(Ordering::SeqCst), NMI_REPLIES.load(Ordering::SeqCst));
    c.check("vcpus2-nmi-once", ensure!(ap == 1 && bsp == 1, "NMIs: vCPU 1 {ap}, vCPU 0 {bsp}"));
    if parallel {
        crate::parallel::run(c);
    }
}

/// Each vCPU's CPUID names its own APIC ID and the partition's two processors (SDM Vol. 2A
/// CPUID leaves 01H and 0BH; Vol. 3A §9.9): leaf 1 EBX[31:24] and leaf 0xB EDX equal the x2APIC
/// ID register, leaf 1 EBX[23:16] with EDX.HTT and leaf 0xB's core level count two.
fn cpuid_identity(c: &mut Checks) {
    // SAFETY: this vCPU's APIC is in x2APIC mode ([`x2apic_on`]), where the ID MSR reads.
    let own = unsafe { instr::rdmsr(X2APIC_ID) } as u32;
    let l1 = instr::cpuid(1, 0);
    let ap_l1 = shared(AP_CPUID_1_EBX).load(Ordering::SeqCst);
    let ap = shared(AP_X2APIC_ID).load(Ordering::SeqCst);
    let htt = l1.edx & (1 << 28) != 0;
    c.check(
        "vcpus2-cpuid-apic-id",
        ensure!(
            l1.ebx >> 24 == own && ap_l1 >> 24 == ap && own != ap && htt,
            "CPUID.1:EBX[31:24] {} on APIC ID {own}, {} on APIC ID {ap}; HTT {htt}",
            l1.ebx >> 24,
            ap_l1 >> 24
        ),
    );
    let count = (l1.ebx >> 16) & 0xff;
    c.check_eq("vcpus2-cpuid-logical-count", u64::from(count), 2);
    if instr::cpuid(0, 0).eax < 0xb {
        guest_rt::println!("vcpus2: no CPUID leaf 0xB, its check skipped");
        return;
    }
    let (smt, core) = (instr::cpuid(0xb, 0), instr::cpuid(0xb, 1));
    let ap_b = shared(AP_CPUID_B_EDX).load(Ordering::SeqCst);
    c.check(
        "vcpus2-cpuid-x2apic-id",
        ensure!(
            smt.edx == own && core.edx == own && ap_b == ap && core.ebx & 0xffff == 2,
            "CPUID.0B: EDX {:#x}/{:#x} on APIC ID {own}, {ap_b:#x} on APIC ID {ap}; {} at the core level",
            smt.edx,
            core.edx,
            core.ebx & 0xffff
        ),
    );
}
