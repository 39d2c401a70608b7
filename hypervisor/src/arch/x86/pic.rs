//! The host's 8259 pair, which the hypervisor keeps (no partition reaches ports 0x20/0x21 and
//! 0xa0/0xa1): it forwards the IRQ lines of devices it handed to the management partition.
//!
//! IRQ 0-15 arrive at vectors [`VECTOR_BASE`]`..+16`. The hypervisor runs with interrupts off
//! and opens a one-instruction window ([`window`]) between time slices; a line that fired is
//! then masked, acknowledged at the chip and recorded ([`take_pending`]). The line stays masked
//! until the partition that owns it has serviced its device and ended the interrupt at its own
//! virtual 8259 ([`unmask`]): a level-triggered device (a PCI function) cannot storm the host,
//! and an edge that comes meanwhile waits in the chip's IRR (Intel 8259A datasheet).
//!
//! A guest running when an owned line fires exits at once (VMX external-interrupt exiting,
//! SVM's INTR intercept), with the interrupt left pending at the chip for the window.

use super::instr::{inb, outb};
use core::sync::atomic::{AtomicU16, Ordering};

/// The vector of IRQ 0; IRQ 8-15 follow at +8.
pub const VECTOR_BASE: u8 = 0x20;
/// The master's input the slave is wired to.
const CASCADE: u8 = 2;

/// Lines that fired and wait for [`take_pending`].
static PENDING: AtomicU16 = AtomicU16::new(0);
/// The mask registers (IRQ 0-15; the cascade bit is managed here).
static MASK: AtomicU16 = AtomicU16::new(0xffff);

fn write_masks(mask: u16) {
    // SAFETY: the OCW1 ports of the host's PICs, which only the hypervisor reaches; masks
    // change only which lines interrupt.
    unsafe {
        outb(0x21, mask as u8);
        outb(0xa1, (mask >> 8) as u8);
    }
}

/// Initialises both chips (ICW1-ICW4: cascaded, edge-triggered, IRQ 0 at [`VECTOR_BASE`],
/// normal EOI) with every line masked.
pub fn init() {
    // SAFETY: the host's PICs belong to the hypervisor; the hypervisor runs with interrupts
    // off, and every line ends masked.
    unsafe {
        outb(0x20, 0x11);
        outb(0xa0, 0x11);
        outb(0x21, VECTOR_BASE);
        outb(0xa1, VECTOR_BASE + 8);
        outb(0x21, 1 << CASCADE);
        outb(0xa1, CASCADE);
        outb(0x21, 0x01);
        outb(0xa1, 0x01);
    }
    MASK.store(0xffff, Ordering::Relaxed);
    write_masks(0xffff);
}

/// Lets `irq` (not 2, the cascade) interrupt the host again.
pub fn unmask(irq: u8) {
    if irq >= 16 || irq == CASCADE {
        return;
    }
    let mut bits = 1u16 << irq;
    if irq >= 8 {
        bits |= 1 << CASCADE;
    }
    write_masks(MASK.fetch_and(!bits, Ordering::Relaxed) & !bits);
}

fn mask(irq: u8) {
    write_masks(MASK.fetch_or(1 << irq, Ordering::Relaxed) | (1 << irq));
}

/// Lines that fired since the last call.
pub fn take_pending() -> u16 {
    PENDING.swap(0, Ordering::Relaxed)
}

/// Lets pending interrupts in: STI's one-instruction shadow lets exactly the NOP run before
/// the CPU takes them, and CLI closes the window again (SDM Vol. 3A §6.8.3).
pub fn window() {
    // SAFETY: the only interrupts that can arrive are the PIC lines unmasked for forwarding,
    // whose handler below touches nothing but the PIC and two atomics.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Reads a chip's in-service register (OCW3 0x0b), to tell a real IRQ 7/15 from a spurious
/// one, which sets no ISR bit (8259A datasheet).
fn in_service(slave: bool) -> u8 {
    let port = if slave { 0xa0 } else { 0x20 };
    // SAFETY: OCW3 selects which register the next read returns; nothing else changes.
    unsafe {
        outb(port, 0x0b);
        let isr = inb(port);
        outb(port, 0x0a);
        isr
    }
}

/// Called by the IRQ entry stubs (`idt.rs`) with interrupts off: masks the line, ends the
/// interrupt at the chip(s) and records it.
pub extern "C" fn irq_entry(irq: u64) {
    let irq = (irq & 0xf) as u8;
    if irq % 8 == 7 && in_service(irq == 15) & 0x80 == 0 {
        if irq == 15 {
            // A spurious slave interrupt still took the master's IR2 (8259A datasheet).
            // SAFETY: non-specific EOI to the host's master PIC.
            unsafe { outb(0x20, 0x20) };
        }
        return;
    }
    mask(irq);
    // SAFETY: non-specific EOI to the chip(s) that delivered this interrupt.
    unsafe {
        if irq >= 8 {
            outb(0xa0, 0x20);
        }
        outb(0x20, 0x20);
    }
    PENDING.fetch_or(1 << irq, Ordering::Relaxed);
}
