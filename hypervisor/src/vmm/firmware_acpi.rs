//! The management partition's ACPI tables: the firmware's, except the MADT. The host's MADT
//! lists every host CPU and the real I/O APIC; the partition gets its vCPUs (the manifest's
//! `vcpus`, time-sliced on CPU 0), each with a virtual local APIC, the virtual I/O APIC and the
//! virtual 8259 pair, so it gets a generated MADT (`loader::acpi::madt_with`) in their place. The firmware's RSDP, RSDT and XSDT are shadowed: a copy of the page that holds the
//! RSDP is mapped over it, its RSDP pointing at copies of the RSDT and XSDT whose MADT entry
//! (or a new last entry, where they list none) points at the generated MADT. Every other
//! entry still points at the firmware's own tables (ACPI 6.5 §5.2.5.3 RSDP, §5.2.7 RSDT,
//! §5.2.8 XSDT; each checksum makes its bytes sum to 0, §5.2.6; the RSDP's first 20 bytes sum
//! to 0 and, revision 2+, all `Length` bytes through the extended checksum).

use alloc::vec::Vec;

/// Size of the page the shadow tables live in.
pub const PAGE: usize = 4096;

/// What the partition sees in place of the firmware's root tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadow {
    /// The page that holds the RSDP, with the RSDP pointing at the copies.
    pub rsdp_page: Vec<u8>,
    /// The page of the generated MADT and the RSDT and XSDT copies (at `tables_gpa`).
    pub tables: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// Sets byte `at` so that `b` sums to 0.
fn fix_checksum(b: &mut [u8], at: usize) {
    b[at] = 0;
    let sum = b.iter().fold(0u8, |s, &x| s.wrapping_add(x));
    b[at] = 0u8.wrapping_sub(sum);
}

/// What the partition's root tables do with a firmware table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Listed as the firmware lists it.
    Keep,
    /// The MADT: replaced by the generated one.
    Madt,
    /// Not listed: a device the hypervisor keeps (the HPET, whose interrupts, legacy IRQ 0/8
    /// or I/O APIC pins, reach only the host's interrupt controllers: IA-PC HPET
    /// Specification 1.0a §2.3.9, "Legacy Replacement Route"; §3.2.5, routing).
    Hidden,
}

/// The [`Listed`] of a firmware table with signature `sig`.
pub fn listed(sig: &[u8; 4]) -> Listed {
    match sig {
        b"APIC" => Listed::Madt,
        b"HPET" => Listed::Hidden,
        _ => Listed::Keep,
    }
}

/// A copy of root table `root` (RSDT: `entry` 4, XSDT: 8) whose MADT entry (`kind`) points at
/// `madt` (appended when it lists none), without the hidden tables, its length and checksum
/// made right.
fn root_copy(root: &[u8], entry: usize, kind: &dyn Fn(u64) -> Listed, madt: u64) -> Vec<u8> {
    let len = (u32_at(root, 4) as usize).clamp(36, root.len());
    let mut out = root[..36].to_vec();
    let mut replaced = false;
    for e in root[36..len].chunks_exact(entry) {
        let addr = if entry == 8 { u64_at(e, 0) } else { u64::from(u32_at(e, 0)) };
        let addr = match kind(addr) {
            Listed::Madt if !replaced => {
                replaced = true;
                madt
            }
            // A second MADT (the partition has one) or a hidden table.
            Listed::Madt | Listed::Hidden => continue,
            Listed::Keep => addr,
        };
        out.extend_from_slice(&addr.to_le_bytes()[..entry]);
    }
    if !replaced {
        out.extend_from_slice(&madt.to_le_bytes()[..entry]);
    }
    let n = out.len() as u32;
    out[4..8].copy_from_slice(&n.to_le_bytes());
    fix_checksum(&mut out, 9);
    out
}

