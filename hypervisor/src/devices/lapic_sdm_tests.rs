//! The local APIC against the SDM rules a hostile guest probes (Vol. 3A ch. 11): each test is
//! named after its rule and cites its section.

use super::*;
use crate::devices::clock::ManualClock;

fn apic(id: u32) -> (Rc<ManualClock>, Lapic) {
    let clock = Rc::new(ManualClock::new(1_000_000_000));
    let mut a = Lapic::new(clock.clone(), id);
    a.write(reg::SVR, SVR_ENABLE | 0xff);
    (clock, a)
}

fn x2apic(id: u32) -> Lapic {
    let (_, mut a) = apic(id);
    a.set_x2apic(true);
    a
}

/// The errors latched by an ESR write (§11.5.3: write, then read).
fn esr(a: &mut Lapic) -> u32 {
    a.write(reg::ESR, 0);
    a.read(reg::ESR)
}

#[test]
fn x2apic_msrs_gp_in_xapic_mode_and_when_disabled_11_12_1_2() {
    let (_, mut a) = apic(0);
    for msr in [0x802, 0x803, 0x808, 0x80f, 0x830, 0x83e] {
        assert_eq!(a.read_msr(msr), None, "RDMSR {msr:#x} in xAPIC mode");
    }
    for (msr, v) in [(0x808, 0), (0x80b, 0), (0x830, 0x40), (0x83f, 0x40)] {
        assert_eq!(a.write_msr(msr, v), Err(GeneralProtection), "WRMSR {msr:#x} in xAPIC mode");
    }
    assert_eq!(a.pending(), None, "nothing was sent");
    a.set_x2apic(true);
    a.power_up();
    assert_eq!(a.read_msr(0x802), None, "power-up leaves x2APIC mode");
}

#[test]
fn x2apic_absent_registers_gp_on_read_and_write_11_12_1_2() {
    let mut a = x2apic(0);
    // Holes, APR, RRD, DFR, the ICR's high half, the ESR neighbours, past SELF IPI.
    for msr in [0x800, 0x801, 0x804, 0x807, 0x809, 0x80c, 0x80e, 0x829, 0x82e, 0x831, 0x83a, 0x83d]
        .into_iter()
        .chain([0x840, 0x8ff, 0x7ff, 0x900])
    {
        assert_eq!(a.read_msr(msr), None, "RDMSR {msr:#x}");
        assert_eq!(a.write_msr(msr, 0), Err(GeneralProtection), "WRMSR {msr:#x}");
    }
    assert_eq!(esr(&mut a), 0, "#GP, not an ESR error, in x2APIC mode");
}

#[test]
fn x2apic_read_only_and_write_only_registers_gp_11_12_1_2() {
    let mut a = x2apic(3);
    // Read-only: ID, version, PPR, LDR, ISR, TMR, IRR, current count.
    for msr in [0x802, 0x803, 0x80a, 0x80d, 0x810, 0x817, 0x818, 0x820, 0x827, 0x839] {
        assert!(a.read_msr(msr).is_some(), "RDMSR {msr:#x}");
        assert_eq!(a.write_msr(msr, 0), Err(GeneralProtection), "WRMSR {msr:#x}");
    }
    // Write-only: EOI, SELF IPI.
    for msr in [0x80b, 0x83f] {
        assert_eq!(a.read_msr(msr), None, "RDMSR {msr:#x}");
    }
    assert_eq!(a.read_msr(0x802), Some(3), "ID unchanged");
}

