//! The firmware's ACPI tables, as far as SMP bring-up needs them: the RSDP (found in the BIOS
//! areas or handed over by UEFI), the RSDT/XSDT and the MADT's list of processors.
//!
//! Pure logic over a [`PhysRead`] (the host tests give it byte arrays): every length, pointer
//! and checksum comes from firmware, so a bad table is an [`AcpiError`], never a panic or an
//! endless loop. References: ACPI 6.5 §5.2.5 (RSDP), §5.2.6 (header), §5.2.7/§5.2.8
//! (RSDT/XSDT), §5.2.12 (MADT), §5.2.12.2 (Processor Local APIC), §5.2.12.12 (x2APIC).

use alloc::vec::Vec;
use core::fmt;

/// Reads physical memory for the parser.
pub trait PhysRead {
    /// Fills `buf` from physical address `addr`, or says the range cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), AcpiError>;
}

/// Why the tables could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No RSDP in the areas searched (or none handed over).
    NoRsdp,
    /// A table points outside readable memory.
    Unreadable(u64),
    /// A checksum does not sum to zero.
    Checksum(&'static str),
    /// A table's length is too short or implausibly long.
    BadLength(&'static str),
    /// A table has not the signature its pointer promised.
    BadSignature(&'static str),
    /// No MADT listed in the RSDT/XSDT.
    NoMadt,
    /// A MADT entry's length is impossible (0, 1, or past the table's end).
    BadEntry(usize),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRsdp => write!(f, "no ACPI RSDP found"),
            Self::Unreadable(a) => write!(f, "ACPI table at {a:#x} is not in readable memory"),
            Self::Checksum(t) => write!(f, "ACPI {t}: bad checksum"),
            Self::BadLength(t) => write!(f, "ACPI {t}: bad length"),
            Self::BadSignature(t) => write!(f, "ACPI {t}: wrong signature"),
            Self::NoMadt => write!(f, "no MADT (APIC table) in the RSDT/XSDT"),
            Self::BadEntry(at) => write!(f, "ACPI MADT: bad entry at offset {at}"),
        }
    }
}

/// Longest table accepted (far above any real MADT or XSDT).
const MAX_TABLE: u32 = 1 << 20;
/// Size of the common table header (§5.2.6).
const HEADER: usize = 36;
/// The RSDP signature (§5.2.5.3).
const RSDP_SIG: &[u8; 8] = b"RSD PTR ";

/// The BIOS data area word holding the EBDA's real-mode segment (§5.2.5.1).
pub const EBDA_SEGMENT_PTR: u64 = 0x40e;
/// The BIOS read-only area searched after the EBDA (§5.2.5.1).
pub const BIOS_AREA: core::ops::Range<u64> = 0xe_0000..0x10_0000;

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// What the RSDP points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub revision: u8,
    pub rsdt: u32,
    /// 0 for ACPI 1.0 RSDPs.
    pub xsdt: u64,
}

/// Checks an RSDP candidate at `addr`: signature, the ACPI 1.0 checksum over 20 bytes and,
/// for revision 2 and up, the extended checksum over its length (§5.2.5.3).
pub fn parse_rsdp(mem: &dyn PhysRead, addr: u64) -> Result<Rsdp, AcpiError> {
    let mut b = [0u8; 36];
    mem.read(addr, &mut b[..20])?;
    if &b[..8] != RSDP_SIG {
        return Err(AcpiError::BadSignature("RSDP"));
    }
    if !checksum_ok(&b[..20]) {
        return Err(AcpiError::Checksum("RSDP"));
    }
    let revision = b[15];
    let rsdt = u32_at(&b, 16);
    if revision < 2 {
        return Ok(Rsdp { revision, rsdt, xsdt: 0 });
    }
    mem.read(addr, &mut b)?;
    let len = u32_at(&b, 20) as usize;
    if !(36..=4096).contains(&len) {
        return Err(AcpiError::BadLength("RSDP"));
    }
    let mut full = alloc::vec![0u8; len];
    mem.read(addr, &mut full)?;
    if !checksum_ok(&full) {
        return Err(AcpiError::Checksum("RSDP (extended)"));
    }
    Ok(Rsdp { revision, rsdt, xsdt: u64_at(&b, 24) })
}

/// Searches for the RSDP as a BIOS-booted OS does (§5.2.5.1): the first KiB of the EBDA (its
/// real-mode segment is the BIOS data area's word at [`EBDA_SEGMENT_PTR`], which the caller
/// read), then `0xE0000..0xFFFFF`, on 16-byte boundaries. Returns its address.
pub fn find_rsdp(mem: &dyn PhysRead, ebda_segment: Option<u16>) -> Result<u64, AcpiError> {
    let mut areas = Vec::with_capacity(2);
    if let Some(seg) = ebda_segment {
        let ebda = u64::from(seg) << 4;
        // An EBDA lies in conventional memory, below the 640 KiB mark.
        if (0x1000..0xa_0000).contains(&ebda) {
            areas.push(ebda..ebda + 1024);
        }
    }
    areas.push(BIOS_AREA);
    for area in areas {
        let mut buf = alloc::vec![0u8; (area.end - area.start) as usize];
        if mem.read(area.start, &mut buf).is_err() {
            continue;
        }
        for off in (0..buf.len().saturating_sub(19)).step_by(16) {
            if &buf[off..off + 8] == RSDP_SIG && parse_rsdp(mem, area.start + off as u64).is_ok() {
                return Ok(area.start + off as u64);
            }
        }
    }
    Err(AcpiError::NoRsdp)
}

