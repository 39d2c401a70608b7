//! The ACPI tables a guest partition finds as on a PC (ACPI 6.5 ch. 5): an RSDP in the BIOS
//! area (found by the search of §5.2.5.1, 16-byte aligned in 0xE0000-0xFFFFF), an RSDT and
//! XSDT listing one FADT, whose FACS, DSDT and fixed-hardware register blocks describe the
//! partition's power-management ports ([`crate::devices::acpi_pm`]) and its reset register
//! (0xCF9). The DSDT holds one object, `\_S5`, so that the OS can power the partition off
//! the normal way (§7.4.2: SLP_TYPa = 5 with SLP_EN into PM1a_CNT).
//!
//! The MADT (§5.2.12) lists one Processor Local APIC per vCPU (x2APIC entries for IDs from
//! 255 up), the local APICs at 0xFEE0_0000 (`vmm/vlapic.rs`), the NMI on every APIC's LINT1
//! as a PC wires it, and PCAT_COMPAT: the 8259 pair is there, reaching the CPU through LINT0
//! in ExtINT mode (virtual wire). No I/O APIC: a partition has none, so the OS stays in
//! virtual-wire mode (Linux: "APIC: Switch to virtual wire mode").

use crate::vmm::vlapic::APIC_BASE;

use alloc::vec;
use alloc::vec::Vec;

/// Where the tables go: the start of the BIOS area the e820 map reserves, which the RSDP
/// search covers.
pub const TABLES_GPA: u64 = 0xe_0000;
/// The power-management block's first port (PM1a_EVT; PM1a_CNT at +4; its PM timer at +8 is
/// not announced, see [`tables`]).
pub const PM_PORT: u16 = 0x600;
/// The SCI's IRQ (the PC convention; §5.2.9 SCI_INT).
pub const SCI_IRQ: u16 = 9;

/// Offsets of each table in the blob.
const RSDP: usize = 0;
const RSDT: usize = 0x40;
const XSDT: usize = 0x80;
const FACS: usize = 0xc0; // 64-byte aligned (§5.2.10)
const FADT: usize = 0x100;
const DSDT: usize = 0x240;
const MADT: usize = 0x280;
/// MADT bytes before its entries (§5.2.12, Table 5.41).
const MADT_HEADER: usize = 44;
/// Local APIC NMI structure (§5.2.12.7): every processor (UID 0xFF), LINT1, edge-triggered,
/// active high (MPS INTI flags 0b0101).
const MADT_NMI: [u8; 6] = [4, 6, 0xff, 0b0101, 0, 1];
/// The most vCPUs the tables describe.
pub const MAX_VCPUS: u32 = 256;

const OEM_ID: &[u8; 6] = b"MICROH";
const OEM_TABLE_ID: &[u8; 8] = b"MICROHV ";
const CREATOR_ID: &[u8; 4] = b"MHV ";

/// `Name (\_S5, Package (4) { 5, 5, 0, 0 })` in AML (§19.6.90, §20.2.5): NameOp, the name,
/// PackageOp, PkgLength 8, four elements (BytePrefix 5, BytePrefix 5, ZeroOp, ZeroOp).
const S5_AML: [u8; 14] = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 5, 0x0a, 5, 0, 0];

/// The MADT entry of the vCPU with ACPI processor UID and APIC ID `id`: a Processor Local
/// APIC (§5.2.12.2) below 255, a Processor Local x2APIC (§5.2.12.12) from there; enabled.
fn madt_cpu(id: u32) -> Vec<u8> {
    if id < 255 {
        vec![0, 8, id as u8, id as u8, 1, 0, 0, 0]
    } else {
        let mut e = vec![9, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&id.to_le_bytes());
        e
    }
}

/// The MADT of a partition of `vcpus` vCPUs (APIC IDs 0 up; clamped to 1..=[`MAX_VCPUS`]):
/// one local APIC each, the NMI on LINT1, PCAT_COMPAT (also the management partition's, in
/// place of the host's: `vmm::firmware_acpi`).
pub fn madt(vcpus: u32) -> Vec<u8> {
    madt_with(vcpus, &[])
}

