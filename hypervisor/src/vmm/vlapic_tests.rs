use super::*;
use crate::devices::clock::ManualClock;

fn vlapic() -> (Rc<ManualClock>, Vlapic) {
    let clock = Rc::new(ManualClock::new(1_000_000_000));
    (clock.clone(), Vlapic::new(clock, 0, true))
}

const XAPIC: u64 = APIC_BASE | BASE_EN | BASE_BSP;
const X2APIC: u64 = XAPIC | BASE_EXTD;

#[test]
fn firmware_state() {
    let (_, mut a) = vlapic();
    assert_eq!(a.base(), XAPIC, "enabled at 0xFEE00000, the BSP");
    assert!(a.xapic_mode());
    assert_eq!(a.mmio_read(u64::from(reg::ID), 4), 0);
    assert_eq!(a.mmio_read(u64::from(reg::VERSION), 4) & 0xff, 0x14);
    assert_eq!(a.mmio_read(u64::from(reg::SVR), 4), 0x1ff, "software-enabled");
    assert_eq!(a.mmio_read(u64::from(reg::LVT_LINT0), 4), 0x700, "ExtINT, unmasked");
    assert_eq!(a.mmio_read(u64::from(reg::LVT_LINT1), 4), 0x400, "NMI, unmasked");
    assert_ne!(a.mmio_read(u64::from(reg::LVT_TIMER), 4) & (1 << 16), 0, "timer masked");
    assert!(a.extint_open(), "virtual wire");
}

#[test]
fn apic_base_transitions() {
    let (_, mut a) = vlapic();
    // Reserved bits, the invalid state, moving the base.
    assert_eq!(a.set_base(XAPIC | 1), Err(BaseError::Reserved));
    assert_eq!(a.set_base(XAPIC | (1 << 9)), Err(BaseError::Reserved));
    assert_eq!(a.set_base(APIC_BASE | BASE_EXTD), Err(BaseError::Invalid));
    assert_eq!(a.set_base(0xfed0_0000 | BASE_EN), Err(BaseError::Moved));
    assert_eq!(a.base(), XAPIC, "unchanged by refused writes");
    // xAPIC -> x2APIC is allowed and keeps the state; x2APIC -> xAPIC is not.
    a.mmio_write(u64::from(reg::TPR), 4, 0x20);
    assert_eq!(a.set_base(X2APIC), Ok(()));
    assert!(!a.xapic_mode());
    assert_eq!(a.read_msr(0x808), Some(0x20), "TPR kept");
    assert_eq!(a.read_msr(0x802), Some(0), "x2APIC ID");
    assert_eq!(a.set_base(XAPIC), Err(BaseError::X2apicToXapic));
    assert_eq!(a.base(), X2APIC);
    // The BSP bit is read-only.
    assert_eq!(a.set_base(X2APIC & !BASE_BSP), Ok(()));
    assert_eq!(a.base(), X2APIC);
    // x2APIC -> disabled resets the APIC; disabled -> x2APIC is refused; -> xAPIC is fine.
    assert_eq!(a.set_base(APIC_BASE), Ok(()));
    assert!(!a.enabled());
    assert_eq!(a.set_base(X2APIC), Err(BaseError::DisabledToX2apic));
    assert_eq!(a.set_base(XAPIC), Ok(()));
    assert_eq!(a.mmio_read(u64::from(reg::TPR), 4), 0, "reset by the disable");
    assert_eq!(a.mmio_read(u64::from(reg::SVR), 4), 0xff, "power-up state");
    assert_eq!(a.read_msr(0x808), None, "x2APIC MSRs #GP in xAPIC mode");
}

#[test]
fn disabled_apic_has_no_page_and_passes_extint() {
    let (_, mut a) = vlapic();
    a.mmio_write(u64::from(reg::LVT_LINT0), 4, 0x1_0700);
    assert!(!a.extint_open(), "LINT0 masked");
    a.apic.accept(0x40, false);
    assert_eq!(a.pending(), Some(0x40));
    a.set_base(APIC_BASE).unwrap();
    assert_eq!(a.mmio_read(u64::from(reg::VERSION), 4), 0xffff_ffff, "no page");
    assert!(a.extint_open(), "a disabled APIC is out of the way");
    assert_eq!(a.pending(), None);
}

