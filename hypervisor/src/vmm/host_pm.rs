//! The machine's ACPI PM1 control registers as the management partition reaches them: every
//! access goes to the hardware, except a write that sets SLP_EN (ACPI 6.5 §4.8.4.2.1, PM1
//! Control Registers; §7.4.2, the sleeping-state sequence). The management partition owns the
//! machine, but other partitions run on it: its soft-off (S5, the sleeping type of the DSDT's
//! `\_S5` object, §7.4.2.6) ends the partition (the hypervisor then applies its `on_stop`, and
//! `poweroff` powers the machine off once every partition is accounted for), and the other
//! sleeping states (S1-S4), which would stop the whole machine under the other partitions, are
//! not entered: the write is dropped, as a chipset drops an SLP_TYP it does not implement.
//!
//! The registers' ports come from the firmware's FADT (PM1a_CNT_BLK at offset 64, PM1b_CNT_BLK
//! at offset 68, §5.2.9 Table 5.9), `\_S5` from its DSDT ([`s5_slp_typ`]).

use super::bus::Device;
use crate::arch::x86::instr;
use alloc::vec::Vec;

/// SLP_EN, bit 13 of PM1_CNT.
const SLP_EN: u16 = 1 << 13;
/// SLP_TYP, bits 12:10 of PM1_CNT.
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;

/// AML opcodes (ACPI 6.5 §20.2): NameOp, PackageOp, BytePrefix, ZeroOp, OneOp.
const NAME_OP: u8 = 0x08;
const PACKAGE_OP: u8 = 0x12;
const BYTE_PREFIX: u8 = 0x0a;

/// The SLP_TYP value for PM1a of the DSDT's `\_S5` package (`Name (_S5, Package () {a, b,
/// ...})`, §7.4.2: its first element is PM1a's SLP_TYP), found by the usual scan for the
/// name followed by a package whose first element is an integer constant (ZeroOp, OneOp or a
/// BytePrefix byte). `None` where the DSDT has no such object.
pub fn s5_slp_typ(dsdt: &[u8]) -> Option<u16> {
    let at = dsdt.windows(4).position(|w| w == b"_S5_")?;
    // NameOp right before the name, or before a root prefix `\`.
    let named = at >= 1
        && (dsdt[at - 1] == NAME_OP
            || (at >= 2 && dsdt[at - 1] == b'\\' && dsdt[at - 2] == NAME_OP));
    let rest = dsdt.get(at + 4..)?;
    if !named || rest.first() != Some(&PACKAGE_OP) {
        return None;
    }
    // PkgLength: bits 7:6 of its lead byte count the bytes that follow it (§20.2.4).
    let lead = *rest.get(1)?;
    let pkg_len_bytes = 1 + usize::from(lead >> 6);
    // Then NumElements, then the first element.
    let first = 1 + pkg_len_bytes + 1;
    match *rest.get(first)? {
        0x00 => Some(0),
        0x01 => Some(1),
        BYTE_PREFIX => rest.get(first + 1).map(|&b| u16::from(b) & 0b111),
        _ => None,
    }
}

/// What a write to PM1_CNT asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CntWrite {
    /// No SLP_EN: the write goes to the hardware.
    Pass,
    /// Soft-off (S5).
    SoftOff,
    /// Another sleeping state (SLP_TYP): not entered, the write dropped.
    Sleep(u16),
}

/// Classifies a PM1_CNT write of `value`, given `\_S5`'s SLP_TYP (`None`: unknown, so any
/// sleep request is taken for soft-off, the only one an OS makes on a machine it powers off).
pub fn classify(value: u16, s5: Option<u16>) -> CntWrite {
    if value & SLP_EN == 0 {
        return CntWrite::Pass;
    }
    let typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
    match s5 {
        Some(s5) if s5 != typ => CntWrite::Sleep(typ),
        _ => CntWrite::SoftOff,
    }
}

/// One PM1 control register (2 ports) of the machine, trapped for the management partition.
pub struct HostPmCnt {
    port: u16,
    s5: Option<u16>,
    /// Set by a soft-off write, taken by [`HostPmCnt::take_poweroff`].
    poweroff: bool,
}

impl HostPmCnt {
    pub fn new(port: u16, s5: Option<u16>) -> Self {
        Self { port, s5, poweroff: false }
    }

    pub fn take_poweroff(&mut self) -> bool {
        core::mem::take(&mut self.poweroff)
    }
}

