//! Ending the run: the emulators' exit devices, so that a headless run is a test.
//!
//! QEMU: `isa-debug-exit` at port 0xf4. Bochs: the magic breakpoint (`xchg bx, bx`, with
//! `magic_break: enabled=1`) for success, and the `Shutdown` string on port 0x8900 for failure.
//! Each sequence is a harmless no-op on the other emulator; on real hardware the CPU halts.

use super::instr::{halt_forever, outb, outl};
use hvabi::exit::{BOCHS_SHUTDOWN_PORT, QEMU_EXIT_FAILURE, QEMU_EXIT_PORT, QEMU_EXIT_SUCCESS};

/// Powers the machine off with `success` as the run's result. Never returns.
pub fn power_off(success: bool) -> ! {
    crate::console::flush();
    // SAFETY: port 0xf4 is QEMU's exit device (absent on other machines, where the write is
    // dropped) and port 0x8900 is Bochs' shutdown port; the hypervisor keeps both for itself.
    unsafe {
        outl(QEMU_EXIT_PORT, if success { QEMU_EXIT_SUCCESS } else { QEMU_EXIT_FAILURE });
        if success {
            core::arch::asm!("xchg bx, bx", options(nomem, nostack));
        } else {
            for &b in b"Shutdown" {
                outb(BOCHS_SHUTDOWN_PORT, b);
            }
        }
    }
    halt_forever()
}
