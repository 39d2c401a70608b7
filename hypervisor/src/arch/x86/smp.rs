//! Every processor of the machine: found in the ACPI MADT, started with INIT-SIPI-SIPI through
//! the local APIC (SDM vol. 3A §9.4.4 "MP Initialization Example", §11.6.1 ICR), each given its
//! own GDT, TSS, stack and VMX/SVM (VMXON region, or EFER.SVME and host save area). An
//! application processor (AP) then waits for work: `sti; hlt` until a wake-up IPI
//! ([`WAKE_VECTOR`]) says its mailbox holds a job ([`run_on`]).
//!
//! CPU indices: 0 is the boot CPU; each AP tried gets the next index in MADT order (one that
//! did not start keeps its index, unused). [`cpu_index`]
//! maps this CPU's APIC ID to its index (the log prefix uses it).

use super::acpi::{self, AcpiError, PhysRead};
use super::cpu::{self, Virt};
use super::instr::rdtsc;
use super::{gdt, idt, lapic, trampoline};
use crate::arch::svm::SvmBackend;
use crate::arch::vmx::VmxBackend;
use crate::mm::lowmem;
use crate::vmm::vcpu::Backend;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use log::{info, warn};

/// Most CPUs the hypervisor starts.
pub const MAX_CPUS: usize = 64;
/// The vector of the IPI that wakes a halted AP to look at its mailbox.
pub const WAKE_VECTOR: u8 = 0xee;
/// Pages of each AP's stack.
const STACK_PAGES: u64 = 16;

/// A job for an AP: runs on it, with interrupts disabled (as the boot CPU runs partitions;
/// a wake-up IPI posted meanwhile waits in the APIC until the AP halts again).
pub type Work = Box<dyn FnOnce() + Send>;

/// A VMX or SVM backend enabled on one CPU.
pub type CpuBackend = Box<dyn Backend + Send>;

// States of a CPU slot.
const ABSENT: u8 = 0;
const STARTING: u8 = 1;
/// Off the trampoline (its own GDT and stack): the boot CPU may start the next one.
const UP: u8 = 2;
/// Up with VMX or SVM on: takes work.
const READY: u8 = 3;
/// Up, but VMX/SVM could not be turned on.
const NO_VIRT: u8 = 4;
/// Did not answer its start-up IPIs (parked again with INIT).
const FAILED: u8 = 5;

struct Cpu {
    apic_id: AtomicU32,
    state: AtomicU8,
    mailbox: spin::Mutex<Option<Work>>,
    backend: spin::Mutex<Option<CpuBackend>>,
}

#[allow(clippy::declare_interior_mutable_const)]
const CPU_INIT: Cpu = Cpu {
    apic_id: AtomicU32::new(0),
    state: AtomicU8::new(ABSENT),
    mailbox: spin::Mutex::new(None),
    backend: spin::Mutex::new(None),
};
static CPUS: [Cpu; MAX_CPUS] = [CPU_INIT; MAX_CPUS];
/// Slots in use (the boot CPU's and every AP's tried).
static SLOTS: AtomicUsize = AtomicUsize::new(1);
/// The boot CPU's CR0 and CR4, which each AP takes over.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);

/// This CPU's index (0 for the boot CPU, and before the APIC is known).
pub fn cpu_index() -> usize {
    let Some(id) = lapic::id() else { return 0 };
    let n = SLOTS.load(Ordering::Acquire).min(MAX_CPUS);
    (1..n).find(|&i| CPUS[i].apic_id.load(Ordering::Relaxed) == id).unwrap_or(0)
}

/// CPU index slots in use: the boot CPU and every AP tried (for `pins::Pins::new`).
pub fn cpu_slots() -> usize {
    SLOTS.load(Ordering::Acquire).min(MAX_CPUS)
}

/// Indices of the CPUs that take work ([`run_on`]): the APs with VMX/SVM on.
pub fn ready_cpus() -> Vec<usize> {
    let n = SLOTS.load(Ordering::Acquire).min(MAX_CPUS);
    (1..n).filter(|&i| CPUS[i].state.load(Ordering::Acquire) == READY).collect()
}

