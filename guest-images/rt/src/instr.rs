//! Single instructions: port I/O, MSRs, CPUID, TSC, control registers, interrupts, caches.
//!
//! Reads that cannot change anything are safe; port I/O, MSR access and register writes are
//! `unsafe` because what they change is the caller's to judge.

use core::arch::asm;

/// Result of CPUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// CPUID with EAX = `leaf`, ECX = `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (eax, ebx, ecx, edx);
    // SAFETY: CPUID only reads; RBX is reserved by LLVM, so it is saved in a scratch register.
    unsafe {
        asm!(
            "mov {save:r}, rbx",
            "cpuid",
            "xchg {save:r}, rbx",
            save = out(reg) ebx,
            inlateout("eax") leaf => eax,
            inlateout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    CpuidResult { eax, ebx, ecx, edx }
}

/// The 12-byte vendor string of CPUID leaf 0 (EBX, EDX, ECX).
pub fn cpu_vendor() -> [u8; 12] {
    let r = cpuid(0, 0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    v
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear at entry and we never set it).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads MSR `msr`.
///
/// # Safety
/// Raises #GP for an MSR the partition may not read; the caller handles that (for example
/// inside [`crate::expect_exception`]) or knows the MSR is allowed.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller accepts the #GP a forbidden MSR raises; RDMSR changes no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes MSR `msr`.
///
/// # Safety
/// The write changes processor state (segment bases, EFER, ...) that the caller must own; a
/// forbidden MSR raises #GP.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller owns the state the MSR controls and accepts the #GP of a forbidden MSR.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

macro_rules! port_io {
    ($in_name:ident, $out_name:ident, $t:ty, $reg:tt) => {
        /// Reads an I/O port.
        ///
        /// # Safety
        /// A port read may change device state; the caller owns the device (or knows it absent).
        pub unsafe fn $in_name(port: u16) -> $t {
            let v: $t;
            // SAFETY: the caller owns the port; IN changes no memory.
            unsafe {
                asm!(concat!("in ", $reg, ", dx"), out($reg) v, in("dx") port,
                    options(nomem, nostack, preserves_flags));
            }
            v
        }

        /// Writes an I/O port.
        ///
        /// # Safety
        /// The caller owns the device behind the port (or knows it absent).
        pub unsafe fn $out_name(port: u16, value: $t) {
            // SAFETY: the caller owns the port; OUT changes no memory.
            unsafe {
                asm!(concat!("out dx, ", $reg), in("dx") port, in($reg) value,
                    options(nomem, nostack, preserves_flags));
            }
        }
    };
}

port_io!(inb, outb, u8, "al");
port_io!(inw, outw, u16, "ax");
port_io!(inl, outl, u32, "eax");

macro_rules! read_cr {
    ($name:ident, $cr:literal) => {
        #[doc = concat!("Reads ", $cr, ".")]
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading a control register at CPL 0 has no side effect.
            unsafe { asm!(concat!("mov {}, ", $cr), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}

read_cr!(read_cr0, "cr0");
read_cr!(read_cr2, "cr2");
read_cr!(read_cr3, "cr3");
read_cr!(read_cr4, "cr4");

/// Writes CR4.
///
/// # Safety
/// CR4 controls paging and instruction availability; the caller keeps the rest of the guest
/// consistent with the new value. An invalid value raises #GP.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Writes CR3 (switches page tables).
///
/// # Safety
/// `value` must name page tables that map everything the guest touches next, this code and
/// its stack included.
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller vouches for the tables.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads XCR `xcr` (needs CR4.OSXSAVE, else #UD).
pub fn xgetbv(xcr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV only reads; without OSXSAVE it raises #UD, which the IDT reports.
    unsafe {
        asm!("xgetbv", in("ecx") xcr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes XCR `xcr`.
///
/// # Safety
/// Changes which state XSAVE manages; raises #UD without CR4.OSXSAVE and #GP for a bad value.
pub unsafe fn xsetbv(xcr: u32, value: u64) {
    // SAFETY: the caller vouches for the value (or expects the fault).
    unsafe {
        asm!("xsetbv", in("ecx") xcr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags));
    }
}

/// Enables interrupts.
pub fn sti() {
    // SAFETY: the IDT (`exception::init`) handles every vector before any Rust code runs.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Disables interrupts.
pub fn cli() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Halts until the next interrupt (forever with interrupts off).
pub fn hlt() {
    // SAFETY: HLT only waits.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

/// `sti; hlt` as one step: the STI shadow lets no interrupt in between, so a wake-up cannot be
/// lost. Interrupts stay enabled afterwards.
pub fn sti_hlt() {
    // SAFETY: as `sti` and `hlt`.
    unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
}

/// RFLAGS.
pub fn rflags() -> u64 {
    let v: u64;
    // SAFETY: PUSHFQ/POP use two bytes of the stack and change nothing else.
    unsafe { asm!("pushfq", "pop {}", out(reg) v, options(nomem, preserves_flags)) };
    v
}

/// Invalidates the TLB entry of `addr`.
pub fn invlpg(addr: u64) {
    // SAFETY: dropping a TLB entry only makes the next access walk the tables again.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Writes back and invalidates the caches.
pub fn wbinvd() {
    // SAFETY: WBINVD writes dirty lines back first, so no data is lost.
    unsafe { asm!("wbinvd", options(nomem, nostack, preserves_flags)) };
}

/// Invalidates the caches without writing them back.
///
/// # Safety
/// On bare metal this drops dirty cache lines; a hypervisor must emulate it (as WBINVD).
pub unsafe fn invd() {
    // SAFETY: the caller runs under a hypervisor that intercepts INVD.
    unsafe { asm!("invd", options(nostack, preserves_flags)) };
}

/// A descriptor-table register image (SIDT/SGDT/LIDT).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, packed)]
pub struct DescriptorPointer {
    pub limit: u16,
    pub base: u64,
}

/// Loads IDTR.
///
/// # Safety
/// The table must stay valid as long as it is loaded; every vector that can fire must have a
/// handler (a limit of 0 turns the next exception into a triple fault).
pub unsafe fn lidt(ptr: &DescriptorPointer) {
    // SAFETY: the caller vouches for the table.
    unsafe { asm!("lidt [{}]", in(reg) ptr, options(readonly, nostack, preserves_flags)) };
}

/// Stores IDTR.
pub fn sidt() -> DescriptorPointer {
    let mut p = DescriptorPointer::default();
    // SAFETY: SIDT writes 10 bytes into `p`, which is exactly that large.
    unsafe { asm!("sidt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// Stores GDTR.
pub fn sgdt() -> DescriptorPointer {
    let mut p = DescriptorPointer::default();
    // SAFETY: SGDT writes 10 bytes into `p`, which is exactly that large.
    unsafe { asm!("sgdt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}
