//! The firmware's ACPI tables, found as an OS finds them on a BIOS machine (ACPI 6.5 §5.2.5.1):
//! the RSDP ("RSD PTR ", its first 20 bytes summing to 0; revision 2+ also all 36) on a 16-byte
//! boundary in the EBDA's first KiB or in 0xE0000-0xFFFFF; the XSDT (revision 2+, §5.2.8) or
//! the RSDT (§5.2.7); through their entries the FADT ("FACP", §5.2.9) with its DSDT (X_DSDT at
//! offset 140 when the table reaches it and it is not 0, else DSDT at 40) and the MADT ("APIC",
//! §5.2.12) with its enabled processors (types 0 and 9, flags bit 0). Every table's bytes sum
//! to 0 (§5.2.6). Plain logic over a physical-memory reader, so that the host tests it.

/// Reads physical memory (the management partition's is identity-mapped).
pub trait Phys {
    /// Fills `buf` from `addr`; false where the address cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// One check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// "RSDP", "RSDT", "XSDT", "FACP", "DSDT", "APIC".
    pub what: &'static str,
    pub addr: u64,
    /// Signature, length and checksum good.
    pub ok: bool,
    /// The MADT's enabled processors.
    pub cpus: Option<u32>,
}

/// Longest table summed.
const TABLE_MAX: u32 = 1 << 20;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// Sums `len` bytes at `addr` (mod 256); `None` when unreadable.
fn sum(mem: &dyn Phys, addr: u64, len: u32) -> Option<u8> {
    let mut total = 0u8;
    let mut buf = [0u8; 256];
    let mut done = 0u32;
    while done < len {
        let n = (len - done).min(256) as usize;
        if !mem.read(addr + u64::from(done), &mut buf[..n]) {
            return None;
        }
        total = buf[..n].iter().fold(total, |s, &b| s.wrapping_add(b));
        done += n as u32;
    }
    Some(total)
}

/// The RSDP: the EBDA's first KiB (`ebda_segment` << 4, if not 0), then 0xE0000-0xFFFFF.
pub fn find_rsdp(mem: &dyn Phys, ebda_segment: u16) -> Option<u64> {
    let ebda = u64::from(ebda_segment) << 4;
    let areas = [(ebda, if ebda == 0 { ebda } else { ebda + 1024 }), (0xe_0000, 0x10_0000)];
    for (start, end) in areas {
        let mut at = start;
        while at + 20 <= end {
            let mut sig = [0u8; 8];
            if mem.read(at, &mut sig) && &sig == b"RSD PTR " && sum(mem, at, 20) == Some(0) {
                return Some(at);
            }
            at += 16;
        }
    }
    None
}

/// The header of the table at `addr` when its signature is `sig`, its length 36..=1 MiB and
/// its bytes sum to 0: (length, the first 148 bytes, zero-padded).
fn table(mem: &dyn Phys, addr: u64, sig: &[u8; 4]) -> Option<(u32, [u8; 148])> {
    let mut head = [0u8; 148];
    if !mem.read(addr, &mut head[..36]) || &head[..4] != sig {
        return None;
    }
    let len = u32_at(&head, 4);
    if !(36..=TABLE_MAX).contains(&len) || sum(mem, addr, len) != Some(0) {
        return None;
    }
    let n = (len as usize).min(148);
    mem.read(addr, &mut head[..n]).then_some((len, head))
}