/// The APIC ID of CPU `index`, where that CPU is up.
pub fn apic_id(index: usize) -> Option<u32> {
    let c = CPUS.get(index)?;
    (index == 0 || matches!(c.state.load(Ordering::Acquire), UP | READY | NO_VIRT))
        .then(|| c.apic_id.load(Ordering::Relaxed))
}

/// Why [`run_on`] refused a job (which it gives back).
pub enum RunOnError {
    /// No such AP, or it is not up with VMX/SVM on.
    NotReady(Work),
    /// Its mailbox still holds a job not yet taken.
    Busy(Work),
}

/// Posts `work` to AP `index` and wakes it. The AP runs it with interrupts disabled; a job may
/// run for as long as it likes (a partition's run loop), the AP takes the next once it returns.
pub fn run_on(index: usize, work: Work) -> Result<(), RunOnError> {
    let Some(c) =
        CPUS.get(index).filter(|c| index != 0 && c.state.load(Ordering::Acquire) == READY)
    else {
        return Err(RunOnError::NotReady(work));
    };
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut slot = c.mailbox.lock();
        if slot.is_some() {
            return Err(RunOnError::Busy(work));
        }
        *slot = Some(work);
        Ok(())
    })?;
    lapic::send_fixed(c.apic_id.load(Ordering::Relaxed), WAKE_VECTOR);
    Ok(())
}

/// Runs `f` with this CPU's VMX/SVM backend (APs only: the boot CPU's belongs to `start`).
pub fn with_backend<R>(f: impl FnOnce(&mut dyn Backend) -> R) -> Option<R> {
    let i = cpu_index();
    if i == 0 {
        return None;
    }
    let mut b = CPUS[i].backend.lock();
    b.as_mut().map(|b| f(b.as_mut()))
}

/// Lets this CPU take the interrupts pending at its APIC (a wake-up IPI or its APIC timer that
/// ended a guest's run: both stay pending while interrupts are off, and one left pending ends
/// every later VM entry at once); their handlers only end them.
pub fn take_pending_interrupts() {
    // SAFETY: STI's shadow covers the NOP, so pending interrupts are taken between the NOP and
    // the CLI; on a CPU running partitions they are the wake-up IPI, the APIC timer and the host
    // PIC lines, whose handlers touch only their device and atomics. Not `nomem`: what the
    // handlers write (counters) is read after it. No red zone on this target, so the
    // interrupt frame pushed below RSP harms nothing.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nostack)) };
}

/// The wake-up IPI's handler (from its IDT stub): only ends the interrupt; the idle loop
/// looks at the mailbox once `hlt` returns.
pub extern "C" fn wake_entry(_vector: u64) {
    WAKES.fetch_add(1, Ordering::Relaxed);
    lapic::eoi();
}

/// Wake-up IPIs handled, on every CPU.
static WAKES: AtomicU64 = AtomicU64::new(0);

/// Wake-up IPIs handled so far, on every CPU (the native self-IPI figure counts them).
pub fn wakes() -> u64 {
    WAKES.load(Ordering::Relaxed)
}

/// Physical memory through the hypervisor's identity map, for the ACPI parser: page 0 and
/// anything past the mapped end are refused.
struct IdentityMap {
    end: u64,
}

