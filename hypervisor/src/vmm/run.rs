//! Running one partition for a time slice (timers and interrupt delivery before each entry),
//! building the manifest's partitions, and the final report.

use super::dispatch::{self, Flow};
use super::exit::VmExit;
use super::interrupts;
use super::manifest::Expect;
use super::memory::GuestRam;
use super::partition::{Partition, RunState, State};
use super::pc::PcDevices;
use super::profile::{self, Stage};
use super::vcpu::{EntryError, Event, reg};
use super::vcpu_slot::{Overall, Turn, VcpuSlot, overall};
use crate::arch::x86::instr::rdtsc;
use crate::devices::pic8259::PicPair;
use alloc::format;
use alloc::string::String;

/// TSC ticks a partition runs before another gets the CPU.
pub const TIMESLICE_TICKS: u64 = 2_000_000;
/// Exits handled in one slice before the scheduler looks at the others.
pub(crate) const EXITS_PER_SLICE: u32 = 10_000;

/// Delivers due timers and pending interrupts to a vCPU (`slot`; `bsp`: vCPU 0) before an
/// entry: the highest waiting vector is injected when the guest can take it, otherwise the
/// vCPU exits as soon as it can. The PIC interrupts vCPU 0 only (its output is wired to the
/// bootstrap processor, as in a PC in virtual-wire mode).
///
/// Takes the partition's parts apart (split borrows) so that the run loop indexes the vCPU
/// once per exit; the common case, nothing requested, is a few flag tests here, and the
/// ranking is out of line ([`deliver_pending`]).
#[inline(always)]
pub(crate) fn deliver_events(
    slot: &mut VcpuSlot,
    bsp: bool,
    pic: &mut PicPair,
    pc: Option<&PcDevices>,
    ram: &GuestRam,
) {
    // Only this vCPU's sources and the devices: the others' timers are looked at when their
    // own slices begin (`run_slice`), which the slice length waits for (`slice_ticks`).
    let now = rdtsc();
    if let Some(pc) = pc {
        pc.tick(now, pic);
    }
    slot.tick(now);
    // IRR not empty or an NMI latched (one test: `Lapic::has_requests`).
    let apic = slot.lapic.apic.has_requests();
    // Nothing requested anywhere, the common case: no need to rank the sources.
    if slot.vectors.is_empty() && !apic && !(bsp && pic.any_requested()) {
        return;
    }
    deliver_pending(slot, bsp, pic, pc, ram, apic);
}

/// [`deliver_events`] once something is requested: ranks the sources and injects the winner
/// or opens an interrupt window. `apic`: the local APIC has requests.
#[inline(never)]
fn deliver_pending(
    slot: &mut VcpuSlot,
    bsp: bool,
    pic: &mut PicPair,
    pc: Option<&PcDevices>,
    ram: &GuestRam,
    apic: bool,
) {
    // An NMI goes first (SDM Vol. 3A §6.9, priority among simultaneous events).
    if apic && slot.lapic.nmi_pending() && deliver_nmi(slot, bsp, pic) {
        return;
    }
    if apic {
        // A MOV to CR8 (the TPR) does not always exit: take it before ranking.
        let cr8 = slot.vcpu.cr(8);
        slot.lapic.sync_cr8(cr8);
    }
    let pic_in = bsp.then_some(&*pic);
    let Some(source) = interrupts::next(&slot.vectors, pic_in, &slot.lapic) else { return };
    if halts_next(slot, ram) {
        // The HLT exits at once and the interrupt wakes it: the same to the guest.
        slot.vcpu.set_interrupt_window_exiting(false);
        return;
    }
    if !slot.vcpu.event_pending() && slot.vcpu.interruptible() {
        let vector = interrupts::take(source, &mut slot.vectors, pic, &mut slot.lapic);
        slot.vcpu.inject(Event::Interrupt { vector });
        // A PIT tick may wait behind the one just taken.
        if let Some(pc) = pc {
            pc.delivered();
        }
        slot.vcpu.set_interrupt_window_exiting(false);
    } else {
        slot.vcpu.set_interrupt_window_exiting(true);
    }
}

