//! Port I/O on every port with every size (IN/OUT with DX and with an 8-bit immediate), and
//! string I/O (INS/OUTS, with and without REP, forwards and backwards) into and out of a
//! buffer of this guest's own.
//!
//! Left out of the writes (the exclusion list), each because it ends or silences this
//! partition by the guest contract, not by a fault of the hypervisor:
//! - COM1 `0x3f8..=0x3fe`: the guest's own console (a random LCR or divisor loses its output);
//!   the scratch register `0x3ff` stays in; reads of all eight stay in.
//! - `0x92` bit 0 and `0xcf9` bit 2 (with bit 1): the PC's reset controls, which reset this
//!   partition as they would a PC; other values of both ports stay in.
//! - `0xf4` (QEMU's debug exit), `0x8900` (Bochs' shutdown), `0x604` and `0xb004` (ACPI power
//!   off on QEMU's and Bochs' chipsets), `0x64` with `0xfe` (keyboard-controller reset): absent
//!   in a guest partition, but they would end a management partition or the emulator if a
//!   hypervisor ever let them through, and the chaos guest must not end its own run.

use core::arch::asm;

use crate::Ctx;

/// A port biased to the ones with devices behind them (the PC's devices, COM ports, PCI
/// configuration, the emulators' ports), else any of the 65,536.
fn pick_port(ctx: &mut Ctx) -> u16 {
    const NEAR: [u16; 16] = [
        0x20, 0x40, 0x60, 0x70, 0x80, 0x92, 0xa0, 0xcf8, 0x3f8, 0x2f8, 0x1f0, 0x170, 0x4d0, 0xcf9,
        0xf4, 0x510,
    ];
    let r = &mut ctx.rng;
    if r.chance(1, 2) { r.pick(&NEAR).wrapping_add(r.below(8) as u16) } else { r.next() as u16 }
}

/// True when writing `value` (of `size` bytes) to `port` is on the exclusion list.
fn excluded(port: u16, size: u8, value: u32) -> bool {
    // Every byte port an access of `size` bytes at `port` covers.
    let covers = |p: u16| p.wrapping_sub(port) < u16::from(size);
    let byte_at = |p: u16| (value >> (8 * u32::from(p.wrapping_sub(port)))) as u8;
    (0x3f8..=0x3fe).any(covers)
        || (covers(0x92) && byte_at(0x92) & 1 != 0)
        || (covers(0xcf9) && byte_at(0xcf9) & 0x06 != 0)
        || [0xf4, 0xf5, 0xf6, 0xf7, 0x8900, 0x604, 0x605, 0xb004, 0xb005].into_iter().any(covers)
        || (covers(0x64) && byte_at(0x64) == 0xfe)
}

pub fn port(ctx: &mut Ctx) {
    let port = pick_port(ctx);
    let size = ctx.rng.pick(&[1u8, 2, 4]);
    let write = ctx.rng.chance(1, 2);
    let value = ctx.rng.next() as u32;
    if write && excluded(port, size, value) {
        return;
    }
    // An immediate-port form for a few fixed ports, DX for the rest.
    let imm = ctx.rng.chance(1, 8);
    ctx.catch(|| {
        // SAFETY: the partition's own virtual devices or absent ports (all-ones, writes
        // ignored): nothing this guest relies on, the exclusion list aside. No memory changes.
        unsafe {
            match (write, size, imm) {
                (false, 1, true) => asm!("in al, 0x80", out("al") _),
                (false, 2, true) => asm!("in ax, 0x61", out("ax") _),
                (false, _, true) => asm!("in eax, 0x21", out("eax") _),
                (true, _, true) => asm!("out 0x80, al", in("al") value as u8),
                (false, 1, _) => asm!("in al, dx", in("dx") port, out("al") _),
                (false, 2, _) => asm!("in ax, dx", in("dx") port, out("ax") _),
                (false, _, _) => asm!("in eax, dx", in("dx") port, out("eax") _),
                (true, 1, _) => asm!("out dx, al", in("dx") port, in("al") value as u8),
                (true, 2, _) => asm!("out dx, ax", in("dx") port, in("ax") value as u16),
                (true, _, _) => asm!("out dx, eax", in("dx") port, in("eax") value),
            }
        }
    });
}

/// The buffer string I/O reads into and writes from.
static mut BUFFER: [u8; 256] = [0; 256];

pub fn string(ctx: &mut Ctx) {
    let port = pick_port(ctx);
    let size = ctx.rng.pick(&[1u64, 2, 4]);
    let write = ctx.rng.chance(1, 2);
    let count = if ctx.rng.chance(1, 4) { 1 } else { ctx.rng.below(256 / size + 1) };
    let backwards = ctx.rng.chance(1, 4);
    let rep = ctx.rng.chance(3, 4);
    let buf = &raw mut BUFFER;
    // SAFETY: the buffer is this guest's own (one vCPU, nothing else uses it now).
    let bytes = unsafe { &mut *buf };
    for b in bytes.iter_mut() {
        *b = ctx.rng.next() as u8;
    }
    if write {
        // OUTS writes the whole buffer's values, so check each unit against the list.
        let units = bytes.chunks(size as usize).take(count.max(1) as usize);
        let value = |c: &[u8]| c.iter().rev().fold(0u32, |v, &b| v << 8 | u32::from(b));
        if units.clone().any(|c| excluded(port, size as u8, value(c))) {
            return;
        }
    }
    let start = buf as u64;
    // Forwards from the start; backwards (DF = 1) from the last whole unit.
    let addr = if backwards { start + 256 - size } else { start };
    let n = count;
    ctx.catch(|| {
        // SAFETY: at most `n` units of `size` bytes, which stay inside the buffer in either
        // direction (n * size <= 256); DF is cleared at the end (and by the fault path, which
        // restores the saved RFLAGS).
        unsafe {
            if backwards {
                asm!("std");
            }
            match (write, size, rep) {
                (false, 1, true) => {
                    asm!("rep insb", inout("rdi") addr => _, inout("rcx") n => _, in("dx") port)
                }
                (false, 2, true) => {
                    asm!("rep insw", inout("rdi") addr => _, inout("rcx") n => _, in("dx") port)
                }
                (false, _, true) => {
                    asm!("rep insd", inout("rdi") addr => _, inout("rcx") n => _, in("dx") port)
                }
                (true, 1, true) => {
                    asm!("rep outsb", inout("rsi") addr => _, inout("rcx") n => _, in("dx") port)
                }
                (true, 2, true) => {
                    asm!("rep outsw", inout("rsi") addr => _, inout("rcx") n => _, in("dx") port)
                }
                (true, _, true) => {
                    asm!("rep outsd", inout("rsi") addr => _, inout("rcx") n => _, in("dx") port)
                }
                (false, 1, false) => asm!("insb", inout("rdi") addr => _, in("dx") port),
                (false, 2, false) => asm!("insw", inout("rdi") addr => _, in("dx") port),
                (false, _, false) => asm!("insd", inout("rdi") addr => _, in("dx") port),
                (true, 1, false) => asm!("outsb", inout("rsi") addr => _, in("dx") port),
                (true, 2, false) => asm!("outsw", inout("rsi") addr => _, in("dx") port),
                (true, _, false) => asm!("outsd", inout("rsi") addr => _, in("dx") port),
            }
            asm!("cld");
        }
    });
}