/// [`madt`] with `extra` interrupt controller structures after the processors' (the
/// management partition's I/O APIC and its interrupt source override: `vmm::vioapic`).
pub fn madt_with(vcpus: u32, extra: &[u8]) -> Vec<u8> {
    let mut madt = vec![0u8; MADT_HEADER];
    for id in 0..vcpus.clamp(1, MAX_VCPUS) {
        madt.extend(madt_cpu(id));
    }
    madt.extend_from_slice(&MADT_NMI);
    madt.extend_from_slice(extra);
    let len = madt.len();
    header(&mut madt, b"APIC", len, 5);
    put32(&mut madt, 36, APIC_BASE as u32);
    put32(&mut madt, 40, 1); // PCAT_COMPAT
    checksum(&mut madt, 9);
    madt
}

/// The tables for a partition of `vcpus` vCPUs (APIC IDs 0 up; clamped to 1..=[`MAX_VCPUS`]),
/// to be written at [`TABLES_GPA`] (their pointers assume that address).
pub fn tables(vcpus: u32) -> Vec<u8> {
    let base = TABLES_GPA;
    let madt = madt(vcpus);
    let mut blob = vec![0u8; MADT + madt.len()];
    blob[MADT..].copy_from_slice(&madt);
    let at = |off: usize| base + off as u64;

    // DSDT.
    let dsdt = &mut blob[DSDT..];
    header(dsdt, b"DSDT", 36 + S5_AML.len(), 2);
    dsdt[36..36 + S5_AML.len()].copy_from_slice(&S5_AML);
    checksum(&mut dsdt[..36 + S5_AML.len()], 9);

    // FACS (§5.2.10, version 2): no checksum.
    let facs = &mut blob[FACS..FACS + 64];
    facs[0..4].copy_from_slice(b"FACS");
    put32(facs, 4, 64);
    facs[32] = 2;

    // FADT (§5.2.9, revision 6.5: 276 bytes).
    let f = &mut blob[FADT..FADT + 276];
    header(f, b"FACP", 276, 6);
    put32(f, 36, at(FACS) as u32);
    put32(f, 40, at(DSDT) as u32);
    put16(f, 46, SCI_IRQ);
    // SMI_CMD (48) stays 0: the hardware is in ACPI mode from reset.
    let pm = u32::from(PM_PORT);
    put32(f, 56, pm); // PM1a_EVT_BLK
    put32(f, 64, pm + 4); // PM1a_CNT_BLK
    // PM_TMR_BLK (76) and PM_TMR_LEN (91) stay 0: no PM timer is announced, though the block
    // has one. Every read of it is an exit, and a kernel that picks it as its clocksource
    // (Linux does once it finds its TSC unstable, which happens under Bochs, whose TSC counts
    // instructions) spends its timer ticks in exits and falls behind for good. The TSC,
    // whose rate the partition is told, is the clock to use.
    f[88] = 4; // PM1_EVT_LEN
    f[89] = 2; // PM1_CNT_LEN
    put16(f, 96, 101); // P_LVL2_LAT > 100: no C2
    put16(f, 98, 1001); // P_LVL3_LAT > 1000: no C3
    f[108] = 0x32; // CENTURY: the RTC's CMOS byte 0x32
    // IAPC_BOOT_ARCH: LEGACY_DEVICES, no 8042, VGA not present, no MSI, no ASPM.
    put16(f, 109, 0b1_0101);
    // Flags: WBINVD, PROC_C1, no fixed power or sleep button, RESET_REG_SUP.
    put32(f, 112, 1 | 1 << 2 | 1 << 4 | 1 << 5 | 1 << 10);
    gas(f, 116, 8, 1, 0xcf9); // RESET_REG: the reset control register
    f[128] = 0x06; // RESET_VALUE: full reset (RST_CPU | SYS_RST)
    f[131] = 5; // FADT minor version
    put64(f, 132, at(FACS));
    put64(f, 140, at(DSDT));
    gas(f, 148, 32, 2, u64::from(pm)); // X_PM1a_EVT_BLK
    gas(f, 172, 16, 2, u64::from(pm + 4)); // X_PM1a_CNT_BLK
    f[268..276].copy_from_slice(b"MicroHV\0"); // hypervisor vendor identity
    checksum(f, 9);

    // RSDT (32-bit pointers) and XSDT (64-bit), each listing the FADT and the MADT.
    let r = &mut blob[RSDT..RSDT + 44];
    header(r, b"RSDT", 44, 1);
    put32(r, 36, at(FADT) as u32);
    put32(r, 40, at(MADT) as u32);
    checksum(r, 9);
    let x = &mut blob[XSDT..XSDT + 52];
    header(x, b"XSDT", 52, 1);
    put64(x, 36, at(FADT));
    put64(x, 44, at(MADT));
    checksum(x, 9);

    // RSDP (§5.2.5.3, revision 2: 36 bytes, two checksums).
    let p = &mut blob[RSDP..RSDP + 36];
    p[0..8].copy_from_slice(b"RSD PTR ");
    p[9..15].copy_from_slice(OEM_ID);
    p[15] = 2;
    put32(p, 16, at(RSDT) as u32);
    put32(p, 20, 36);
    put64(p, 24, at(XSDT));
    checksum(&mut p[..20], 8);
    checksum(p, 32);
    blob
}