/// Injects the vCPU's pending NMI when it can take one (not masked by RFLAGS.IF; held back by
/// NMI blocking until the handler's IRET and by a MOV-SS shadow: [`super::vcpu::Vcpu::nmi_injectable`]),
/// otherwise asks for an exit as soon as it can. True when injected; an interrupt also waiting
/// then goes in at the next interrupt window, after the NMI's delivery.
#[inline(never)]
fn deliver_nmi(slot: &mut VcpuSlot, bsp: bool, pic: &PicPair) -> bool {
    let pic_in = bsp.then_some(pic);
    let others = interrupts::next(&slot.vectors, pic_in, &slot.lapic).is_some();
    if !slot.vcpu.nmi_injectable() {
        slot.vcpu.set_nmi_window_exiting(true);
        return false;
    }
    slot.lapic.take_nmi();
    slot.vcpu.inject(Event::Nmi);
    slot.vcpu.set_nmi_window_exiting(false);
    if others {
        slot.vcpu.set_interrupt_window_exiting(true);
    }
    true
}

/// True when the guest was stopped by a host interrupt (or an interrupt window) just before a
/// HLT: an interrupt is then delivered after the HLT (which exits at once) rather than before
/// it, which is the same to the guest (an interrupt that comes while it halts wakes it), and
/// no interrupt window is opened on the HLT. Before it, it could land in an STI shadow under
/// QEMU's TCG before 9.1, which takes a host interrupt between `sti` and `hlt` without always
/// saying so in the VMCB's `int_state`, and which does not restore the shadow at VMRUN (so an
/// interrupt window opens on the shadowed HLT itself; QEMU commit "target/i386: fix
/// INHIBIT_IRQ/TF/RF handling for VMRUN", 2024): the guest's handler returned to the HLT,
/// which found nothing left to wake it (the chaos guest and the probe hit it about once in
/// seven runs). Only after those exits: one read of the byte at RIP.
fn halts_next(slot: &VcpuSlot, ram: &GuestRam) -> bool {
    let after = slot.last_exits.last();
    if !matches!(after, Some(VmExit::HostInterrupt | VmExit::Preempted | VmExit::InterruptWindow)) {
        return false;
    }
    let mut buf = [0; crate::vmm::decode::MAX_INSN_LEN];
    let got = super::step::fetch_at_rip_of(ram, &*slot.vcpu, &mut buf);
    got.n >= 1 && buf[0] == HLT_OPCODE
}

/// HLT (SDM Vol. 2A).
const HLT_OPCODE: u8 = 0xf4;

/// TSC ticks the next slice of `p` may run: a whole slice, or less when a device of its own or
/// a vCPU's timer raises an interrupt before (its PIT's next tick), so that the interrupt comes
/// on time, to a halted vCPU too.
fn slice_ticks(p: &Partition, now: u64) -> u64 {
    match p.next_deadline() {
        Some(t) => t.saturating_sub(now).clamp(MIN_SLICE_TICKS, TIMESLICE_TICKS),
        None => TIMESLICE_TICKS,
    }
}

/// The shortest slice: a guest that programs its PIT for a 2-tick period still gets to run.
pub(crate) const MIN_SLICE_TICKS: u64 = 2_000;

/// Runs `p` for one time slice: its next runnable vCPU, round-robin (a halted vCPU whose
/// deadline passed or which has an interrupt waiting is runnable again). Returns
/// [`Flow::Admin`] when the vCPU made a call the machine must carry out (it keeps the CPU
/// afterwards: [`Partition::current`] says which vCPU), otherwise how the slice ended. The
/// partition's state sums up its vCPUs' afterwards.
pub fn run_slice(p: &mut Partition) -> Flow {
    run_slice_as(p, false)
}

/// Runs a partition pinned to a CPU of its own (`machine::pinned`) as [`run_slice`] does, but
/// a partition of one vCPU runs with no time slice (0: the VMX-preemption timer at its longest,
/// no host APIC timer under SVM): only its own devices' or timer's next interrupt ends a run on
/// time. The vCPUs of a partition of several still share its CPU in slices.
pub fn run_pinned(p: &mut Partition) -> Flow {
    run_slice_as(p, true)
}