#[test]
fn mmio_access_sizes() {
    let (_, mut a) = vlapic();
    let tpr = u64::from(reg::TPR);
    a.mmio_write(tpr, 4, 0x5a);
    assert_eq!(a.mmio_read(tpr, 4), 0x5a);
    assert_eq!(a.mmio_read(tpr, 1), 0x5a);
    assert_eq!(a.mmio_read(tpr + 1, 1), 0);
    assert_eq!(a.mmio_read(tpr + 4, 4), 0, "past the register's dword");
    a.mmio_write(tpr, 1, 0x11);
    a.mmio_write(tpr + 4, 4, 0x11);
    assert_eq!(a.mmio_read(tpr, 4), 0x5a, "narrow and unaligned writes dropped");
    assert_eq!(a.mmio_read(u64::from(reg::VERSION), 8) >> 32, 0);
}

#[test]
fn ipis_to_self_and_others() {
    let (_, mut a) = vlapic();
    let icr = u64::from(reg::ICR_LOW);
    // Fixed vector 0x45 to self by shorthand.
    let ipi = a.mmio_write(icr, 4, (1 << 18) | 0x45).unwrap();
    assert!(a.is_target(ipi.dest, true));
    assert!(!a.is_target(ipi.dest, false), "self only reaches the sender");
    assert_eq!(a.deliver_ipi(&ipi), IpiEffect::Requested);
    assert_eq!(a.pending(), Some(0x45));
    // Physical destination 0 (this APIC) and 1 (another).
    a.mmio_write(u64::from(reg::ICR_HIGH), 4, 1 << 24);
    let ipi = a.mmio_write(icr, 4, 0x46).unwrap();
    assert!(!a.is_target(ipi.dest, true));
    let ipi = a.mmio_write(icr, 4, (3 << 18) | 0x46).unwrap();
    assert!(!a.is_target(ipi.dest, true), "all excluding self");
    assert!(a.is_target(ipi.dest, false));
    // NMI, INIT, INIT de-assert, start-up.
    let ipi = a.mmio_write(icr, 4, (1 << 18) | (4 << 8)).unwrap();
    assert_eq!(a.deliver_ipi(&ipi), IpiEffect::Nmi);
    assert!(a.take_nmi() && !a.take_nmi());
    let ipi = a.mmio_write(icr, 4, (3 << 18) | (5 << 8) | (1 << 14)).unwrap();
    assert_eq!(a.deliver_ipi(&ipi), IpiEffect::Init);
    let ipi = a.mmio_write(icr, 4, (3 << 18) | (5 << 8) | (1 << 15)).unwrap();
    assert_eq!(a.deliver_ipi(&ipi), IpiEffect::Ignored, "level de-assert");
    let ipi = a.mmio_write(icr, 4, (3 << 18) | (6 << 8) | 0x9a).unwrap();
    assert_eq!(a.deliver_ipi(&ipi), IpiEffect::StartUp(0x9a));
    // x2APIC SELF_IPI.
    a.set_base(X2APIC).unwrap();
    assert_eq!(a.write_msr(0x83f, 0x77), Ok(None));
    assert_eq!(a.pending(), Some(0x77));
}

#[test]
fn cr8_and_tpr_are_one_register() {
    let (_, mut a) = vlapic();
    // A TPR write through the page: CR8 shows its high nibble.
    a.mmio_write(u64::from(reg::TPR), 4, 0x7c);
    assert_eq!(a.sync_cr8(0), 7);
    assert_eq!(a.apic.tpr(), 0x7c, "the same CR8 changes nothing");
    // A MOV to CR8 the backend kept: TPR[7:4] from it, TPR[3:0] clear.
    assert_eq!(a.sync_cr8(3), 3);
    assert_eq!(a.apic.tpr(), 0x30);
}

