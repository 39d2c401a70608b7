//! Waiting without burning the CPU: arm the one-shot timer, `sti; hlt`. The hypervisor runs
//! the other partitions meanwhile; the timer (or a channel notification) wakes us.
//!
//! The timer must be armed before every HLT: the hypervisor stops a partition that halts with
//! nothing that could wake it.

use core::sync::atomic::{AtomicU64, Ordering};

use guest_rt::hypercall as hc;
use guest_rt::{InterruptFrame, instr, register_handler};

/// The timer's vector.
pub const TIMER_VECTOR: u8 = 0x40;
/// The vector channel notifications arrive on (bound to each channel we serve).
pub const CHANNEL_VECTOR: u8 = 0x41;

/// TSC ticks of one nap: a few milliseconds on hardware, short enough that typed input (which
/// does not wake us) answers at once to a person and cannot fill the UART's 16-byte FIFO at
/// serial speeds.
pub const NAP_TICKS: u64 = 5_000_000;

/// TSC ticks of the shell's nap when it has nothing to do: long (about a second on hardware),
/// because a typed byte (the UART's IRQ 4) or a channel notification wakes it at once.
pub const SHELL_NAP_TICKS: u64 = 2_000_000_000;

static WAKEUPS: AtomicU64 = AtomicU64::new(0);

fn on_wakeup(_: &mut InterruptFrame) {
    WAKEUPS.fetch_add(1, Ordering::Relaxed);
}

/// Installs the (trivial) handlers of both vectors.
pub fn init() {
    register_handler(TIMER_VECTOR, on_wakeup);
    register_handler(CHANNEL_VECTOR, on_wakeup);
}

/// Sleeps for about `ticks` TSC ticks, or until a channel notification. Interrupts are off
/// again on return.
pub fn nap(ticks: u64) {
    if hc::set_timer(ticks, TIMER_VECTOR).ok().is_ok() {
        // Interrupts that arrive between STI and HLT are taken after HLT (the STI shadow), so
        // no wake-up is lost.
        instr::sti_hlt();
        instr::cli();
    } else {
        // No timer: HLT could never end. Give up the time slice instead.
        hc::yield_now();
    }
}
