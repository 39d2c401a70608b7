//! Attacks that must end the partition: accesses outside RAM and devices, a page-table root
//! outside RAM, a triple fault. Each returns only if the hypervisor let it through, after
//! printing `FAIL ...`; the value is the number of failures.

use core::arch::asm;

use guest_rt::instr::{self, DescriptorPointer};
use guest_rt::paging::{self, Caching, PAGE_2M};
use guest_rt::println;

/// Maps the 2 MiB page holding `gpa` at the same virtual address.
fn map(gpa: u64, caching: Caching) -> Result<(), u64> {
    let page = gpa & !(PAGE_2M - 1);
    // SAFETY: every caller passes an address outside RAM: nothing of this guest lives there.
    match unsafe { paging::map_2m(page, page, caching) } {
        Ok(()) => Ok(()),
        Err(e) => {
            println!("FAIL map {page:#x}: {e}");
            Err(1)
        }
    }
}

fn read_outside(gpa: u64, what: &str) -> u64 {
    if let Err(failed) = map(gpa, Caching::Uncached) {
        return failed;
    }
    println!("attack: reading {what} at GPA {gpa:#x}; the hypervisor must stop this partition");
    let v: u64;
    // SAFETY: the page is mapped above; the read is the attack, and ends the partition.
    unsafe { asm!("mov {}, qword ptr [{}]", out(reg) v, in(reg) gpa, options(nostack, readonly)) };
    println!("FAIL out-of-RAM read returned {v:#x} ({what} at {gpa:#x})");
    1
}

/// Reads GPA 4 GiB, far outside RAM.
pub fn oob_read() -> u64 {
    read_outside(0x1_0000_0000, "outside RAM")
}

/// Writes the first byte past the end of RAM.
pub fn oob_write(ram_size: u64) -> u64 {
    if let Err(failed) = map(ram_size, Caching::WriteBack) {
        return failed;
    }
    println!(
        "attack: writing GPA {ram_size:#x} (just past RAM); the hypervisor must stop this partition"
    );
    // SAFETY: mapped above; the write is the attack, and ends the partition.
    unsafe {
        asm!("mov qword ptr [{}], {}", in(reg) ram_size, in(reg) 0x0bad_c0de_u64, options(nostack))
    };
    println!("FAIL out-of-RAM write returned (GPA {ram_size:#x})");
    1
}

/// Reads where a host's memory typically is: 1 MiB above twice our RAM size.
pub fn hypervisor_memory(ram_size: u64) -> u64 {
    read_outside(0x10_0000 + ram_size * 2, "host memory")
}

/// Reads the I/O APIC page, a device no partition is given (only sysinfo, one page lower
/// down, is emulated).
pub fn mmio_hole() -> u64 {
    const IOAPIC: u64 = 0xfec0_0000;
    read_outside(IOAPIC, "the I/O APIC (no device there)")
}

/// Points CR3 at a GPA outside RAM: the next instruction fetch walks page tables there.
pub fn cr3_outside() -> u64 {
    let root: u64 = 0x1_0000_0000;
    println!(
        "attack: loading CR3 = {root:#x} (outside RAM); the hypervisor must stop this partition"
    );
    // SAFETY: the attack itself: the page walk that follows touches memory outside RAM, and
    // the hypervisor must stop the partition before another instruction of ours runs.
    unsafe { instr::write_cr3(root) };
    println!("FAIL CR3 outside RAM did not stop the partition");
    1
}

/// Loads an empty IDT and raises #UD: #UD → #GP → #DF → triple fault.
pub fn triple_fault() {
    println!(
        "attack: triple fault now (IDT limit 0, ud2); the hypervisor must stop this partition"
    );
    instr::cli();
    let empty = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: the attack itself: with an empty IDT the next exception is a triple fault.
    unsafe {
        instr::lidt(&empty);
        asm!("ud2", options(nomem, nostack));
    }
    guest_rt::exception::reload();
    println!("FAIL triple fault did not stop the partition");
}