impl PhysRead for IdentityMap {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), AcpiError> {
        let end = addr.checked_add(buf.len() as u64).ok_or(AcpiError::Unreadable(addr))?;
        if addr < 0x1000 || end > self.end {
            return Err(AcpiError::Unreadable(addr));
        }
        // SAFETY: `addr..end` lies in the identity map of all physical memory past page 0
        // (checked above), which the hypervisor installed; firmware tables there are only read.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// The BIOS data area's EBDA segment word (ACPI 6.5 §5.2.5.1), for the RSDP search. Read it
/// on the multiboot path before the hypervisor's own page tables unmap page 0.
pub fn bda_ebda_segment() -> u16 {
    // SAFETY: on the multiboot path the boot tables identity-map the first 4 GiB, page 0
    // included; the BIOS data area word is only read.
    unsafe { core::ptr::read_volatile(acpi::EBDA_SEGMENT_PTR as *const u16) }
}

/// Spins for `us` microseconds of TSC time (at `tsc_hz`, or 1 GHz when unknown).
fn delay_us(us: u64, tsc_hz: u64) {
    let hz = if tsc_hz == 0 { 1_000_000_000 } else { tsc_hz };
    let ticks = hz / 1_000_000 * us;
    let t0 = rdtsc();
    while rdtsc().wrapping_sub(t0) < ticks {
        core::hint::spin_loop();
    }
}

/// Waits up to `us` microseconds until CPU `i` leaves `from`; returns the state then.
fn wait_state(i: usize, from: u8, us: u64, tsc_hz: u64) -> u8 {
    let hz = if tsc_hz == 0 { 1_000_000_000 } else { tsc_hz };
    let ticks = hz / 1_000_000 * us;
    let t0 = rdtsc();
    loop {
        let s = CPUS[i].state.load(Ordering::Acquire);
        if s != from || rdtsc().wrapping_sub(t0) >= ticks {
            return s;
        }
        core::hint::spin_loop();
    }
}

/// What [`start_aps`] found and did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Enabled processors the MADT lists (the boot CPU included).
    pub listed: usize,
    /// APIC IDs of the CPUs up, boot CPU first.
    pub up: Vec<u32>,
    /// Of the APs up, how many have VMX/SVM on.
    pub virt_on: usize,
    /// Of those, how many ran a job posted to their mailbox after halting ([`check_wake`]).
    pub woken: usize,
    /// Of those, how many entered a guest on their own VMX/SVM and got its HLT back.
    pub ran_guest: usize,
}

/// Finds the processors and starts every AP. `rsdp` is the boot path's RSDP address (UEFI), or
/// `None` to search the BIOS areas (with the EBDA's segment, [`bda_ebda_segment`]); `usable`/`reserved` are the boot memory map (for the
/// trampoline's pages); `mapped_end` is where the identity map ends. Needs the heap, the frame
/// allocator, the hypervisor's page tables, the APIC, and the TSC rate.
pub fn start_aps(
    rsdp: Option<u64>,
    ebda_segment: Option<u16>,
    usable: &[core::ops::Range<u64>],
    reserved: &[core::ops::Range<u64>],
    mapped_end: u64,
    tsc_hz: u64,
) -> Summary {
    let mut s = Summary::default();
    let Some(bsp) = lapic::id() else {
        info!("smp: no enabled local APIC: running on the boot CPU alone");
        return s;
    };
    CPUS[0].apic_id.store(bsp, Ordering::Relaxed);
    CPUS[0].state.store(READY, Ordering::Release);
    s.up.push(bsp);
    let madt = match acpi::madt(&IdentityMap { end: mapped_end }, rsdp, ebda_segment) {
        Ok(m) => m,
        Err(e) => {
            warn!("smp: {e}: running on the boot CPU alone");
            s.listed = 1;
            return s;
        }
    };
    let aps: Vec<u32> =
        madt.cpus.iter().filter(|c| c.enabled && c.apic_id != bsp).map(|c| c.apic_id).collect();
    s.listed = aps.len() + 1;
    if aps.is_empty() {
        return s;
    }
    let Some(page) = lowmem::pick(usable, reserved, lowmem::TRAMPOLINE_PAGES) else {
        warn!("smp: no free page below 1 MiB for the AP trampoline: running on the boot CPU alone");
        return s;
    };
    let (cr3, _) = x86_64::registers::control::Cr3::read_raw();
    BSP_CR0.store(x86_64::registers::control::Cr0::read_raw(), Ordering::Relaxed);
    BSP_CR4.store(x86_64::registers::control::Cr4::read_raw(), Ordering::Relaxed);
    // SAFETY: `page` is 4 pages of usable RAM below 1 MiB that nothing reserved overlaps and
    // no partition exists yet to use (lowmem.rs); the identity map covers it.
    let tramp =
        unsafe { trampoline::Trampoline::install(page, cr3.start_address().as_u64(), ap_main) };
    info!("smp: {} APs listed; trampoline at {page:#x}", aps.len());
    for id in aps {
        if id > 0xfe {
            warn!("smp: APIC ID {id} needs x2APIC mode: not started");
            continue;
        }
        let i = SLOTS.load(Ordering::Relaxed);
        if i >= MAX_CPUS {
            warn!("smp: more than {MAX_CPUS} CPUs: APIC ID {id} and later not started");
            break;
        }
        let Some(stack) = crate::arch::x86::paging::HostPages::alloc_zeroed(STACK_PAGES) else {
            warn!("smp: no memory for a stack: APIC ID {id} and later not started");
            break;
        };
        CPUS[i].apic_id.store(id, Ordering::Relaxed);
        CPUS[i].state.store(STARTING, Ordering::Release);
        SLOTS.store(i + 1, Ordering::Release);
        tramp.set_next(stack.0 + STACK_PAGES * 0x1000, i as u64);
        // SDM vol. 3A §9.4.4.1: INIT, 10 ms, SIPI, 200 us, SIPI (the second only if the first
        // did not take: an AP that is already running ignores it anyway), 200 us.
        let sent = lapic::send_init(id) && {
            delay_us(10_000, tsc_hz);
            lapic::send_sipi(id, tramp.sipi_page())
        };
        let mut state = if sent { wait_state(i, STARTING, 200, tsc_hz) } else { STARTING };
        if sent && state == STARTING {
            lapic::send_sipi(id, tramp.sipi_page());
            state = wait_state(i, STARTING, 500_000, tsc_hz);
        }
        if state == STARTING {
            // Parked again, so that it cannot start late on a reused trampoline.
            lapic::send_init(id);
            CPUS[i].state.store(FAILED, Ordering::Release);
            warn!("smp: CPU with APIC ID {id} did not start");
            continue;
        }
        // It left the trampoline; wait while it turns VMX/SVM on.
        match wait_state(i, UP, 2_000_000, tsc_hz) {
            READY => {
                s.up.push(id);
                s.virt_on += 1;
            }
            _ => s.up.push(id),
        }
    }
    tramp.release();
    (s.woken, s.ran_guest) = check_wake(tsc_hz);
    s
}

