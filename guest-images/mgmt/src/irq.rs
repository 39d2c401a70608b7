//! Device interrupts, taken as a PC kernel takes them: through the 8259 pair at ports
//! 0x20/0x21 and 0xa0/0xa1, programmed with the usual initialisation words (Intel 8259A
//! datasheet). The hypervisor gives this partition a virtual pair and forwards the host IRQ
//! lines of the devices the manifest hands it (here IRQ 14, the primary ATA channel).

use core::sync::atomic::{AtomicU64, Ordering};

use guest_rt::instr::outb;
use guest_rt::{InterruptFrame, register_handler};

/// The vector of IRQ 0; IRQ 8-15 follow at +8.
pub const VECTOR_BASE: u8 = 0x20;
/// The primary ATA channel's line.
pub const IRQ_ATA: u8 = 14;
/// COM1's line: the partition's (virtual) UART raises it when a typed byte arrives, which
/// wakes the shell from its nap.
pub const IRQ_COM1: u8 = 4;

static ATA_IRQS: AtomicU64 = AtomicU64::new(0);

/// Interrupts taken on IRQ 14 so far.
pub fn ata_irqs() -> u64 {
    ATA_IRQS.load(Ordering::SeqCst)
}

fn on_ata(_: &mut InterruptFrame) {
    // SAFETY: reading the ATA status register acknowledges the drive's interrupt (INTRQ
    // drops); the channel is this partition's.
    unsafe { guest_rt::instr::inb(0x1f7) };
    ATA_IRQS.fetch_add(1, Ordering::SeqCst);
    // Non-specific EOI to the slave (IRQ 14 is its IR6), then to the master (its IR2).
    // SAFETY: OCW2 to this partition's own (virtual) PICs.
    unsafe {
        outb(0xa0, 0x20);
        outb(0x20, 0x20);
    }
}

/// A typed byte: only wakes the shell, which reads the UART itself. Ends the interrupt at the
/// master.
fn on_com1(_: &mut InterruptFrame) {
    // SAFETY: OCW2 (non-specific EOI) to this partition's own (virtual) master PIC.
    unsafe { outb(0x20, 0x20) };
}

/// Programs both PICs (cascaded, IRQ 0-7 at 0x20, 8-15 at 0x28, edge-triggered, normal EOI)
/// and opens IRQ 4 (COM1), IRQ 14 and the cascade; every other line stays masked.
pub fn init() {
    register_handler(VECTOR_BASE + IRQ_ATA, on_ata);
    register_handler(VECTOR_BASE + IRQ_COM1, on_com1);
    // SAFETY: ICW1-ICW4 then OCW1 to this partition's PICs; interrupts are off meanwhile.
    unsafe {
        outb(0x20, 0x11); // ICW1: edge, cascade, ICW4 follows
        outb(0xa0, 0x11);
        outb(0x21, VECTOR_BASE); // ICW2: vector base
        outb(0xa1, VECTOR_BASE + 8);
        outb(0x21, 1 << 2); // ICW3: the slave hangs on IR2
        outb(0xa1, 2); // ICW3: the slave's identity
        outb(0x21, 0x01); // ICW4: 8086 mode
        outb(0xa1, 0x01);
        outb(0x21, !(1u8 << 2 | 1 << IRQ_COM1)); // OCW1: the cascade and COM1 on the master
        outb(0xa1, !(1u8 << (IRQ_ATA - 8))); // and IRQ 14 on the slave
    }
}
