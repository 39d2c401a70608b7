//! The firmware's ACPI tables as an OS finds them (ACPI 6.5 §5.2.5.1 "Finding the RSDP on
//! IA-PC Systems": the first KiB of the EBDA, whose segment is the word at 0x40E, then the BIOS
//! area 0xE0000-0xFFFFF, on 16-byte boundaries), the RSDT and XSDT (§5.2.7, §5.2.8) with the
//! checksum of every table (§5.2.6: all bytes sum to 0), and the MADT (§5.2.12).

use crate::cpu::phys_byte;

/// What the walk found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tables {
    pub rsdp: u64,
    pub revision: u8,
    pub rsdt: u64,
    pub xsdt: u64,
    /// Tables listed (RSDT, or XSDT where there is one).
    pub listed: u32,
    pub fadt: u64,
    pub madt: u64,
}

/// One problem, for a FAIL line.
pub type Why = &'static str;

fn sum(addr: u64, len: u64) -> u8 {
    (0..len).fold(0u8, |s, i| s.wrapping_add(phys_byte(addr + i)))
}

fn u32_at(addr: u64) -> u32 {
    u32::from_le_bytes([0, 1, 2, 3].map(|i| phys_byte(addr + i)))
}

fn u64_at(addr: u64) -> u64 {
    u64::from(u32_at(addr)) | (u64::from(u32_at(addr + 4)) << 32)
}

fn sig(addr: u64) -> [u8; 4] {
    [0, 1, 2, 3].map(|i| phys_byte(addr + i))
}

/// Looks for a valid RSDP (signature, checksum of the first 20 bytes, and of all 36 for
/// revision 2 or later) in `[from, to)` on 16-byte boundaries.
fn scan(from: u64, to: u64) -> Option<u64> {
    (from..to).step_by(16).find(|&a| {
        let sig_ok = (0..8).all(|i| phys_byte(a + i) == b"RSD PTR "[i as usize]);
        sig_ok
            && sum(a, 20) == 0
            && (phys_byte(a + 15) < 2 || (u32_at(a + 20) >= 36 && sum(a, 36) == 0))
    })
}

/// Finds the RSDP.
pub fn find_rsdp() -> Option<u64> {
    let ebda = u64::from(u16::from_le_bytes([phys_byte(0x40e), phys_byte(0x40f)])) << 4;
    let in_ebda = (0x400..0xa0000).contains(&ebda).then(|| scan(ebda, ebda + 1024)).flatten();
    in_ebda.or_else(|| scan(0xe0000, 0x100000))
}

/// A table header whose length is sane and whose bytes sum to 0.
fn table_ok(addr: u64) -> bool {
    let len = u64::from(u32_at(addr + 4));
    (36..=(1 << 20)).contains(&len) && addr + len <= 1 << 32 && sum(addr, len) == 0
}

/// Walks the RSDT (and the XSDT for revision 2+), checking every table's checksum, and notes
/// where the FADT ("FACP") and MADT ("APIC") are.
pub fn walk(rsdp: u64) -> Result<Tables, Why> {
    let mut t = Tables { rsdp, revision: phys_byte(rsdp + 15), ..Tables::default() };
    t.rsdt = u64::from(u32_at(rsdp + 16));
    if t.rsdt == 0 || sig(t.rsdt) != *b"RSDT" || !table_ok(t.rsdt) {
        return Err("RSDT missing, misnamed or with a bad checksum");
    }
    let mut root = (t.rsdt, 4u64);
    if t.revision >= 2 {
        t.xsdt = u64_at(rsdp + 24);
        if t.xsdt != 0 {
            if t.xsdt >= 1 << 32 || sig(t.xsdt) != *b"XSDT" || !table_ok(t.xsdt) {
                return Err("XSDT misnamed, above 4 GiB or with a bad checksum");
            }
            root = (t.xsdt, 8);
        }
    }
    let (addr, width) = root;
    let entries = (u64::from(u32_at(addr + 4)) - 36) / width;
    for i in 0..entries {
        let at = addr + 36 + i * width;
        let table = if width == 8 { u64_at(at) } else { u64::from(u32_at(at)) };
        if table == 0 || table >= 1 << 32 || !table_ok(table) {
            return Err("a listed table is above 4 GiB or has a bad checksum");
        }
        t.listed += 1;
        match &sig(table) {
            b"FACP" => t.fadt = table,
            b"APIC" => t.madt = table,
            _ => {}
        }
    }
    Ok(t)
}

/// The MADT's entries of interest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Madt {
    /// An enabled Processor Local APIC (type 0) or x2APIC (type 9) entry with our APIC ID.
    pub lists_us: bool,
    pub cpus: u32,
    /// The first I/O APIC (type 1): address and GSI base.
    pub ioapic: Option<(u64, u32)>,
    /// ISA IRQ 14's Interrupt Source Override (type 2): GSI and MPS INTI flags.
    pub irq14: Option<(u32, u16)>,
}

/// Reads the MADT at `madt` (its checksum was checked by [`walk`]).
pub fn madt(madt: u64, apic_id: u32) -> Madt {
    let mut m = Madt::default();
    let end = madt + u64::from(u32_at(madt + 4));
    let mut at = madt + 44;
    while at + 2 <= end {
        let (kind, len) = (phys_byte(at), u64::from(phys_byte(at + 1)));
        if len < 2 || at + len > end {
            break;
        }
        match kind {
            0 if len >= 8 => {
                let enabled = u32_at(at + 4) & 1 != 0;
                m.cpus += u32::from(enabled);
                m.lists_us |= enabled && u32::from(phys_byte(at + 3)) == apic_id;
            }
            9 if len >= 16 => {
                let enabled = u32_at(at + 8) & 1 != 0;
                m.cpus += u32::from(enabled);
                m.lists_us |= enabled && u32_at(at + 4) == apic_id;
            }
            1 if len >= 12 && m.ioapic.is_none() => {
                m.ioapic = Some((u64::from(u32_at(at + 4)), u32_at(at + 8)));
            }
            2 if len >= 10 && phys_byte(at + 2) == 0 && phys_byte(at + 3) == 14 => {
                let flags = u16::from_le_bytes([phys_byte(at + 8), phys_byte(at + 9)]);
                m.irq14 = Some((u32_at(at + 4), flags));
            }
            _ => {}
        }
        at += len;
    }
    m
}
