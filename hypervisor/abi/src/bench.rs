//! Measurement loops shared by the bench guest and the hypervisor's native baseline, so that
//! both run exactly the same instructions. Under Bochs RDTSC advances once per retired
//! instruction and under QEMU `-icount shift=0` likewise, so the figures are exact.
//!
//! Each loop runs `n` iterations of one operation plus `dec`/`jnz`; [`ticks_per_op`] subtracts
//! the empty loop, leaving the cost of the operation alone.

use core::arch::asm;

/// Iterations per measurement.
pub const ITERATIONS: u64 = 2000;

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Ticks per iteration of `body(n)` minus the empty loop's, over `n` iterations.
pub fn ticks_per_op(n: u64, body: impl Fn(u64)) -> u64 {
    let t0 = rdtsc();
    empty_loop(n);
    let empty = rdtsc() - t0;
    let t0 = rdtsc();
    body(n);
    let full = rdtsc() - t0;
    full.saturating_sub(empty) / n.max(1)
}

/// The loop alone.
pub fn empty_loop(n: u64) {
    // SAFETY: only counts a register down.
    unsafe { asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) n => _, options(nomem, nostack)) };
}

/// CPUID leaf 0, `n` times.
pub fn cpuid_loop(n: u64) {
    // SAFETY: CPUID has no side effects; it clobbers RBX, which is saved around the loop (the
    // counter is pinned to R8 so it cannot be allocated to RBX).
    unsafe {
        asm!(
            "push rbx",
            "2:",
            "xor eax, eax",
            "cpuid",
            "dec r8",
            "jnz 2b",
            "pop rbx",
            inout("r8") n => _, out("eax") _, out("ecx") _, out("edx") _,
        )
    };
}

/// The Version hypercall, `n` times: VMCALL when `intel`, VMMCALL otherwise.
///
/// # Safety
/// Only in a guest of this hypervisor (outside one, both instructions raise #UD).
pub unsafe fn hypercall_loop(n: u64, intel: bool) {
    // SAFETY: the caller runs under the hypervisor, which answers the Version call in RAX/RDX.
    unsafe {
        if intel {
            asm!("2:", "xor eax, eax", "vmcall", "dec {n}", "jnz 2b", n = inout(reg) n => _, out("eax") _, out("edx") _);
        } else {
            asm!("2:", "xor eax, eax", "vmmcall", "dec {n}", "jnz 2b", n = inout(reg) n => _, out("eax") _, out("edx") _);
        }
    }
}

/// OUT of one byte to `port`, `n` times.
///
/// # Safety
/// Writing `port` must be harmless (a UART scratch register).
pub unsafe fn out_loop(n: u64, port: u16) {
    // SAFETY: the caller picked a harmless port.
    unsafe {
        asm!("2:", "out dx, al", "dec {n}", "jnz 2b", n = inout(reg) n => _, in("dx") port, in("al") 0x5au8, options(nomem, nostack))
    };
}

/// A 32-bit load from `addr`, `n` times.
///
/// # Safety
/// `addr` is mapped and reading it is harmless.
pub unsafe fn mmio_read_loop(n: u64, addr: u64) {
    // SAFETY: the caller guarantees the address is mapped and side-effect free to read.
    unsafe {
        asm!("2:", "mov {t:e}, [{a}]", "dec {n}", "jnz 2b", n = inout(reg) n => _, a = in(reg) addr, t = out(reg) _, options(nostack))
    };
}

/// Bytes the CPU-bound loop ([`walk`]) reads: 4 MiB.
pub const WALK_BYTES: u64 = 4 << 20;
/// Its stride: one page and one cache line, so that every load lands on another page (on real
/// hardware a TLB miss, under EPT/NPT a two-dimensional page walk) and another cache line.
pub const WALK_STRIDE: u64 = 4096 + 64;
/// Passes over the buffer: 1,009 loads of 4 instructions each per pass, about 4 M instructions
/// in all, with no exit of its own.
pub const WALK_PASSES: u64 = 1000;

/// The CPU-bound loop: [`WALK_PASSES`] passes over `[base, base + WALK_BYTES)` loading a
/// quadword every [`WALK_STRIDE`] bytes; returns the ticks it took (loop overhead included: the
/// guest and the hypervisor run the very same instructions, and the figure is their ratio).
///
/// # Safety
/// `[base, base + WALK_BYTES)` is mapped readable memory (its contents do not matter).
pub unsafe fn walk(base: u64) -> u64 {
    let t0 = rdtsc();
    // SAFETY: the caller guarantees the buffer is mapped; the loop only reads it, 8 bytes at
    // offsets below WALK_BYTES - 7, so every load lies inside the buffer.
    unsafe {
        asm!(
            "2:",
            "xor {off:e}, {off:e}",
            "3:",
            "add {acc}, [{base} + {off}]",
            "add {off}, {stride}",
            "cmp {off}, {limit}",
            "jb 3b",
            "dec {n}",
            "jnz 2b",
            base = in(reg) base,
            off = out(reg) _,
            acc = inout(reg) 0u64 => _,
            n = inout(reg) WALK_PASSES => _,
            stride = const WALK_STRIDE,
            limit = const WALK_BYTES - 7,
            options(readonly, nostack),
        )
    };
    rdtsc() - t0
}

/// In R11 while [`stamped_out_loop`] runs: tells the hypervisor's exit profile (its
/// `exit-profile` feature) that R8 and R10 hold the guest's TSC stamps.
pub const STAMP_MAGIC: u64 = 0x504d_4154_5348_5645; // "EVHSTAMP"

/// OUT of one byte to `port`, `n` times, with the guest's TSC in registers at each exit: R10
/// read by the first instruction after the VM entry, R8 read five instructions before the OUT
/// (R11 = [`STAMP_MAGIC`]). With the host's TSC at the same instants (the hypervisor does not
/// offset the guest's TSC), the exit profile splits the ticks of `Vcpu::run` into entry, guest
/// and exit. Outside the profile nothing reads the stamps.
///
/// # Safety
/// Writing `port` must be harmless (a UART scratch register).
pub unsafe fn stamped_out_loop(n: u64, port: u16) {
    // SAFETY: the caller picked a harmless port; RAX, RDX, R8, R10 and R11 are declared
    // clobbered, the counter lives in RCX.
    unsafe {
        asm!(
            "2:",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov r8, rax",
            "mov edx, {port:e}",
            "mov eax, 0x5a",
            "out dx, al",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov r10, rax",
            "dec rcx",
            "jnz 2b",
            port = in(reg) u32::from(port),
            inout("rcx") n => _,
            out("rax") _, out("rdx") _, out("r8") _, out("r10") _,
            inout("r11") STAMP_MAGIC => _,
            options(nomem, nostack),
        )
    };
}
