//! The management partition's virtual I/O APIC (`devices::ioapic`): attached at 0xFEC0_0000
//! on its MMIO bus (the host's own I/O APIC stays with the hypervisor, which keeps its 8259s),
//! fed the host IRQ lines the partition owns, and delivering what it routes to the vCPUs.
//!
//! ISA IRQ n is I/O APIC pin n, as on a PC, except IRQ 0 on pin 2 (the MADT's interrupt source
//! override; IRQ 0 stays with the hypervisor anyway). Each forwarded host line reaches both the
//! virtual 8259 pair and this I/O APIC, as a PC wires them; the guest masks the one it does not
//! use. The hypervisor re-enables a host line once either controller is done with its
//! interrupt (the 8259's EOI; [`poll`]: the I/O APIC's delivery of an edge or the EOI of a
//! level interrupt).
//!
//! Delivery ([`deliver`]) is the one place a message becomes an interrupt for a vCPU: a fixed
//! or lowest-priority message is accepted by the local APIC(s) its destination names
//! (physical: an APIC ID or 0xFF; logical: the APICs' logical IDs; lowest priority: one of
//! them, [`lowest_priority`]), on any of the partition's vCPUs, with its trigger mode
//! (level: the vector's TMR bit, SDM Vol. 3A §11.8.4); an NMI is kept for the target's next
//! entry. The local APIC's EOI of a level vector comes back through [`eoi`] (`vmm::vlapic`
//! calls [`level_eoi`] before each EOI write). SMI, INIT and ExtINT entries are not delivered
//! (a warning says so): nothing a PC routes through its I/O APIC needs them.

use super::bus::{Bus, Device};
use super::partition::Partition;
use crate::devices::ioapic::{self, DeliveryMode, IoApic, Message};
use crate::devices::lapic::{self, Destination};
use crate::devices::shared::{Shared, shared};
use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::Cell;

/// A partition's I/O APIC and whether the scheduler must look at it ([`poll`]).
pub struct VioApic {
    pub dev: Shared<IoApic>,
    /// Set by a guest write to its registers and by [`set_line`] and [`eoi`]: something may
    /// have been sent or finished.
    dirty: Rc<Cell<bool>>,
}

/// The bus side: the guest's accesses, each write marking the I/O APIC for [`poll`].
struct Window {
    dev: Shared<IoApic>,
    dirty: Rc<Cell<bool>>,
}

impl Device for Window {
    fn name(&self) -> &'static str {
        "ioapic"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.dev.borrow_mut().read(offset, size)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.dev.borrow_mut().write(offset, size, value);
        self.dirty.set(true);
    }
}

/// Attaches a fresh I/O APIC (every entry masked) with ID `id` to `mmio` and returns what the
/// partition keeps. The ID should be the one the partition's MADT gives its I/O APIC (ACPI 6.5
/// §5.2.12.3).
pub fn attach(mmio: &mut Bus, id: u8) -> VioApic {
    let dev = shared(IoApic::new(id));
    let dirty = Rc::new(Cell::new(false));
    let window = Window { dev: dev.clone(), dirty: dirty.clone() };
    mmio.attach(ioapic::BASE..ioapic::BASE + ioapic::WINDOW, Box::new(window));
    VioApic { dev, dirty }
}

/// The I/O APIC pin of ISA IRQ `irq`.
pub fn pin_of(irq: u8) -> u8 {
    if irq == 0 { 2 } else { irq }
}

/// The ISA lines (bit n: IRQ n) whose I/O APIC pin is unmasked (the redirection entry's mask
/// bit 16 clear, 82093AA datasheet §3.2.4): their interrupts reach a vCPU.
#[inline]
pub fn unmasked_lines(v: &VioApic) -> u16 {
    isa_lines(v.dev.borrow().unmasked_pins() & 0xffff)
}

