//! One virtual CPU of a partition as the core keeps it: the backend's vCPU, where it is in its
//! run (runnable, halted, waiting for a start-up IPI, stopped), what it alone raises (the timer
//! hypercall's vector), its FPU state and XCR0, its last exits and its instruction-length
//! cache. What the vCPUs of a
//! partition share (RAM, second-level table, buses, PIC, devices, statistics) stays in the
//! [`Partition`](super::partition::Partition).
//!
//! The run-state logic here is pure (host-tested): which vCPU runs next, and what the
//! partition as a whole is once each vCPU's state is known.

use super::code_site::CodeSite;
use super::exit::VmExit;
use super::fpu::Fpu;
use super::interrupts::VectorSet;
use super::vcpu::Vcpu;
use super::vlapic::Vlapic;
use alloc::boxed::Box;

/// Where one vCPU is in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Runnable,
    /// In HLT with interrupts on: an interrupt, or the TSC reaching `until` (its earliest
    /// timer), wakes it.
    Halted {
        until: u64,
    },
    /// Waiting for a start-up IPI (after INIT, or an application processor at power-on; SDM
    /// Vol. 3A §9.4.2, "wait-for-SIPI" state): nothing else runs it.
    WaitForSipi,
    /// In HLT with interrupts off: only NMI, INIT (or SMI, reset) end it (SDM Vol. 2A HLT).
    Stopped,
}

impl RunState {
    /// True when nothing but an IPI from another vCPU (NMI, INIT, SIPI) can run it again.
    pub fn parked(self) -> bool {
        matches!(self, Self::WaitForSipi | Self::Stopped)
    }
}

/// The last exits, for crash reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExitRing {
    entries: [(u64, Option<VmExit>); 16],
    next: usize,
}

impl ExitRing {
    pub fn push(&mut self, rip: u64, e: VmExit) {
        self.entries[self.next % 16] = (rip, Some(e));
        self.next += 1;
    }
    /// The latest.
    pub fn last(&self) -> Option<VmExit> {
        self.entries[(self.next + 15) % 16].1
    }
    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, VmExit)> + '_ {
        (0..16).filter_map(move |i| {
            let (rip, e) = self.entries[(self.next + i) % 16];
            e.map(|e| (rip, e))
        })
    }
}

/// One vCPU of a partition.
pub struct VcpuSlot {
    /// The backend's vCPU (VMCS or VMCB).
    pub vcpu: Box<dyn Vcpu>,
    pub run: RunState,
    /// Its one-shot timer (the `SetTimer` hypercall): (TSC deadline, vector).
    pub timer: Option<(u64, u8)>,
    /// Vectors raised for this vCPU alone (its timer; channel notifications go to vCPU 0),
    /// waiting for it to take them.
    pub vectors: VectorSet,
    pub last_exits: ExitRing,
    /// The last instruction whose length the core decoded (CPUs without a next RIP).
    pub insn_cache: Option<CodeSite>,
    /// Its x87/SSE/AVX registers and XCR0 while another vCPU runs.
    pub fpu: Fpu,
    /// Its local APIC (`vmm/vlapic.rs`).
    pub lapic: Vlapic,
}

impl VcpuSlot {
    pub fn new(vcpu: Box<dyn Vcpu>, run: RunState, fpu: Fpu, lapic: Vlapic) -> Self {
        Self {
            vcpu,
            fpu,
            lapic,
            run,
            timer: None,
            vectors: VectorSet::default(),
            last_exits: ExitRing::default(),
            insn_cache: None,
        }
    }
}

impl VcpuSlot {
    /// Moves what came due into its interrupt inputs: its timer hypercall's vector, its local
    /// APIC timer.
    #[inline]
    pub fn tick(&mut self, now: u64) {
        self.lapic.apic.tick(now);
        if let Some((deadline, vector)) = self.timer
            && now >= deadline
        {
            self.timer = None;
            self.vectors.set(vector);
        }
    }
}

