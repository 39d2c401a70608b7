//! A pinned partition whose vCPUs run on CPUs of their own, all at the same time (issue 10,
//! item 2; `docs/cpus.md`, "Pinned partitions"): vCPU k on its k-th CPU.
//!
//! The partition is built on its first CPU (`machine::pinned`), with place-holders for vCPUs
//! 1 and up ([`Gone`]); CPU k makes vCPU k there (a VMCS is current on one logical processor
//! and VMCLEAR must run there, SDM Vol. 3C §25.11.1; SVM's ASID owner tables are per CPU,
//! APM Vol. 2 §15.16, `arch/svm/asid.rs`), runs it, and drops it there at the end.
//!
//! What the vCPUs share (RAM, second-level table, buses, PIC, devices, statistics, every
//! slot's run state, local APIC and pending start-up) sits behind one lock, the partition's
//! [`spin::Mutex`]. Each CPU takes it to deliver events to its vCPU and to handle its exits,
//! and leaves it while its guest runs: the guest never runs with the lock held. The backend
//! vCPU of slot k is touched by CPU k alone, through a pointer taken under the lock (see
//! [`batch`]). What one vCPU's exit does to another (an IPI, a PIC line for vCPU 0, a start-up)
//! changes only shared state, then kicks the other's CPU with the wake-up IPI
//! ([`Partition::kick`]): a running guest exits (a host-interrupt exit), a sleeping CPU wakes,
//! and it looks at its slot again before its next entry (a start-up IPI is applied there,
//! `ipi::apply_start`).
//!
//! The first CPU also answers the boot CPU's requests ([`Remote`]); pause, stop and the
//! partition's end reach the others by the lock's state and a kick. At the end each CPU
//! flushes the partition's second-level translations it may cache (VMX: INVEPT
//! single-context for its EPTP, SDM Vol. 3C §29.4.3.1; SVM: its ASID's owner slot on that CPU
//! is released with the vCPU, so the next vCPU given that ASID there flushes it) and drops its
//! vCPU; then the first CPU frees the partition.

use super::pinned::{End, Remote, Request, count_exits, others_exits, refuse, sleep};
use crate::arch::x86::instr::rdtsc;
use crate::arch::x86::{lapic, smp};
use crate::vmm::dispatch::{self, Flow};
use crate::vmm::exit::VmExit;
use crate::vmm::partition::{Partition, RunState, State};
use crate::vmm::vcpu::{Vcpu, VcpuConfig};
use crate::vmm::vcpu_gone::Gone;
use crate::vmm::{ipi, run};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Where the vCPUs of a partition of `vcpus` vCPUs pinned to `cpus` run: vCPU k on `cpus[k]`
/// when there are CPUs enough for all (more are left idle, reserved for it), `None` when one
/// CPU runs them all, time-sliced (one vCPU, one CPU, or fewer CPUs than vCPUs).
pub fn homes(vcpus: u32, cpus: &[usize]) -> Option<Vec<usize>> {
    let n = vcpus as usize;
    (n > 1 && cpus.len() >= n).then(|| cpus[..n].to_vec())
}

/// The partition and what its CPUs share.
pub struct Spread {
    /// The big partition lock.
    p: spin::Mutex<Partition>,
    /// The first CPU asks the others to leave (a stop, a restart, the end).
    ending: AtomicBool,
    /// CPUs (but the first) whose vCPU is made, and those that left again.
    ready: AtomicUsize,
    left: AtomicUsize,
    /// Why a CPU could not make its vCPU.
    failed: spin::Mutex<Option<String>>,
    /// Its vCPUs in their guest now.
    in_guest: AtomicU32,
    /// Its exits that came while another of its vCPUs was in its guest.
    overlap: AtomicU64,
    /// The longest a CPU of it sleeps (TSC ticks): everything that wakes a vCPU comes by IPI or
    /// is its own deadline.
    cap: u64,
}

// SAFETY: a `Partition` is not `Send` for its boxed backend objects and devices and for the
// `Rc` clock its local APICs share. Here every part of it but the backend vCPUs is reached
// only through the lock, on one CPU at a time (the `Rc` is cloned and dropped under it too);
// slot k's backend vCPU is used by CPU k alone ([`batch`]); the partition is built and
// dropped on the first CPU, whose `Arc` is the last.
unsafe impl Send for Spread {}
// SAFETY: as for `Send`: shared access goes through the lock and atomics.
unsafe impl Sync for Spread {}

