//! The firmware's ACPI tables as this partition sees them (identity-mapped, read-only where the
//! firmware reserves them: `docs/guest-contract.md`): one PASS or FAIL line per table the walk
//! reaches (`mgmt::acpi`).

use guest_rt::println;
use mgmt::acpi::{self, Found, Phys};

/// Physical memory below 4 GiB, which this partition's page tables map identity.
struct Identity;

impl Phys for Identity {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else { return false };
        if addr == 0 || end > 1 << 32 {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the first 4 GiB are mapped identity (the guest contract); a byte read
            // has no side effect on RAM and the firmware's tables, and a table pointer the
            // firmware gave that is neither ends this partition with a report, which is what
            // the check is for.
            *b = unsafe { core::ptr::read_volatile((addr + i as u64) as *const u8) };
        }
        true
    }
}

pub fn report() {
    let mut segment = [0u8; 2];
    let ebda = if Identity.read(0x40e, &mut segment) { u16::from_le_bytes(segment) } else { 0 };
    let (fadt, madt) = acpi::walk(&Identity, ebda, &mut |f: Found| {
        let verdict = if f.ok { "PASS" } else { "FAIL" };
        match f.cpus {
            Some(n) => println!(
                "mgmt: {verdict} acpi {} at {:#x}, {n} processor(s) enabled",
                f.what, f.addr
            ),
            None => println!("mgmt: {verdict} acpi {} at {:#x}", f.what, f.addr),
        }
    });
    if !fadt {
        println!("mgmt: FAIL acpi FACP: not listed");
    }
    if !madt {
        println!("mgmt: FAIL acpi APIC: not listed");
    }
}