/// The shadow tables. `page` is the firmware's page holding the RSDP at `rsdp_off`; `rsdt`
/// and `xsdt` the firmware's root tables as read (the XSDT where the RSDP gives one); `is_madt`
/// says whether a table address holds an MADT; `madt` is the generated MADT; the tables page
/// goes at `tables_gpa` (below 4 GiB: the RSDT's pointers are 32-bit). `None` when the RSDP
/// (36 bytes read, whatever its revision) does not fit in the page or the copies do not fit
/// in theirs.
pub fn shadow(
    page: &[u8],
    rsdp_off: usize,
    rsdt: &[u8],
    xsdt: Option<&[u8]>,
    kind: &dyn Fn(u64) -> Listed,
    madt: &[u8],
    tables_gpa: u64,
) -> Option<Shadow> {
    if page.len() != PAGE || rsdp_off + 36 > PAGE || rsdt.len() < 36 || tables_gpa >> 32 != 0 {
        return None;
    }
    let revision = page[rsdp_off + 15];
    let rsdp_len = if revision >= 2 {
        let len = u32_at(page, rsdp_off + 20) as usize;
        if len < 36 || rsdp_off + len > PAGE {
            return None;
        }
        len
    } else {
        20
    };
    let align = |n: usize| n.next_multiple_of(16);
    let mut tables = madt.to_vec();
    let madt_gpa = tables_gpa;
    let rsdt_off = align(tables.len());
    let rsdt_copy = root_copy(rsdt, 4, kind, madt_gpa);
    tables.resize(rsdt_off, 0);
    tables.extend_from_slice(&rsdt_copy);
    let xsdt_off = align(tables.len());
    if let Some(x) = xsdt.filter(|x| x.len() >= 36) {
        let copy = root_copy(x, 8, kind, madt_gpa);
        tables.resize(xsdt_off, 0);
        tables.extend_from_slice(&copy);
    }
    if tables.len() > PAGE {
        return None;
    }
    tables.resize(PAGE, 0);
    let mut rsdp_page = page.to_vec();
    let r = &mut rsdp_page[rsdp_off..];
    r[16..20].copy_from_slice(&(tables_gpa as u32 + rsdt_off as u32).to_le_bytes());
    fix_checksum(&mut r[..20], 8);
    if revision >= 2 {
        if xsdt.is_some() {
            r[24..32].copy_from_slice(&(tables_gpa + xsdt_off as u64).to_le_bytes());
        }
        fix_checksum(&mut r[..rsdp_len], 32);
    }
    Some(Shadow { rsdp_page, tables })
}

/// Host physical memory below 4 GiB (past page 0), which the hypervisor's own page tables map
/// identity, for reading the firmware's tables.
pub struct HostMemory;

