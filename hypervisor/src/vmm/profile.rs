//! Where a slow-path exit's ticks go: with the `exit-profile` feature the run loop
//! (`run::run_slice`) reads the TSC at the boundary of each [`Stage`] and sums the
//! ticks per stage and exit kind; [`report`] prints the averages as `EXIT-PROFILE` lines, which
//! `cargo xtask bench --profile` reads. Without the feature every function here is empty and
//! inlined away: the gated bench figures are measured on a kernel without a single mark.
//!
//! One round trip is attributed to the site (exit kind and guest RIP) of the exit that starts
//! it: from the run loop getting that exit back to it getting the next one, the guest's own
//! instructions in between included in [`Stage::Run`]. A round trip that crossed a slice boundary (the scheduler ran) or held
//! CPUID exits of the backend's fast path is left out.

/// The stages of a round trip, in the order the run loop passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `ExitStats::record`.
    Statistics = 0,
    /// The last-exits ring.
    LastExits = 1,
    /// `dispatch::handle`: decoding the instruction, emulating it, the device model, RIP.
    Handler = 2,
    /// The loop back and `deliver_events` (timers, interrupt injection or window).
    Events = 3,
    /// `Vcpu::run`: guest state to the VMCS/VMCB, VM entry, the guest's instructions up to the
    /// next exit, the world switch back, reading the exit information and decoding it.
    Run = 4,
}

/// Number of stages.
pub const STAGES: usize = 5;
/// Their names, in [`Stage`] order.
pub const STAGE_NAMES: [&str; STAGES] = ["stats", "last-exits", "handler", "events", "run"];

#[cfg(feature = "exit-profile")]
mod on {
    use super::{STAGE_NAMES, STAGES, Stage};
    use crate::arch::x86::instr::rdtsc;
    use crate::vmm::exit::{EXIT_KINDS, VmExit};
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

    /// Exit sites (kind and RIP) told apart; later ones share the last entry.
    const SITES: usize = 32;
    /// No site yet: the round trip in progress belongs to nobody.
    const NONE: usize = usize::MAX;

    // The run loop is single-threaded; relaxed loads and stores compile to plain moves.
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SITE: AtomicUsize = AtomicUsize::new(NONE);
    static VALID: AtomicBool = AtomicBool::new(false);
    static SCRATCH: [AtomicU64; STAGES] = [const { AtomicU64::new(0) }; STAGES];
    static USED: AtomicUsize = AtomicUsize::new(0);
    /// Per site: kind, RIP, round trips, then the ticks of each stage.
    static KIND: [AtomicUsize; SITES] = [const { AtomicUsize::new(0) }; SITES];
    static RIP: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
    static COUNT: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
    static TOTALS: [[AtomicU64; STAGES]; SITES] =
        [const { [const { AtomicU64::new(0) }; STAGES] }; SITES];
    /// Per site, from round trips whose guest left TSC stamps: their count, then the ticks of
    /// `Vcpu::run` split into entry, guest and exit.
    static STAMPED: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
    static SPLIT: [[AtomicU64; 3]; SITES] = [const { [const { AtomicU64::new(0) }; 3] }; SITES];

    fn add(a: &AtomicU64, v: u64) {
        a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
    }

    #[inline(always)]
    pub fn mark(stage: Stage) {
        let now = rdtsc();
        add(&SCRATCH[stage as usize], now.wrapping_sub(LAST.load(Relaxed)));
        LAST.store(now, Relaxed);
    }

    pub fn slice_start() {
        VALID.store(false, Relaxed);
        SITE.store(NONE, Relaxed);
        LAST.store(rdtsc(), Relaxed);
    }

    /// The site of an exit of `kind` at `rip`, taking a new one while there are.
    fn site(kind: usize, rip: u64) -> usize {
        let used = USED.load(Relaxed);
        if let Some(i) =
            (0..used).find(|&i| KIND[i].load(Relaxed) == kind && RIP[i].load(Relaxed) == rip)
        {
            return i;
        }
        if used == SITES {
            return SITES - 1;
        }
        KIND[used].store(kind, Relaxed);
        RIP[used].store(rip, Relaxed);
        USED.store(used + 1, Relaxed);
        used
    }

