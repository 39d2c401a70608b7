//! Timers and interrupts: the timer hypercall armed for a short delay, then `sti; hlt` (woken
//! by it or by any other interrupt), or a busy wait with interrupts on, or with interrupts off
//! (the hypervisor must still take the CPU away at the end of the slice: its neighbour runs),
//! or armed and disarmed again.
//!
//! Left out (the exclusion list): HLT with interrupts off, and HLT with no timer armed: the
//! guest contract ends the partition there (nothing could ever wake it). Interrupts from the
//! 8259 pair at vectors below 32: random port writes may have set its vector base to 8 (as
//! firmware leaves it), where an IRQ looks like an exception with an error code to the
//! runtime's stubs; so the pair is initialised at 0x20/0x28 (random masks) before interrupts
//! are enabled. An interrupt rate the guest cannot keep up with: random port writes may have
//! set the PIT or the RTC's periodic interrupt faster than its handler runs (under Bochs a tick
//! of the PIT at its fastest is a few instructions), and then, as on a PC, it never leaves its
//! handler (seed 1, operation 34 097); so the PIT's channel 0 is set to 18.2 Hz (mode 2,
//! count 65536) and the RTC's line stays masked while interrupts are on.

use guest_rt::{hypercall, instr};

use crate::{Ctx, INTERRUPTS};

pub fn run(ctx: &mut Ctx) {
    let delay = 1 + ctx.rng.below(200_000);
    let vector = 32 + ctx.rng.below(224) as u8;
    // `set_timer; sti; hlt` on SVM once had its interrupt delivered inside the STI shadow,
    // before the HLT (QEMU 7.2 takes a host interrupt there without reporting the shadow; the
    // hypervisor now delivers after the HLT instead: `vmm/run.rs`, `halts_next`).
    let how = ctx.rng.below(4);
    let masks = ctx.rng.next() as u16;
    // SAFETY: the partition's own virtual 8259 pair: ICW1 (edge, cascade, ICW4), ICW2 (vector
    // base), ICW3 (slave on IR2), ICW4 (8086 mode), then OCW1 (masks) (8259A data sheet).
    unsafe {
        for (cmd, data, base, cascade) in [(0x20, 0x21, 0x20, 4), (0xa0, 0xa1, 0x28, 2)] {
            instr::outb(cmd, 0x11);
            instr::outb(data, base);
            instr::outb(data, cascade);
            instr::outb(data, 0x01);
        }
        instr::outb(0x21, masks as u8);
        instr::outb(0xa1, (masks >> 8) as u8 | 0x01);
        // PIT channel 0: lobyte/hibyte, mode 2, count 0 (= 65536) (8254 data sheet).
        instr::outb(0x43, 0x34);
        instr::outb(0x40, 0);
        instr::outb(0x40, 0);
    }
    if ctx.tracing {
        guest_rt::println!(
            "chaos: timer: delay {delay} vector {vector:#x} how {how} masks {masks:#x}"
        );
    }
    let before = INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed);
    ctx.catch(|| {
        let _ = hypercall::set_timer(delay, vector);
        match how {
            0 => instr::sti_hlt(),
            1 => {
                instr::sti();
                let start = instr::rdtsc();
                while INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed) == before
                    && instr::rdtsc().wrapping_sub(start) < 4 * delay
                {
                    core::hint::spin_loop();
                }
            }
            2 => {
                let start = instr::rdtsc();
                while instr::rdtsc().wrapping_sub(start) < delay {
                    core::hint::spin_loop();
                }
            }
            _ => {
                let _ = hypercall::set_timer(0, vector);
            }
        }
        instr::cli();
    });
}