fn run_slice_as(p: &mut Partition, pinned: bool) -> Flow {
    let now = rdtsc();
    p.tick(now);
    for v in 0..p.vcpus.len() {
        if let RunState::Halted { until } = p.vcpus[v].run
            && (now >= until || p.interrupt_pending_for(v))
        {
            p.vcpus[v].run = RunState::Runnable;
        }
    }
    let n = p.vcpus.len();
    let runnable = |p: &Partition, v: usize| p.vcpus[v].run == RunState::Runnable;
    let Some(turn) = Turn::start(n, p.current, now, TIMESLICE_TICKS, |v| runnable(p, v)) else {
        return settle(p, Flow::Yield);
    };
    let mut v = turn.first;
    let flow = loop {
        p.current = v;
        let flow = run_vcpu(p, v, pinned && n == 1, &turn);
        if flow == Flow::Stopped {
            return flow;
        }
        // A directed yield (an IPI gave vCPU `to` work: `ipi::yields_to`) runs the target
        // in the rest of the turn.
        let to = p.yield_to.take();
        match turn.next(to, rdtsc(), MIN_SLICE_TICKS, |t| runnable(p, t)) {
            Some(t) if flow == Flow::Yield => v = t,
            _ => break flow,
        }
    };
    if !matches!(flow, Flow::Admin(_)) {
        // The next turn starts looking at the vCPU after the one whose turn this was.
        p.current = turn.cursor_after(n);
    }
    settle(p, flow)
}

/// Sets the partition's state from its vCPUs' after a slice that ended in `flow`: runnable
/// while any vCPU is, halted until the earliest deadline while some wait for an interrupt;
/// off when every vCPU is parked with interrupts off or waiting for a SIPI; stopped when the
/// halted ones have nothing left that could wake them.
#[inline]
fn settle(p: &mut Partition, flow: Flow) -> Flow {
    // The common case first: the vCPU that ran (or any) still runnable, one test.
    if p.vcpus.get(p.current).is_some_and(|s| s.run == RunState::Runnable) {
        p.state = State::Runnable;
        return flow;
    }
    settle_all(p, flow)
}

/// [`settle`] past its common case: every vCPU's state looked at.
#[inline(never)]
pub(crate) fn settle_all(p: &mut Partition, flow: Flow) -> Flow {
    match overall(p.vcpus.iter().map(|s| s.run)) {
        Overall::Runnable => {
            p.state = State::Runnable;
            flow
        }
        Overall::Halted { until } => {
            let halted = |v: &usize| matches!(p.vcpus[*v].run, RunState::Halted { .. });
            if !(0..p.vcpus.len()).filter(halted).any(|v| p.can_be_woken(v)) {
                p.kill(String::from(
                    "every vCPU halted with no timer armed and no interrupt source: they would never wake",
                ));
                return Flow::Stopped;
            }
            p.state = State::Halted { until };
            flow
        }
        Overall::Parked => {
            p.flush_console();
            p.state = State::Off("every vCPU halted with interrupts off or waiting for a SIPI");
            Flow::Stopped
        }
    }
}

/// Runs vCPU `v` of `p` until its slice ends or an exit needs more than the vCPU, with its own
/// FPU state and XCR0 in the registers ([`super::fpu`]). `unsliced`: a pinned partition's only
/// vCPU, which runs without a time slice ([`run_pinned`]).
fn run_vcpu(p: &mut Partition, v: usize, unsliced: bool, turn: &Turn) -> Flow {
    super::ipi::apply_start(&mut p.vcpus[v]);
    p.vcpus[v].fpu.restore();
    let flow = run_vcpu_exits(p, v, unsliced, turn);
    p.vcpus[v].fpu.save();
    flow
}

/// The exits of one slice of vCPU `v`, at most the rest of its `turn`.
fn run_vcpu_exits(p: &mut Partition, v: usize, unsliced: bool, turn: &Turn) -> Flow {
    let now = rdtsc();
    let ticks = if unsliced {
        p.next_deadline_for(v)
            .map_or(0, |t| t.saturating_sub(now).clamp(MIN_SLICE_TICKS, u64::from(u32::MAX)))
    } else {
        turn.ticks_left(now, slice_ticks(p, now), MIN_SLICE_TICKS)
    };
    p.vcpus[v].vcpu.set_timeslice(ticks);
    // When the run ends (`None`: no bound, a pinned vCPU with no timer armed).
    let mut end = (ticks != 0).then(|| now.saturating_add(ticks));
    profile::slice_start();
    for _ in 0..EXITS_PER_SLICE {
        // Split borrows: the vCPU's slot is indexed once per exit, not once per use.
        let Partition { vcpus, pic, pc, ram, stats, .. } = &mut *p;
        let slot = &mut vcpus[v];
        deliver_events(slot, v == 0, pic, pc.as_ref(), ram);
        profile::mark(Stage::Events);
        let result = slot.vcpu.run();
        let fast = slot.vcpu.take_fast_exits();
        stats.counts[VmExit::Cpuid.index()] += fast;
        let exit = match result {
            Ok(e) => e,
            Err(e) => return entry_failed(p, v, e),
        };
        profile::exit(
            &exit,
            || {
                let rip = slot.vcpu.rip();
                let g = slot.vcpu.gprs();
                (rip, [g.0[reg::R8], g.0[reg::R8 + 2], g.0[reg::R8 + 3]])
            },
            fast,
        );
        stats.record(&exit);
        profile::mark(Stage::Statistics);
        slot.last_exits.push(slot.vcpu.rip(), exit);
        profile::mark(Stage::LastExits);
        let flow = dispatch::handle(p, v, exit);
        profile::mark(Stage::Handler);
        match flow {
            Flow::Continue => {}
            other => return other,
        }
        if p.rearm {
            rearm(p, v, unsliced, &mut end);
        }
    }
    Flow::Yield
}

