use super::*;
use alloc::vec;

/// Physical memory made of byte blocks; anything else is unreadable.
#[derive(Default)]
struct Mem(Vec<(u64, Vec<u8>)>);

impl PhysRead for Mem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), AcpiError> {
        for (base, bytes) in &self.0 {
            let end = base + bytes.len() as u64;
            if addr >= *base && addr.checked_add(buf.len() as u64).is_some_and(|e| e <= end) {
                let off = (addr - base) as usize;
                buf.copy_from_slice(&bytes[off..off + buf.len()]);
                return Ok(());
            }
        }
        Err(AcpiError::Unreadable(addr))
    }
}

fn fix_checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    bytes[at] = 0u8.wrapping_sub(sum);
}

fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; HEADER];
    t[..4].copy_from_slice(sig);
    t.extend_from_slice(body);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[8] = 1;
    fix_checksum(&mut t, 9);
    t
}

fn rsdp(revision: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut r = vec![0u8; 36];
    r[..8].copy_from_slice(RSDP_SIG);
    r[15] = revision;
    r[16..20].copy_from_slice(&rsdt.to_le_bytes());
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    fix_checksum(&mut r[..20], 8);
    fix_checksum(&mut r, 32);
    r
}

fn lapic_entry(uid: u8, id: u8, flags: u32) -> Vec<u8> {
    let mut e = vec![0, 8, uid, id];
    e.extend_from_slice(&flags.to_le_bytes());
    e
}

fn x2apic_entry(id: u32, flags: u32, uid: u32) -> Vec<u8> {
    let mut e = vec![9, 16, 0, 0];
    e.extend_from_slice(&id.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&uid.to_le_bytes());
    e
}

fn madt_body(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut b = 0xfee0_0000u32.to_le_bytes().to_vec();
    b.extend_from_slice(&1u32.to_le_bytes());
    for e in entries {
        b.extend_from_slice(e);
    }
    b
}

const MADT_AT: u64 = 0x7fe_1000;
const XSDT_AT: u64 = 0x7fe_0000;
const RSDT_AT: u64 = 0x7fe_0800;

/// A machine whose BIOS area holds an RSDP at 0xf5a40 pointing to an RSDT and an XSDT, both
/// listing a FACP-like table and the MADT.
fn machine(madt: Vec<u8>) -> Mem {
    let mut bios = vec![0u8; 0x2_0000];
    let at = 0x1_5a40;
    bios[at..at + 36].copy_from_slice(&rsdp(2, RSDT_AT as u32, XSDT_AT));
    let other = table(b"FACP", &[0; 8]);
    let other_at = 0x7fe_2000u64;
    let mut x = other_at.to_le_bytes().to_vec();
    x.extend_from_slice(&MADT_AT.to_le_bytes());
    let mut r = (other_at as u32).to_le_bytes().to_vec();
    r.extend_from_slice(&(MADT_AT as u32).to_le_bytes());
    Mem(vec![
        (0, vec![0u8; 0x1000]),
        (0xe_0000, bios),
        (XSDT_AT, table(b"XSDT", &x)),
        (RSDT_AT, table(b"RSDT", &r)),
        (MADT_AT, madt),
        (other_at, other),
    ])
}

fn four_cpus() -> Vec<u8> {
    table(
        b"APIC",
        &madt_body(&[
            lapic_entry(0, 0, 1),
            lapic_entry(1, 1, 1),
            vec![1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0], // an I/O APIC: skipped
            lapic_entry(2, 2, 1),
            lapic_entry(3, 3, 2), // online capable, not enabled
            x2apic_entry(0x100, 1, 9),
        ]),
    )
}

#[test]
fn finds_cpus_through_the_bios_area() {
    let mem = machine(four_cpus());
    assert_eq!(find_rsdp(&mem, None), Ok(0xf_5a40));
    let m = madt(&mem, None, None).unwrap();
    assert_eq!(m.lapic_addr, 0xfee0_0000);
    let ids: Vec<_> = m.cpus.iter().filter(|c| c.enabled).map(|c| c.apic_id).collect();
    assert_eq!(ids, [0, 1, 2, 0x100]);
    assert!(!m.cpus[3].enabled && !m.cpus[3].x2apic);
    assert_eq!(m.cpus[4], MadtCpu { apic_id: 0x100, uid: 9, enabled: true, x2apic: true });
}

