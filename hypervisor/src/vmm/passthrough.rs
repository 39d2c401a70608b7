//! Devices handed to the management partition (the Xen dom0 / Jailhouse root-cell model): port
//! ranges reached directly (I/O bitmap bits cleared), MMIO ranges mapped guest-physical =
//! host-physical, PCI functions whose configuration space it may reach through a filtered
//! 0xCF8/0xCFC, with their BARs mapped. `devices = ["all"]` hands over everything the
//! hypervisor does not keep: COM1, the interrupt controllers and timer, the reset ports, the
//! emulators' exit ports, the local APIC, and its own memory.
//!
//! Manifest syntax (each entry one string): `all`, `ports:0x1f0-0x1f7`, `ports:0x3f6`,
//! `mmio:0xfebf0000-0xfebfffff`, `pci:00:1f.2`, `irq:14`. Ranges are inclusive.
//!
//! Interrupts: the host IRQ lines a partition owns are forwarded to its virtual 8259 pair
//! (`arch::x86::pic`, `vmm::interrupts`). It owns the lines named by `irq:N`, the line a PCI
//! function's Interrupt Line register names (when its Interrupt Pin is set), IRQ 14/15 for a
//! PCI IDE function's channels in compatibility mode (PCI IDE Controller Specification 1.0
//! §2: those use the legacy ISA lines), and with `all` every line but [`RESERVED_IRQS`].

use super::bus::{Bus, Device};
use super::vcpu::{SecondLevel, Vcpu};
use crate::arch::x86::instr;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

/// One entry of a partition's `devices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    All,
    Ports(RangeInclusive<u16>),
    Mmio(RangeInclusive<u64>),
    Pci { bus: u8, dev: u8, func: u8 },
    Irq(u8),
}

/// IRQ lines the hypervisor keeps: the PIT (0), the cascade (2), COM1 (4).
pub const RESERVED_IRQS: u16 = (1 << 0) | (1 << 2) | (1 << 4);

/// Ports the hypervisor keeps: COM1, the PICs, the PIT, PCI configuration (filtered instead),
/// the keyboard controller and port 0x92 (both can reset the machine), QEMU's and Bochs' exit
/// ports.
pub const RESERVED_PORTS: [RangeInclusive<u16>; 9] = [
    0x20..=0x21,
    0x40..=0x43,
    0x60..=0x64,
    0x92..=0x92,
    0xa0..=0xa1,
    0xf4..=0xf7,
    0x3f8..=0x3ff,
    0xcf8..=0xcff,
    0x8900..=0x8900,
];

/// The local APIC page: shared by every partition on this CPU, so nobody gets it.
pub const LAPIC_PAGE: u64 = 0xfee0_0000;
/// The I/O APIC page: the management partition gets a virtual one there (`vmm::vioapic`); the
/// host's routes nothing while the hypervisor keeps the 8259s, and is never handed over.
pub const IOAPIC_PAGE: u64 = crate::devices::ioapic::BASE;

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) = (number(a)?, number(b)?);
    (a <= b).then_some((a, b))
}

/// Parses one `devices` entry.
pub fn parse(spec: &str) -> Result<DeviceSpec, String> {
    let bad = |why: &str| format!("device `{spec}`: {why}");
    if spec == "all" {
        return Ok(DeviceSpec::All);
    }
    let (kind, rest) =
        spec.split_once(':').ok_or_else(|| bad("expected all, ports:, mmio:, pci: or irq:"))?;
    match kind {
        "ports" => {
            let (a, b) = range(rest).ok_or_else(|| bad("expected a port or FIRST-LAST"))?;
            if b > 0xffff {
                return Err(bad("ports end at 0xffff"));
            }
            Ok(DeviceSpec::Ports(a as u16..=b as u16))
        }
        "mmio" => {
            let (a, b) = range(rest).ok_or_else(|| bad("expected FIRST-LAST addresses"))?;
            if a % 4096 != 0 || (b + 1) % 4096 != 0 {
                return Err(bad("MMIO ranges must cover whole 4 KiB pages"));
            }
            Ok(DeviceSpec::Mmio(a..=b))
        }
        "irq" => match number(rest) {
            Some(n) if n < 16 && RESERVED_IRQS & (1 << n) == 0 => Ok(DeviceSpec::Irq(n as u8)),
            Some(n) if n < 16 => {
                Err(bad("IRQ 0 (timer), 2 (cascade) and 4 (COM1) stay with the hypervisor"))
            }
            _ => Err(bad("expected an ISA IRQ line 0-15")),
        },
        "pci" => {
            let parts: Vec<&str> = rest.split([':', '.']).collect();
            let [b, d, f] = parts[..] else { return Err(bad("expected pci:BB:DD.F")) };
            let hex = |s: &str| u8::from_str_radix(s, 16).ok();
            match (hex(b), hex(d), hex(f)) {
                (Some(bus), Some(dev), Some(func)) if dev < 32 && func < 8 => {
                    Ok(DeviceSpec::Pci { bus, dev, func })
                }
                _ => Err(bad("expected pci:BB:DD.F with device < 0x20 and function < 8")),
            }
        }
        _ => Err(bad("unknown kind")),
    }
}

