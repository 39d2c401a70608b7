//! The `parallel` check of the `vcpus=2` mode (scenario `vcpus2-pinned`): both vCPUs run at
//! the same time, as on two host CPUs of their own.
//!
//! vCPU 1 counts in a word of shared memory (its handler of vector [`VECTOR`], in the
//! trampoline of [`crate::smp`]), with no exit; vCPU 0 reads the word and the TSC in a loop,
//! also with no exit, and counts the times the word moved between two of its reads less than
//! [`GAP`] TSC ticks apart. Time-sliced on one host CPU, the word moves only while vCPU 0 is
//! off the CPU: between two of its reads around that, vCPU 1 ran a slice of at least 2,000 TSC
//! ticks (`MIN_SLICE_TICKS`, `vmm/run.rs`; the hypervisor does not offset the TSC), so no such
//! sighting can happen. vCPUs that run at once see each other's counting at every read. The
//! check passes at [`SIGHTINGS`] of them within [`LIMIT`] ticks (an emulator that runs its
//! CPUs as threads on a busy host only needs both threads on a host core now and then).

use core::sync::atomic::Ordering;
use guest_rt::{Checks, ensure, instr};

/// The vector whose handler on vCPU 1 counts.
pub const VECTOR: u8 = 0x43;
/// Two reads closer than this many TSC ticks: no time slice of vCPU 1 fits between them.
const GAP: u64 = 1_000;
/// Sightings needed.
const SIGHTINGS: u32 = 10;
/// TSC ticks to look for them.
const LIMIT: u64 = 4_000_000_000;
/// Offsets in the trampoline page: vCPU 1's count, and the word that stops it.
const COUNT: u64 = 0x820;
const STOP: u64 = 0x824;

pub fn run(c: &mut Checks) {
    let (count, stop) = (crate::smp::shared(COUNT), crate::smp::shared(STOP));
    count.store(0, Ordering::SeqCst);
    stop.store(0, Ordering::SeqCst);
    crate::smp::icr((crate::smp::AP_APIC_ID << 32) | u64::from(VECTOR));
    let t0 = instr::rdtsc();
    let (mut seen, mut sightings, mut last) = (count.load(Ordering::SeqCst), 0, t0);
    while sightings < SIGHTINGS {
        let now = instr::rdtsc();
        let n = count.load(Ordering::SeqCst);
        if n != seen && now.wrapping_sub(last) < GAP {
            sightings += 1;
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
        "probe: parallel: {sightings} sightings of vCPU 1's count ({total}) in {ticks} TSC ticks"
    );
    c.check(
        "vcpus2-parallel",
        ensure!(
            sightings >= SIGHTINGS,
            "{sightings} of {SIGHTINGS} sightings of vCPU 1's count moving between two reads {GAP} TSC ticks apart, in {ticks} ticks: the vCPUs did not run at the same time"
        ),
    );
}