/// The MADT interrupt source override (ACPI 6.5 §5.2.12.5, type 2) for the ACPI SCI on ISA
/// IRQ `sci` (the FADT's SCI_INT): identity-mapped to its GSI, level-triggered, active high.
/// Without one the OS takes the SCI as level, active low (§5.2.12.5), but the partition's
/// forwarded host lines drive their pins active high (high while the host line asks).
pub fn sci_override(sci: u8) -> [u8; 10] {
    let mut e = [0u8; 10];
    e[..4].copy_from_slice(&[2, 10, 0, sci]);
    e[4..8].copy_from_slice(&u32::from(pin_of(sci)).to_le_bytes());
    // MPS INTI flags: polarity 01 (active high), trigger mode 11 (level).
    e[8..10].copy_from_slice(&0x000du16.to_le_bytes());
    e
}

/// ISA IRQ `irq`'s line changed: its pin follows, and what it sends is delivered.
pub fn set_line(p: &mut Partition, irq: u8, high: bool) {
    let Some(v) = &p.ioapic else { return };
    {
        let mut io = v.dev.borrow_mut();
        // A level that does not change is no edge and asserts nothing new (a level pin still
        // asserted sends again at its EOI, `eoi`): nothing to do, as on most UART syncs.
        if io.level(pin_of(irq)) == high {
            return;
        }
        io.set_irq(pin_of(irq), high);
    }
    v.dirty.set(true);
    deliver_pending(p);
}

/// Once per pass of the scheduler: delivers what the I/O APIC sent since the last call (a
/// guest's register write can send: an unmasked level pin) and returns the ISA lines (bit n:
/// IRQ n) whose interrupt it is done with. A flag test when nothing happened.
#[inline]
pub fn poll(p: &mut Partition) -> u16 {
    match &p.ioapic {
        Some(v) if v.dirty.replace(false) => poll_dirty(p),
        _ => 0,
    }
}

/// [`poll`] once the I/O APIC has sent or finished something.
#[inline(never)]
fn poll_dirty(p: &mut Partition) -> u16 {
    let Some(v) = &p.ioapic else { return 0 };
    let pins = v.dev.borrow_mut().take_finished();
    deliver_pending(p);
    isa_lines(pins)
}

/// The ISA lines (bit n: IRQ n) of a set of pins (bit n: pin n): pin n is IRQ n, and pin 2 is
/// also IRQ 0.
fn isa_lines(pins: u32) -> u16 {
    let lines = pins as u16;
    if pins & (1 << pin_of(0)) != 0 { lines | 1 } else { lines }
}

/// Delivers every message the I/O APIC has sent.
fn deliver_pending(p: &mut Partition) {
    let Some(v) = &p.ioapic else { return };
    let messages = v.dev.borrow_mut().take_messages();
    for m in messages {
        deliver(p, m);
    }
}

/// A local APIC's EOI of level-triggered `vector` (the EOI broadcast, SDM Vol. 3A §11.8.5):
/// the I/O APIC clears remote IRR, and a pin still asserted sends again. A forwarded host
/// line's pin is lowered first: its virtual level only stands for "the host line fired and the
/// guest has not finished"; once the guest has, the host line is re-enabled ([`poll`]) and a
/// device still asking interrupts the host again.
pub fn eoi(p: &mut Partition, vector: u8) {
    let Some(v) = &p.ioapic else { return };
    {
        let mut io = v.dev.borrow_mut();
        for irq in (0..16u8).filter(|i| p.irq_lines & (1 << i) != 0) {
            if io.awaits_eoi(pin_of(irq), vector) {
                io.set_irq(pin_of(irq), false);
            }
        }
        io.eoi(vector);
    }
    v.dirty.set(true);
    deliver_pending(p);
}

/// The MADT entries (ACPI 6.5 §5.2.12) that describe this I/O APIC, for the management
/// partition's MADT: an I/O APIC structure (type 1, §5.2.12.3: ID `id`, address
/// [`ioapic::BASE`], GSI base 0) and the interrupt source override every PC's MADT has (type 2,
/// §5.2.12.5: ISA IRQ 0 on GSI 2, conforming polarity and trigger). Appended after the local
/// APIC entries; the MADT's length and checksum are the caller's.
pub fn madt_entries(id: u8) -> [u8; 22] {
    let mut e = [0u8; 22];
    e[..4].copy_from_slice(&[1, 12, id, 0]);
    e[4..8].copy_from_slice(&(ioapic::BASE as u32).to_le_bytes());
    // GSI base 0: bytes 8..12 stay 0.
    e[12..16].copy_from_slice(&[2, 10, 0, 0]); // bus 0 (ISA), source IRQ 0
    e[16..20].copy_from_slice(&u32::from(pin_of(0)).to_le_bytes());
    // MPS INTI flags 0: conforming to the bus (ISA: edge, active high).
    e
}