impl crate::arch::x86::acpi::PhysRead for HostMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::arch::x86::acpi::AcpiError> {
        let unreadable = crate::arch::x86::acpi::AcpiError::Unreadable(addr);
        let end = addr.checked_add(buf.len() as u64).ok_or(unreadable)?;
        if addr < 0x1000 || end > 1 << 32 {
            return Err(unreadable);
        }
        // SAFETY: `addr..end` lies in the hypervisor's identity map of physical memory (all of
        // it past page 0 and below 4 GiB at least); the firmware's tables there are only read.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// The host's RSDP: the one the boot path gave (UEFI), else the BIOS search (§5.2.5.1).
pub fn host_rsdp(given: Option<u64>, ebda_segment: Option<u16>) -> Option<u64> {
    given.or_else(|| crate::arch::x86::acpi::find_rsdp(&HostMemory, ebda_segment).ok())
}

/// A table of at most a page, as the firmware left it (its length clamped to a page).
fn read_table(addr: u64) -> Option<Vec<u8>> {
    use crate::arch::x86::acpi::PhysRead;
    let mut head = [0u8; 36];
    HostMemory.read(addr, &mut head).ok()?;
    let len = (u32_at(&head, 4) as usize).clamp(36, PAGE);
    let mut t = alloc::vec![0u8; len];
    HostMemory.read(addr, &mut t).ok()?;
    Some(t)
}

/// The first table with signature `sig` that root table `root` (entries of `entry` bytes)
/// lists, read from host memory.
fn find_entry(root: &[u8], entry: usize, sig: &[u8; 4]) -> Option<u64> {
    use crate::arch::x86::acpi::PhysRead;
    let len = (u32_at(root, 4) as usize).clamp(36, root.len());
    root[36..len].chunks_exact(entry).find_map(|e| {
        let addr = if entry == 8 { u64_at(e, 0) } else { u64::from(u32_at(e, 0)) };
        let mut s = [0u8; 4];
        (HostMemory.read(addr, &mut s).is_ok() && &s == sig).then_some(addr)
    })
}

/// The FADT's SCI_INT (offset 46, ACPI 6.5 §5.2.9 Table 5.9) when it is an ISA IRQ (0-15).
pub fn sci_int(fadt: &[u8]) -> Option<u8> {
    let sci = u16::from_le_bytes([*fadt.get(46)?, *fadt.get(47)?]);
    (sci < 16).then_some(sci as u8)
}

/// The FACS's address from a FADT: X_FIRMWARE_CTRL (offset 132) where the table is long
/// enough and it is set, else FIRMWARE_CTRL (offset 36) (ACPI 6.5 §5.2.9 Table 5.9).
pub fn facs_addr(fadt: &[u8]) -> Option<u64> {
    let x = (fadt.len() >= 140).then(|| u64_at(fadt, 132)).filter(|&a| a != 0);
    let a = x.or_else(|| (fadt.len() >= 40).then(|| u64::from(u32_at(fadt, 36))))?;
    (a != 0).then_some(a)
}

/// The host's FADT (a page at most) and DSDT (whole, up to 1 MiB), found from the RSDP at
/// `rsdp` through the RSDT (DSDT at FADT offset 40, or X_DSDT at 140 where set, §5.2.9).
pub fn host_fadt_dsdt(rsdp: u64) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    use crate::arch::x86::acpi::PhysRead;
    let mut r = [0u8; 20];
    HostMemory.read(rsdp, &mut r).ok()?;
    let rsdt = read_table(u64::from(u32_at(&r, 16)))?;
    let fadt = read_table(find_entry(&rsdt, 4, b"FACP")?)?;
    let x = (fadt.len() >= 148).then(|| u64_at(&fadt, 140)).filter(|&a| a != 0);
    let dsdt_at = x.or_else(|| (fadt.len() >= 44).then(|| u64::from(u32_at(&fadt, 40))));
    let dsdt = dsdt_at.filter(|&a| a != 0).and_then(|at| {
        let mut head = [0u8; 8];
        HostMemory.read(at, &mut head).ok()?;
        let len = (u32_at(&head, 4) as usize).clamp(36, 1 << 20);
        let mut t = alloc::vec![0u8; len];
        HostMemory.read(at, &mut t).ok()?;
        (&t[..4] == b"DSDT").then_some(t)
    });
    Some((fadt, dsdt))
}

/// The page of the host's FACS, found from the RSDP at `rsdp` through the RSDT's FADT. The
/// OS writes the FACS (the global lock, §5.2.10, with a locked CMPXCHG; the waking vector),
/// so the management partition gets it read/write wherever the firmware put it.
pub fn facs_page(rsdp: u64) -> Option<u64> {
    use crate::arch::x86::acpi::PhysRead;
    let mut r = [0u8; 20];
    HostMemory.read(rsdp, &mut r).ok()?;
    let rsdt = read_table(u64::from(u32_at(&r, 16)))?;
    let fadt = read_table(find_entry(&rsdt, 4, b"FACP")?)?;
    facs_addr(&fadt).map(|a| a & !(PAGE as u64 - 1))
}

/// Maps the host's FACS page ([`facs_page`]) read/write into a management partition where one
/// of its read-only firmware `windows` holds it (the firmware may list it as merely reserved):
/// the OS writes it (the ACPI global lock, the waking vector).
pub fn map_facs(
    slat: &mut dyn super::vcpu::SecondLevel,
    platform: &super::platform::Platform,
    windows: &[super::firmware::Window],
) -> Result<(), alloc::string::String> {
    let facs = platform.firmware_rsdp.and_then(facs_page);
    let read_only = |f: u64| {
        windows
            .iter()
            .any(|w| w.access == super::firmware::Access::ReadOnly && (w.start..w.end).contains(&f))
    };
    let Some(page) = facs.filter(|&f| read_only(f)) else { return Ok(()) };
    let len = PAGE as u64;
    slat.unmap(page, len)
        .and_then(|()| slat.map(page, page, len))
        .map_err(|e| alloc::format!("mapping the FACS page {page:#x}: {e:?}"))
}