/// What each AP's check job saw as its own CPU index (plus one; 0: not run).
static WAKE_ANSWERS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Whether each AP's check job got a guest's HLT back.
static GUEST_RAN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Posts a job to every ready AP (each halted in its idle loop by now) and counts the APs that
/// ran it on themselves within 1 s (the mailbox, the wake-up IPI and [`cpu_index`] work), and
/// those that also ran a guest there ([`guest_check`]).
fn check_wake(tsc_hz: u64) -> (usize, usize) {
    let cpus = ready_cpus();
    for &i in &cpus {
        let job: Work = Box::new(move || {
            match guest_check() {
                Ok(()) => GUEST_RAN[i].store(true, Ordering::Relaxed),
                Err(e) => warn!("smp: cpu {i}: a guest did not run here: {e}"),
            }
            WAKE_ANSWERS[i].store(cpu_index() + 1, Ordering::Release)
        });
        if run_on(i, job).is_err() {
            warn!("smp: cpu {i} refused a job");
        }
    }
    let hz = if tsc_hz == 0 { 1_000_000_000 } else { tsc_hz };
    let t0 = rdtsc();
    let answered = |i: &usize| WAKE_ANSWERS[*i].load(Ordering::Acquire) != 0;
    while !cpus.iter().all(answered) && rdtsc().wrapping_sub(t0) < hz {
        core::hint::spin_loop();
    }
    let (mut woken, mut ran) = (0, 0);
    for &i in &cpus {
        match WAKE_ANSWERS[i].load(Ordering::Acquire) {
            0 => warn!("smp: cpu {i} did not run the job posted to it"),
            n if n == i + 1 => woken += 1,
            n => warn!("smp: the job posted to cpu {i} ran on cpu {}", n - 1),
        }
        ran += usize::from(GUEST_RAN[i].load(Ordering::Relaxed));
    }
    (woken, ran)
}