/// Moves `p` (built with place-holders for vCPUs 1 and up) behind its lock and has CPU
/// `homes[k]` make and run vCPU k. Returns once every vCPU is made; `Err` gives the partition
/// back with why not (the CPUs that made theirs dropped them again).
pub fn start(
    mut p: Partition,
    homes: &[usize],
    cap: u64,
) -> Result<Arc<Spread>, Box<(Partition, String)>> {
    p.hosts = homes.iter().map(|&c| smp::apic_id(c).unwrap_or(u32::MAX)).collect();
    let sh = Arc::new(Spread {
        p: spin::Mutex::new(p),
        ending: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
        left: AtomicUsize::new(0),
        failed: spin::Mutex::new(None),
        in_guest: AtomicU32::new(0),
        overlap: AtomicU64::new(0),
        cap,
    });
    let mut posted = 0;
    for (k, &cpu) in homes.iter().enumerate().skip(1) {
        let s = sh.clone();
        let job: smp::Work = Box::new(move || other_cpu(s, k));
        if smp::run_on(cpu, job).is_err() {
            *sh.failed.lock() = Some(format!("cpu {cpu} takes no work"));
            break;
        }
        posted += 1;
    }
    while sh.ready.load(Ordering::Acquire) + sh.left.load(Ordering::Acquire) < posted {
        core::hint::spin_loop();
    }
    let failed = sh.failed.lock().take();
    match failed {
        None if posted == homes.len() - 1 => Ok(sh),
        why => {
            let p = finish(sh, posted);
            Err(Box::new((p, why.unwrap_or_default())))
        }
    }
}

/// Runs vCPU 0 here (the first CPU) and answers the boot CPU's requests until the partition
/// stops or is asked to; the others leave then. Gives the partition back, every vCPU but
/// vCPU 0 dropped on its own CPU.
pub fn run(sh: Arc<Spread>, r: &Remote) -> (End, Partition) {
    let end = vcpu_loop(&sh, 0, Some(r));
    let others = sh.p.lock().vcpus.len() - 1;
    let p = finish(sh, others);
    (end, p)
}

/// Asks the other CPUs to leave, waits until the `n` that run a vCPU did, and takes the
/// partition back.
fn finish(sh: Arc<Spread>, n: usize) -> Partition {
    sh.ending.store(true, Ordering::Release);
    kick_all(&sh.p.lock(), 0);
    while sh.left.load(Ordering::Acquire) < n {
        core::hint::spin_loop();
    }
    // Each other CPU drops its clone right after it counted itself out.
    let mut sh = sh;
    loop {
        match Arc::try_unwrap(sh) {
            Ok(s) => return s.p.into_inner(),
            Err(back) => sh = back,
        }
        core::hint::spin_loop();
    }
}

/// The job of CPU k (k >= 1): make vCPU k here, run it until the partition ends, flush its
/// translations and drop it here.
fn other_cpu(sh: Arc<Spread>, k: usize) {
    let (root, tag) = {
        let p = sh.p.lock();
        (p.slat.root(), crate::vmm::partition::vcpu_tag(p.tag, k as u32))
    };
    // An application processor waits for a start-up IPI in the INIT state (`ipi::init_state`).
    let initial = ipi::init_state(core::arch::x86_64::__cpuid(1).eax);
    let made = smp::with_backend(|b| b.create_vcpu(&VcpuConfig { initial, slat_root: root, tag }));
    let why = match made {
        Some(Ok(v)) => {
            sh.p.lock().vcpus[k].vcpu = v;
            None
        }
        Some(Err(e)) => Some(format!("vCPU {k}: {e}")),
        None => Some(format!("vCPU {k}: cpu {} has no VMX/SVM backend", smp::cpu_index())),
    };
    if let Some(why) = why {
        *sh.failed.lock() = Some(why);
        sh.left.fetch_add(1, Ordering::AcqRel);
        return;
    }
    sh.ready.fetch_add(1, Ordering::AcqRel);
    vcpu_loop(&sh, k, None);
    let mine = {
        let mut p = sh.p.lock();
        p.vcpus[k].vcpu.flush_second_level();
        core::mem::replace(&mut p.vcpus[k].vcpu, Box::new(Gone::default()))
    };
    // VMCLEAR (VMX) or the ASID's release (SVM) on this CPU, where it ran.
    drop(mine);
    lapic::disarm();
    sh.left.fetch_add(1, Ordering::AcqRel);
}

/// Sends the wake-up IPI to every CPU of `p` but vCPU `k`'s (a stop, a pause, a resume: each
/// looks at the partition's state).
fn kick_all(p: &Partition, k: usize) {
    for (v, &apic) in p.hosts.iter().enumerate() {
        if v != k {
            lapic::send_fixed(apic, smp::WAKE_VECTOR);
        }
    }
}

/// True while vCPUs may run: started, not paused, not stopped.
fn live(p: &Partition) -> bool {
    matches!(p.state, State::Runnable | State::Halted { .. })
}