    pub fn exit(exit: &VmExit, regs: impl FnOnce() -> (u64, [u64; 3]), fast_exits: u64) {
        let entered = LAST.load(Relaxed);
        mark(Stage::Run);
        let back = LAST.load(Relaxed);
        let (kind, (rip, [r8, r10, r11])) = (exit.index(), regs());
        let prev = SITE.load(Relaxed);
        if VALID.load(Relaxed) && fast_exits == 0 && prev < SITES {
            for (total, s) in TOTALS[prev].iter().zip(&SCRATCH) {
                add(total, s.load(Relaxed));
            }
            add(&COUNT[prev], 1);
            // hvabi::bench::stamped_out_loop: R10 the guest's TSC after the entry, R8 before
            // the exiting instruction. A stale R10 (the loop's first exit) fails the order.
            if r11 == hvabi::bench::STAMP_MAGIC && entered <= r10 && r10 <= r8 && r8 <= back {
                add(&STAMPED[prev], 1);
                for (total, part) in SPLIT[prev].iter().zip([r10 - entered, r8 - r10, back - r8]) {
                    add(total, part);
                }
            }
        }
        for s in &SCRATCH {
            s.store(0, Relaxed);
        }
        SITE.store(if kind < EXIT_KINDS { site(kind, rip) } else { NONE }, Relaxed);
        VALID.store(true, Relaxed);
        // What this function spent after its mark goes to no stage: start the next afresh.
        LAST.store(rdtsc(), Relaxed);
    }

    pub fn report() {
        // What one mark costs (it lands in the stage after it): two marks back to back.
        let before = SCRATCH[0].load(Relaxed);
        LAST.store(rdtsc(), Relaxed);
        mark(Stage::Statistics);
        mark(Stage::Statistics);
        let two = SCRATCH[0].load(Relaxed).wrapping_sub(before);
        crate::println!("EXIT-PROFILE mark-cost {}", two / 2);
        for i in 0..USED.load(Relaxed) {
            let n = COUNT[i].load(Relaxed);
            if n == 0 {
                continue;
            }
            let name = hvabi::hypercall::EXIT_KIND_NAMES[KIND[i].load(Relaxed)];
            let rip = RIP[i].load(Relaxed);
            let shared = if i == SITES - 1 { "+" } else { "" };
            let mut line = alloc::format!("EXIT-PROFILE {name}@{rip:#x}{shared} {n}");
            let mut sum = 0;
            for (stage, total) in STAGE_NAMES.iter().zip(&TOTALS[i]) {
                let avg = total.load(Relaxed) / n;
                sum += avg;
                line.push_str(&alloc::format!(" {stage}={avg}"));
            }
            line.push_str(&alloc::format!(" total={sum}"));
            crate::println!("{line}");
            let stamped = STAMPED[i].load(Relaxed);
            if stamped > 0 {
                let [entry, guest, exit] = SPLIT[i].each_ref().map(|t| t.load(Relaxed) / stamped);
                crate::println!(
                    "EXIT-PROFILE-SPLIT {name}@{rip:#x}{shared} {stamped} entry={entry} guest={guest} exit={exit}"
                );
            }
        }
    }
}

#[cfg(feature = "exit-profile")]
pub use on::{exit, mark, report, slice_start};

/// Closes the stage that ends here.
#[cfg(not(feature = "exit-profile"))]
#[inline(always)]
pub fn mark(_stage: Stage) {}

/// A slice starts: the round trip in progress (if any) went through the scheduler.
#[cfg(not(feature = "exit-profile"))]
#[inline(always)]
pub fn slice_start() {}

/// The run loop got `exit`, after `fast_exits` CPUID exits of the fast path: closes
/// [`Stage::Run`] and the previous exit's round trip. `regs` gives the guest's RIP and its R8,
/// R10 and R11 (the TSC stamps of `hvabi::bench::stamped_out_loop`); it is a closure so that
/// without the feature not even the vCPU's RIP is read.
#[cfg(not(feature = "exit-profile"))]
#[inline(always)]
pub fn exit(
    _exit: &super::exit::VmExit,
    _regs: impl FnOnce() -> (u64, [u64; 3]),
    _fast_exits: u64,
) {
}

/// Prints the averages per exit site (`EXIT-PROFILE KIND@RIP ROUND-TRIPS stage=TICKS ...
/// total=TICKS`; a `+` after the RIP: that site and all after the table filled up), and for a
/// site with stamped round trips `EXIT-PROFILE-SPLIT KIND@RIP ROUND-TRIPS entry=TICKS
/// guest=TICKS exit=TICKS`, `Vcpu::run` split.
#[cfg(not(feature = "exit-profile"))]
#[inline(always)]
pub fn report() {}