/// Makes message `m` an interrupt of the partition's vCPUs (see the module documentation).
pub fn deliver(p: &mut Partition, m: Message) {
    let dest = if m.logical {
        Destination::Logical(u32::from(m.dest))
    } else {
        Destination::Physical(u32::from(m.dest))
    };
    let mode = match m.mode {
        DeliveryMode::Fixed => lapic::DeliveryMode::Fixed,
        DeliveryMode::LowestPriority => lapic::DeliveryMode::LowestPriority,
        DeliveryMode::Nmi => lapic::DeliveryMode::Nmi,
        _ => {
            // Rate-limited: the guest chooses the mode and can rewrite the entry in a loop.
            if let Some(note) = p.vcpus.first_mut().and_then(|s| s.lapic.log_admit()) {
                log::warn!(
                    "partition {}: I/O APIC pin {} sent {:?} vector {:#x}: not delivered{note}",
                    p.name,
                    m.pin,
                    m.mode,
                    m.vector
                );
            }
            return;
        }
    };
    let targets = targets(p, dest);
    let chosen = match mode {
        lapic::DeliveryMode::LowestPriority => {
            let apics = p.vcpus.iter_mut().enumerate().filter(|(v, _)| targets & (1 << v) != 0);
            lowest_priority(apics.map(|(v, s)| (v, &mut s.lapic.apic)), m.vector)
                .map_or(0, |v| 1 << v)
        }
        _ => targets,
    };
    for (v, slot) in p.vcpus.iter_mut().enumerate() {
        if chosen & (1 << v) == 0 {
            continue;
        }
        let apic = &mut slot.lapic;
        if mode == lapic::DeliveryMode::Nmi {
            let ipi = lapic::Ipi { mode, vector: m.vector, deassert: false, dest };
            apic.deliver_ipi(&ipi);
            // An NMI ends HLT with interrupts off too (SDM Vol. 2A HLT).
            if slot.run == super::partition::RunState::Stopped {
                slot.run = super::partition::RunState::Runnable;
            }
        } else {
            apic.apic.accept(m.vector, m.level);
        }
    }
}

/// The vCPUs (bit v: vCPU v) whose local APIC accepts a message to `dest`: globally enabled,
/// named by the destination (physical: its APIC ID or the broadcast ID; logical: its logical
/// ID, flat or cluster, SDM Vol. 3A §11.6.2), and not waiting for a start-up IPI (a CPU in
/// that state takes no interrupts, §9.4.2).
fn targets(p: &Partition, dest: Destination) -> u32 {
    let mut set = 0;
    for (v, slot) in p.vcpus.iter().enumerate() {
        let apic = &slot.lapic;
        if apic.enabled()
            && apic.is_target(dest, false)
            && slot.run != super::partition::RunState::WaitForSipi
        {
            set |= 1 << v;
        }
    }
    set
}

/// Lowest-priority delivery (SDM Vol. 3A §11.6.2.4): one of the `targets` takes the
/// message. A focus processor (one with `vector` already requested or in service) keeps it;
/// otherwise the one whose task priority is lowest, the lowest-numbered on a tie (the
/// arbitration the SDM leaves to the chipset).
fn lowest_priority<'a>(
    targets: impl Iterator<Item = (usize, &'a mut lapic::Lapic)>,
    vector: u8,
) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    let (word, bit) = (u32::from(vector / 32) * 16, 1u32 << (vector % 32));
    for (v, apic) in targets {
        if (apic.read(lapic::reg::IRR + word) | apic.read(lapic::reg::ISR + word)) & bit != 0 {
            return Some(v);
        }
        let tpr = apic.tpr() >> 4;
        if best.is_none_or(|(_, b)| tpr < b) {
            best = Some((v, tpr));
        }
    }
    best.map(|(v, _)| v)
}