#[test]
fn x2apic_reserved_bits_gp_and_change_nothing_11_12_1_3() {
    let mut a = x2apic(0);
    a.write_msr(0x808, 0x20).unwrap();
    let refused = [
        (0x808, 0x100),          // TPR bits 31:8
        (0x808, 1 << 32),        // bits 63:32 of a 32-bit register
        (0x80b, 1),              // EOI: 0 only
        (0x828, 0x40),           // ESR: 0 only
        (0x80f, 0x1000 | 0x1ff), // SVR: no EOI-broadcast suppression
        (0x80f, 0x800 | 0x1ff),  // SVR bit 11
        (0x832, 0x8_0040),       // LVT timer bit 19
        (0x832, 0x100 | 0x40),   // LVT timer has no delivery mode
        (0x837, 0x400 | 0x40),   // LVT error has no delivery mode
        (0x835, 0x2_0000),       // LINT0 bit 17
        (0x838, 1 << 32),        // initial count is 32 bits
        (0x83e, 0b0100),         // DCR bit 2
        (0x83f, 0x140),          // SELF IPI bits 31:8
        (0x830, 1 << 13 | 0x40), // ICR bit 13
        (0x830, 1 << 12 | 0x40), // ICR bit 12 (no delivery status in x2APIC mode)
        (0x830, 1 << 16 | 0x40), // ICR bits 17:16
        (0x830, 1 << 20 | 0x40), // ICR bits 31:20
        (0x830, 0x8000_0000 | 0x40),
    ];
    for (msr, v) in refused {
        assert_eq!(a.write_msr(msr, v), Err(GeneralProtection), "WRMSR {msr:#x} <- {v:#x}");
    }
    assert_eq!(a.read_msr(0x808), Some(0x20), "TPR unchanged");
    assert_eq!(a.read_msr(0x80f), Some(0x1ff), "SVR unchanged");
    assert_eq!(a.read_msr(0x830), Some(0), "ICR unchanged");
    assert_eq!(a.pending(), None, "nothing sent");
    // The same registers take their defined bits.
    assert_eq!(a.write_msr(0x80f, 0x3ff), Ok(None), "SVR with focus checking");
    assert_eq!(a.write_msr(0x832, 0x6_0040), Ok(None), "TSC-deadline mode");
    assert_eq!(a.write_msr(0x835, 0x1_f7ff & !0x700 | 0x700), Ok(None), "LINT0, every bit");
    assert_eq!(a.write_msr(0x83e, 0b1011), Ok(None));
    assert_eq!(a.write_msr(0x838, u64::from(u32::MAX)), Ok(None));
    let ipi = a.write_msr(0x830, 0xffff_ffff_000c_cf00 | 0x40).unwrap();
    assert!(ipi.is_some(), "every defined ICR bit: a start-up IPI to all but self");
}

#[test]
fn x2apic_icr_is_one_64_bit_msr_11_12_9() {
    let mut a = x2apic(0);
    let ipi = a.write_msr(0x830, (0x1234_5678 << 32) | 0x4041).unwrap().unwrap();
    assert_eq!(ipi.dest, Destination::Physical(0x1234_5678), "the full 32-bit destination");
    assert_eq!(a.read_msr(0x830), Some((0x1234_5678 << 32) | 0x4041));
    assert_eq!(a.read_msr(0x831), None, "no separate high half");
}

#[test]
fn x2apic_ldr_is_read_only_and_derived_from_the_id_11_12_10_2() {
    let (_, mut a) = apic(0x23);
    // Whatever the xAPIC ID and LDR were set to, x2APIC mode has the initial ID.
    a.write(reg::ID, 0x07 << 24);
    a.write(reg::LDR, 0x8000_0000);
    a.set_x2apic(true);
    assert_eq!(a.read_msr(0x802), Some(0x23), "x2APIC ID: the initial APIC ID");
    assert_eq!(a.read_msr(0x80d), Some((2 << 16) | (1 << 3)), "cluster 2, member bit 3");
    assert_eq!(a.write_msr(0x80d, 0), Err(GeneralProtection));
    assert_eq!(a.write_msr(0x80e, 0), Err(GeneralProtection), "no DFR in x2APIC mode");
    assert!(a.matches_logical((2 << 16) | 0b1000));
    assert!(!a.matches_logical((3 << 16) | 0b1000), "another cluster");
    assert!(!a.matches_logical((2 << 16) | 0b0111), "another member");
}

#[test]
fn broadcast_destinations_reach_every_apic_11_6_2_and_11_12_9() {
    let mut x2 = x2apic(0x41);
    assert!(x2.matches_physical(u32::MAX) && x2.matches_logical(u32::MAX));
    assert!(!x2.matches_physical(0xff), "0xFF is an ordinary ID in x2APIC mode");
    x2.power_up();
    let (_, mut a) = apic(1);
    assert!(a.matches_physical(0xff));
    // Flat model: 0xFF reaches every APIC with a logical ID bit.
    a.write(reg::LDR, 0x1000_0000);
    assert!(a.matches_logical(0xff));
    // Cluster model: 0xFF reaches every cluster.
    a.write(reg::DFR, 0x0fff_ffff);
    a.write(reg::LDR, 0x3400_0000);
    assert!(a.matches_logical(0xff) && !a.matches_logical(0xf4));
}

