//! The `vcpus=2 bench=1` mode (scenario `bench-ipi`, `cargo xtask bench`): IPI round trips
//! between the two vCPUs of the partition, in TSC ticks (retired instructions under Bochs and
//! QEMU `-icount shift=0`), one `BENCH name ticks` line each:
//! - `ipi-roundtrip-spin`: vCPU 0 sends vCPU 1 (halted) a fixed IPI, vCPU 1's handler EOIs and
//!   sends one back, vCPU 0 spins with interrupts on until the answer's handler ran (as Linux's
//!   `csd_lock_wait` does);
//! - `ipi-roundtrip-hlt`: the same, vCPU 0 waiting in `sti; hlt`;
//! - `ipi-self`: a fixed IPI to itself, its handler EOIs: the round trip the hypervisor
//!   measures natively (`BENCH-NATIVE ipi-self`), the one figure with a bare-machine twin.

use core::sync::atomic::{AtomicU32, Ordering};

use guest_rt::exception::{InterruptFrame, register_handler};
use guest_rt::{Checks, instr, println};

use crate::smp;

/// Round trips per figure.
const ROUNDS: u32 = 256;
/// The vector of the self-IPI (free in this mode).
const SELF_VECTOR: u8 = 0x43;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_ICR: u32 = 0x830;
/// Ticks after which a figure is given up (a lost IPI must not hang the bench).
const GIVE_UP_TICKS: u64 = 20_000_000_000;

static SELF_HITS: AtomicU32 = AtomicU32::new(0);

fn on_self(_: &mut InterruptFrame) {
    SELF_HITS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: EOI of the interrupt being handled.
    unsafe { instr::wrmsr(X2APIC_EOI, 0) };
}

/// How vCPU 0 waits for an answer.
#[derive(Clone, Copy)]
enum Wait {
    Spin,
    Hlt,
}

/// `ROUNDS` round trips; ticks per round trip, `None` when an answer did not come. Spinning,
/// interrupts stay on throughout (as around Linux's `csd_lock_wait`): a spin loop that opens
/// them only for one instruction (`sti; pause; cli`) never takes one under QEMU's TCG, whose
/// PAUSE leaves the translated block before the STI shadow ends. Halting, each wait is
/// `sti; hlt` after a look with interrupts off.
fn round_trips(send: impl Fn(), done: impl Fn(u32) -> bool, wait: Wait) -> Option<u64> {
    let start = instr::rdtsc();
    let late = || instr::rdtsc().wrapping_sub(start) > GIVE_UP_TICKS;
    for k in 1..=ROUNDS {
        match wait {
            Wait::Spin => {
                instr::sti();
                send();
                while !done(k) {
                    if late() {
                        instr::cli();
                        return None;
                    }
                    core::hint::spin_loop();
                }
                instr::cli();
            }
            Wait::Hlt => {
                send();
                while !done(k) {
                    if late() {
                        return None;
                    }
                    instr::sti_hlt();
                    instr::cli();
                }
            }
        }
    }
    Some(instr::rdtsc().wrapping_sub(start) / u64::from(ROUNDS))
}

pub fn run(c: &mut Checks) {
    if smp::start(c).is_none() {
        return;
    }
    register_handler(SELF_VECTOR, on_self);
    let base = smp::replies();
    let answered = |k: u32| smp::replies() >= base + k;
    let spin = round_trips(smp::to_ap, answered, Wait::Spin);
    let base = smp::replies();
    let answered = |k: u32| smp::replies() >= base + k;
    let hlt = round_trips(smp::to_ap, answered, Wait::Hlt);
    // SAFETY: the x2APIC is on (`smp::start`); a fixed IPI to APIC ID 0, this vCPU.
    let to_self = || unsafe { instr::wrmsr(X2APIC_ICR, u64::from(SELF_VECTOR)) };
    let base = SELF_HITS.load(Ordering::SeqCst);
    let self_ipi =
        round_trips(to_self, |k| SELF_HITS.load(Ordering::SeqCst) >= base + k, Wait::Spin);
    for (name, figure) in
        [("ipi-roundtrip-spin", spin), ("ipi-roundtrip-hlt", hlt), ("ipi-self", self_ipi)]
    {
        match figure {
            Some(ticks) => println!("BENCH {name} {ticks}"),
            None => {
                c.check(name, guest_rt::ensure!(false, "an answer did not come"));
            }
        }
    }
}
