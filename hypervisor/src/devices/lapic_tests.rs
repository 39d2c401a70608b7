use super::*;
use crate::devices::clock::ManualClock;

fn apic() -> (Rc<ManualClock>, Lapic) {
    let clock = Rc::new(ManualClock::new(1_000_000_000));
    let mut a = Lapic::new(clock.clone(), 0);
    a.write(reg::SVR, SVR_ENABLE | 0xff);
    (clock, a)
}

#[test]
fn reset_state_and_software_disable() {
    let clock = Rc::new(ManualClock::new(1_000_000_000));
    let mut a = Lapic::new(clock, 3);
    assert_eq!(a.read(reg::ID), 3 << 24);
    assert_eq!(a.read(reg::VERSION) & 0xff, 0x14);
    assert_eq!(a.read(reg::SVR), 0xff, "software-disabled at reset");
    assert_eq!(a.read(reg::DFR), u32::MAX, "flat model");
    for r in [reg::LVT_TIMER, reg::LVT_LINT0, reg::LVT_LINT1, reg::LVT_ERROR] {
        assert_ne!(a.read(r) & LVT_MASK, 0, "{r:#x} masked at reset");
    }
    // While disabled, an LVT write cannot clear the mask (§11.4.7.2).
    a.write(reg::LVT_TIMER, 0x40);
    assert_eq!(a.read(reg::LVT_TIMER), LVT_MASK | 0x40);
    a.write(reg::SVR, SVR_ENABLE | 0xff);
    a.write(reg::LVT_TIMER, 0x40);
    assert_eq!(a.read(reg::LVT_TIMER), 0x40);
    // Disabling again masks every entry.
    a.write(reg::SVR, 0xff);
    assert_ne!(a.read(reg::LVT_TIMER) & LVT_MASK, 0);
}

#[test]
fn priority_irr_isr_and_eoi() {
    let (_, mut a) = apic();
    a.accept(0x31, false);
    a.accept(0x52, false);
    assert_eq!(a.pending(), Some(0x52), "highest first");
    assert_eq!(a.acknowledge(), Some(0x52));
    assert_eq!(a.read(reg::PPR), 0x50, "in service sets the processor priority");
    assert_eq!(a.pending(), None, "0x31 is below the class in service");
    a.accept(0x61, false);
    assert_eq!(a.pending(), Some(0x61), "a higher class nests");
    assert_eq!(a.acknowledge(), Some(0x61));
    a.write(reg::EOI, 0);
    assert_eq!(a.read(reg::ISR + 0x30) & (1 << 1), 0, "EOI ends the highest (0x61)");
    assert_ne!(a.read(reg::ISR + 0x20) & (1 << 0x12), 0, "0x52 still in service");
    a.write(reg::EOI, 0);
    assert_eq!(a.pending(), Some(0x31));
    // TPR blocks classes at or below it.
    a.write(reg::TPR, 0x30);
    assert_eq!(a.pending(), None);
    a.write(reg::TPR, 0x20);
    assert_eq!(a.pending(), Some(0x31));
    // Level-triggered interrupts set TMR.
    a.accept(0x40, true);
    assert_ne!(a.read(reg::TMR + 0x20) & 1, 0);
}

#[test]
fn illegal_vectors_and_registers_are_errors_latched_by_an_esr_write() {
    let (_, mut a) = apic();
    a.write(reg::LVT_ERROR, 0xfe);
    a.accept(7, false);
    assert_eq!(a.read(reg::ESR), 0, "not latched before a write");
    a.write(reg::ESR, 0);
    assert_eq!(a.read(reg::ESR), ESR_RECEIVE_ILLEGAL_VECTOR);
    assert_eq!(a.pending(), Some(0xfe), "the error LVT's vector");
    assert_eq!(a.write(reg::ICR_LOW, 0x0000_0005), None, "fixed IPI with vector 5");
    a.read(0x3a0);
    a.write(reg::ESR, 0);
    assert_eq!(a.read(reg::ESR), ESR_SEND_ILLEGAL_VECTOR | ESR_ILLEGAL_REGISTER);
    a.write(reg::ESR, 0);
    assert_eq!(a.read(reg::ESR), 0, "cleared by the next write");
}

#[test]
fn one_shot_timer_counts_down_with_the_divisor_and_fires_once() {
    let (clock, mut a) = apic();
    a.write(reg::LVT_TIMER, 0x40);
    a.write(reg::TIMER_DIVIDE, 0b0001); // divide by 4
    a.write(reg::TIMER_INITIAL, 1000);
    assert_eq!(a.next_deadline(), Some(4000));
    clock.set(400);
    assert_eq!(a.read(reg::TIMER_CURRENT), 900);
    a.tick(3999);
    assert_eq!(a.pending(), None);
    clock.set(4000);
    a.tick(4000);
    assert_eq!(a.pending(), Some(0x40));
    assert_eq!(a.read(reg::TIMER_CURRENT), 0);
    assert_eq!(a.next_deadline(), None, "one-shot: done");
    // Divide by 1 is 0b1011.
    a.write(reg::TIMER_DIVIDE, 0b1011);
    a.write(reg::TIMER_INITIAL, 10);
    assert_eq!(a.next_deadline(), Some(4010));
    // Writing 0 stops it.
    a.write(reg::TIMER_INITIAL, 0);
    assert_eq!(a.next_deadline(), None);
}