/// On an AP: builds a one-page guest (32-bit flat protected mode, paging off, `hlt` at its
/// entry) with this CPU's backend, runs it until its HLT exit and tears it down. Proves that
/// VMXON/VMCS (or EFER.SVME/VMCB) and the per-CPU host state (GDTR, TR) work here.
fn guest_check() -> Result<(), &'static str> {
    use crate::arch::x86::paging::HostPages;
    use crate::vmm::exit::VmExit;
    use crate::vmm::vcpu::{
        ACCESS_CODE32, ACCESS_DATA, ACCESS_TSS64, InitialState, Segment, VcpuConfig,
    };
    const ENTRY: u64 = 0x1000;
    let page = HostPages::alloc_zeroed(1).ok_or("out of memory")?;
    // SAFETY: the frame was just allocated for this check alone.
    unsafe { HostPages::page_mut(page)[0] = 0xf4 }; // hlt
    let flat = |selector, access| Segment { selector, base: 0, limit: 0xffff_ffff, access };
    let initial = InitialState {
        rip: ENTRY,
        rflags: 2,
        cr0: 0x11, // ET | PE
        cs: flat(0x10, ACCESS_CODE32),
        data: flat(0x18, ACCESS_DATA),
        tr: Segment { selector: 0, base: 0, limit: 0x67, access: ACCESS_TSS64 },
        ..InitialState::default()
    };
    let result = with_backend(|b| -> Result<(), &'static str> {
        let mut slat = b.new_second_level()?;
        slat.map(ENTRY, page.0, 0x1000).map_err(|_| "second-level map failed")?;
        let mut vcpu = b.create_vcpu(&VcpuConfig { initial, slat_root: slat.root(), tag: 1 })?;
        vcpu.flush_second_level();
        // Preemptions and host interrupts may come first; the HLT must come soon.
        for _ in 0..100 {
            match vcpu.run().map_err(|e| e.what)? {
                VmExit::Hlt => return Ok(()),
                VmExit::Preempted | VmExit::HostInterrupt => {}
                _ => return Err("an exit other than HLT"),
            }
        }
        Err("no HLT exit")
    })
    .unwrap_or(Err("no backend on this CPU"));
    lapic::disarm();
    HostPages::free(page, 1);
    result
}

/// The first Rust an AP runs (from the trampoline, on its own stack, interrupts off).
extern "C" fn ap_main(index: u64) -> ! {
    let i = index as usize;
    gdt::init_ap();
    idt::init();
    // SAFETY: the boot CPU's CR0/CR4 (minus VMXE, which VMX turns on itself, and PCIDE, which
    // needs CR3 bits the hypervisor does not use) are valid on this identical processor, in
    // long mode with paging on.
    unsafe {
        x86_64::registers::control::Cr0::write_raw(BSP_CR0.load(Ordering::Relaxed));
        let cr4 = BSP_CR4.load(Ordering::Relaxed) & !((1 << 13) | (1 << 17));
        x86_64::registers::control::Cr4::write_raw(cr4);
    }
    CPUS[i].state.store(UP, Ordering::Release);
    lapic::enable_this_cpu();
    let id = CPUS[i].apic_id.load(Ordering::Relaxed);
    let backend: Result<CpuBackend, &str> = match cpu::detect().virt {
        Virt::Vmx(caps) => {
            VmxBackend::enable(&caps, cpu::detect().gib_pages).map(|b| Box::new(b) as CpuBackend)
        }
        Virt::Svm(caps) => SvmBackend::enable(&caps).map(|b| Box::new(b) as CpuBackend),
        Virt::None => Err("neither VMX nor SVM"),
    };
    match backend {
        Ok(b) => {
            info!("smp: cpu {i} (APIC ID {id}) up: {} on", b.name());
            *CPUS[i].backend.lock() = Some(b);
            CPUS[i].state.store(READY, Ordering::Release);
        }
        Err(e) => {
            warn!("smp: cpu {i} (APIC ID {id}) up, but no VMX/SVM: {e}");
            CPUS[i].state.store(NO_VIRT, Ordering::Release);
        }
    }
    idle(i)
}

/// An AP's idle loop: take a job from the mailbox and run it (interrupts off, as the boot
/// CPU runs partitions), or halt with interrupts on until an IPI.
fn idle(i: usize) -> ! {
    use x86_64::instructions::interrupts;
    loop {
        interrupts::disable();
        let job = CPUS[i].mailbox.lock().take();
        match job {
            Some(job) => job(),
            // STI's one-instruction shadow makes the check and the HLT one step: a wake-up IPI
            // posted after the check ends the HLT (SDM vol. 2B, STI).
            None => interrupts::enable_and_hlt(),
        }
    }
}