impl VcpuSlot {
    /// The earliest TSC at which its own timers raise an interrupt: its timer hypercall's
    /// deadline, its local APIC timer.
    #[inline]
    pub fn deadline(&self) -> Option<u64> {
        let timer = self.timer.map(|(deadline, _)| deadline);
        match (timer, self.lapic.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What a partition is, given its vCPUs' run states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overall {
    /// At least one vCPU can run.
    Runnable,
    /// None can run; the earliest halted vCPU's deadline wakes the partition (or an
    /// interrupt before it).
    Halted { until: u64 },
    /// Every vCPU is parked (stopped with interrupts off, or waiting for a SIPI): nothing
    /// that runs is left to wake any of them.
    Parked,
}

/// The partition's state from its vCPUs' states.
pub fn overall(states: impl IntoIterator<Item = RunState>) -> Overall {
    let mut until = None::<u64>;
    for s in states {
        match s {
            RunState::Runnable => return Overall::Runnable,
            RunState::Halted { until: u } => until = Some(until.map_or(u, |t| t.min(u))),
            RunState::WaitForSipi | RunState::Stopped => {}
        }
    }
    until.map_or(Overall::Parked, |until| Overall::Halted { until })
}

/// The vCPU to run next: the first runnable one from `from` on, round-robin over `n`.
pub fn next_runnable(n: usize, from: usize, runnable: impl Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|k| (from + k) % n).find(|&v| runnable(v))
}

/// One turn of a partition's round-robin on its CPU: the vCPU whose turn it is runs, and a
/// directed yield (an IPI that gave another vCPU work, [`super::ipi::yields_to`]) hands the
/// rest of the turn to the target, then to the next target, until the turn's time is up or a
/// run ends for another reason. The next turn starts after the vCPU whose turn this was, not
/// after the last target: two vCPUs that keep sending each other IPIs share their turns but
/// take none of a third's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn {
    /// The vCPU whose turn it is.
    pub first: usize,
    /// The TSC at which the turn ends.
    pub end: u64,
}

impl Turn {
    /// The turn of the first runnable vCPU from `cursor` on among `n`, starting at TSC `now`
    /// and lasting `ticks`; `None` when none can run.
    pub fn start(
        n: usize,
        cursor: usize,
        now: u64,
        ticks: u64,
        runnable: impl Fn(usize) -> bool,
    ) -> Option<Self> {
        next_runnable(n, cursor, runnable).map(|first| Self { first, end: now + ticks })
    }

    /// After a run that ended at TSC `now` with a directed yield to `to` (`None`: it ended
    /// otherwise), the vCPU that runs next in this turn: the target, while it can run and at
    /// least `min_ticks` of the turn are left; `None`: the turn ends.
    pub fn next(
        &self,
        to: Option<usize>,
        now: u64,
        min_ticks: u64,
        runnable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        to.filter(|&t| now.saturating_add(min_ticks) <= self.end && runnable(t))
    }

    /// Ticks a run that starts at TSC `now` in this turn may take, at most `ticks`, at least
    /// `min_ticks`.
    pub fn ticks_left(&self, now: u64, ticks: u64, min_ticks: u64) -> u64 {
        self.end.saturating_sub(now).clamp(min_ticks, ticks.max(min_ticks))
    }

