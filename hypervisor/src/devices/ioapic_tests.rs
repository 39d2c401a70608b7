//! Tests of the I/O APIC model against the 82093AA datasheet.

use super::*;

fn reg_write(io: &mut IoApic, index: u8, v: u32) {
    io.write(IOREGSEL, 1, u64::from(index));
    io.write(IOWIN, 4, u64::from(v));
}

fn reg_read(io: &mut IoApic, index: u8) -> u32 {
    io.write(IOREGSEL, 4, u64::from(index));
    io.read(IOWIN, 4) as u32
}

/// Programs pin `pin`: low dword `low`, destination `dest`.
fn route(io: &mut IoApic, pin: u8, low: u32, dest: u8) {
    reg_write(io, 0x11 + 2 * pin, u32::from(dest) << 24);
    reg_write(io, 0x10 + 2 * pin, low);
}

#[test]
fn identification_registers() {
    let mut io = IoApic::new(2);
    assert_eq!(reg_read(&mut io, 0), 2 << 24);
    assert_eq!(reg_read(&mut io, 1), 0x0017_0011, "version 0x11, 24 entries");
    assert_eq!(reg_read(&mut io, 2), 2 << 24, "arbitration ID from the ID");
    reg_write(&mut io, 0, 0xffff_ffff);
    assert_eq!(reg_read(&mut io, 0), 0x0f00_0000, "only bits 27:24 are the ID");
    reg_write(&mut io, 1, 0);
    assert_eq!(reg_read(&mut io, 1), VERSION, "version is read-only");
    assert_eq!(reg_read(&mut io, 0x40), 0, "past the table: nothing");
    assert_eq!(io.read(IOREGSEL, 1), 0x40, "IOREGSEL reads back");
    assert_eq!(io.read(0x20, 4), 0);
}

#[test]
fn entries_reset_masked_and_keep_only_writable_bits() {
    let mut io = IoApic::new(0);
    for pin in 0..PINS as u8 {
        assert_eq!(reg_read(&mut io, 0x10 + 2 * pin), 1 << 16, "pin {pin} masked at reset");
    }
    // Delivery status (12) and remote IRR (14) are read-only; reserved 31:17 read 0.
    reg_write(&mut io, 0x10, 0xffff_ffff);
    assert_eq!(reg_read(&mut io, 0x10), 0x0001_afff);
    reg_write(&mut io, 0x11, 0xffff_ffff);
    assert_eq!(reg_read(&mut io, 0x11), 0xff00_0000, "only the destination in the high word");
    assert_eq!(io.entry(0), 0xff00_0000_0001_afff);
    assert_eq!(io.unmasked_pins(), 0, "pin 0 still masked");
    reg_write(&mut io, 0x14, 0x31);
    assert_eq!(io.unmasked_pins(), 1 << 2, "pin 2 unmasked");
    reg_write(&mut io, 0x14, 0x1_0031);
    assert_eq!(io.unmasked_pins(), 0, "masked again");
    // A partial IOWIN write is dropped.
    io.write(IOREGSEL, 1, 0x12);
    io.write(IOWIN, 2, 0x1234);
    assert_eq!(reg_read(&mut io, 0x12), 1 << 16);
}

#[test]
fn edge_pins_send_once_per_asserting_edge() {
    let mut io = IoApic::new(0);
    route(&mut io, 14, 0x50, 3); // fixed, physical, edge, active high, unmasked
    assert!(io.idle());
    io.set_irq(14, true);
    assert!(!io.idle());
    io.set_irq(14, true); // no new edge
    let m = io.take_messages();
    assert_eq!(
        m,
        [Message {
            vector: 0x50,
            mode: DeliveryMode::Fixed,
            level: false,
            logical: false,
            dest: 3,
            pin: 14
        }]
    );
    assert_eq!(io.take_finished(), 1 << 14, "an edge is finished once delivered");
    assert!(io.idle());
    io.set_irq(14, false);
    assert!(io.take_messages().is_empty(), "the falling edge sends nothing");
    io.set_irq(14, true);
    assert_eq!(io.take_messages().len(), 1);
    assert_eq!(reg_read(&mut io, 0x10 + 28) & (1 << 14), 0, "no remote IRR for edges");
}

#[test]
fn masked_edges_are_lost_and_polarity_inverts() {
    let mut io = IoApic::new(0);
    route(&mut io, 3, 0x30 | (1 << 16), 0);
    io.set_irq(3, true);
    assert!(io.level(3) && !io.level(4) && !io.level(40));
    route(&mut io, 3, 0x30, 0); // unmask while the pin stays high
    assert!(io.take_messages().is_empty(), "the edge came while masked");
    assert_eq!(io.take_finished(), 0);
    // Active low: the falling edge asserts.
    route(&mut io, 5, 0x35 | (1 << 13), 0);
    io.set_irq(5, true);
    assert!(io.take_messages().is_empty());
    io.set_irq(5, false);
    assert_eq!(io.take_messages()[0].vector, 0x35);
}

