//! MMIO reads and writes of the sysinfo device (the one emulated MMIO page, `0xfeb0_0000`) at
//! random offsets, sizes and values, in every `mov` form the guest contract's decoder takes
//! (MOV load and store, from and to 8-, 16-, 32- and 64-bit registers, high-byte registers,
//! immediates, MOVZX, MOVSX, MOVSXD, MOV with a 64-bit absolute address, REX registers, SIB
//! and displacement addressing, segment and operand-size prefixes); and reads of random
//! addresses of its own RAM.
//!
//! Left out (the exclusion list): guest-physical addresses that are neither RAM nor a device
//! (the guest contract stops the partition there; the `attack` guest checks it); instructions
//! other than `mov` on MMIO (arithmetic on memory, string moves: the contract's decoder does
//! not emulate them and stops the partition, as the guest contract says); writes to RAM other
//! than this guest's own scratch buffer (the rest holds its code, data and page tables).

use core::arch::asm;

use guest_rt::hvabi::start::SYSINFO_GPA;
use guest_rt::paging::{self, Caching, PAGE_2M};

use crate::Ctx;

pub fn init() -> Result<(), &'static str> {
    let page = SYSINFO_GPA & !(PAGE_2M - 1);
    // SAFETY: the 2 MiB page around the sysinfo device holds no RAM of this guest.
    unsafe { paging::map_2m(page, page, Caching::Uncached) }
        .map_err(|_| "cannot map the sysinfo page")
}

/// An address in the sysinfo page: a register, any offset, or the last bytes (an access of
/// 2, 4 or 8 bytes there runs past the page end).
fn address(ctx: &mut Ctx) -> u64 {
    let r = &mut ctx.rng;
    SYSINFO_GPA
        + match r.below(4) {
            0 | 1 => r.pick(&[0u64, 8, 0x10, 0x18, 4, 0xc, 0x14, 0x1c, 0x20]),
            2 => r.below(0x1000),
            _ => 0xff8 + r.below(8),
        }
}

pub fn run(ctx: &mut Ctx) {
    let a = address(ctx);
    let v = ctx.rng.next();
    let form = ctx.rng.below(32);
    let i = ctx.rng.below(4);
    ctx.catch(|| {
        // SAFETY: `a` lies in the sysinfo page (mapped uncached by `init`), an emulated device:
        // reads and writes change only its scratch register. Each form names its registers.
        unsafe {
            match form {
                0 => asm!("mov al, byte ptr [{a}]", a = in(reg) a, out("al") _),
                1 => asm!("mov ax, word ptr [{a}]", a = in(reg) a, out("ax") _),
                2 => asm!("mov eax, dword ptr [{a}]", a = in(reg) a, out("eax") _),
                3 => asm!("mov rax, qword ptr [{a}]", a = in(reg) a, out("rax") _),
                4 => asm!("mov byte ptr [{a}], {v}", a = in(reg) a, v = in(reg_byte) v as u8),
                5 => asm!("mov word ptr [{a}], {v:x}", a = in(reg) a, v = in(reg) v),
                6 => asm!("mov dword ptr [{a}], {v:e}", a = in(reg) a, v = in(reg) v),
                7 => asm!("mov qword ptr [{a}], {v}", a = in(reg) a, v = in(reg) v),
                8 => asm!("mov byte ptr [{a}], 0x5a", a = in(reg) a),
                9 => asm!("mov word ptr [{a}], 0x1234", a = in(reg) a),
                10 => asm!("mov dword ptr [{a}], 0x89abcdef", a = in(reg) a),
                11 => asm!("mov qword ptr [{a}], -2", a = in(reg) a),
                12 => asm!("movzx eax, byte ptr [{a}]", a = in(reg) a, out("eax") _),
                13 => asm!("movzx rax, word ptr [{a}]", a = in(reg) a, out("rax") _),
                14 => asm!("movsx rax, byte ptr [{a}]", a = in(reg) a, out("rax") _),
                15 => asm!("movsx eax, word ptr [{a}]", a = in(reg) a, out("eax") _),
                16 => asm!("movsxd rax, dword ptr [{a}]", a = in(reg) a, out("rax") _),
                17 => asm!("mov ah, byte ptr [{a}]", a = in(reg) a, out("rax") _),
                18 => asm!("mov byte ptr [{a}], ch", a = in(reg) a, in("rcx") v),
                19 => asm!("mov r15, qword ptr [{a}]", a = in(reg) a, out("r15") _),
                20 => asm!("mov dword ptr [{a}], r9d", a = in(reg) a, in("r9") v),
                21 => asm!("mov r10b, byte ptr [{a}]", a = in(reg) a, out("r10") _),
                // SIB with an index and a 32-bit displacement; a disp8 base.
                22 => asm!("mov eax, dword ptr [{b} + {i}*4 + 0x100]", b = in(reg) a - 0x100 - i * 4,
                    i = in(reg) i, out("eax") _),
                23 => asm!("mov qword ptr [{b} + {i}*8 - 8], {v}", b = in(reg) a + 8 - i * 8,
                    i = in(reg) i, v = in(reg) v),
                24 => asm!("mov rax, qword ptr [r13 + 0x10]", in("r13") a - 0x10, out("rax") _),
                25 => asm!("mov dword ptr [r12], 7", in("r12") a),
                // Prefixes: a segment override (its base is 0 in 64-bit mode for DS/ES/SS) and
                // an operand-size prefix on a store of an immediate.
                26 => asm!("mov eax, dword ptr ds:[{a}]", a = in(reg) a, out("eax") _),
                27 => asm!(".byte 0x26", "mov qword ptr [{a}], {v}", a = in(reg) a, v = in(reg) v),
                // MOV with a 64-bit absolute address (A0..A3).
                28 => asm!("movabs al, byte ptr [{x}]", x = const SYSINFO_GPA, out("al") _),
                29 => asm!("movabs rax, qword ptr [{x}]", x = const SYSINFO_GPA + 0x10, out("rax") _),
                30 => asm!("movabs dword ptr [{x}], eax", x = const SYSINFO_GPA + 0x10, in("eax") v as u32),
                _ => asm!("movabs qword ptr [{x}], rax", x = const SYSINFO_GPA + 0x18, in("rax") v),
            }
        }
    });
}

/// Reads of random addresses of its own RAM, in several sizes (nothing there is emulated: the
/// hypervisor must not see them at all); and writes to its own scratch buffer.
pub fn ram(ctx: &mut Ctx) {
    static mut SCRATCH: [u64; 64] = [0; 64];
    let a = ctx.rng.below(ctx.ram_size - 8);
    let s = (&raw mut SCRATCH).cast::<u8>() as u64 + ctx.rng.below(64 * 8 - 8);
    let v = ctx.rng.next();
    ctx.catch(|| {
        // SAFETY: `a` is in RAM, identity-mapped, and only read; `s` lies in SCRATCH, which
        // nothing else uses.
        unsafe {
            asm!("mov {t}, qword ptr [{a}]", "mov byte ptr [{s}], {v:l}", "mov qword ptr [{s}], {v}",
                a = in(reg) a, s = in(reg) s, v = in(reg) v, t = out(reg) _);
        }
    });
}