/// Reads a whole table at `addr` whose signature must be `sig`; checks its length and checksum.
fn read_table(mem: &dyn PhysRead, addr: u64, sig: &'static str) -> Result<Vec<u8>, AcpiError> {
    let mut h = [0u8; HEADER];
    mem.read(addr, &mut h)?;
    if &h[..4] != sig.as_bytes() {
        return Err(AcpiError::BadSignature(sig));
    }
    let len = u32_at(&h, 4);
    if (len as usize) < HEADER || len > MAX_TABLE {
        return Err(AcpiError::BadLength(sig));
    }
    let mut t = alloc::vec![0u8; len as usize];
    mem.read(addr, &mut t)?;
    if !checksum_ok(&t) {
        return Err(AcpiError::Checksum(sig));
    }
    Ok(t)
}

/// The MADT's address from the XSDT (revision 2 and up, where present) or the RSDT.
pub fn find_madt(mem: &dyn PhysRead, rsdp: &Rsdp) -> Result<u64, AcpiError> {
    let (table, entry) = if rsdp.revision >= 2 && rsdp.xsdt != 0 {
        (read_table(mem, rsdp.xsdt, "XSDT")?, 8)
    } else {
        (read_table(mem, u64::from(rsdp.rsdt), "RSDT")?, 4)
    };
    for at in (HEADER..table.len()).step_by(entry) {
        if at + entry > table.len() {
            break;
        }
        let ptr = if entry == 8 { u64_at(&table, at) } else { u64::from(u32_at(&table, at)) };
        let mut sig = [0u8; 4];
        if mem.read(ptr, &mut sig).is_ok() && &sig == b"APIC" {
            return Ok(ptr);
        }
    }
    Err(AcpiError::NoMadt)
}

/// One processor the MADT lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    pub apic_id: u32,
    pub uid: u32,
    /// Usable now (flags bit 0). Disabled ones that are "online capable" may be hot-added
    /// later; the hypervisor starts neither.
    pub enabled: bool,
    /// Listed in an x2APIC entry (type 9).
    pub x2apic: bool,
}

/// The MADT's contents that SMP bring-up uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Madt {
    /// The local APICs' physical address (the override entry's, where there is one).
    pub lapic_addr: u64,
    pub cpus: Vec<MadtCpu>,
}

/// Parses a whole MADT (already checked by [`read_madt`], or bytes from a test).
pub fn parse_madt(t: &[u8]) -> Result<Madt, AcpiError> {
    if t.len() < HEADER + 8 {
        return Err(AcpiError::BadLength("APIC"));
    }
    let mut madt = Madt { lapic_addr: u64::from(u32_at(t, HEADER)), cpus: Vec::new() };
    let mut at = HEADER + 8;
    while at < t.len() {
        if at + 2 > t.len() {
            return Err(AcpiError::BadEntry(at));
        }
        let (kind, len) = (t[at], usize::from(t[at + 1]));
        if len < 2 || at + len > t.len() {
            return Err(AcpiError::BadEntry(at));
        }
        let e = &t[at..at + len];
        match kind {
            // Processor Local APIC: uid u8, APIC ID u8, flags u32.
            0 if len >= 8 => madt.cpus.push(MadtCpu {
                apic_id: u32::from(e[3]),
                uid: u32::from(e[2]),
                enabled: u32_at(e, 4) & 1 != 0,
                x2apic: false,
            }),
            // Local APIC Address Override: reserved u16, address u64.
            5 if len >= 12 => madt.lapic_addr = u64_at(e, 4),
            // Processor Local x2APIC: reserved u16, x2APIC ID u32, flags u32, uid u32.
            9 if len >= 16 => madt.cpus.push(MadtCpu {
                apic_id: u32_at(e, 4),
                uid: u32_at(e, 12),
                enabled: u32_at(e, 8) & 1 != 0,
                x2apic: true,
            }),
            0 | 5 | 9 => return Err(AcpiError::BadEntry(at)),
            _ => {}
        }
        at += len;
    }
    Ok(madt)
}

/// Reads and parses the MADT at `addr`.
pub fn read_madt(mem: &dyn PhysRead, addr: u64) -> Result<Madt, AcpiError> {
    parse_madt(&read_table(mem, addr, "APIC")?)
}

/// The MADT, from a handed-over RSDP address or, without one, the BIOS-area search.
pub fn madt(
    mem: &dyn PhysRead,
    rsdp_addr: Option<u64>,
    ebda_segment: Option<u16>,
) -> Result<Madt, AcpiError> {
    let addr = match rsdp_addr {
        Some(a) => a,
        None => find_rsdp(mem, ebda_segment)?,
    };
    let rsdp = parse_rsdp(mem, addr)?;
    read_madt(mem, find_madt(mem, &rsdp)?)
}

#[cfg(test)]
#[path = "acpi_tests.rs"]
mod tests;