    /// Where the next turn looks for a runnable vCPU, among `n`.
    pub fn cursor_after(&self, n: usize) -> usize {
        (self.first + 1) % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunState::*;

    #[test]
    fn any_runnable_vcpu_makes_the_partition_runnable() {
        assert_eq!(overall([Runnable]), Overall::Runnable);
        assert_eq!(overall([Halted { until: 5 }, Runnable, WaitForSipi]), Overall::Runnable);
        assert_eq!(overall([Stopped, Runnable]), Overall::Runnable);
    }

    #[test]
    fn halted_vcpus_wake_the_partition_at_the_earliest_deadline() {
        assert_eq!(overall([Halted { until: 9 }]), Overall::Halted { until: 9 });
        assert_eq!(
            overall([Halted { until: 9 }, WaitForSipi, Halted { until: 4 }, Stopped]),
            Overall::Halted { until: 4 }
        );
    }

    #[test]
    fn parked_vcpus_alone_park_the_partition() {
        assert_eq!(overall([Stopped]), Overall::Parked);
        assert_eq!(overall([Stopped, WaitForSipi, WaitForSipi]), Overall::Parked);
        assert_eq!(overall([]), Overall::Parked);
        assert!(Stopped.parked() && WaitForSipi.parked());
        assert!(!Runnable.parked() && !Halted { until: 0 }.parked());
    }

    #[test]
    fn round_robin_starts_at_the_next_vcpu_and_skips_the_others() {
        let states = [Runnable, WaitForSipi, Runnable, Halted { until: 1 }];
        let r = |v: usize| states[v] == Runnable;
        assert_eq!(next_runnable(4, 0, r), Some(0));
        assert_eq!(next_runnable(4, 1, r), Some(2));
        assert_eq!(next_runnable(4, 3, r), Some(0));
        assert_eq!(next_runnable(4, 2, |_| false), None);
    }

    #[test]
    fn a_directed_yield_runs_the_target_for_the_rest_of_the_turn() {
        let t = Turn::start(2, 0, 100, 1000, |_| true).unwrap();
        assert_eq!(t, Turn { first: 0, end: 1100 });
        assert_eq!(t.next(Some(1), 500, 10, |_| true), Some(1));
        assert_eq!(t.next(None, 500, 10, |_| true), None, "no yield: the turn ends");
        assert_eq!(t.next(Some(1), 1095, 10, |_| true), None, "too little time left");
        assert_eq!(t.next(Some(1), 500, 10, |v| v != 1), None, "the target cannot run");
        assert_eq!(t.ticks_left(500, 1000, 10), 600);
        assert_eq!(t.ticks_left(1099, 1000, 10), 10);
        assert_eq!(t.ticks_left(100, 400, 10), 400, "never more than a run's own slice");
        assert_eq!(Turn::start(3, 1, 0, 5, |v| v == 0), Some(Turn { first: 0, end: 5 }));
        assert_eq!(Turn::start(3, 1, 0, 5, |_| false), None);
    }

    /// vCPUs 0 and 1 send each other an IPI every 7 ticks, vCPU 2 only computes: every vCPU
    /// still starts a turn in rotation, so 2 gets a third of the time.
    #[test]
    fn vcpus_that_ping_pong_do_not_starve_a_third() {
        let (mut now, mut cursor, slice) = (0u64, 0usize, 100u64);
        let mut ran = [0u64; 3];
        for _ in 0..30 {
            let turn = Turn::start(3, cursor, now, slice, |_| true).unwrap();
            let mut v = turn.first;
            loop {
                let took = if v == 2 { turn.ticks_left(now, slice, 1) } else { 7 };
                ran[v] += took;
                now += took;
                let to = (v != 2).then(|| 1 - v);
                match turn.next(to, now, 1, |_| true) {
                    Some(t) => v = t,
                    None => break,
                }
            }
            cursor = turn.cursor_after(3);
        }
        let total: u64 = ran.iter().sum();
        assert!(ran[2] * 10 >= total * 3, "vCPU 2 ran {} of {total} ticks", ran[2]);
        assert!(ran[0] > 0 && ran[1] > 0);
    }

    #[test]
    fn the_exit_ring_keeps_the_last_sixteen() {
        let mut ring = ExitRing::default();
        assert_eq!(ring.last(), None);
        for rip in 0..20 {
            ring.push(rip, VmExit::Cpuid);
        }
        let rips: alloc::vec::Vec<u64> = ring.iter().map(|(r, _)| r).collect();
        assert_eq!(rips, (4..20).collect::<alloc::vec::Vec<_>>());
        ring.push(99, VmExit::Hlt);
        assert_eq!(ring.last(), Some(VmExit::Hlt));
    }
}