#[test]
fn esr_records_illegal_vectors_in_icr_self_ipi_and_lvt_11_5_3() {
    let (_, mut a) = apic(0);
    // ICR: fixed and lowest priority below 16 are not sent: "send illegal vector".
    assert_eq!(a.write(reg::ICR_LOW, (1 << 18) | 0x05), None);
    assert_eq!(a.write(reg::ICR_LOW, (1 << 18) | (1 << 8) | 0x0f), None);
    assert_eq!(esr(&mut a), ESR_SEND_ILLEGAL_VECTOR);
    // NMI, INIT and start-up carry no interrupt vector: no error.
    assert!(a.write(reg::ICR_LOW, (1 << 18) | (4 << 8)).is_some());
    assert!(a.write(reg::ICR_LOW, (3 << 18) | (6 << 8)).is_some(), "SIPI to page 0");
    assert_eq!(esr(&mut a), 0);
    // LVT: an unmasked fixed entry below 16 (§11.5.2); masked, or another mode, is no error.
    a.write(reg::LVT_TIMER, 0x02);
    assert_eq!(esr(&mut a), ESR_RECEIVE_ILLEGAL_VECTOR);
    a.write(reg::LVT_TIMER, LVT_MASK);
    a.write(reg::LVT_LINT0, 7 << 8);
    a.write(reg::LVT_LINT1, 4 << 8);
    assert_eq!(esr(&mut a), 0);
    // The timer firing with it: received illegal, nothing in IRR.
    a.write(reg::LVT_TIMER, 0x03);
    esr(&mut a);
    a.write(reg::TIMER_INITIAL, 10);
    a.tick(1_000);
    assert_eq!(esr(&mut a), ESR_RECEIVE_ILLEGAL_VECTOR);
    assert_eq!((a.pending(), a.read(reg::IRR)), (None, 0), "never an IRR bit below 16");
    // SELF IPI (x2APIC): sent and received here.
    a.set_x2apic(true);
    assert_eq!(a.write_msr(0x83f, 0x0e), Ok(None));
    a.write_msr(0x828, 0).unwrap();
    assert_eq!(
        a.read_msr(0x828),
        Some(u64::from(ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR))
    );
    assert_eq!(a.pending(), None);
}

#[test]
fn esr_is_written_before_it_is_read_11_5_3() {
    let (_, mut a) = apic(0);
    a.accept(3, false);
    assert_eq!(a.read(reg::ESR), 0, "nothing until a write latches it");
    a.write(reg::ESR, 0xdead_beef);
    assert_eq!(a.read(reg::ESR), ESR_RECEIVE_ILLEGAL_VECTOR, "the value written is ignored");
    assert_eq!(a.read(reg::ESR), ESR_RECEIVE_ILLEGAL_VECTOR, "reads do not clear it");
    a.write(reg::ESR, 0);
    assert_eq!(a.read(reg::ESR), 0, "the next write clears it");
}

#[test]
fn an_error_raises_the_lvt_error_interrupt_11_5_3() {
    let (_, mut a) = apic(0);
    a.write(reg::LVT_ERROR, 0xe0);
    a.read(0x3b0); // a hole: illegal register address
    assert_eq!(a.pending(), Some(0xe0));
    assert_eq!(esr(&mut a), ESR_ILLEGAL_REGISTER);
    a.acknowledge();
    a.write(reg::EOI, 0);
    // A masked error entry records the error and raises nothing.
    a.write(reg::LVT_ERROR, LVT_MASK | 0xe0);
    a.write(0x3a0, 1);
    assert_eq!((a.pending(), esr(&mut a)), (None, ESR_ILLEGAL_REGISTER));
}