impl Device for HostPmCnt {
    fn name(&self) -> &'static str {
        "host-pm1-cnt"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let port = self.port.wrapping_add(offset as u16);
        // SAFETY: the machine's PM1 control register, which the management partition owns
        // (it is handed every device the hypervisor does not keep); a read has no side effect.
        unsafe {
            match size {
                1 => u64::from(instr::inb(port)),
                _ => u64::from(instr::inw(port)),
            }
        }
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        let port = self.port.wrapping_add(offset as u16);
        // A byte write to the high half carries SLP_EN and SLP_TYP in its bits 5 and 4:2.
        let as_cnt = if offset == 1 && size == 1 { (value as u16) << 8 } else { value as u16 };
        match classify(as_cnt, self.s5) {
            CntWrite::SoftOff => self.poweroff = true,
            CntWrite::Sleep(typ) => {
                log::warn!("the management partition asked for sleeping type {typ}: not entered")
            }
            // SAFETY: as in `read`; a write without SLP_EN only sets SCI_EN, BM_RLD, GBL_RLS.
            CntWrite::Pass => unsafe {
                match size {
                    1 => instr::outb(port, value as u8),
                    _ => instr::outw(port, value as u16),
                }
            },
        }
    }
}

/// The PM1 control registers to trap for partition `config`: the machine's (FADT and DSDT,
/// `firmware_acpi::host_fadt_dsdt`) for a management partition handed every device
/// (`all_devices`); none for another (one handed a few devices gets no reach to them).
pub fn for_partition(
    config: &super::config::PartitionConfig,
    all_devices: bool,
    platform: &super::platform::Platform,
) -> Vec<(u16, HostPmCnt)> {
    let regs = match (config.management && all_devices, platform.firmware_rsdp) {
        (true, Some(rsdp)) => super::firmware_acpi::host_fadt_dsdt(rsdp)
            .map(|(fadt, dsdt)| from_fadt(&fadt, dsdt.as_deref()))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for (port, _) in &regs {
        log::info!("partition {}: the machine's PM1 control at {port:#x} trapped", config.name);
    }
    regs
}

/// The management partition's trapped PM1 control registers, from the host's FADT (`fadt`)
/// and DSDT: `(port, device)` for PM1a_CNT and, where set, PM1b_CNT.
pub fn from_fadt(fadt: &[u8], dsdt: Option<&[u8]>) -> Vec<(u16, HostPmCnt)> {
    let s5 = dsdt.and_then(s5_slp_typ);
    let port = |at: usize| {
        let b = fadt.get(at..at + 4)?;
        let p = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        (p != 0 && p < 0xffff).then_some(p as u16)
    };
    [port(64), port(68)].into_iter().flatten().map(|p| (p, HostPmCnt::new(p, s5))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_from_qemu_and_other_dsdts() {
        // QEMU's: Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero }).
        let qemu = [0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(s5_slp_typ(&qemu), Some(0));
        // Name (\_S5, Package (2) { 0x05, 0x05 }).
        let byte = [0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x02, 0x0a, 0x05, 0x0a, 0x05];
        assert_eq!(s5_slp_typ(&byte), Some(5));
        // A two-byte PkgLength, One.
        let long = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x01, 0x02, 0x01, 0x01];
        assert_eq!(s5_slp_typ(&long), Some(1));
        assert_eq!(s5_slp_typ(b"no such object"), None);
        // A reference to _S5_ that is no package.
        assert_eq!(s5_slp_typ(&[0x70, b'_', b'S', b'5', b'_', 0x60]), None);
    }

    #[test]
    fn only_slp_en_writes_are_kept_from_the_hardware() {
        assert_eq!(classify(0x0001, Some(0)), CntWrite::Pass, "SCI_EN alone");
        assert_eq!(classify(0x2000, Some(0)), CntWrite::SoftOff, "S5 = SLP_TYP 0");
        assert_eq!(classify(0x2000 | (5 << 10), Some(0)), CntWrite::Sleep(5));
        assert_eq!(classify(0x2000 | (5 << 10), Some(5)), CntWrite::SoftOff);
        assert_eq!(classify(0x2000 | (1 << 10), None), CntWrite::SoftOff, "unknown \\_S5");
        assert_eq!(classify(1 << 10, None), CntWrite::Pass, "SLP_TYP without SLP_EN");
    }

    #[test]
    fn the_fadt_gives_the_ports() {
        let mut fadt = [0u8; 116];
        fadt[64..68].copy_from_slice(&0x604u32.to_le_bytes());
        let regs = from_fadt(&fadt, None);
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0].0, 0x604);
        fadt[68..72].copy_from_slice(&0xb004u32.to_le_bytes());
        assert_eq!(from_fadt(&fadt, None).len(), 2);
        assert!(from_fadt(&[0u8; 40], None).is_empty(), "too short: none");
    }
}
