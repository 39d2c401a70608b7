//! An I/O APIC as a pure state machine (Intel 82093AA I/O Advanced Programmable Interrupt
//! Controller datasheet, 290566-001, §3 "Register Description"): the indirect register window
//! (IOREGSEL at +0x00, IOWIN at +0x10, §3.1), the ID (0x00), version (0x01) and arbitration
//! (0x02) registers, and 24 redirection entries (0x10-0x3F, §3.2.4) with vector, delivery
//! mode, destination mode, delivery status, polarity, remote IRR, trigger mode, mask and
//! destination.
//!
//! Inputs are the pins' electrical levels ([`IoApic::set_irq`]); an entry's polarity says
//! which level asserts it. An edge-triggered entry sends one message per asserting edge while
//! unmasked (an edge on a masked pin is lost, §3.2.4 "Interrupt Mask"). A level-triggered one
//! sends a message while its pin is asserted, unmasked and its remote IRR clear; the message
//! sets remote IRR, and the local APIC's EOI for its vector ([`IoApic::eoi`]) clears it, after
//! which a pin still asserted sends again. Messages queue in the model ([`IoApic::take_messages`]);
//! the hypervisor delivers them to the partition's local APICs. Delivery status reads idle: a
//! message is delivered before the guest runs again.
//!
//! For host lines forwarded to a partition, [`IoApic::take_finished`] tells which pins' last
//! interrupt the guest is done with (edge: it was delivered; level: its EOI came), so that the
//! hypervisor can let the host line interrupt again.

use crate::vmm::bus::Device;
use alloc::vec::Vec;

/// Where a PC's I/O APIC sits (its MADT entry gives the same address).
pub const BASE: u64 = 0xfec0_0000;
/// The register window's size on the MMIO bus.
pub const WINDOW: u64 = 0x1000;
/// Redirection entries (pins 0-23, as on the 82093AA and the PIIX/ICH I/O APICs).
pub const PINS: usize = 24;
/// The version register: version 0x11 (82093AA), the highest entry index in bits 23:16.
pub const VERSION: u32 = 0x11 | ((PINS as u32 - 1) << 16);

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARB: u8 = 0x02;
const REG_TABLE: u8 = 0x10;

/// Redirection entry bits (§3.2.4).
const VECTOR: u64 = 0xff;
const DEST_LOGICAL: u64 = 1 << 11;
const DELIVERY_STATUS: u64 = 1 << 12;
const POLARITY_LOW: u64 = 1 << 13;
const REMOTE_IRR: u64 = 1 << 14;
const TRIGGER_LEVEL: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
/// Bits software may write: all but delivery status and remote IRR, and the reserved 55:17.
const WRITABLE: u64 = 0xff00_0000_0000_0000 | 0x1_ffff & !(DELIVERY_STATUS | REMOTE_IRR);

/// Delivery mode of a redirection entry (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    ExtInt,
    /// 011 and 110.
    Reserved,
}

/// True when `entry` is level-triggered: its trigger mode bit, in a mode that has an EOI
/// (fixed, lowest priority). SMI, NMI, INIT and ExtINT are edge-triggered whatever the bit
/// says (82093AA §3.2.4: each of them "requires" or "must be programmed" edge), so a guest
/// that sets it cannot leave a pin waiting for an EOI that never comes.
fn is_level(entry: u64) -> bool {
    entry & TRIGGER_LEVEL != 0
        && matches!(DeliveryMode::of(entry), DeliveryMode::Fixed | DeliveryMode::LowestPriority)
}

impl DeliveryMode {
    fn of(entry: u64) -> Self {
        match (entry >> 8) & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            7 => Self::ExtInt,
            _ => Self::Reserved,
        }
    }
}

/// An interrupt message for the local APICs: what the I/O APIC produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub vector: u8,
    pub mode: DeliveryMode,
    /// Level-triggered: the receiving local APIC sets the vector's TMR bit and owes an EOI.
    pub level: bool,
    /// Destination mode: logical (a set of APICs by their logical IDs) or physical (an APIC ID).
    pub logical: bool,
    /// The destination field (bits 63:56): an APIC ID, 0xFF for all, or a logical set.
    pub dest: u8,
    /// The pin that sent it.
    pub pin: u8,
}

/// The I/O APIC.
#[derive(Clone, Debug)]
pub struct IoApic {
    /// The ID register's ID (bits 27:24).
    id: u8,
    select: u8,
    table: [u64; PINS],
    /// Electrical level of each pin.
    levels: u32,
    /// Messages waiting for the hypervisor.
    out: Vec<Message>,
    /// Pins whose interrupt the guest finished since the last [`IoApic::take_finished`].
    finished: u32,
    /// Pins whose entry is unmasked (bit n: pin n), kept with the table.
    unmasked: u32,
}

impl IoApic {
    /// At reset: every entry masked (§3.2.4), ID `id`.
    pub fn new(id: u8) -> Self {
        Self {
            id: id & 0xf,
            select: 0,
            table: [MASKED; PINS],
            levels: 0,
            out: Vec::new(),
            finished: 0,
            unmasked: 0,
        }
    }

    /// Pin `pin`'s electrical level (false past the last pin).
    #[inline]
    pub fn level(&self, pin: u8) -> bool {
        u32::from(pin) < 32 && self.levels & (1 << pin) != 0
    }

    /// The pins whose redirection entry is unmasked (bit n: pin n).
    #[inline]
    pub fn unmasked_pins(&self) -> u32 {
        self.unmasked
    }

    /// Redirection entry `pin` (for reports and tests).
    pub fn entry(&self, pin: usize) -> u64 {
        self.table[pin]
    }