/// The parts of `range` that avoid every reserved port.
pub fn allowed_ports(range: RangeInclusive<u16>) -> Vec<RangeInclusive<u16>> {
    allowed_ports_except(range, &[])
}

/// The parts of `range` that avoid every reserved port and the ports in `keep` (registers the
/// hypervisor traps for this partition: `vmm::host_pm`).
pub fn allowed_ports_except(
    range: RangeInclusive<u16>,
    keep: &[RangeInclusive<u16>],
) -> Vec<RangeInclusive<u16>> {
    allowed_in(range, &[&RESERVED_PORTS[..], keep].concat())
}

fn allowed_in(
    range: RangeInclusive<u16>,
    reserved: &[RangeInclusive<u16>],
) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    let mut start = u32::from(*range.start());
    let end = u32::from(*range.end());
    while start <= end {
        match reserved.iter().find(|r| r.contains(&(start as u16))) {
            Some(r) => start = u32::from(*r.end()) + 1,
            None => {
                let stop = reserved
                    .iter()
                    .map(|r| u32::from(*r.start()))
                    .filter(|&s| s > start && s <= end)
                    .min()
                    .map_or(end, |s| s - 1);
                out.push(start as u16..=stop as u16);
                start = stop + 1;
            }
        }
    }
    out
}

/// Which PCI functions the filter lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PciAccess {
    All,
    Only(Vec<(u8, u8, u8)>),
}

impl PciAccess {
    fn allows(&self, bdf: (u8, u8, u8)) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.contains(&bdf),
        }
    }
}

/// PCI configuration mechanism #1 with a filter: the address latch is virtual; data accesses
/// reach the hardware only for the functions the partition owns, others read as absent.
pub struct PciFilter {
    address: u32,
    access: PciAccess,
}

impl PciFilter {
    fn bdf(&self) -> Option<(u8, u8, u8)> {
        (self.address & (1 << 31) != 0).then_some((
            (self.address >> 16) as u8,
            ((self.address >> 11) & 0x1f) as u8,
            ((self.address >> 8) & 7) as u8,
        ))
    }
}

/// Reads configuration dword `reg` of a function (hardware).
fn config_read(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    let addr = (1 << 31)
        | (u32::from(bus) << 16)
        | (u32::from(dev) << 11)
        | (u32::from(func) << 8)
        | u32::from(reg & 0xfc);
    // SAFETY: configuration mechanism #1 (ports 0xcf8/0xcfc) belongs to the hypervisor, which
    // uses it only here and in the filter, never concurrently (one CPU, no interrupts).
    unsafe {
        instr::outl(0xcf8, addr);
        instr::inl(0xcfc)
    }
}

/// Writes configuration dword `reg` of a function (hardware).
fn config_write(bus: u8, dev: u8, func: u8, reg: u8, v: u32) {
    let addr = (1 << 31)
        | (u32::from(bus) << 16)
        | (u32::from(dev) << 11)
        | (u32::from(func) << 8)
        | u32::from(reg & 0xfc);
    // SAFETY: as in `config_read`.
    unsafe {
        instr::outl(0xcf8, addr);
        instr::outl(0xcfc, v);
    }
}