/// Walks the tables from the RSDP, reporting each check to `out` in order: the RSDP, the root
/// table, then for each FADT the FADT and its DSDT, for each MADT the MADT with its processor
/// count. Returns (FADT seen, MADT seen).
pub fn walk(mem: &dyn Phys, ebda_segment: u16, out: &mut dyn FnMut(Found)) -> (bool, bool) {
    let found = |what, addr, ok| Found { what, addr, ok, cpus: None };
    let Some(rsdp) = find_rsdp(mem, ebda_segment) else {
        out(found("RSDP", 0, false));
        return (false, false);
    };
    out(found("RSDP", rsdp, true));
    let mut r = [0u8; 36];
    if !mem.read(rsdp, &mut r) {
        return (false, false);
    }
    let xsdt = u64_at(&r, 24);
    let (what, root, entry): (&str, u64, u64) = if r[15] >= 2 && xsdt != 0 {
        ("XSDT", xsdt, 8)
    } else {
        ("RSDT", u64::from(u32_at(&r, 16)), 4)
    };
    let sig: &[u8; 4] = if entry == 8 { b"XSDT" } else { b"RSDT" };
    let Some((len, _)) = table(mem, root, sig) else {
        out(found(what, root, false));
        return (false, false);
    };
    out(found(what, root, true));
    let (mut fadt, mut madt) = (false, false);
    let mut at = root + 36;
    while at + entry <= root + u64::from(len) {
        let mut e = [0u8; 8];
        if !mem.read(at, &mut e[..entry as usize]) {
            break;
        }
        at += entry;
        let addr = u64_at(&e, 0);
        let mut sig = [0u8; 4];
        if !mem.read(addr, &mut sig) {
            continue;
        }
        match &sig {
            b"FACP" => {
                fadt = true;
                let Some((len, head)) = table(mem, addr, b"FACP") else {
                    out(found("FACP", addr, false));
                    continue;
                };
                out(found("FACP", addr, true));
                let x_dsdt = if len >= 148 { u64_at(&head, 140) } else { 0 };
                let dsdt = if x_dsdt != 0 { x_dsdt } else { u64::from(u32_at(&head, 40)) };
                out(found("DSDT", dsdt, table(mem, dsdt, b"DSDT").is_some()));
            }
            b"APIC" => {
                madt = true;
                let Some((len, _)) = table(mem, addr, b"APIC") else {
                    out(found("APIC", addr, false));
                    continue;
                };
                let cpus = processors(mem, addr, len);
                out(Found { what: "APIC", addr, ok: true, cpus: Some(cpus) });
            }
            _ => {}
        }
    }
    (fadt, madt)
}