#[test]
fn xapic_writes_to_read_only_registers_are_ignored_11_4_1() {
    let (_, mut a) = apic(2);
    a.accept(0x40, false);
    for r in [reg::VERSION, reg::PPR, reg::APR, reg::RRD, reg::IRR + 0x20, reg::ISR, reg::TMR] {
        a.write(r, 0xffff_ffff);
    }
    a.write(reg::TIMER_CURRENT, 5);
    assert_eq!(a.read(reg::VERSION), VERSION);
    assert_eq!(a.read(reg::IRR + 0x20), 1, "IRR unchanged");
    assert_eq!((a.read(reg::ISR), a.read(reg::TIMER_CURRENT)), (0, 0));
    assert_eq!(esr(&mut a), 0, "implemented registers: no illegal-register error");
    a.write(reg::SELF_IPI, 0x50);
    assert_eq!(esr(&mut a), ESR_ILLEGAL_REGISTER, "SELF IPI is no xAPIC register");
    assert_eq!(a.read(reg::IRR + 0x40), 0, "and sent nothing");
}

#[test]
fn software_disabled_apic_keeps_lvts_masked_and_takes_no_fixed_interrupts_11_4_7_2() {
    let (_, mut a) = apic(0);
    a.accept(0x60, false);
    a.write(reg::LVT_TIMER, 0x40);
    a.write(reg::LVT_LINT0, 7 << 8);
    a.write(reg::SVR, 0xff);
    for r in [reg::LVT_TIMER, reg::LVT_THERMAL, reg::LVT_PERF, reg::LVT_LINT0, reg::LVT_ERROR] {
        assert_ne!(a.read(r) & LVT_MASK, 0, "{r:#x} masked by the disable");
        let v = a.read(r);
        a.write(r, v & !LVT_MASK);
        assert_ne!(a.read(r) & LVT_MASK, 0, "{r:#x} stays masked");
    }
    a.accept(0x70, false);
    assert_eq!(a.pending(), Some(0x60), "held, and 0x70 not taken");
    a.latch_nmi();
    assert!(a.nmi_pending(), "NMIs still come");
    assert!(a.write(reg::ICR_LOW, (3 << 18) | 0x41).is_some(), "it still sends IPIs");
    // Re-enabling leaves the masks to software.
    a.write(reg::SVR, SVR_ENABLE | 0xff);
    assert_ne!(a.read(reg::LVT_TIMER) & LVT_MASK, 0);
}

#[test]
fn timer_divide_configuration_takes_every_value_11_5_4() {
    let (clock, mut a) = apic(0);
    a.write(reg::LVT_TIMER, 0x40);
    // Figure 11-10: bits 3, 1, 0.
    for (dcr, divisor) in [
        (0b0000, 2),
        (0b0001, 4),
        (0b0010, 8),
        (0b0011, 16),
        (0b1000, 32),
        (0b1001, 64),
        (0b1010, 128),
        (0b1011, 1),
    ] {
        clock.set(1_000);
        a.write(reg::TIMER_DIVIDE, dcr | 0xffff_fff4 & !0b1011);
        assert_eq!(a.read(reg::TIMER_DIVIDE), dcr, "bit 2 and 31:4 are reserved");
        a.write(reg::TIMER_INITIAL, 100);
        assert_eq!(a.next_deadline(), Some(1_000 + 100 * divisor), "DCR {dcr:#06b}");
        clock.set(1_000 + 10 * divisor);
        assert_eq!(a.read(reg::TIMER_CURRENT), 90, "DCR {dcr:#06b}");
    }
}

#[test]
fn a_divide_change_mid_count_keeps_the_count_at_the_new_rate_11_5_4() {
    let (clock, mut a) = apic(0);
    a.write(reg::LVT_TIMER, 0x40);
    a.write(reg::TIMER_DIVIDE, 0b1011); // 1
    a.write(reg::TIMER_INITIAL, 1_000);
    clock.set(400);
    a.write(reg::TIMER_DIVIDE, 0b0001); // 4
    assert_eq!(a.read(reg::TIMER_CURRENT), 600, "no jump");
    assert_eq!(a.next_deadline(), Some(400 + 600 * 4));
    clock.set(800);
    assert_eq!(a.read(reg::TIMER_CURRENT), 500);
}