impl Device for PciFilter {
    fn name(&self) -> &'static str {
        "pci-config-filter"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        match (offset, size) {
            (0, 4) => u64::from(self.address),
            (4..=7, _) => match self.bdf() {
                Some(bdf) if self.access.allows(bdf) => {
                    let reg = (self.address & 0xfc) as u8;
                    let v = config_read(bdf.0, bdf.1, bdf.2, reg) >> (8 * (offset - 4));
                    u64::from(v) & if size >= 4 { 0xffff_ffff } else { (1u64 << (8 * size)) - 1 }
                }
                _ => {
                    if size >= 4 {
                        0xffff_ffff
                    } else {
                        (1u64 << (8 * size)) - 1
                    }
                }
            },
            _ => {
                if size >= 4 {
                    0xffff_ffff
                } else {
                    (1u64 << (8 * size)) - 1
                }
            }
        }
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        match (offset, size) {
            (0, 4) => self.address = value as u32,
            (4..=7, _) => {
                if let Some(bdf) = self.bdf().filter(|b| self.access.allows(*b)) {
                    let reg = (self.address & 0xfc) as u8;
                    let shift = 8 * (offset - 4) as u32;
                    let mask = if size >= 4 {
                        u32::MAX
                    } else {
                        ((1u32 << (8 * u32::from(size))) - 1) << shift
                    };
                    let old =
                        if mask == u32::MAX { 0 } else { config_read(bdf.0, bdf.1, bdf.2, reg) };
                    config_write(
                        bdf.0,
                        bdf.1,
                        bdf.2,
                        reg,
                        (old & !mask) | ((value as u32) << shift & mask),
                    );
                }
            }
            // 0xcf9 (reset control) and odd-sized address writes are dropped.
            _ => {}
        }
    }
}

/// Lets every one of `vcpus` reach ports `[first, first+count)` directly: the I/O bitmap is
/// per vCPU (VMX: each VMCS names its own bitmaps, SDM Vol. 3C §25.6.4; SVM: each VMCB its own
/// IOPM, APM Vol. 2 §15.10.1), and a partition's devices are the same for all its vCPUs.
fn pass_ports(vcpus: &mut [&mut dyn Vcpu], first: u16, count: u16) {
    for v in vcpus.iter_mut() {
        v.pass_through_ports(first, count);
    }
}

/// Hands `devices` to a management partition: clears I/O bitmap bits in each of its `vcpus`,
/// maps MMIO identity (the second-level table is the partition's, shared by its vCPUs),
/// installs the PCI filter on its port bus. Returns the host IRQ lines it now owns.
pub fn hand_over(
    devices: &[String],
    vcpus: &mut [&mut dyn Vcpu],
    slat: &mut dyn SecondLevel,
    io: &mut Bus,
    ram_top_below_4g: u64,
    keep: &[RangeInclusive<u16>],
) -> Result<u16, String> {
    let specs = devices.iter().map(|d| parse(d)).collect::<Result<Vec<_>, _>>()?;
    let mut pci = PciAccess::Only(Vec::new());
    let mut irqs = 0u16;
    for spec in &specs {
        match spec {
            DeviceSpec::All => {
                for r in allowed_ports_except(0..=0xffff, keep) {
                    pass_ports(vcpus, *r.start(), r.end() - r.start() + 1);
                }
                // Everything above RAM in the first 4 GiB is device space, except the local
                // APIC and the hypervisor's own virtual devices' windows.
                let top = super::firmware::ram_like_end(ram_top_below_4g);
                let holes = [
                    hvabi::channel::BASE_GPA..hvabi::channel::BASE_GPA + (2 << 20),
                    hvabi::start::SYSINFO_GPA & !0x1f_ffff
                        ..(hvabi::start::SYSINFO_GPA & !0x1f_ffff) + (2 << 20),
                    LAPIC_PAGE..LAPIC_PAGE + 4096,
                    IOAPIC_PAGE..IOAPIC_PAGE + 4096,
                ];
                // 0xA0000-0xFFFFF is the firmware's window, mapped for every management
                // partition (`vmm::firmware`).
                map_except(slat, top..1 << 32, &holes)?;
                pci = PciAccess::All;
                irqs = !RESERVED_IRQS;
            }
            DeviceSpec::Irq(n) => irqs |= 1 << n,
            DeviceSpec::Ports(r) => {
                for a in allowed_ports_except(r.clone(), keep) {
                    pass_ports(vcpus, *a.start(), a.end() - a.start() + 1);
                }
            }
            DeviceSpec::Mmio(r) => {
                if r.contains(&LAPIC_PAGE) || r.contains(&IOAPIC_PAGE) {
                    return Err(format!(
                        "device mmio:{:#x}-{:#x}: the local APIC and the I/O APIC stay with the \
                         hypervisor",
                        r.start(),
                        r.end()
                    ));
                }
                slat.map_mmio(*r.start(), *r.start(), r.end() - r.start() + 1)
                    .map_err(|e| format!("mapping MMIO {:#x}: {e:?}", r.start()))?;
            }
            DeviceSpec::Pci { bus, dev, func } => {
                if let PciAccess::Only(list) = &mut pci {
                    list.push((*bus, *dev, *func));
                }
                map_bars(*bus, *dev, *func, vcpus, slat)?;
                irqs |= function_irqs(*bus, *dev, *func);
            }
        }
    }
    io.attach(0xcf8..0xd00, Box::new(PciFilter { address: 0, access: pci }));
    Ok(irqs & !RESERVED_IRQS)
}

