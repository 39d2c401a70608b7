//! Thin wrappers over privileged instructions. Reading is safe where it cannot change machine
//! state; writing is `unsafe` and the caller states why it is sound.

use core::arch::asm;

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reading some ports has side effects on devices; the caller owns the device.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller owns the port; `in` touches no memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The caller owns the device behind the port.
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller owns the port; `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a word from an I/O port.
///
/// # Safety
/// The port must belong to the caller and reading it must not break the machine.
#[inline]
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: the caller owns the port; `in` touches no memory.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a word to an I/O port.
///
/// # Safety
/// The port must belong to the caller and the write must not break the machine.
#[inline]
pub unsafe fn outw(port: u16, v: u16) {
    // SAFETY: the caller owns the port; `out` touches no memory.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a doubleword to an I/O port.
///
/// # Safety
/// The caller owns the device behind the port.
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: the caller owns the port; `out` touches no memory.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a doubleword from an I/O port.
///
/// # Safety
/// The caller owns the device behind the port.
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: the caller owns the port; `in` touches no memory.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Reads a model-specific register.
///
/// # Safety
/// RDMSR of an MSR the CPU does not implement raises #GP; the caller checked CPUID.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller checked that the MSR exists; RDMSR touches no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must keep the machine's invariants.
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller guarantees the MSR exists and the value is sound.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Reads the time-stamp counter (in Bochs: retired instructions).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC is unprivileged at CPL0 and has no side effects.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Stops this CPU for good: interrupts off, then HLT forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI/HLT only stop this CPU, which is what the caller wants.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Sleeps until the next interrupt: STI's one-instruction shadow keeps interrupts out until
/// HLT has begun, so one that is already pending or arrives now wakes the CPU rather than
/// being taken before the HLT and leaving it asleep (SDM vol. 3A §6.8.3). The handler runs,
/// and CLI closes interrupts again before this returns.
pub fn wait_for_interrupt() {
    // SAFETY: the interrupts that can arrive are the host PIC lines the hypervisor unmasked
    // and its own APIC timer; their handlers touch only their device and atomics.
    unsafe { asm!("sti; hlt; cli", options(nomem, nostack)) };
}

/// CR2: the faulting linear address of the last #PF.
pub fn read_cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}