#[test]
fn level_pins_wait_for_the_eoi() {
    let mut io = IoApic::new(0);
    // Level, active high, logical destination 0x01, lowest priority.
    route(&mut io, 9, 0x49 | (1 << 15) | (1 << 11) | (1 << 8), 0x01);
    io.set_irq(9, true);
    let m = io.take_messages();
    assert_eq!(m.len(), 1);
    assert!(m[0].level && m[0].logical);
    assert_eq!(m[0].mode, DeliveryMode::LowestPriority);
    assert_eq!(reg_read(&mut io, 0x10 + 18) & (1 << 14), 1 << 14, "remote IRR set");
    assert!(io.awaits_eoi(9, 0x49) && !io.awaits_eoi(9, 0x48) && !io.awaits_eoi(8, 0x49));
    assert!(!io.awaits_eoi(99, 0x49));
    io.set_irq(9, true);
    assert!(io.take_messages().is_empty(), "nothing while remote IRR is set");
    io.eoi(0x48);
    assert!(io.take_messages().is_empty(), "another vector's EOI changes nothing");
    assert_eq!(io.take_finished(), 0);
    // EOI with the pin still asserted: remote IRR cleared, and the interrupt comes again.
    io.eoi(0x49);
    assert_eq!(io.take_finished(), 1 << 9);
    assert_eq!(io.take_messages().len(), 1);
    io.set_irq(9, false);
    io.eoi(0x49);
    assert!(io.take_messages().is_empty(), "deasserted: no more");
    assert_eq!(reg_read(&mut io, 0x10 + 18) & (1 << 14), 0);
}

#[test]
fn unmasking_an_asserted_level_pin_sends_it() {
    let mut io = IoApic::new(0);
    route(&mut io, 11, 0x4b | (1 << 15) | (1 << 16), 0);
    io.set_irq(11, true);
    assert!(io.take_messages().is_empty(), "masked");
    route(&mut io, 11, 0x4b | (1 << 15), 0);
    assert_eq!(io.take_messages()[0].vector, 0x4b);
    // Switching the entry to edge clears its remote IRR.
    route(&mut io, 11, 0x4b, 0);
    assert_eq!(io.entry(11) & (1 << 14), 0);
}

#[test]
fn delivery_modes_and_bad_pins() {
    let mut io = IoApic::new(0);
    for (bits, mode) in [
        (0, DeliveryMode::Fixed),
        (2, DeliveryMode::Smi),
        (4, DeliveryMode::Nmi),
        (5, DeliveryMode::Init),
        (7, DeliveryMode::ExtInt),
        (3, DeliveryMode::Reserved),
    ] {
        route(&mut io, 1, 0x21 | (bits << 8), 0xff);
        io.set_irq(1, true);
        io.set_irq(1, false);
        let m = io.take_messages();
        assert_eq!((m[0].mode, m[0].dest), (mode, 0xff));
    }
    io.set_irq(24, true); // no such pin: ignored
    io.set_irq(200, true);
    assert!(io.take_messages().is_empty());
}

#[test]
fn non_fixed_modes_are_edge_triggered_whatever_the_trigger_bit_82093aa_3_2_4() {
    let mut io = IoApic::new(0);
    for mode in [2u32, 3, 4, 5, 6, 7] {
        // Level-triggered, active high, unmasked, in a mode with no EOI.
        route(&mut io, 5, (1 << 15) | (mode << 8) | 0x30, 0);
        io.set_irq(5, true);
        let m = io.take_messages();
        assert_eq!(m.len(), 1, "mode {mode}: one message for the edge");
        assert!(!m[0].level, "mode {mode}: sent as edge");
        assert_eq!(io.entry(5) & (1 << 14), 0, "mode {mode}: no remote IRR left set");
        assert!(!io.awaits_eoi(5, 0x30));
        io.set_irq(5, false);
        io.set_irq(5, true);
        assert_eq!(io.take_messages().len(), 1, "mode {mode}: the next edge sends again");
        io.set_irq(5, false);
    }
    // A fixed level entry waiting for its EOI that turns NMI loses its remote IRR.
    route(&mut io, 6, (1 << 15) | 0x31, 0);
    io.set_irq(6, true);
    assert_ne!(io.entry(6) & (1 << 14), 0);
    route(&mut io, 6, (1 << 15) | (4 << 8) | 0x31, 0);
    assert_eq!(io.entry(6) & (1 << 14), 0);
}

#[test]
fn ioregsel_past_the_table_reads_zero_and_writes_nothing_82093aa_3_1() {
    let mut io = IoApic::new(1);
    route(&mut io, 23, 0x1_0045, 0x12);
    let before: Vec<u64> = (0..PINS).map(|p| io.entry(p)).collect();
    for index in [0x03u8, 0x0f, 0x40, 0x41, 0x80, 0xff] {
        reg_write(&mut io, index, 0xffff_ffff);
        assert_eq!(reg_read(&mut io, index), 0, "register {index:#x}");
    }
    // IOREGSEL keeps its low byte only (bits 31:8 reserved).
    io.write(IOREGSEL, 4, 0x1234_5601);
    assert_eq!(io.read(IOREGSEL, 4), 0x01);
    let after: Vec<u64> = (0..PINS).map(|p| io.entry(p)).collect();
    assert_eq!(before, after, "no entry changed");
    assert_eq!(reg_read(&mut io, 0), 1 << 24, "nor the ID");
    // Odd sizes and offsets of the window: defined, and harmless.
    assert_eq!(io.read(IOWIN + 1, 1), 0);
    io.write(IOWIN + 4, 4, 0xffff_ffff);
    io.write(0xff8, 8, u64::MAX);
    assert_eq!(io.read(0x40, 8), 0);
    assert!(io.take_messages().is_empty());
}