#[test]
fn timer_deadline_wakes_only_unmasked() {
    let (clock, mut a) = vlapic();
    a.mmio_write(u64::from(reg::TIMER_DIVIDE), 4, 0xb); // divide by 1
    a.mmio_write(u64::from(reg::LVT_TIMER), 4, 0x1_0040);
    a.mmio_write(u64::from(reg::TIMER_INITIAL), 4, 1000);
    assert_eq!(a.next_deadline(), None, "masked: nothing to wake for");
    a.mmio_write(u64::from(reg::LVT_TIMER), 4, 0x40);
    a.mmio_write(u64::from(reg::TIMER_INITIAL), 4, 1000);
    assert_eq!(a.next_deadline(), Some(1000));
    clock.set(1000);
    a.apic.tick(1000);
    assert_eq!(a.pending(), Some(0x40));
    assert_eq!(a.next_deadline(), None, "one-shot done");
}

#[test]
fn lint1_follows_its_lvt_entry() {
    let (_, mut a) = vlapic();
    // The firmware's virtual wire: LINT1 in NMI mode, unmasked.
    assert!(!a.nmi_pending());
    assert!(a.lint1());
    assert!(a.nmi_pending(), "LINT1 in NMI mode latches an NMI");
    assert!(a.lint1() && a.take_nmi() && !a.take_nmi(), "NMIs do not queue");
    assert!(!a.nmi_pending());
    // Masked: nothing.
    a.mmio_write(u64::from(reg::LVT_LINT1), 4, (1 << 16) | (4 << 8));
    assert!(!a.lint1() && !a.nmi_pending());
    // Fixed mode: its vector, level-triggered with bit 15.
    a.mmio_write(u64::from(reg::LVT_LINT1), 4, (1 << 15) | 0x58);
    assert!(a.lint1() && !a.nmi_pending());
    assert_eq!(a.pending(), Some(0x58));
    assert_ne!(a.mmio_read(u64::from(reg::TMR) + 0x20, 4) & (1 << (0x58 - 0x40)), 0, "level");
    // ExtINT on LINT1: nothing a PC wires.
    a.mmio_write(u64::from(reg::LVT_LINT1), 4, 7 << 8);
    assert!(!a.lint1() && !a.nmi_pending());
    // Globally disabled: LINT1 is the CPU's NMI pin (SDM Vol. 3A §11.4.3).
    a.set_base(APIC_BASE | BASE_BSP).unwrap();
    assert!(a.lint1() && a.nmi_pending());
}

#[test]
fn an_nmi_ipi_is_latched_for_the_next_entry() {
    let (_, mut a) = vlapic();
    let nmi =
        Ipi { mode: DeliveryMode::Nmi, vector: 0, deassert: false, dest: Destination::SelfOnly };
    assert_eq!(a.deliver_ipi(&nmi), IpiEffect::Nmi);
    assert!(a.nmi_pending() && a.apic.has_requests(), "the entry-time test sees it");
    assert_eq!(a.pending(), None, "no vector in IRR for an NMI");
    assert!(a.take_nmi() && !a.nmi_pending());
    // A globally disabled APIC receives no IPI (§11.4.3).
    a.set_base(APIC_BASE | BASE_BSP).unwrap();
    assert_eq!(a.deliver_ipi(&nmi), IpiEffect::Ignored);
    assert!(!a.nmi_pending());
}

