//! The PC a stock kernel expects, beside every guest partition's UART and 8259 pair: the 8254
//! PIT with port 0x61 (its channel 0 on IRQ 0), the MC146818 RTC and CMOS at 0x70/0x71 (IRQ 8),
//! running on the host's TSC and wall clock (`Platform`); system control port A (0x92, fast
//! reset), PCI configuration ports that find no devices (0xCF8-0xCFF, with the reset control
//! register 0xCF9), the POST port 0x80 that kernels write for I/O delays, and the ACPI
//! power-management block (PM1a event and control, PM timer) that the partition's FADT
//! describes (`loader::acpi`), through which an OS powers the partition off.

use super::bus::Bus;
use super::platform::{HostClock, Platform};
use crate::devices::acpi_pm::{self, AcpiPm};
use crate::devices::clock::Clock;
use crate::devices::pcmisc::{PciNone, PostPort, SysCtlA};
use crate::devices::pic8259::PicPair;
use crate::devices::pit8254::{Pit, PitPort61};
use crate::devices::rtc::Rtc;
use crate::devices::shared::{Shared, shared};
use alloc::boxed::Box;
use alloc::rc::Rc;
use core::ops::Range;

/// Port ranges of the devices through which a guest asks for a reset or a power-off: system
/// control port A, the PCI configuration ports (with 0xCF9), the ACPI PM block.
const SYSCTL_PORTS: Range<u64> = 0x92..0x93;
const PCI_PORTS: Range<u64> = 0xcf8..0xd00;
const PM_PORTS: Range<u64> =
    super::loader::acpi::PM_PORT as u64..super::loader::acpi::PM_PORT as u64 + acpi_pm::PORTS;

/// A partition's PC devices, shared with its port bus: a guest's (every device above), or
/// the management partition's ([`PcDevices::attach_management`]).
pub struct PcDevices {
    pit: Shared<Pit>,
    /// None for the management partition: the machine's own RTC is its.
    rtc: Option<Shared<Rtc>>,
    sysctl: Shared<SysCtlA>,
    pci: Shared<PciNone>,
    pm: Shared<AcpiPm>,
    /// The management partition's: the machine's PM1 control registers, trapped
    /// (`vmm::host_pm`), with their ports.
    host_pm: alloc::vec::Vec<(u16, Shared<super::host_pm::HostPmCnt>)>,
    /// A PIT period ended since [`PcDevices::take_irq0_edge`] last looked.
    irq0_edge: core::cell::Cell<bool>,
    /// PIT periods that ended and whose IRQ 0 is not raised yet (at most [`MAX_LOST_TICKS`]).
    lost_ticks: core::cell::Cell<u64>,
    /// The TSC before which [`PcDevices::tick`] has nothing to do (0: look now). The exit path
    /// runs `tick` before every entry; this keeps it to one comparison.
    due: core::cell::Cell<u64>,
    /// TSC ticks in 10 ms: the longest [`PcDevices::tick`] waits.
    recheck_ticks: u64,
}

/// PIT ticks kept for delivery after the guest could not take them (it was descheduled, or
/// still in its handler): a kernel that counts timer interrupts (jiffies) then keeps time, as
/// KVM's PIT re-injection does. Beyond this many, the rest are dropped.
const MAX_LOST_TICKS: u64 = 1000;

impl PcDevices {
    /// Makes the devices for a partition with `ram_bytes` of RAM from guest-physical 0 and
    /// attaches them to its port bus.
    pub fn attach(io: &mut Bus, platform: &Platform, ram_bytes: u64) -> Self {
        let clock: Rc<dyn Clock> = Rc::new(HostClock { hz: platform.tsc_hz_or_nominal() });
        Self::attach_with(io, clock, platform, ram_bytes)
    }