/// The MADT's enabled processors: Processor Local APIC (type 0, flags at 4) and Processor
/// Local x2APIC (type 9, flags at 8) structures with flags bit 0 set.
fn processors(mem: &dyn Phys, madt: u64, len: u32) -> u32 {
    let end = madt + u64::from(len);
    let mut at = madt + 44;
    let mut count = 0;
    while at + 2 <= end {
        let mut s = [0u8; 12];
        let n = ((end - at) as usize).min(12);
        if !mem.read(at, &mut s[..n]) || s[1] < 2 {
            break;
        }
        let enabled = match s[0] {
            0 => s[4] & 1 != 0,
            9 => s[8] & 1 != 0,
            _ => false,
        };
        count += u32::from(enabled);
        at += u64::from(s[1]);
    }
    count
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The first MiB and a table area at 0x10_0000.
    struct Mem(Vec<u8>);

    impl Phys for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let a = addr as usize;
            match self.0.get(a..a + buf.len()) {
                Some(s) => {
                    buf.copy_from_slice(s);
                    true
                }
                None => false,
            }
        }
    }

    fn put_table(m: &mut [u8], at: usize, sig: &[u8; 4], body: &[u8]) {
        let len = 36 + body.len();
        m[at..at + 4].copy_from_slice(sig);
        m[at + 4..at + 8].copy_from_slice(&(len as u32).to_le_bytes());
        m[at + 8] = 2;
        m[at + 36..at + len].copy_from_slice(body);
        let s = m[at..at + len].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        m[at + 9] = 0u8.wrapping_sub(s);
    }

    fn machine(revision: u8) -> Mem {
        let mut m = vec![0u8; 0x11_0000];
        // RSDP at 0xf0010 with an RSDT at 0x10_0000 (and an XSDT at 0x10_0800 for rev 2).
        let r = 0xf_0010;
        m[r..r + 8].copy_from_slice(b"RSD PTR ");
        m[r + 15] = revision;
        m[r + 16..r + 20].copy_from_slice(&0x10_0000u32.to_le_bytes());
        if revision >= 2 {
            m[r + 20..r + 24].copy_from_slice(&36u32.to_le_bytes());
            m[r + 24..r + 32].copy_from_slice(&0x10_0800u64.to_le_bytes());
        }
        let s = m[r..r + 20].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        m[r + 8] = 0u8.wrapping_sub(s);
        // FADT at 0x10_0100 (DSDT 0x10_0400), MADT at 0x10_0200 with 2 of 3 CPUs enabled.
        let mut fadt = vec![0u8; 112];
        fadt[4..8].copy_from_slice(&0x10_0400u32.to_le_bytes()); // offset 40 = body 4
        put_table(&mut m, 0x10_0100, b"FACP", &fadt);
        let mut madt = vec![0u8; 8];
        for (id, flags) in [(0u8, 1u8), (1, 0)] {
            madt.extend_from_slice(&[0, 8, id, id, flags, 0, 0, 0]);
        }
        madt.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]); // an I/O APIC
        madt.extend_from_slice(&[9, 16, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0]);
        put_table(&mut m, 0x10_0200, b"APIC", &madt);
        put_table(&mut m, 0x10_0400, b"DSDT", &[0x10, 0x20]);
        let mut rsdt = Vec::new();
        for t in [0x10_0100u32, 0x10_0200, 0x10_0300] {
            rsdt.extend_from_slice(&t.to_le_bytes());
        }
        put_table(&mut m, 0x10_0000, b"RSDT", &rsdt);
        let mut xsdt = Vec::new();
        for t in [0x10_0200u64, 0x10_0100] {
            xsdt.extend_from_slice(&t.to_le_bytes());
        }
        put_table(&mut m, 0x10_0800, b"XSDT", &xsdt);
        Mem(m)
    }

    fn run(mem: &Mem) -> (Vec<Found>, (bool, bool)) {
        let mut seen = Vec::new();
        let r = walk(mem, 0, &mut |f| seen.push(f));
        (seen, r)
    }

    #[test]
    fn walks_the_rsdt_to_the_fadt_dsdt_and_madt() {
        let (seen, r) = run(&machine(0));
        assert_eq!(r, (true, true));
        let f = |what, addr, cpus| Found { what, addr, ok: true, cpus };
        assert_eq!(
            seen,
            [
                f("RSDP", 0xf_0010, None),
                f("RSDT", 0x10_0000, None),
                f("FACP", 0x10_0100, None),
                f("DSDT", 0x10_0400, None),
                f("APIC", 0x10_0200, Some(2)),
            ]
        );
    }

    #[test]
    fn revision_2_uses_the_xsdt() {
        let (seen, r) = run(&machine(2));
        assert_eq!(r, (true, true));
        assert_eq!((seen[1].what, seen[1].addr), ("XSDT", 0x10_0800));
        assert_eq!(seen[2].what, "APIC", "in the XSDT's order");
    }

    #[test]
    fn bad_checksums_and_missing_tables_fail() {
        let mut m = machine(0);
        m.0[0x10_0400 + 36] ^= 1; // the DSDT's bytes no longer sum to 0
        let (seen, _) = run(&m);
        assert!(seen.iter().any(|f| f.what == "DSDT" && !f.ok));
        let mut m = machine(0);
        m.0[0xf_0010 + 3] ^= 1; // no RSDP
        assert_eq!(run(&m).0, [Found { what: "RSDP", addr: 0, ok: false, cpus: None }]);
        let mut m = machine(0);
        m.0[0xf_0010 + 16] = 0x40; // the RSDT pointer moved off the table (checksum fixed)
        m.0[0xf_0010 + 8] = m.0[0xf_0010 + 8].wrapping_sub(0x40);
        let (seen, r) = run(&m);
        assert_eq!(r, (false, false));
        assert!(!seen[1].ok);
        // Every truncation of memory is handled without a panic.
        let full = machine(2).0;
        for cut in [0xf_0000, 0xf_0020, 0x10_0010, 0x10_0210, 0x10_0410] {
            let _ = run(&Mem(full[..cut].to_vec()));
        }
    }
}