/// After an exit that reprogrammed a timer or an interrupt line ([`Partition::rearm`]): the
/// run of vCPU `v`, which ends at `end`, ends at the next interrupt instead when that comes
/// first (a one-shot APIC timer armed for 100 us in a 2,000,000-tick slice; for a pinned
/// vCPU with no time slice, any timer it arms), so that the interrupt comes on time.
#[cold]
#[inline(never)]
fn rearm(p: &mut Partition, v: usize, unsliced: bool, end: &mut Option<u64>) {
    p.rearm = false;
    let due = if unsliced { p.next_deadline_for(v) } else { p.next_deadline() };
    let new = match (*end, due) {
        (Some(e), Some(d)) => Some(e.min(d)),
        (e, d) => e.or(d),
    };
    if new != *end {
        let now = rdtsc();
        let ticks =
            new.map_or(0, |t| t.saturating_sub(now).clamp(MIN_SLICE_TICKS, u64::from(u32::MAX)));
        p.vcpus[v].vcpu.set_timeslice(ticks);
        *end = new;
    }
}

/// VM entry of vCPU `v` failed (`e`): its state and last exits to the log, the partition ends.
#[cold]
#[inline(never)]
pub(crate) fn entry_failed(p: &mut Partition, v: usize, e: EntryError) -> Flow {
    let mut dump = String::new();
    let _ = p.vcpus[v].vcpu.dump(&mut dump);
    crate::print!("{dump}");
    dispatch::report_last_exits(p, v);
    p.kill(format!("VM entry failed: {e}"));
    Flow::Stopped
}

/// A state's name for lists.
pub fn state_name(s: &State) -> &'static str {
    match s {
        State::Created => "created",
        State::Paused => "paused",
        State::Runnable => "running",
        State::Halted { .. } => "halted",
        State::Shutdown(_) => "shut down",
        State::Off(_) => "off",
        State::Killed(_) => "killed",
    }
}

/// Prints a partition's exit statistics.
pub fn print_stats(p: &Partition) {
    let mut line = format!("    exits: {} total", p.stats.total());
    for (name, count) in p.stats.nonzero() {
        line.push_str(&format!(", {name} {count}"));
    }
    crate::println!("{line}");
    crate::println!(
        "    absent ports {} (last {:#x}) absent MMIO {} refused accesses {} table pages {}",
        p.io.absent,
        p.io.last_absent,
        p.mmio.absent,
        p.refused,
        p.slat.tables_used()
    );
    if p.irq_lines != 0 {
        crate::println!(
            "    host IRQ lines {:#06x}: {} interrupts forwarded; {}",
            p.irq_lines,
            p.irqs_forwarded,
            p.pic.describe()
        );
    }
}

/// Prints each partition's end and statistics; true when every one ended as its manifest
/// expected.
pub fn report(parts: &mut [Partition], powered_off: bool) -> bool {
    let mut all_ok = true;
    for p in parts.iter_mut() {
        p.flush_console();
        let (ended, ok) = match &p.state {
            State::Shutdown(s) => {
                (format!("shut down with status {s}"), *s == 0 && p.config.expect == Expect::Exit)
            }
            State::Off(how) => (format!("powered off ({how})"), p.config.expect == Expect::Halt),
            State::Killed(why) => {
                (format!("stopped by the hypervisor: {why}"), p.config.expect == Expect::Fault)
            }
            other if powered_off => (format!("still {} at power-off", state_name(other)), true),
            other => (format!("still {}", state_name(other)), false),
        };
        all_ok &= ok;
        crate::println!(
            "hypervisor: partition {} (id {}): {ended} [{}]",
            p.name,
            p.id,
            if ok { "as expected" } else { "UNEXPECTED" }
        );
        print_stats(p);
    }
    all_ok
}