    /// [`PcDevices::attach`] with the clock given (host tests use a manual one).
    fn attach_with(
        io: &mut Bus,
        clock: Rc<dyn Clock>,
        platform: &Platform,
        ram_bytes: u64,
    ) -> Self {
        let hz = clock.hz();
        let pit = shared(Pit::new(clock.clone()));
        io.attach(0x40..0x44, Box::new(pit.clone()));
        io.attach(0x61..0x62, Box::new(PitPort61(pit.clone())));
        // The RTC's date: the host's, as read at boot (1970 where it held none).
        let (tsc, unix) = platform.wall_clock.unwrap_or((platform.start_tsc, 0));
        let mut rtc = Rtc::new(clock.clone(), unix, tsc);
        // CMOS memory sizes as a PC BIOS leaves them: base, 1-16 MiB and above 16 MiB, KiB.
        let kib = ram_bytes >> 10;
        rtc.set_memory_sizes(
            640,
            kib.saturating_sub(1024).min(15 << 10),
            kib.saturating_sub(16 << 10),
        );
        let rtc = shared(rtc);
        io.attach(0x70..0x72, Box::new(rtc.clone()));
        let rtc = Some(rtc);
        let sysctl = shared(SysCtlA::new());
        io.attach(SYSCTL_PORTS, Box::new(sysctl.clone()));
        let pci = shared(PciNone::new());
        io.attach(PCI_PORTS, Box::new(pci.clone()));
        io.attach(0x80..0x81, Box::new(PostPort::new()));
        let pm = shared(AcpiPm::new(clock.clone()));
        io.attach(PM_PORTS, Box::new(pm.clone()));
        Self {
            pit,
            rtc,
            sysctl,
            pci,
            pm,
            host_pm: alloc::vec::Vec::new(),
            irq0_edge: core::cell::Cell::new(false),
            lost_ticks: core::cell::Cell::new(0),
            due: core::cell::Cell::new(0),
            recheck_ticks: (hz / 100).max(1),
        }
    }

    /// The management partition's: the devices the hypervisor keeps on the machine and so
    /// emulates for it, the 8254 PIT with port 0x61 (its channel 0 on IRQ 0: the 8259's line 0
    /// and the I/O APIC's pin 2, `vmm::vioapic`) and system control port A (0x92, fast reset).
    /// The RTC, the PCI configuration ports (filtered: `passthrough`), the POST port and the
    /// chipset's ACPI power-management block are the machine's own, handed over with its
    /// devices; the PM block here is never attached (nothing reaches it).
    /// `host_pm`: the machine's PM1 control registers (`host_pm::from_fadt`), attached here at
    /// their ports (which `passthrough::hand_over` must then keep trapped).
    pub fn attach_management(
        io: &mut Bus,
        platform: &Platform,
        host_pm: alloc::vec::Vec<(u16, super::host_pm::HostPmCnt)>,
    ) -> Self {
        let clock: Rc<dyn Clock> = Rc::new(HostClock { hz: platform.tsc_hz_or_nominal() });
        Self::attach_management_with(io, clock, host_pm)
    }

    /// [`PcDevices::attach_management`] with the clock given.
    fn attach_management_with(
        io: &mut Bus,
        clock: Rc<dyn Clock>,
        host_pm: alloc::vec::Vec<(u16, super::host_pm::HostPmCnt)>,
    ) -> Self {
        let hz = clock.hz();
        let pit = shared(Pit::new(clock.clone()));
        io.attach(0x40..0x44, Box::new(pit.clone()));
        io.attach(0x61..0x62, Box::new(PitPort61(pit.clone())));
        let sysctl = shared(SysCtlA::new());
        io.attach(SYSCTL_PORTS, Box::new(sysctl.clone()));
        let host_pm: alloc::vec::Vec<_> = host_pm
            .into_iter()
            .map(|(port, dev)| {
                let dev = shared(dev);
                io.attach(u64::from(port)..u64::from(port) + 2, Box::new(dev.clone()));
                (port, dev)
            })
            .collect();
        Self {
            pit,
            rtc: None,
            host_pm,
            sysctl,
            pci: shared(PciNone::new()),
            pm: shared(AcpiPm::new(clock)),
            irq0_edge: core::cell::Cell::new(false),
            lost_ticks: core::cell::Cell::new(0),
            due: core::cell::Cell::new(0),
            recheck_ticks: (hz / 100).max(1),
        }
    }

