//! Small wrappers over the instructions the checks use: port I/O, MSRs, CPUID, MMIO, the TSS.

use core::arch::asm;

/// Reads a byte from `port`.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port reads change device state only; every port this kernel reads is a PC
    // device it drives (COM1, the ATA channel, the 8259s).
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack)) };
    v
}

/// Reads a word from `port`.
pub fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as in `inb`.
    unsafe { asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack)) };
    v
}

/// Writes a byte to `port`.
pub fn outb(port: u16, v: u8) {
    // SAFETY: this kernel owns the bare PC: every port it writes is a device it drives, in
    // the way that device's datasheet describes.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}

/// Writes a doubleword to `port`.
pub fn outl(port: u16, v: u32) {
    // SAFETY: as in `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack)) };
}

/// RDMSR (a #GP for an MSR the CPU lacks: call it under [`crate::idt::guarded`]).
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an MSR changes nothing; a missing one raises #GP, which the guard catches.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// WRMSR.
///
/// # Safety
/// The caller owns what the MSR controls.
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nomem, nostack))
    };
}

/// CPUID leaf `leaf`, subleaf 0: (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The initial APIC ID of this CPU (CPUID.1:EBX[31:24]).
pub fn apic_id() -> u32 {
    cpuid(1).1 >> 24
}

/// A 32-bit read of a device register at physical (= virtual) address `addr`.
pub fn mmio_read(addr: u64) -> u32 {
    // SAFETY: the first 4 GiB are identity-mapped (the top gigabyte uncached); callers pass
    // device register addresses from IA32_APIC_BASE or the MADT. A read of an address nothing
    // answers faults at worst, under the guard.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// A 32-bit write of a device register at `addr`.
pub fn mmio_write(addr: u64, v: u32) {
    // SAFETY: as in `mmio_read`: a device register the caller programs by its specification.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) };
}

/// A byte of physical memory (identity-mapped).
pub fn phys_byte(addr: u64) -> u8 {
    // SAFETY: the first 4 GiB are identity-mapped; the callers read firmware tables and
    // loaded images at addresses the firmware or the loader gave.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Sets interrupts on.
pub fn sti() {
    // SAFETY: every vector has a handler (`idt`).
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Sets interrupts off.
pub fn cli() {
    // SAFETY: masking interrupts is always allowed at CPL 0.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// PAUSE, in a wait loop.
pub fn pause() {
    core::hint::spin_loop();
}

#[repr(C, packed)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

static mut TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: 104,
};

unsafe extern "C" {
    static mut gdt: [u64; 8];
}

/// The stack interrupts and exceptions from ring 3 switch to (TSS.RSP0).
#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut RING0_STACK: Stack = Stack([0; 16384]);

/// Fills the GDT's TSS descriptor (SDM Vol. 3A §8.2.3, 64-bit TSS descriptor: type 9) with
/// RSP0 = a stack of its own (interrupts and exceptions from ring 3 land there) and loads TR.
pub fn load_tss() {
    let base = &raw const TSS as u64;
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    // SAFETY: single CPU, run once before anything uses ring 3; the GDT's slot 6/7 is
    // reserved for this descriptor (boot.rs) and TSS is only touched here.
    unsafe {
        TSS.rsp[0] = &raw const RING0_STACK as u64 + 16384;
        gdt[6] = low;
        gdt[7] = base >> 32;
        asm!("ltr ax", in("ax") 0x30u16, options(nostack));
    }
}