/// Before vCPU `vc` writes its local APIC's EOI register (xAPIC offset 0xB0, x2APIC MSR
/// 0x80B): the vector that EOI ends when that vector is level-triggered (its TMR bit set), for
/// [`eoi`] after the write. `None` for any other write, an edge vector, or a partition without
/// an I/O APIC.
pub fn level_eoi(p: &mut Partition, vc: usize, apic_offset: u32) -> Option<u8> {
    if p.ioapic.is_none() || apic_offset != lapic::reg::EOI {
        return None;
    }
    let apic = &mut p.vcpus.get_mut(vc)?.lapic.apic;
    let top = (0..8u32).rev().find_map(|i| {
        let w = apic.read(lapic::reg::ISR + i * 16);
        (w != 0).then(|| (i * 32 + 31 - w.leading_zeros()) as u8)
    })?;
    let tmr = apic.read(lapic::reg::TMR + u32::from(top / 32) * 16);
    (tmr & (1 << (top % 32)) != 0).then_some(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madt_entries_describe_the_ioapic_and_the_timer_override() {
        let e = madt_entries(1);
        // I/O APIC: type 1, length 12, ID 1, reserved, address, GSI base 0.
        assert_eq!(e[..12], [1, 12, 1, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0]);
        // Override: type 2, length 10, ISA, IRQ 0, GSI 2, flags 0.
        assert_eq!(e[12..], [2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
    }

    fn apics(n: u32) -> alloc::vec::Vec<crate::vmm::vlapic::Vlapic> {
        let clock = Rc::new(crate::devices::clock::ManualClock::new(1_000_000));
        (0..n).map(|k| crate::vmm::vlapic::Vlapic::new(clock.clone(), k, k == 0)).collect()
    }

    fn pick(a: &mut [crate::vmm::vlapic::Vlapic], targets: u32, vector: u8) -> Option<usize> {
        let it = a.iter_mut().enumerate().filter(|(v, _)| targets & (1 << v) != 0);
        lowest_priority(it.map(|(v, x)| (v, &mut x.apic)), vector)
    }

    #[test]
    fn lowest_priority_goes_to_the_lowest_task_priority_or_the_focus() {
        let mut a = apics(3);
        assert_eq!(pick(&mut a, 0b111, 0x41), Some(0), "a tie: the lowest-numbered");
        assert_eq!(pick(&mut a, 0b110, 0x41), Some(1), "only the targets compete");
        a[0].apic.set_tpr(0x20);
        a[1].apic.set_tpr(0x30);
        assert_eq!(pick(&mut a, 0b111, 0x41), Some(2), "TPR 0 is the lowest");
        a[2].apic.set_tpr(0x40);
        assert_eq!(pick(&mut a, 0b111, 0x41), Some(0));
        // A focus processor (the vector already requested there) keeps it.
        a[1].apic.accept(0x41, false);
        assert_eq!(pick(&mut a, 0b111, 0x41), Some(1));
        assert_eq!(pick(&mut a, 0b101, 0x41), Some(0));
        assert_eq!(pick(&mut a, 0, 0x41), None, "no target, no receiver");
    }

    #[test]
    fn the_sci_override_is_level_active_high() {
        assert_eq!(sci_override(9), [2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0]);
    }

    #[test]
    fn isa_irqs_map_to_pins_as_on_a_pc() {
        assert_eq!(pin_of(0), 2);
        assert_eq!(pin_of(14), 14);
        assert_eq!(pin_of(1), 1);
        // Pin 2 is IRQ 0 (and pin 2 also stands for IRQ 2, the cascade, which no line uses).
        assert_eq!(isa_lines(1 << 14), 1 << 14);
        assert_eq!(isa_lines(1 << 2), (1 << 0) | (1 << 2));
        assert_eq!(isa_lines(1 << 20), 0, "pins 16-23 have no ISA line");
        assert_eq!(isa_lines((1 << 9) | (1 << 15)), (1 << 9) | (1 << 15));
    }
}