    /// True for the ports whose accesses can change a deadline or an interrupt input the
    /// devices raise (the PIT, port 0x61, the RTC, the 8259s' masks).
    pub fn affected_by(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x40..=0x43 | 0x61 | 0x70 | 0x71)
    }

    /// The guest accessed `port`: the devices look again at the next entry when it is one of
    /// theirs.
    pub fn accessed(&self, port: u16) {
        if Self::affected_by(port) {
            self.touched();
        }
    }

    /// An interrupt was delivered (or a device port accessed): look again at the next entry.
    pub fn touched(&self) {
        self.due.set(0);
    }

    /// An interrupt was delivered: a PIT tick kept behind the one in the IRR may go now, so
    /// look again at the next entry; with none kept, the next look stays at the deadline
    /// (the devices' own deadlines and port accesses make them look sooner).
    #[inline]
    pub fn delivered(&self) {
        if self.lost_ticks.get() > 0 {
            self.due.set(0);
        }
    }

    /// True for the ports through which a guest asks for a reset or a power-off (port 0x92,
    /// the PCI ports with 0xCF9, the ACPI PM1a control register): only a write to one of
    /// them needs [`PcDevices::reset_requested`] and [`PcDevices::poweroff_requested`] asked.
    pub fn controls_power(port: u16) -> bool {
        let port = u64::from(port);
        [SYSCTL_PORTS, PCI_PORTS, PM_PORTS].iter().any(|r| r.contains(&port))
    }

    /// [`PcDevices::controls_power`], or one of the machine's PM1 control registers the
    /// management partition writes through this.
    #[inline]
    pub fn controls_power_at(&self, port: u16) -> bool {
        Self::controls_power(port)
            || (!self.host_pm.is_empty()
                && self.host_pm.iter().any(|&(p, _)| port.wrapping_sub(p) < 2))
    }

    /// True once after the guest asked for a reset (port 0x92 bit 0, or 0xCF9 bit 2).
    pub fn reset_requested(&self) -> bool {
        let a = self.sysctl.borrow_mut().reset_requested();
        let b = self.pci.borrow_mut().reset_requested();
        a || b
    }

    /// True once after the guest asked for soft-off (S5) at its ACPI PM1a control register.
    pub fn poweroff_requested(&self) -> bool {
        let mut off = self.pm.borrow_mut().poweroff_requested();
        for (_, dev) in &self.host_pm {
            off |= dev.borrow_mut().take_poweroff();
        }
        off
    }

    /// Raises the devices' interrupts at `pic`: an IRQ 0 edge for each PIT period that ended,
    /// one at a time (the next once the guest took the last), and IRQ 8 at the RTC's level.
    #[inline]
    pub fn tick(&self, now: u64, pic: &mut PicPair) {
        // Before every entry: nothing due is the common case, one comparison in the run loop.
        if now >= self.due.get() {
            self.tick_due(now, pic);
        }
    }

    /// [`PcDevices::tick`] once its deadline has come.
    #[inline(never)]
    fn tick_due(&self, now: u64, pic: &mut PicPair) {
        let edges = self.pit.borrow_mut().irq0_edges();
        let lost = (self.lost_ticks.get() + edges).min(MAX_LOST_TICKS);
        if lost > 0 && !pic.requested(0) {
            pic.set_irq(0, true);
            pic.set_irq(0, false);
            self.lost_ticks.set(lost - 1);
        } else {
            self.lost_ticks.set(lost);
        }
        if let Some(rtc) = &self.rtc {
            let irq8 = rtc.borrow_mut().irq8_pending();
            pic.set_irq(8, irq8);
        }
        // With a tick still to deliver and the IRR free, look again at the next entry (a tick
        // waiting behind the one in the IRR goes once that one is delivered: the core touches
        // the devices then); else at the next deadline, and at least every 10 ms of guest time
        // whatever the models say (a deadline the PIT model misses then costs 10 ms, never a
        // wake-up).
        let due = if self.lost_ticks.get() > 0 && !pic.requested(0) {
            0
        } else {
            let bound = now.saturating_add(self.recheck_ticks);
            self.next_deadline().map_or(bound, |d| d.min(bound))
        };
        self.due.set(due);
        if edges > 0 {
            self.irq0_edge.set(true);
        }
    }

    /// True once after a PIT period ended (since the last call): the partition gives the I/O
    /// APIC's pin 2 its edge too, where it has one (a PC wires the PIT's output to both; an
    /// edge on a masked or busy I/O APIC pin is lost, as on the hardware).
    #[inline]
    pub fn take_irq0_edge(&self) -> bool {
        self.irq0_edge.replace(false)
    }

    /// True when a device will raise an interrupt on a line unmasked in `unmasked` (the PIC
    /// pair's unmasked IRQ lines).
    pub fn can_wake(&self, unmasked: u16) -> bool {
        (unmasked & 1 != 0 && self.lost_ticks.get() > 0) || self.next_interrupt(unmasked).is_some()
    }

    /// The TSC at which a device next raises an interrupt by itself.
    pub fn next_deadline(&self) -> Option<u64> {
        let pit = self.pit.borrow().next_irq0_deadline();
        let rtc = self.rtc.as_ref().and_then(|r| r.borrow().next_irq8_deadline());
        match (pit, rtc) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The TSC at which a device next interrupts the guest on a line unmasked in `unmasked`
    /// (a masked line's ticks need neither a short slice nor a wake-up).
    pub fn next_interrupt(&self, unmasked: u16) -> Option<u64> {
        let pit = (unmasked & 1 != 0).then(|| self.pit.borrow().next_irq0_deadline()).flatten();
        let rtc = (unmasked & (1 << 8) != 0)
            .then(|| self.rtc.as_ref().and_then(|r| r.borrow().next_irq8_deadline()))
            .flatten();
        match (pit, rtc) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::clock::ManualClock;

    const HZ: u64 = 1_193_182_000; // a TSC at 1000 PIT ticks per PIT tick: whole numbers

    fn machine() -> (Rc<ManualClock>, Bus, PcDevices, PicPair) {
        let clock = Rc::new(ManualClock::new(HZ));
        let mut io = Bus::default();
        let platform = Platform { wall_clock: Some((0, 1_796_393_373)), ..Platform::default() };
        let pc = PcDevices::attach_with(&mut io, clock.clone(), &platform, 64 << 20);
        // Channel 0, lobyte/hibyte, mode 2, a period of 100 PIT ticks.
        io.write(0x43, 1, 0x34);
        io.write(0x40, 1, 100);
        io.write(0x40, 1, 0);
        pc.touched();
        // The master 8259 as a kernel sets it up: ICW1-4, vectors from 0x20, nothing masked.
        let mut pic = PicPair::default();
        for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, 0x00)] {
            pic.write(port, v);
        }
        (clock, io, pc, pic)
    }

    #[test]
    fn lost_ticks_come_one_at_a_time() {
        let (clock, _io, pc, mut pic) = machine();
        // Three periods pass while the guest cannot take the interrupt.
        clock.advance(1000 * 302);
        pc.tick(clock.now(), &mut pic);
        assert!(pic.requested(0), "the first tick is raised");
        assert_eq!(pc.lost_ticks.get(), 2, "the others wait");
        pc.tick(clock.now(), &mut pic);
        assert_eq!(pc.lost_ticks.get(), 2, "not raised again while the first waits");
        // The guest takes it: the next comes at the next look.
        assert_eq!(pic.acknowledge(), 0x20);
        pc.delivered();
        assert_eq!(pc.due.get(), 0, "a kept tick: look at the next entry");
        pc.tick(clock.now(), &mut pic);
        assert!(pic.requested(0));
        assert_eq!(pc.lost_ticks.get(), 1);
        // With none kept, a delivery leaves the next look at its deadline.
        pc.lost_ticks.set(0);
        pc.due.set(u64::MAX);
        pc.delivered();
        assert_eq!(pc.due.get(), u64::MAX);
    }

    #[test]
    fn devices_look_again_within_10_ms() {
        let (clock, _io, pc, mut pic) = machine();
        // Channel 0 stopped (mode 0, count written, ended): no deadline.
        pc.tick(clock.now(), &mut pic);
        assert!(pc.due.get() <= clock.now() + HZ / 100);
        // Only the ports of the devices make them look again at once.
        pc.due.set(u64::MAX);
        pc.accessed(0x3f8);
        assert_eq!(pc.due.get(), u64::MAX);
        pc.accessed(0x43);
        assert_eq!(pc.due.get(), 0);
    }

    #[test]
    fn lost_ticks_are_capped() {
        let (clock, _io, pc, mut pic) = machine();
        clock.advance(1000 * 100 * (MAX_LOST_TICKS + 500));
        pc.tick(clock.now(), &mut pic);
        assert_eq!(pc.lost_ticks.get(), MAX_LOST_TICKS - 1);
    }

    #[test]
    fn nothing_to_do_before_the_deadline() {
        let (clock, _io, pc, mut pic) = machine();
        pc.tick(clock.now(), &mut pic);
        let deadline = pc.next_deadline().expect("the PIT runs");
        assert!(deadline > clock.now());
        assert_eq!(pc.due.get(), deadline.min(clock.now() + HZ / 100));
        assert_eq!(pc.next_interrupt(0xffff), Some(deadline));
        assert_eq!(pc.next_interrupt(!0x101), None, "masked lines need no slice end");
        assert!(pc.can_wake(0xffff));
        assert!(!pc.can_wake(!0x101), "IRQ 0 and 8 masked: nothing can wake it");
    }

    #[test]
    fn the_management_partition_gets_the_pit_and_port_0x92_only() {
        let clock = Rc::new(ManualClock::new(HZ));
        let mut io = Bus::default();
        let host_pm = alloc::vec![(0xb004, crate::vmm::host_pm::HostPmCnt::new(0xb004, Some(0)))];
        let pc = PcDevices::attach_management_with(&mut io, clock.clone(), host_pm);
        for port in [0x40, 0x43, 0x61, 0x92, 0xb004, 0xb005] {
            assert!(io.claims(port), "{port:#x}");
        }
        for port in [0x70, 0x71, 0xcf8, 0xcfc, 0x80, 0x600, 0x608] {
            assert!(!io.claims(port), "{port:#x}: the machine's own");
        }
        assert!(pc.controls_power_at(0xb004) && pc.controls_power_at(0xb005));
        assert!(!pc.controls_power_at(0xb006) && !pc.controls_power_at(0xb003));
        // Channel 0 in mode 2, 100 PIT ticks: a period's end is reported (for the I/O APIC's
        // pin 2) and raised at the 8259's IRQ 0; the RTC's IRQ 8 is left alone.
        io.write(0x43, 1, 0x34);
        io.write(0x40, 1, 100);
        io.write(0x40, 1, 0);
        pc.touched();
        let mut pic = PicPair::default();
        pic.set_irq(8, true);
        pc.tick(clock.now(), &mut pic);
        assert!(!pc.take_irq0_edge(), "no period ended yet");
        clock.advance(1000 * 101);
        pc.touched();
        pc.tick(clock.now(), &mut pic);
        assert!(pc.take_irq0_edge());
        assert!(!pc.take_irq0_edge(), "once");
        assert!(pic.requested(0));
        assert!(pic.requested(8), "IRQ 8 is a forwarded host line here, not the RTC model's");
        io.write(0x92, 1, 0x01);
        assert!(pc.reset_requested());
    }

    #[test]
    fn the_guest_can_ask_for_a_reset() {
        let (_clock, mut io, pc, _pic) = machine();
        assert!(!pc.reset_requested());
        io.write(0x92, 1, 0x01);
        assert!(pc.reset_requested());
        assert!(!pc.reset_requested(), "once");
        // Soft-off through PM1a_CNT (SLP_TYP 5, SLP_EN), and which ports the core asks after.
        io.write(0x604, 2, 0x3400);
        assert!(pc.poweroff_requested());
        for port in [0x92, 0xcf9, 0x604, 0x605] {
            assert!(PcDevices::controls_power(port), "{port:#x}");
        }
        for port in [0x80, 0x3ff, 0x61, 0x600 + acpi_pm::PORTS as u16] {
            assert!(!PcDevices::controls_power(port), "{port:#x}");
        }
    }

    #[test]
    fn the_rtc_tells_the_date_and_cmos_the_memory() {
        let (_clock, mut io, _pc, _pic) = machine();
        let cmos = |io: &mut Bus, r: u64| {
            io.write(0x70, 1, r);
            io.read(0x71, 1)
        };
        // 2026-12-04 14:09:33 in BCD.
        assert_eq!([cmos(&mut io, 9), cmos(&mut io, 8), cmos(&mut io, 7)], [0x26, 0x12, 0x04]);
        assert_eq!(cmos(&mut io, 4), 0x14);
        // 64 MiB: 15 MiB between 1 and 16 MiB, 48 MiB above in 64 KiB units.
        assert_eq!(cmos(&mut io, 0x17) | (cmos(&mut io, 0x18) << 8), 15 << 10);
        assert_eq!(cmos(&mut io, 0x34) | (cmos(&mut io, 0x35) << 8), 48 << 4);
    }
}