/// The loop of vCPU `k` on its CPU (`head`: the first CPU, which also answers the boot CPU):
/// runs it while it can, sleeps while it halts or waits (HLT with this CPU's APIC timer
/// armed for its next deadline, or an IPI), until the partition stops (`End::Stopped`) or
/// the boot CPU (or, for the others, the first CPU) asks it to leave (`End::Asked`).
fn vcpu_loop(sh: &Spread, k: usize, head: Option<&Remote>) -> End {
    let cpu = smp::cpu_index();
    let mut others0 = None;
    let mut unexpected = lapic::unexpected(cpu).0;
    loop {
        // A wake-up IPI or the APIC timer that ended a run or a sleep: taken before the
        // partition is looked at, so that a kick sent after this look is not lost.
        smp::take_pending_interrupts();
        let (now, vector) = lapic::unexpected(cpu);
        if now > unexpected {
            log::warn!(
                "{} host interrupt(s) at vectors nothing expects (the last at {vector:#x}): acknowledged and ignored",
                now - unexpected
            );
            unexpected = now;
        }
        let mut p = sh.p.lock();
        p.vcpus[k].kicked = false;
        if let Some(r) = head {
            match r.answer(&mut p, others0, cpu) {
                Some(Request::Stop) => return End::Asked,
                Some(_) => kick_all(&p, k),
                None => {}
            }
            r.take_input(&mut p);
        } else if sh.ending.load(Ordering::Acquire) {
            return End::Asked;
        }
        if p.stopped() {
            return End::Stopped;
        }
        if !live(&p) {
            drop(p);
            sleep(sh.cap);
            continue;
        }
        let now = rdtsc();
        p.tick(now);
        if let RunState::Halted { until } = p.vcpus[k].run
            && (now >= until || p.interrupt_pending_for(k))
        {
            p.vcpus[k].run = RunState::Runnable;
        }
        match p.vcpus[k].run {
            RunState::Runnable => {
                others0.get_or_insert_with(|| others_exits(cpu));
                batch(sh, p, k, cpu);
                if let Some(r) = head {
                    let mut p = sh.p.lock();
                    if matches!(p.vcpus[0].run, RunState::Halted { .. })
                        && r.focused.load(Ordering::Relaxed)
                    {
                        p.show_partial_line();
                    }
                    r.publish(&mut p, others0, cpu);
                    r.note_spread(&p, sh.overlap.load(Ordering::Relaxed));
                }
            }
            RunState::Halted { until } => {
                let due = p.next_deadline_for(k).map_or(until, |t| t.min(until));
                if head.is_some_and(|r| r.focused.load(Ordering::Relaxed)) {
                    p.show_partial_line();
                }
                drop(p);
                sleep(due.saturating_sub(now).clamp(1, sh.cap));
            }
            RunState::WaitForSipi | RunState::Stopped => {
                drop(p);
                sleep(sh.cap);
            }
        }
    }
}