#[test]
fn timer_zero_stops_and_huge_counts_do_not_overflow_11_5_4() {
    let (clock, mut a) = apic(0);
    a.write(reg::LVT_TIMER, (TIMER_PERIODIC << TIMER_MODE_SHIFT) | 0x40);
    a.write(reg::TIMER_DIVIDE, 0b1010); // 128
    clock.set(u64::MAX / 2);
    a.write(reg::TIMER_INITIAL, u32::MAX);
    assert_eq!(a.next_deadline(), Some(u64::MAX / 2 + u64::from(u32::MAX) * 128));
    clock.advance(128 * 5);
    assert_eq!(a.read(reg::TIMER_CURRENT), u32::MAX - 5);
    a.write(reg::TIMER_INITIAL, 0);
    assert_eq!((a.next_deadline(), a.read(reg::TIMER_CURRENT)), (None, 0), "stopped");
    a.tick(u64::MAX);
    assert_eq!(a.pending(), None);
}

#[test]
fn a_one_tick_periodic_timer_fires_at_most_once_per_min_period() {
    let (clock, mut a) = apic(0);
    a.write(reg::LVT_TIMER, (TIMER_PERIODIC << TIMER_MODE_SHIFT) | 0x40);
    a.write(reg::TIMER_DIVIDE, 0b1011);
    a.write(reg::TIMER_INITIAL, 1);
    let mut interrupts = 0u64;
    let min = a.min_period_ticks();
    assert_eq!(min, 200_000, "200 µs at 1 GHz");
    let span = 2_000_000;
    for now in (0..span).step_by(7) {
        clock.set(now);
        a.tick(now);
        if a.acknowledge().is_some() {
            interrupts += 1;
            a.write(reg::EOI, 0);
        }
    }
    assert!(interrupts >= span / min / 2, "{interrupts}: it still runs");
    assert!(interrupts <= span / min + 1, "{interrupts} in {span} ticks");
}

#[test]
fn tsc_deadline_past_fires_at_once_and_is_ignored_in_other_modes_11_5_4_1() {
    let (clock, mut a) = apic(0);
    clock.set(10_000);
    a.set_tsc_deadline(5_000);
    assert_eq!((a.tsc_deadline(), a.next_deadline()), (0, None), "one-shot mode: ignored");
    a.write(reg::LVT_TIMER, (TIMER_TSC_DEADLINE << TIMER_MODE_SHIFT) | 0x60);
    a.set_tsc_deadline(5_000); // already past
    a.tick(10_000);
    assert_eq!(a.pending(), Some(0x60));
    assert_eq!(a.tsc_deadline(), 0);
    a.set_tsc_deadline(20_000);
    a.set_tsc_deadline(0);
    assert_eq!(a.next_deadline(), None, "0 disarms");
    // Periodic mode: the MSR reads 0 and a write arms nothing.
    a.write(reg::LVT_TIMER, (TIMER_PERIODIC << TIMER_MODE_SHIFT) | 0x60);
    a.set_tsc_deadline(30_000);
    assert_eq!((a.tsc_deadline(), a.next_deadline()), (0, None));
}

#[test]
fn init_keeps_the_id_power_up_restores_the_initial_one_11_4_7() {
    let (_, mut a) = apic(1);
    a.write(reg::ID, 6 << 24);
    a.accept(0x40, false);
    a.reset();
    assert_eq!(a.read(reg::ID), 6 << 24, "INIT keeps the APIC ID (§11.4.7.3)");
    assert_eq!((a.read(reg::IRR + 0x40), a.read(reg::SVR)), (0, 0xff));
    a.power_up();
    assert_eq!(a.read(reg::ID), 1 << 24, "power-up: the ID it was made with (§11.4.7.1)");
}

#[test]
fn the_periodic_floor_holds_on_a_slow_tsc_too() {
    // Bochs calibrates its TSC to about 4 MHz: 200 µs would be 800 ticks, less than one exit.
    let clock = Rc::new(ManualClock::new(4_000_000));
    let mut a = Lapic::new(clock.clone(), 0);
    a.write(reg::SVR, SVR_ENABLE | 0xff);
    assert_eq!(a.min_period_ticks(), 20_000);
    a.write(reg::LVT_TIMER, (TIMER_PERIODIC << TIMER_MODE_SHIFT) | 0x40);
    a.write(reg::TIMER_DIVIDE, 0b1011);
    a.write(reg::TIMER_INITIAL, 1);
    a.tick(5);
    assert_eq!(a.acknowledge(), Some(0x40));
    assert_eq!(a.next_deadline(), Some(5 + 20_000), "the next one a floor later");
}