/// The common 36-byte header (§5.2.6), checksum left for [`checksum`].
fn header(t: &mut [u8], sig: &[u8; 4], len: usize, revision: u8) {
    t[0..4].copy_from_slice(sig);
    put32(t, 4, len as u32);
    t[8] = revision;
    t[10..16].copy_from_slice(OEM_ID);
    t[16..24].copy_from_slice(OEM_TABLE_ID);
    put32(t, 24, 1);
    t[28..32].copy_from_slice(CREATOR_ID);
    put32(t, 32, 1);
}

/// A Generic Address Structure in system I/O space (§5.2.3.2): bit width, access size
/// (1 byte, 2 word, 3 dword), port.
fn gas(t: &mut [u8], off: usize, bits: u8, access: u8, port: u64) {
    t[off] = 1;
    t[off + 1] = bits;
    t[off + 2] = 0;
    t[off + 3] = access;
    put64(t, off + 4, port);
}

/// Sets byte `at` so that all of `t` sums to 0 mod 256.
fn checksum(t: &mut [u8], at: usize) {
    t[at] = 0;
    let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    t[at] = sum.wrapping_neg();
}

fn put16(t: &mut [u8], off: usize, v: u16) {
    t[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(t: &mut [u8], off: usize, v: u32) {
    t[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(t: &mut [u8], off: usize, v: u64) {
    t[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x)) == 0
    }
    /// The table whose guest-physical address is `gpa`, by its own length.
    fn table(blob: &[u8], gpa: u64) -> &[u8] {
        let off = (gpa - TABLES_GPA) as usize;
        &blob[off..off + u32_at(blob, off + 4) as usize]
    }

    /// Walks the tables as an OS does (ACPI §5.2.5-§5.2.9) and checks every checksum.
    #[test]
    fn an_os_finds_the_fadt_and_its_registers_from_the_rsdp() {
        let blob = tables(1);
        // The RSDP search: "RSD PTR " on a 16-byte boundary, both checksums.
        let rsdp =
            (0..blob.len()).step_by(16).find(|&o| blob[o..].starts_with(b"RSD PTR ")).unwrap();
        let p = &blob[rsdp..rsdp + 36];
        assert!(sums_to_zero(&p[..20]) && sums_to_zero(p));
        assert_eq!(p[15], 2, "revision 2: the XSDT is there");
        let xsdt = table(&blob, u64_at(p, 24));
        let rsdt = table(&blob, u64::from(u32_at(p, 16)));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(&rsdt[..4], b"RSDT");
        assert!(sums_to_zero(xsdt) && sums_to_zero(rsdt));
        assert_eq!(u64_at(xsdt, 36), u64::from(u32_at(rsdt, 36)), "both list the FADT");
        let fadt = table(&blob, u64_at(xsdt, 36));
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(fadt.len(), 276);
        assert!(sums_to_zero(fadt));
        assert_eq!(u32_at(fadt, 64), u32::from(PM_PORT) + 4, "PM1a_CNT_BLK");
        assert_eq!(u64_at(fadt, 172 + 4), u64::from(PM_PORT) + 4, "X_PM1a_CNT_BLK");
        assert_eq!((u32_at(fadt, 76), fadt[91], u64_at(fadt, 212)), (0, 0, 0), "no PM timer");
        assert_eq!(u32_at(fadt, 48), 0, "no SMI_CMD: always in ACPI mode");
        let dsdt = table(&blob, u64_at(fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert!(sums_to_zero(dsdt));
        assert_eq!(u64::from(u32_at(fadt, 40)), u64_at(fadt, 140), "DSDT and X_DSDT agree");
        // \_S5's first element is the SLP_TYP the PM block powers off for.
        let aml = &dsdt[36..];
        assert_eq!(&aml[1..5], b"_S5_");
        assert_eq!(u16::from(aml[9]), crate::devices::acpi_pm::S5_SLP_TYP);
        let facs_gpa = u64_at(fadt, 132);
        assert_eq!(facs_gpa % 64, 0, "FACS 64-byte aligned");
        assert_eq!(&table(&blob, facs_gpa)[..4], b"FACS");
        assert!(TABLES_GPA + blob.len() as u64 <= 0x10_0000, "inside the BIOS area");
    }

    /// The management partition's MADT: its I/O APIC entries follow the processor's and the
    /// NMI's, inside the length and the checksum.
    #[test]
    fn extra_entries_are_inside_the_madt() {
        let extra = crate::vmm::vioapic::madt_entries(0);
        let plain = madt(1);
        let with = madt_with(1, &extra);
        assert_eq!(with.len(), plain.len() + extra.len());
        assert_eq!(u32_at(&with, 4) as usize, with.len(), "header length");
        assert!(sums_to_zero(&with));
        assert_eq!(&with[plain.len()..], &extra[..]);
        assert_eq!((with[plain.len()], with[plain.len() + 1]), (1, 12), "an I/O APIC entry");
    }

    /// The MADT an OS finds through the XSDT and RSDT: checksum, the APIC address,
    /// PCAT_COMPAT, one enabled processor entry per vCPU with its APIC ID, LINT1 as NMI.
    #[test]
    fn the_madt_lists_every_vcpu() {
        for vcpus in [1u32, 2, 4, 300] {
            let blob = tables(vcpus);
            let p = &blob[RSDP..RSDP + 36];
            let xsdt = table(&blob, u64_at(p, 24));
            let rsdt = table(&blob, u64::from(u32_at(p, 16)));
            assert_eq!((xsdt.len(), rsdt.len()), (52, 44), "two tables listed");
            assert!(sums_to_zero(xsdt) && sums_to_zero(rsdt));
            assert_eq!(u64_at(xsdt, 44), u64::from(u32_at(rsdt, 40)));
            let madt = table(&blob, u64_at(xsdt, 44));
            assert_eq!(&madt[..4], b"APIC");
            assert!(sums_to_zero(madt), "{vcpus} vCPUs: checksum");
            assert_eq!(u32_at(madt, 36), 0xfee0_0000, "local APIC address");
            assert_eq!(u32_at(madt, 40) & 1, 1, "PCAT_COMPAT: 8259 pair present");
            let (mut ids, mut nmis, mut off) = (Vec::new(), Vec::new(), MADT_HEADER);
            while off < madt.len() {
                let (kind, len) = (madt[off], usize::from(madt[off + 1]));
                let e = &madt[off..off + len];
                match kind {
                    0 => {
                        assert_eq!(len, 8);
                        assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
                        ids.push(u32::from(e[3]));
                    }
                    9 => {
                        assert_eq!(len, 16);
                        assert_eq!(u32_at(e, 8) & 1, 1, "enabled");
                        ids.push(u32_at(e, 4));
                    }
                    4 => nmis.push((e[2], e[5])),
                    1 => panic!("an I/O APIC entry, but no partition has one"),
                    k => panic!("unexpected MADT entry type {k}"),
                }
                off += len;
            }
            assert_eq!(off, madt.len(), "entries fill the table exactly");
            assert_eq!(ids, (0..vcpus.min(MAX_VCPUS)).collect::<Vec<_>>(), "clamped to MAX_VCPUS");
            assert_eq!(nmis, [(0xff, 1)], "NMI on LINT1 of every processor");
            assert!(TABLES_GPA + blob.len() as u64 <= 0x10_0000, "inside the BIOS area");
        }
    }
}