/// Where the management partition finds its RSDP when the firmware's lies above 1 MiB (UEFI):
/// the first page of the BIOS area a kernel searches.
const UEFI_RSDP_GPA: u64 = 0xe_0000;

/// Builds the shadow for the host RSDP at `rsdp` (below 1 MiB, in the firmware's window: the
/// EBDA or the BIOS area; or, under UEFI, anywhere: then its copy goes at [`UEFI_RSDP_GPA`]) with the tables page at `tables_gpa` (a page of host
/// memory the partition does not get as RAM, identity-mapped read-only by `firmware::windows`);
/// writes that page, copies the RSDP's page into a new frame and maps it over the RSDP's page.
/// Returns the frame (the partition owns it) or why nothing was shadowed. The generated MADT
/// lists `vcpus` local APICs (IDs 0 up, the partition's vCPUs).
pub fn install(
    slat: &mut dyn super::vcpu::SecondLevel,
    rsdp: u64,
    tables_gpa: u64,
    vcpus: u32,
) -> Result<u64, &'static str> {
    use crate::arch::x86::acpi::PhysRead;
    use crate::arch::x86::paging::HostPages;
    let mut page = alloc::vec![0u8; PAGE];
    let (page_gpa, off) = if (0x1000..0x10_0000).contains(&rsdp) {
        // A BIOS: the RSDP lies where a kernel's search finds it; its page is shadowed.
        let page_gpa = rsdp & !(PAGE as u64 - 1);
        HostMemory.read(page_gpa, &mut page).map_err(|_| "the RSDP's page is unreadable")?;
        (page_gpa, (rsdp - page_gpa) as usize)
    } else {
        // UEFI: the RSDP is in the firmware's ACPI memory, found through the EFI system table,
        // which the partition does not get. A copy goes at the start of the BIOS area's search
        // range (ACPI 6.5 §5.2.5.1: 0xE0000-0xFFFFF, on a 16-byte boundary), over the page
        // that is there, so a kernel made for the bare PC finds it by its usual search.
        HostMemory.read(UEFI_RSDP_GPA, &mut page).map_err(|_| "the BIOS area is unreadable")?;
        let mut rsdp_bytes = [0u8; 36];
        HostMemory.read(rsdp, &mut rsdp_bytes).map_err(|_| "the RSDP is unreadable")?;
        let len = if rsdp_bytes[15] >= 2 { 36 } else { 20 };
        page[..len].copy_from_slice(&rsdp_bytes[..len]);
        (UEFI_RSDP_GPA, 0)
    };
    let rsdt = read_table(u64::from(u32_at(&page, off + 16))).ok_or("the RSDT is unreadable")?;
    let xsdt_at = if page[off + 15] >= 2 && off + 32 <= PAGE { u64_at(&page, off + 24) } else { 0 };
    let xsdt = (xsdt_at != 0).then(|| read_table(xsdt_at)).flatten();
    let kind = |a: u64| {
        let mut sig = [0u8; 4];
        if HostMemory.read(a, &mut sig).is_ok() { listed(&sig) } else { Listed::Keep }
    };
    // The management partition's I/O APIC (always attached: `vmm::vioapic`), ID 0, and the
    // SCI's override where the firmware's FADT names an ISA SCI (SCI_INT, offset 46).
    let mut entries = super::vioapic::madt_entries(0).to_vec();
    let fadt = [rsdt.as_slice(), xsdt.as_deref().unwrap_or(&[])]
        .into_iter()
        .find_map(|root| {
            find_entry(root, if root.get(..4) == Some(b"XSDT") { 8 } else { 4 }, b"FACP")
        })
        .and_then(read_table);
    if let Some(sci) = fadt.as_deref().and_then(sci_int) {
        entries.extend_from_slice(&super::vioapic::sci_override(sci));
    }
    let madt = super::loader::acpi::madt_with(vcpus, &entries);
    let s = shadow(&page, off, &rsdt, xsdt.as_deref(), &kind, &madt, tables_gpa)
        .ok_or("the shadow tables do not fit")?;
    // SAFETY: `tables_gpa` is a page of host memory kept for this partition's tables (the top
    // page of its conventional memory, carved out of its RAM), identity-mapped for the
    // hypervisor; nothing else writes it.
    unsafe { core::ptr::copy_nonoverlapping(s.tables.as_ptr(), tables_gpa as *mut u8, PAGE) };
    let frame = HostPages::alloc_zeroed(1).ok_or("no frame for the RSDP's page")?;
    // SAFETY: a fresh frame from the allocator, identity-mapped, a page long.
    unsafe { core::ptr::copy_nonoverlapping(s.rsdp_page.as_ptr(), frame.0 as *mut u8, PAGE) };
    // Under UEFI the BIOS area's page may not be mapped at all: then there is nothing to unmap.
    let unmapped = slat.unmap(page_gpa, PAGE as u64);
    let remap = match unmapped {
        Err(_) if page_gpa != UEFI_RSDP_GPA => unmapped,
        _ => slat.map_readonly(page_gpa, frame.0, PAGE as u64),
    };
    if remap.is_err() {
        HostPages::free(frame, 1);
        return Err("the RSDP's page could not be remapped");
    }
    Ok(frame.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn table(sig: &[u8; 4], entries: &[u64], entry: usize) -> Vec<u8> {
        let mut t = vec![0u8; 36];
        t[..4].copy_from_slice(sig);
        for e in entries {
            t.extend_from_slice(&e.to_le_bytes()[..entry]);
        }
        let n = t.len() as u32;
        t[4..8].copy_from_slice(&n.to_le_bytes());
        fix_checksum(&mut t, 9);
        t
    }

    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
    }

    /// A BIOS page with a revision-2 RSDP at 0x9d0.
    fn page(revision: u8) -> Vec<u8> {
        let mut p = vec![0xaau8; PAGE];
        let r = &mut p[0x9d0..0x9d0 + 36];
        r.fill(0);
        r[..8].copy_from_slice(b"RSD PTR ");
        r[15] = revision;
        r[16..20].copy_from_slice(&0x7fe_1000u32.to_le_bytes());
        r[20..24].copy_from_slice(&36u32.to_le_bytes());
        r[24..32].copy_from_slice(&0x7fe_2000u64.to_le_bytes());
        fix_checksum(&mut r[..20], 8);
        fix_checksum(r, 32);
        p
    }

    const HOST_MADT: u64 = 0x7fe_0300;
    const HOST_HPET: u64 = 0x7fe_0400;

    #[test]
    fn the_madt_entry_points_at_the_generated_one_and_the_rest_stay() {
        let rsdt = table(b"RSDT", &[0x7fe_0100, HOST_MADT, HOST_HPET, 0x7fe_0500], 4);
        let xsdt = table(b"XSDT", &[HOST_MADT, HOST_HPET, 0x7fe_0100], 8);
        let madt = crate::vmm::loader::acpi::madt(1);
        let kind = |a: u64| match a {
            HOST_MADT => listed(b"APIC"),
            HOST_HPET => listed(b"HPET"),
            _ => listed(b"FACP"),
        };
        let s = shadow(&page(2), 0x9d0, &rsdt, Some(&xsdt), &kind, &madt, 0x9e000).unwrap();
        // The page is the firmware's but for the RSDP, whose checksums hold.
        assert_eq!(s.rsdp_page[..0x9d0], page(2)[..0x9d0]);
        assert_eq!(s.rsdp_page[0x9d0 + 36..], page(2)[0x9d0 + 36..]);
        let r = &s.rsdp_page[0x9d0..0x9d0 + 36];
        assert!(sums_to_zero(&r[..20]) && sums_to_zero(r));
        // RSDT copy: same entries, the MADT replaced, the HPET left out.
        let at = |gpa: u64| (gpa - 0x9e000) as usize;
        let rsdt_copy = &s.tables[at(u64::from(u32_at(r, 16)))..];
        let len = u32_at(rsdt_copy, 4) as usize;
        assert_eq!(&rsdt_copy[..4], b"RSDT");
        assert!(sums_to_zero(&rsdt_copy[..len]));
        let entries: Vec<u32> = (36..len).step_by(4).map(|o| u32_at(rsdt_copy, o)).collect();
        assert_eq!(entries, [0x7fe_0100, 0x9e000, 0x7fe_0500]);
        // XSDT copy likewise.
        let xsdt_copy = &s.tables[at(u64_at(r, 24))..];
        let len = u32_at(xsdt_copy, 4) as usize;
        assert!(sums_to_zero(&xsdt_copy[..len]));
        assert_eq!(len, 36 + 2 * 8);
        assert_eq!((u64_at(xsdt_copy, 36), u64_at(xsdt_copy, 44)), (0x9e000, 0x7fe_0100));
        // The generated MADT at the start of the page, intact.
        assert_eq!(&s.tables[..madt.len()], &madt[..]);
        assert_eq!(s.tables.len(), PAGE);
    }

    #[test]
    fn revision_0_and_a_root_without_madt() {
        let rsdt = table(b"RSDT", &[0x7fe_0100], 4);
        let madt = crate::vmm::loader::acpi::madt(1);
        let s = shadow(&page(0), 0x9d0, &rsdt, None, &|_| Listed::Keep, &madt, 0x9e000).unwrap();
        let r = &s.rsdp_page[0x9d0..0x9d0 + 36];
        assert!(sums_to_zero(&r[..20]));
        assert_eq!(u64_at(r, 24), 0x7fe_2000, "revision 0: the XSDT field is not touched");
        let copy = &s.tables[(u32_at(r, 16) - 0x9e000) as usize..];
        assert_eq!(u32_at(copy, 4), 44, "the MADT appended");
        assert_eq!(u32_at(copy, 40), 0x9e000);
    }

    #[test]
    fn the_fadt_gives_the_sci_and_the_facs() {
        let mut fadt = vec![0u8; 244];
        fadt[36..40].copy_from_slice(&0xffe_0000u32.to_le_bytes());
        fadt[46] = 9;
        assert_eq!((sci_int(&fadt), facs_addr(&fadt)), (Some(9), Some(0xffe_0000)));
        fadt[132..140].copy_from_slice(&0x7f00_0040u64.to_le_bytes());
        assert_eq!(facs_addr(&fadt), Some(0x7f00_0040), "X_FIRMWARE_CTRL first");
        fadt[46] = 20;
        assert_eq!(sci_int(&fadt), None, "not an ISA IRQ");
        assert_eq!(facs_addr(&fadt[..36]), None);
        assert_eq!(facs_addr(&[0u8; 116]), None, "no FACS");
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        let madt = crate::vmm::loader::acpi::madt(1);
        let rsdt = table(b"RSDT", &[1], 4);
        assert!(
            shadow(&page(0), PAGE - 10, &rsdt, None, &|_| Listed::Keep, &madt, 0x9e000).is_none()
        );
        assert!(
            shadow(&page(0), 0x9d0, &rsdt[..20], None, &|_| Listed::Keep, &madt, 0x9e000).is_none()
        );
        assert!(shadow(&page(0), 0x9d0, &rsdt, None, &|_| Listed::Keep, &madt, 1 << 32).is_none());
        let huge = table(b"RSDT", &vec![7u64; 1100], 4);
        assert!(shadow(&page(0), 0x9d0, &huge, None, &|_| Listed::Keep, &madt, 0x9e000).is_none());
        // A length field past the bytes read is clamped, never a panic.
        let mut lying = rsdt.clone();
        lying[4..8].copy_from_slice(&0xffff_0000u32.to_le_bytes());
        assert!(shadow(&page(0), 0x9d0, &lying, None, &|_| Listed::Keep, &madt, 0x9e000).is_some());
    }
}