    /// True when pin `pin`'s entry asserts at the pin's present level.
    fn asserted(&self, pin: usize) -> bool {
        let high = self.levels & (1 << pin) != 0;
        high != (self.table[pin] & POLARITY_LOW != 0)
    }

    /// Sets pin `pin`'s electrical level.
    pub fn set_irq(&mut self, pin: u8, high: bool) {
        let pin = usize::from(pin);
        if pin >= PINS {
            return;
        }
        let before = self.asserted(pin);
        if high {
            self.levels |= 1 << pin;
        } else {
            self.levels &= !(1 << pin);
        }
        let now = self.asserted(pin);
        let entry = self.table[pin];
        if is_level(entry) {
            self.service_level(pin);
        } else if now && !before && entry & MASKED == 0 {
            self.send(pin);
        }
    }

    /// A level-triggered pin: a message when asserted, unmasked and not awaiting an EOI.
    fn service_level(&mut self, pin: usize) {
        let entry = self.table[pin];
        if is_level(entry) && entry & (MASKED | REMOTE_IRR) == 0 && self.asserted(pin) {
            self.send(pin);
        }
    }

    fn send(&mut self, pin: usize) {
        let entry = self.table[pin];
        let level = is_level(entry);
        if level {
            self.table[pin] |= REMOTE_IRR;
        } else {
            // An edge is done with once delivered: the next one is a new interrupt.
            self.finished |= 1 << pin;
        }
        self.out.push(Message {
            vector: (entry & VECTOR) as u8,
            mode: DeliveryMode::of(entry),
            level,
            logical: entry & DEST_LOGICAL != 0,
            dest: (entry >> 56) as u8,
            pin: pin as u8,
        });
    }

    /// The local APIC's EOI for a level-triggered `vector` (its broadcast, SDM Vol. 3A
    /// §11.8.5): clears remote IRR of every level entry with that vector; a pin still asserted
    /// sends again.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..PINS {
            let entry = self.table[pin];
            if entry & TRIGGER_LEVEL != 0
                && entry & REMOTE_IRR != 0
                && (entry & VECTOR) as u8 == vector
            {
                self.table[pin] &= !REMOTE_IRR;
                self.finished |= 1 << pin;
                self.service_level(pin);
            }
        }
    }

    /// True when pin `pin` is a level entry of `vector` waiting for its EOI (remote IRR set).
    pub fn awaits_eoi(&self, pin: u8, vector: u8) -> bool {
        let Some(&entry) = self.table.get(usize::from(pin)) else { return false };
        entry & (TRIGGER_LEVEL | REMOTE_IRR) == TRIGGER_LEVEL | REMOTE_IRR
            && (entry & VECTOR) as u8 == vector
    }

    /// True when there is nothing for the hypervisor: no message waiting, no pin finished (a
    /// cheap test for the scheduler's loop).
    pub fn idle(&self) -> bool {
        self.out.is_empty() && self.finished == 0
    }

    /// The messages sent since the last call, oldest first.
    pub fn take_messages(&mut self) -> Vec<Message> {
        core::mem::take(&mut self.out)
    }

    /// Pins whose interrupt the guest is done with since the last call (bit n: pin n).
    pub fn take_finished(&mut self) -> u32 {
        core::mem::take(&mut self.finished)
    }

    fn read_reg(&self) -> u32 {
        match self.select {
            REG_ID => u32::from(self.id) << 24,
            REG_VERSION => VERSION,
            // The arbitration ID is loaded from the ID register (§3.2.3).
            REG_ARB => u32::from(self.id) << 24,
            r if (REG_TABLE..REG_TABLE + 2 * PINS as u8).contains(&r) => {
                let entry = self.table[usize::from((r - REG_TABLE) / 2)];
                if r % 2 == 0 { entry as u32 } else { (entry >> 32) as u32 }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, v: u32) {
        match self.select {
            REG_ID => self.id = ((v >> 24) & 0xf) as u8,
            r if (REG_TABLE..REG_TABLE + 2 * PINS as u8).contains(&r) => {
                let pin = usize::from((r - REG_TABLE) / 2);
                let old = self.table[pin];
                let new = if r % 2 == 0 {
                    (old & !0xffff_ffff) | u64::from(v)
                } else {
                    (old & 0xffff_ffff) | (u64::from(v) << 32)
                };
                let mut entry = (old & !WRITABLE) | (new & WRITABLE);
                if !is_level(entry) {
                    entry &= !REMOTE_IRR; // remote IRR is undefined for edge entries: keep it 0
                }
                self.table[pin] = entry;
                if entry & MASKED == 0 {
                    self.unmasked |= 1 << pin;
                } else {
                    self.unmasked &= !(1 << pin);
                }
                // Unmasking (or turning level) an asserted level pin sends it now.
                self.service_level(pin);
            }
            _ => {} // version, arbitration and unimplemented registers are read-only
        }
    }
}

impl Device for IoApic {
    fn name(&self) -> &'static str {
        "ioapic"
    }

    /// IOREGSEL (byte 0 of the first word; wider reads give the rest as 0) and IOWIN (a
    /// 32-bit register); everything else in the page reads 0.
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let v = match offset {
            IOREGSEL => u64::from(self.select),
            IOWIN => u64::from(self.read_reg()),
            _ => 0,
        };
        if size >= 8 { v } else { v & ((1u64 << (8 * size)) - 1) }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        match offset {
            IOREGSEL => self.select = value as u8,
            IOWIN if size >= 4 => self.write_reg(value as u32),
            _ => {} // partial IOWIN writes and the rest of the page: dropped
        }
    }
}

#[cfg(test)]
#[path = "ioapic_tests.rs"]
mod tests;
