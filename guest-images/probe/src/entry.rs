//! The state at the first instruction: start-info page, registers, GDT, control registers.

use guest_rt::hvabi::start::{
    CODE_SELECTOR, DATA_SELECTOR, GDT_GPA, PML4_GPA, STACK_GAP, START_INFO_GPA, START_MAGIC,
};
use guest_rt::{
    Checks, EntryState, StartInfo, checks::Why, ensure, entry_state, image_range, instr,
};

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;

const MIB_2: u64 = 2 << 20;

pub fn run(c: &mut Checks, info: &StartInfo) {
    let e = entry_state();
    c.check("start-info", start_info(info));
    c.check("entry-gprs", gprs(e));
    c.check_eq("entry-rsp", e.rsp(), info.ram_size.wrapping_sub(STACK_GAP));
    c.check_eq("entry-rdi", e.rdi(), START_INFO_GPA);
    c.check_eq("entry-rflags", e.rflags, 0x2);
    c.check("entry-segments", segments(e));
    let (_, idt_limit) = e.idtr();
    c.check("entry-no-idt", ensure!(idt_limit == 0, "IDTR limit {idt_limit:#x}, want 0"));
    c.check("gdt", gdt(e));

    let cr0 = instr::read_cr0();
    c.check(
        "cr0-pe-pg",
        ensure!(cr0 & (CR0_PE | CR0_PG) == CR0_PE | CR0_PG, "CR0 {cr0:#x} lacks PE|PG"),
    );
    c.check_eq("cr0-contract", cr0, CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG);
    c.check_eq("cr3", instr::read_cr3() & !0xfff, PML4_GPA);
    let cr4 = instr::read_cr4();
    c.check("cr4-vmxe-clear", ensure!(cr4 & CR4_VMXE == 0, "CR4 {cr4:#x} has VMXE"));
    c.check_eq("cr4-contract", cr4, CR4_PAE);
}

fn start_info(info: &StartInfo) -> Result<(), Why> {
    ensure!(info.magic == START_MAGIC, "magic {:#x}, want {START_MAGIC:#x}", info.magic)?;
    let name_len = info.name_len as usize;
    ensure!((1..=31).contains(&name_len), "name_len {name_len}")?;
    let name = &info.name[..name_len];
    ensure!(
        name.iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
        "name {:?} has characters outside [a-z0-9_-]",
        info.name()
    )?;
    ensure!(info.cmdline_len <= 255, "cmdline_len {}", info.cmdline_len)?;
    ensure!(info.cmdline().len() == info.cmdline_len as usize, "cmdline is not UTF-8")?;
    let ram = info.ram_size;
    ensure!(ram.is_multiple_of(MIB_2), "ram_size {ram:#x} is not a multiple of 2 MiB")?;
    ensure!(ram <= 1 << 30, "ram_size {ram:#x} above 1 GiB")?;
    let (_, image_end) = image_range();
    ensure!(ram >= image_end, "ram_size {ram:#x} below the image end {image_end:#x}")
}

fn gprs(e: &EntryState) -> Result<(), Why> {
    for (i, (&v, name)) in e.gprs.iter().zip(EntryState::GPR_NAMES).enumerate() {
        // RDI and RSP are set by the contract; every other GPR is 0.
        if i != 5 && i != 7 && v != 0 {
            return Err(guest_rt::why!("{name} = {v:#x}, want 0"));
        }
    }
    Ok(())
}

fn segments(e: &EntryState) -> Result<(), Why> {
    let code = u64::from(CODE_SELECTOR);
    let data = u64::from(DATA_SELECTOR);
    ensure!(e.cs == code, "CS {:#x}, want {code:#x}", e.cs)?;
    for (name, v) in [("DS", e.ds), ("ES", e.es), ("SS", e.ss), ("FS", e.fs), ("GS", e.gs)] {
        ensure!(v == data, "{name} {v:#x}, want {data:#x}")?;
    }
    Ok(())
}

/// GDTR points at GDT_GPA; 0x08 is a present 64-bit DPL-0 code segment, 0x10 a present
/// writable data segment.
fn gdt(e: &EntryState) -> Result<(), Why> {
    let (base, limit) = e.gdtr();
    ensure!(base == GDT_GPA, "GDTR base {base:#x}, want {GDT_GPA:#x}")?;
    ensure!(limit >= 0x17, "GDTR limit {limit:#x} does not cover 0x10")?;
    let gdt = GDT_GPA as *const u64;
    // SAFETY: the GDT lies in RAM at GDT_GPA (contract), identity-mapped; we only read it.
    let (code, data) = unsafe { (gdt.add(1).read_volatile(), gdt.add(2).read_volatile()) };
    let present = 1 << 47;
    let s = 1 << 44;
    let exec = 1 << 43;
    let long = 1 << 53;
    let dpl = 3 << 45;
    ensure!(
        code & (present | s | exec | long) == present | s | exec | long && code & dpl == 0,
        "descriptor 0x08 = {code:#018x} is not 64-bit DPL-0 code"
    )?;
    let writable = 1 << 41;
    ensure!(
        data & (present | s | exec | writable) == present | s | writable,
        "descriptor 0x10 = {data:#018x} is not writable data"
    )
}