/// Runs vCPU `k` (on its own CPU, `cpu`; `p`: the lock, held) until an exit needs more than
/// its own handling, or up to `run::EXITS_PER_SLICE` exits, with no time slice: its own
/// devices' or timers' next interrupt ends a run on time (as a pinned partition's only vCPU,
/// `run::run_pinned`). The lock is left for each run of the guest.
fn batch<'a>(sh: &'a Spread, mut p: spin::MutexGuard<'a, Partition>, k: usize, cpu: usize) -> Flow {
    p.vcpus[k].fpu.restore();
    // The deadline the backend's run limit is set for (`None`: not set in this batch yet, so
    // the last batch's limit is replaced at the first entry).
    let (mut armed, mut retry): (Option<Option<u64>>, _) = (None, None);
    let mut flow = Flow::Yield;
    let mut exits = 0;
    for _ in 0..run::EXITS_PER_SLICE {
        // What another CPU did since: an INIT or a pause ends the run, a SIPI is applied.
        if p.vcpus[k].run != RunState::Runnable || !live(&p) || sh.ending.load(Ordering::Acquire) {
            break;
        }
        let Partition { vcpus, pic, pc, ram, .. } = &mut *p;
        let slot = &mut vcpus[k];
        ipi::apply_start(slot);
        run::deliver_events(slot, k == 0, pic, pc.as_ref(), ram);
        // Its next timer or device interrupt ends the run on time, one its last exit armed
        // too (a local APIC timer write, a PIT reload): no time slice ends the run otherwise.
        // Recomputed before every entry: nothing for `Partition::rearm` to ask.
        p.rearm = false;
        let mut due = p.next_deadline_for(k);
        if p.interrupt_pending_for(k) {
            // One waits behind RFLAGS.IF, a shadow or an event being delivered: the window
            // exit brings it in, and a slice's end looks again, as the time-sliced loop's
            // slices do (QEMU's TCG can miss the window of `sti; pause; cli`, its PAUSE ending
            // the translation block inside the STI shadow).
            let again = *retry.get_or_insert_with(|| rdtsc() + run::TIMESLICE_TICKS);
            due = Some(due.map_or(again, |d| d.min(again)));
        } else {
            retry = None;
        }
        if armed != Some(due) {
            let ticks = due.map_or(0, |t| {
                t.saturating_sub(rdtsc()).clamp(run::MIN_SLICE_TICKS, u64::from(u32::MAX))
            });
            p.vcpus[k].vcpu.set_timeslice(ticks);
            armed = Some(due);
        }
        let slot = &mut p.vcpus[k];
        let vcpu: *mut dyn Vcpu = &mut *slot.vcpu;
        drop(p);
        sh.in_guest.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `vcpu` points into the heap box of slot k's backend vCPU, which only this
        // CPU uses: the other CPUs reach slot k's shared parts (its run state, local APIC,
        // pending start-up) under the lock and never its `vcpu` (`Partition::send_ipi` records
        // a start-up for this CPU to apply, `ipi::apply_start`); the box is replaced only by
        // this CPU (when it made the vCPU and when it drops it, `other_cpu`), and the first
        // CPU frees the partition only after this one left. So nothing else touches it while
        // the guest runs without the lock.
        let (result, fast) = unsafe {
            let v = &mut *vcpu;
            let result = v.run();
            (result, v.take_fast_exits())
        };
        let others_in_guest = sh.in_guest.fetch_sub(1, Ordering::SeqCst) > 1;
        p = sh.p.lock();
        p.vcpus[k].kicked = false;
        exits += 1 + fast;
        p.stats.counts[VmExit::Cpuid.index()] += fast;
        let exit = match result {
            Ok(e) => e,
            Err(e) => {
                flow = run::entry_failed(&mut p, k, e);
                break;
            }
        };
        if others_in_guest {
            sh.overlap.fetch_add(1, Ordering::Relaxed);
        }
        p.stats.record(&exit);
        let rip = p.vcpus[k].vcpu.rip();
        p.vcpus[k].last_exits.push(rip, exit);
        let waiting = interrupts_waiting(&p, k);
        flow = dispatch::handle(&mut p, k, exit);
        if matches!(exit, VmExit::Io(_)) {
            p.drain_devices();
        }
        wake_others(&mut p, k, waiting);
        if flow != Flow::Continue {
            break;
        }
    }
    p.vcpus[k].fpu.save();
    count_exits(cpu, exits);
    p.drain_devices();
    if let Flow::Admin(call) = flow {
        refuse(&mut p, k, call);
    }
    if flow != Flow::Continue && live(&p) {
        flow = run::settle_all(&mut p, flow);
    }
    if p.stopped() {
        kick_all(&p, k);
    }
    flow
}

/// Bit v: vCPU v has an interrupt waiting (at most 64 vCPUs; `ipi::MAX_VCPUS` is 8).
fn interrupts_waiting(p: &Partition, k: usize) -> u64 {
    (0..p.vcpus.len().min(64))
        .filter(|&v| v != k && p.interrupt_pending_for(v))
        .fold(0, |m, v| m | 1 << v)
}

/// After vCPU `k`'s exit: kicks each other vCPU for which an interrupt now waits that did not
/// before the exit (`before`, [`interrupts_waiting`]: a PIC line vCPU k's device access raised
/// for vCPU 0, a timer it armed), or which sleeps in HLT with one waiting. A vCPU that already
/// knew of one has its interrupt window open and exits by itself when it can take it.
fn wake_others(p: &mut Partition, k: usize, before: u64) {
    let now = interrupts_waiting(p, k);
    for v in 0..p.vcpus.len().min(64) {
        let halted = !matches!(p.vcpus[v].run, RunState::Runnable);
        if now & (1 << v) != 0 && (before & (1 << v) == 0 || halted) {
            p.kick(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vcpu_gets_a_cpu_when_there_are_enough() {
        assert_eq!(homes(2, &[1, 2]), Some(alloc::vec![1, 2]));
        assert_eq!(homes(2, &[3, 1, 2]), Some(alloc::vec![3, 1]), "the first ones, in order");
        assert_eq!(homes(3, &[5, 6, 7]), Some(alloc::vec![5, 6, 7]));
    }

    #[test]
    fn one_vcpu_or_too_few_cpus_stay_on_the_first_cpu() {
        assert_eq!(homes(1, &[1, 2]), None, "one vCPU: runs alone on its CPU");
        assert_eq!(homes(3, &[1, 2]), None, "fewer CPUs than vCPUs: time-sliced on cpus[0]");
        assert_eq!(homes(2, &[1]), None);
    }
}