#[test]
fn finds_the_rsdp_in_the_ebda_first() {
    let mut mem = machine(four_cpus());
    // EBDA at segment 0x9fc0 = 0x9fc00, with its own RSDP (revision 0: RSDT only).
    let mut ebda = vec![0u8; 0x400];
    ebda[0x10..0x10 + 36].copy_from_slice(&rsdp(0, RSDT_AT as u32, 0));
    mem.0.push((0x9_fc00, ebda));
    assert_eq!(find_rsdp(&mem, Some(0x9fc0)), Ok(0x9_fc10));
    assert_eq!(find_rsdp(&mem, None), Ok(0xf_5a40), "without the segment: the BIOS area");
    // A segment pointing at page 0 or above 640 KiB is not searched.
    assert_eq!(find_rsdp(&mem, Some(0x40)), Ok(0xf_5a40));
    assert_eq!(find_rsdp(&mem, Some(0xc000)), Ok(0xf_5a40));
    assert_eq!(madt(&mem, None, Some(0x9fc0)).unwrap().cpus.len(), 5);
}

#[test]
fn uses_a_handed_over_rsdp() {
    let mut mem = machine(four_cpus());
    mem.0.push((0x100_0000, rsdp(2, 0, XSDT_AT)));
    assert_eq!(madt(&mem, Some(0x100_0000), None).unwrap().cpus.len(), 5);
    assert_eq!(madt(&mem, Some(0x100_0004), None), Err(AcpiError::BadSignature("RSDP")));
    assert_eq!(madt(&mem, Some(0x200_0000), None), Err(AcpiError::Unreadable(0x200_0000)));
}

#[test]
fn a_bad_checksum_is_an_error() {
    let mut t = four_cpus();
    t[40] ^= 1;
    assert_eq!(madt(&machine(t), None, None), Err(AcpiError::Checksum("APIC")));
    // An RSDP with a broken checksum is not found at all.
    let mut mem = machine(four_cpus());
    mem.0[1].1[0x1_5a40 + 9] ^= 0xff;
    assert_eq!(find_rsdp(&mem, None), Err(AcpiError::NoRsdp));
    // Revision 2: the extended checksum counts too.
    let mut r = rsdp(2, 0, XSDT_AT);
    r[33] ^= 1;
    let mem = Mem(vec![(0x1000, r)]);
    assert_eq!(parse_rsdp(&mem, 0x1000), Err(AcpiError::Checksum("RSDP (extended)")));
}

#[test]
fn bad_entries_are_errors_not_loops() {
    for bad in [vec![0u8, 0], vec![0, 1], vec![0, 200, 0, 0], vec![0, 4, 0, 0], vec![7]] {
        let t = table(b"APIC", &madt_body(&[lapic_entry(0, 0, 1), bad]));
        assert_eq!(parse_madt(&t), Err(AcpiError::BadEntry(HEADER + 8 + 8)), "{t:?}");
    }
    assert_eq!(parse_madt(&[0; 10]), Err(AcpiError::BadLength("APIC")));
}

#[test]
fn bad_lengths_and_signatures_are_errors() {
    let mut t = four_cpus();
    t[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(madt(&machine(t), None, None), Err(AcpiError::BadLength("APIC")));
    let mut t = four_cpus();
    t[4..8].copy_from_slice(&10u32.to_le_bytes());
    assert_eq!(madt(&machine(t), None, None), Err(AcpiError::BadLength("APIC")));
    // A MADT longer than the readable memory.
    let mut t = four_cpus();
    let len = t.len() as u32 + 64;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    assert_eq!(madt(&machine(t), None, None), Err(AcpiError::Unreadable(MADT_AT)));
    let mem = machine(four_cpus());
    let rsdp = Rsdp { revision: 2, rsdt: 0, xsdt: MADT_AT };
    assert_eq!(find_madt(&mem, &rsdp), Err(AcpiError::BadSignature("XSDT")));
}

#[test]
fn no_madt_listed() {
    let mut mem = machine(four_cpus());
    // Both tables lose their MADT pointer (pointing to the FACP-like table instead).
    for (at, len) in [(XSDT_AT, 8usize), (RSDT_AT, 4)] {
        let t = &mut mem.0.iter_mut().find(|(b, _)| *b == at).unwrap().1;
        let first = t[HEADER..HEADER + len].to_vec();
        t[HEADER + len..HEADER + 2 * len].copy_from_slice(&first);
        fix_checksum(t, 9);
    }
    assert_eq!(madt(&mem, None, None), Err(AcpiError::NoMadt));
    assert_eq!(
        find_madt(&mem, &Rsdp { revision: 0, rsdt: RSDT_AT as u32, xsdt: 0 }),
        Err(AcpiError::NoMadt)
    );
}

#[test]
fn no_rsdp_anywhere() {
    assert_eq!(find_rsdp(&Mem::default(), None), Err(AcpiError::NoRsdp));
    assert_eq!(madt(&Mem(vec![(0, vec![0; 0x1000])]), None, None), Err(AcpiError::NoRsdp));
}