/// The ISA IRQ lines a PCI function interrupts on (see the module comment).
fn function_irqs(bus: u8, dev: u8, func: u8) -> u16 {
    let class = config_read(bus, dev, func, 0x08);
    let int = config_read(bus, dev, func, 0x3c);
    irqs_from_config(class, int)
}

/// [`function_irqs`] from the class/revision dword (0x08) and the interrupt dword (0x3c).
fn irqs_from_config(class: u32, int: u32) -> u16 {
    let (base, sub, prog_if) = ((class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8);
    let (line, pin) = (int as u8, (int >> 8) as u8);
    let mut irqs = 0;
    if pin != 0 && line < 16 {
        irqs |= 1 << line;
    }
    if (base, sub) == (0x01, 0x01) {
        // Programming interface bit 0 (primary) and bit 2 (secondary): native-PCI mode.
        if prog_if & 0x01 == 0 {
            irqs |= 1 << 14;
        }
        if prog_if & 0x04 == 0 {
            irqs |= 1 << 15;
        }
    }
    irqs
}

/// Maps `[range)` identity as MMIO, leaving out `holes`.
fn map_except(
    slat: &mut dyn SecondLevel,
    range: core::ops::Range<u64>,
    holes: &[core::ops::Range<u64>],
) -> Result<(), String> {
    let mut at = range.start;
    while at < range.end {
        if let Some(h) = holes.iter().find(|h| h.contains(&at)) {
            at = h.end;
            continue;
        }
        let next_hole = holes
            .iter()
            .map(|h| h.start)
            .filter(|&s| s > at && s < range.end)
            .min()
            .unwrap_or(range.end);
        slat.map_mmio(at, at, next_hole - at)
            .map_err(|e| format!("mapping device space at {at:#x}: {e:?}"))?;
        at = next_hole;
    }
    Ok(())
}

/// Sizes the function's BARs (PCI Local Bus 3.0 §6.2.5.1) and hands their space over.
fn map_bars(
    bus: u8,
    dev: u8,
    func: u8,
    vcpus: &mut [&mut dyn Vcpu],
    slat: &mut dyn SecondLevel,
) -> Result<(), String> {
    if config_read(bus, dev, func, 0) & 0xffff == 0xffff {
        return Err(format!("device pci:{bus:02x}:{dev:02x}.{func}: no such function"));
    }
    let mut reg = 0x10;
    while reg <= 0x24 {
        let orig = config_read(bus, dev, func, reg);
        config_write(bus, dev, func, reg, u32::MAX);
        let probe = config_read(bus, dev, func, reg);
        config_write(bus, dev, func, reg, orig);
        let step = if orig & 1 == 0 && (orig >> 1) & 3 == 2 { 8 } else { 4 };
        if probe != 0 && orig != 0 {
            if orig & 1 == 1 {
                let size = (!(probe & !3)).wrapping_add(1) & 0xffff;
                pass_ports(vcpus, (orig & !3) as u16, size as u16);
            } else {
                let size = u64::from((!(probe & !0xf)).wrapping_add(1));
                let base = u64::from(orig & !0xf)
                    | if step == 8 {
                        u64::from(config_read(bus, dev, func, reg + 4)) << 32
                    } else {
                        0
                    };
                let len = crate::mm::addr::align_up(size, 4096);
                slat.map_mmio(base & !0xfff, base & !0xfff, len).map_err(|e| {
                    format!("mapping BAR {reg:#x} of {bus:02x}:{dev:02x}.{func}: {e:?}")
                })?;
            }
        }
        reg += step;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!(parse("all"), Ok(DeviceSpec::All));
        assert_eq!(parse("ports:0x1f0-0x1f7"), Ok(DeviceSpec::Ports(0x1f0..=0x1f7)));
        assert_eq!(parse("ports:0x3f6"), Ok(DeviceSpec::Ports(0x3f6..=0x3f6)));
        assert_eq!(
            parse("mmio:0xfebf0000-0xfebfffff"),
            Ok(DeviceSpec::Mmio(0xfebf_0000..=0xfebf_ffff))
        );
        assert_eq!(parse("pci:00:1f.2"), Ok(DeviceSpec::Pci { bus: 0, dev: 0x1f, func: 2 }));
        for bad in [
            "",
            "disk",
            "ports:",
            "ports:0x10-0x1",
            "ports:0x10000",
            "mmio:0x1000-0x1fff0",
            "pci:00:20.0",
            "pci:0:1",
            "usb:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn irq_specs_and_pci_interrupt_lines() {
        assert_eq!(parse("irq:14"), Ok(DeviceSpec::Irq(14)));
        assert_eq!(parse("irq:0xb"), Ok(DeviceSpec::Irq(11)));
        for bad in ["irq:", "irq:16", "irq:0", "irq:2", "irq:4", "irq:x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // PIIX3 IDE (class 01.01, prog-if 0x80: both channels in compatibility mode, no pin).
        assert_eq!(irqs_from_config(0x0101_8000, 0x0000_00ff), (1 << 14) | (1 << 15));
        // Native-PCI IDE on pin A, line 11.
        assert_eq!(irqs_from_config(0x0101_8f00, 0x0000_010b), 1 << 11);
        // A network card on pin A, line 11; no pin: no line (0xff = unknown is ignored too).
        assert_eq!(irqs_from_config(0x0200_0000, 0x0000_010b), 1 << 11);
        assert_eq!(irqs_from_config(0x0200_0000, 0x0000_000b), 0);
        assert_eq!(irqs_from_config(0x0200_0000, 0x0000_01ff), 0);
    }

    #[test]
    fn reserved_ports_are_never_handed_over() {
        let all = allowed_ports(0..=0xffff);
        for port in
            [0x20u16, 0x21, 0x40, 0x64, 0x92, 0xa1, 0xf4, 0x3f8, 0x3ff, 0xcf8, 0xcfc, 0x8900]
        {
            assert!(!all.iter().any(|r| r.contains(&port)), "{port:#x}");
        }
        for port in [0x1f0u16, 0x1f7, 0x3f6, 0x80, 0xcf7, 0xd00, 0xffff, 0] {
            assert!(all.iter().any(|r| r.contains(&port)), "{port:#x}");
        }
        assert_eq!(allowed_ports(0x3f0..=0x3ff), [0x3f0..=0x3f7]);
        assert_eq!(allowed_ports(0x1f0..=0x1f7), [0x1f0..=0x1f7]);
    }

    #[test]
    fn kept_ports_stay_trapped() {
        let keep = [0x604..=0x605, 0xb004..=0xb005];
        let all = allowed_ports_except(0..=0xffff, &keep);
        for port in [0x604u16, 0x605, 0xb004, 0xb005, 0x40, 0x3f8] {
            assert!(!all.iter().any(|r| r.contains(&port)), "{port:#x}");
        }
        for port in [0x600u16, 0x603, 0x606, 0x608, 0xb003, 0xb006] {
            assert!(all.iter().any(|r| r.contains(&port)), "{port:#x}");
        }
        assert_eq!(allowed_ports_except(0x600..=0x60b, &keep), [0x600..=0x603, 0x606..=0x60b]);
    }

    #[test]
    fn filter_latches_and_hides_foreign_functions() {
        let mut f = PciFilter { address: 0, access: PciAccess::Only(alloc::vec![(0, 3, 0)]) };
        f.write(0, 4, 0x8000_1800); // bus 0 dev 3 fn 0, register 0
        assert_eq!(f.read(0, 4), 0x8000_1800);
        assert_eq!(f.bdf(), Some((0, 3, 0)));
        f.write(0, 4, 0x8000_2000); // dev 4: not ours
        assert_eq!(f.read(4, 4), 0xffff_ffff);
        assert_eq!(f.read(6, 2), 0xffff);
        f.write(4, 4, 0x1234); // dropped, never reaches hardware in this test
        f.write(1, 1, 0x6); // 0xcf9 reset control: dropped
        assert_eq!(f.read(0, 4), 0x8000_2000);
    }
}
