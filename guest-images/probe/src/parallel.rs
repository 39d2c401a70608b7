//! The `parallel` check of the `vcpus=2` mode (scenario `vcpus2-pinned`): both vCPUs run at
//! the same time, as on two host CPUs of their own.
//!
//! vCPU 1 counts in a word of shared memory (its handler of vector [`VECTOR`], in the
//! trampoline of [`crate::smp`]), with no exit; vCPU 0 reads the word and the TSC in a loop,
//! also with no exit, and counts *sightings*: the word moved by at most [`STEP`] between two of
//! its reads less than [`GAP`] TSC ticks apart. Time-sliced on one host CPU, the word moves
//! only while vCPU 0 is off the CPU, and then by a whole slice of vCPU 1's counting (at least
//! `MIN_SLICE_TICKS`, 2,000 TSC ticks, `vmm/run.rs`): the smallest move seen that way was
//! 666,250 under Bochs (whose guest TSC barely advanced across the switch: 15 ticks, so the
//! step, not the gap, tells them apart there) and none came within the gap under QEMU.
//! vCPUs that run at once see each other's counting move by a few at a time. The check passes
//! at [`SIGHTINGS`] within [`LIMIT`] ticks (an emulator that runs its CPUs as threads on a
//! busy host only needs both threads on a host core now and then).

use core::sync::atomic::Ordering;
use guest_rt::{Checks, ensure, instr};

/// The vector whose handler on vCPU 1 counts.
pub const VECTOR: u8 = 0x43;
/// Two reads closer than this many TSC ticks: no time slice of vCPU 1 fits between them.
const GAP: u64 = 1_000;
/// At most this many counts between the two reads: vCPU 1 ran part of its loop in the
/// meantime, not a time slice (a 2,000,000-tick slice of counting moved it by 666,250 or more
/// under Bochs; under QEMU, whose TSC follows the host's clock, a slice never fits in the gap).
const STEP: u32 = 10_000;
/// Sightings needed.
const SIGHTINGS: u32 = 3;
/// TSC ticks to look for them.
const LIMIT: u64 = 8_000_000_000;
/// Offsets in the trampoline page: vCPU 1's count, and the word that stops it.
const COUNT: u64 = 0x828;
const STOP: u64 = 0x82c;

pub fn run(c: &mut Checks) {
    let (count, stop) = (crate::smp::shared(COUNT), crate::smp::shared(STOP));
    count.store(0, Ordering::SeqCst);
    stop.store(0, Ordering::SeqCst);
    crate::smp::icr((crate::smp::AP_APIC_ID << 32) | u64::from(VECTOR));
    let t0 = instr::rdtsc();
    let (mut seen, mut sightings, mut last) = (count.load(Ordering::SeqCst), 0, t0);
    // The closest read pair and smallest step among the moves seen, for the log.
    let (mut moves, mut min_gap, mut min_step) = (0u32, u64::MAX, u32::MAX);
    while sightings < SIGHTINGS {
        let now = instr::rdtsc();
        let n = count.load(Ordering::SeqCst);
        if n != seen {
            let (gap, step) = (now.wrapping_sub(last), n.wrapping_sub(seen));
            (moves, min_gap, min_step) = (moves + 1, min_gap.min(gap), min_step.min(step));
            if gap < GAP && step <= STEP {
                sightings += 1;
            }
        }
        (seen, last) = (n, now);
        if now.wrapping_sub(t0) > LIMIT {
            break;
        }
    }
    stop.store(1, Ordering::SeqCst);
    let ticks = instr::rdtsc().wrapping_sub(t0);
    let total = count.load(Ordering::SeqCst);
    guest_rt::println!(
        "probe: parallel: {sightings} sightings of vCPU 1's count ({total}) in {ticks} TSC ticks; {moves} moves seen, closest reads {min_gap} ticks apart, smallest step {min_step}"
    );
    c.check(
        "vcpus2-parallel",
        ensure!(
            sightings >= SIGHTINGS,
            "{sightings} of {SIGHTINGS} sightings of vCPU 1's count moving by at most {STEP} between two reads less than {GAP} TSC ticks apart, in {ticks} ticks: the vCPUs did not run at the same time"
        ),
    );
}