#[test]
fn disabling_then_enabling_finds_the_power_up_state_11_4_3() {
    let (_, mut a) = vlapic();
    a.mmio_write(u64::from(reg::ID), 4, 5 << 24);
    a.mmio_write(u64::from(reg::TPR), 4, 0x40);
    a.mmio_write(u64::from(reg::LVT_TIMER), 4, 0x40);
    a.mmio_write(u64::from(reg::TIMER_INITIAL), 4, 1000);
    a.apic.accept(0x50, false);
    assert_eq!(a.set_base(APIC_BASE | BASE_BSP), Ok(()));
    assert_eq!(a.set_base(XAPIC), Ok(()));
    assert_eq!(a.mmio_read(u64::from(reg::ID), 4), 0, "the initial APIC ID (§11.4.7.1)");
    assert_eq!(a.mmio_read(u64::from(reg::TPR), 4), 0);
    assert_eq!(a.mmio_read(u64::from(reg::SVR), 4), 0xff, "software-disabled");
    assert_ne!(a.mmio_read(u64::from(reg::LVT_TIMER), 4) & (1 << 16), 0, "LVTs masked");
    assert_eq!((a.next_deadline(), a.pending()), (None, None), "timer and IRR cleared");
    // Software-disabled: a fixed IPI is not taken (§11.4.7.2) until the SVR enables it.
    let fixed = Ipi {
        mode: DeliveryMode::Fixed,
        vector: 0x61,
        deassert: false,
        dest: Destination::SelfOnly,
    };
    a.deliver_ipi(&fixed);
    assert_eq!(a.pending(), None);
    a.mmio_write(u64::from(reg::SVR), 4, 0x1ff);
    a.deliver_ipi(&fixed);
    assert_eq!(a.pending(), Some(0x61));
}

#[test]
fn apic_base_moves_and_bsp_writes_11_4_4() {
    let (_, mut a) = vlapic();
    // The SDM lets software move the base (§11.4.4); this hypervisor refuses with #GP.
    for base in [0xfed0_0000u64, 0x1000, 0xfee0_1000, 0x1_fee0_0000] {
        assert_eq!(a.set_base(base | BASE_EN | BASE_BSP), Err(BaseError::Moved), "{base:#x}");
    }
    // The BSP flag is the platform's: a write of it changes nothing, either way.
    let mut ap = Vlapic::new(Rc::new(ManualClock::new(1_000_000_000)), 1, false);
    assert_eq!(ap.set_base(XAPIC), Ok(()));
    assert_eq!(ap.base(), APIC_BASE | BASE_EN, "an AP stays an AP");
    assert_eq!(a.set_base(APIC_BASE | BASE_EN), Ok(()));
    assert_eq!(a.base(), XAPIC, "the BSP stays the BSP");
}

#[test]
fn odd_xapic_page_accesses_are_defined_11_4_1() {
    let (_, mut a) = vlapic();
    let icr = u64::from(reg::ICR_LOW);
    // An 8-byte store at the ICR: its low dword is the register (the next one is a hole).
    let ipi = a.mmio_write(icr, 8, 0xffff_ffff_0004_0045).unwrap();
    assert_eq!((ipi.vector, ipi.dest), (0x45, Destination::SelfOnly));
    // Narrow, unaligned and in-between stores send nothing.
    assert_eq!(a.mmio_write(icr, 2, 0x0004_0046), None);
    assert_eq!(a.mmio_write(icr, 1, 0x46), None);
    assert_eq!(a.mmio_write(icr + 1, 4, 0x0004_0046), None);
    assert_eq!(a.mmio_write(icr + 8, 4, 0x0004_0046), None);
    // Reads of holes and the last bytes of the page: 0, an ESR error, no panic.
    for (off, size) in [(0x3f0, 4), (0xff0, 8), (0xffc, 4), (0xfff, 1), (0x3a0, 2), (0x10, 4)] {
        assert_eq!(a.mmio_read(off, size), 0, "{off:#x}/{size}");
    }
    a.mmio_write(u64::from(reg::ESR), 4, 0);
    assert_eq!(a.mmio_read(u64::from(reg::ESR), 4), 1 << 7, "illegal register address");
    // In x2APIC mode the page is not there: all ones, writes dropped.
    a.set_base(X2APIC).unwrap();
    assert_eq!(a.mmio_read(u64::from(reg::VERSION), 2), 0xffff);
    assert_eq!(a.mmio_read(u64::from(reg::VERSION), 8), u64::MAX);
    assert_eq!(a.mmio_write(icr, 4, 0x0004_0047), None);
}