#[test]
fn periodic_timer_reloads_and_coalesces_missed_periods() {
    let (clock, mut a) = apic();
    a.write(reg::LVT_TIMER, (TIMER_PERIODIC << TIMER_MODE_SHIFT) | 0x50);
    a.write(reg::TIMER_DIVIDE, 0b1011);
    a.write(reg::TIMER_INITIAL, 1_000_000);
    clock.set(2_500_000);
    assert_eq!(a.read(reg::TIMER_CURRENT), 500_000);
    a.tick(2_500_000);
    assert_eq!(a.acknowledge(), Some(0x50));
    assert_eq!(a.pending(), None, "two periods passed, one interrupt");
    assert_eq!(a.next_deadline(), Some(3_000_000));
    a.write(reg::EOI, 0);
    // Masked: it keeps counting and raises nothing.
    a.write(reg::LVT_TIMER, (TIMER_PERIODIC << TIMER_MODE_SHIFT) | LVT_MASK | 0x50);
    a.tick(3_000_000);
    assert_eq!(a.pending(), None);
    assert_eq!(a.next_deadline(), Some(4_000_000));
}

#[test]
fn tsc_deadline_mode_arms_through_the_msr() {
    let (_, mut a) = apic();
    a.set_tsc_deadline(500);
    assert_eq!(a.next_deadline(), None, "ignored outside TSC-deadline mode");
    a.write(reg::LVT_TIMER, (TIMER_TSC_DEADLINE << TIMER_MODE_SHIFT) | 0x60);
    a.write(reg::TIMER_INITIAL, 100);
    assert_eq!(a.next_deadline(), None, "the initial count is ignored in this mode");
    a.set_tsc_deadline(500);
    assert_eq!(a.tsc_deadline(), 500);
    a.tick(499);
    assert_eq!(a.pending(), None);
    a.tick(500);
    assert_eq!(a.pending(), Some(0x60));
    assert_eq!(a.tsc_deadline(), 0, "reads 0 once it fired");
    // A mode change disarms.
    a.set_tsc_deadline(900);
    a.write(reg::LVT_TIMER, 0x60);
    assert_eq!(a.next_deadline(), None);
}

#[test]
fn icr_writes_become_ipis() {
    let (_, mut a) = apic();
    a.write(reg::ICR_HIGH, 2 << 24);
    // Fixed, physical destination 2.
    let ipi = a.write(reg::ICR_LOW, 0x0000_4041).unwrap();
    assert_eq!(
        ipi,
        Ipi {
            mode: DeliveryMode::Fixed,
            vector: 0x41,
            deassert: false,
            dest: Destination::Physical(2)
        }
    );
    assert_eq!(a.read(reg::ICR_LOW) & (1 << 12), 0, "delivery status idle");
    // INIT assert then de-assert (level-triggered, level 0), all excluding self.
    let init = a.write(reg::ICR_LOW, 0x000c_c500).unwrap();
    assert_eq!(
        (init.mode, init.deassert, init.dest),
        (DeliveryMode::Init, false, Destination::AllExcludingSelf)
    );
    let deassert = a.write(reg::ICR_LOW, 0x000c_8500).unwrap();
    assert!(deassert.deassert);
    // SIPI with its start page, logical destination.
    let sipi = a.write(reg::ICR_LOW, 0x0000_0e9a).unwrap();
    assert_eq!(
        (sipi.mode, sipi.vector, sipi.dest),
        (DeliveryMode::StartUp, 0x9a, Destination::Logical(2))
    );
    // Self.
    assert_eq!(a.write(reg::ICR_LOW, 0x0004_0030).unwrap().dest, Destination::SelfOnly);
}

#[test]
fn logical_and_physical_destinations() {
    let (_, mut a) = apic();
    a.write(reg::LDR, 0x0400_0000);
    assert!(a.matches_logical(0x04) && a.matches_logical(0x0c) && !a.matches_logical(0x03));
    // Cluster model: cluster 1, member bit 2.
    a.write(reg::DFR, 0x0fff_ffff);
    a.write(reg::LDR, 0x1400_0000);
    assert!(a.matches_logical(0x14) && !a.matches_logical(0x24) && !a.matches_logical(0x11));
    assert!(a.matches_physical(0) && a.matches_physical(0xff) && !a.matches_physical(1));
}

#[test]
fn x2apic_msrs_map_onto_the_registers_and_refuse_what_hardware_refuses() {
    let (_, mut a) = apic();
    assert_eq!(a.read_msr(0x802), None, "xAPIC mode: #GP");
    a.set_x2apic(true);
    assert_eq!(a.read_msr(0x802), Some(0), "the full 32-bit ID");
    assert_eq!(a.read_msr(0x80d), Some(1), "LDR derived from the ID");
    assert_eq!(a.read_msr(0x80b), None, "EOI is write-only");
    assert_eq!(a.write_msr(0x80b, 1), Err(GeneralProtection), "EOI takes 0 only");
    assert_eq!(a.write_msr(0x802, 5), Err(GeneralProtection), "ID is read-only");
    a.write_msr(0x808, 0x20).unwrap();
    assert_eq!(a.read_msr(0x808), Some(0x20), "TPR");
    // Self IPI.
    a.write_msr(0x83f, 0x77).unwrap();
    assert_eq!(a.pending(), Some(0x77));
    // The 64-bit ICR: destination in the high half.
    let ipi = a.write_msr(0x830, (7 << 32) | 0x41).unwrap().unwrap();
    assert_eq!(ipi.dest, Destination::Physical(7));
    assert_eq!(a.read_msr(0x830), Some((7 << 32) | 0x41));
}
