//! Host tests of the instruction decoder (`decode.rs`).

use super::CpuMode::{Long64, Protected16, Protected32, Real};
use super::*;

#[test]
fn mov_cr_names_register_and_direction() {
    let cases = [
        ("0f 22 e1", Long64, MovCr { len: 3, cr: 4, write: true, gpr: 1 }),
        ("0f 20 d8", Long64, MovCr { len: 3, cr: 3, write: false, gpr: 0 }),
        ("41 0f 22 e1", Long64, MovCr { len: 4, cr: 4, write: true, gpr: 9 }),
        ("44 0f 22 c0", Long64, MovCr { len: 4, cr: 8, write: true, gpr: 0 }),
        // mod bits are ignored: still a register operand, no displacement.
        ("0f 22 21", Protected32, MovCr { len: 3, cr: 4, write: true, gpr: 1 }),
        // In 32-bit mode 0x41 is INC ECX, not REX: not a MOV CR.
    ];
    for (s, mode, want) in cases {
        assert_eq!(decode_mov_cr(&hex(s), mode), Ok(want), "{s}");
    }
    assert_eq!(decode_mov_cr(&hex("0f 22"), Long64), Err(DecodeError::Truncated));
    assert!(matches!(decode_mov_cr(&hex("0f a2"), Long64), Err(DecodeError::Unsupported { .. })));
    assert!(matches!(
        decode_mov_cr(&hex("41 0f 22 e1"), Protected32),
        Err(DecodeError::Unsupported { .. })
    ));
}

#[test]
fn clts_and_lmsw_write_cr0() {
    assert_eq!(decode_cr0_write(&hex("0f 06"), Long64), Ok(Cr0Write::Clts));
    assert_eq!(decode_cr0_write(&hex("0f 01 f0"), Long64), Ok(Cr0Write::Lmsw { gpr: Some(0) }));
    assert_eq!(decode_cr0_write(&hex("41 0f 01 f3"), Long64), Ok(Cr0Write::Lmsw { gpr: Some(11) }));
    assert_eq!(decode_cr0_write(&hex("0f 01 30"), Long64), Ok(Cr0Write::Lmsw { gpr: None }));
    // SMSW (0f 01 /4) and MOV CR0 are not these.
    assert!(decode_cr0_write(&hex("0f 01 e0"), Long64).is_err());
    assert!(decode_cr0_write(&hex("0f 22 c0"), Long64).is_err());
    assert_eq!(decode_cr0_write(&hex("0f 01"), Long64), Err(DecodeError::Truncated));
}

/// Parses "0f 01 d9" into bytes.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

/// (bytes, mode, length) of instructions `insn_len` must know.
const LENGTHS: &[(&str, CpuMode, usize)] = &[
    ("0f a2", Long64, 2),                                   // cpuid
    ("0f 32", Long64, 2),                                   // rdmsr
    ("0f 30", Long64, 2),                                   // wrmsr
    ("0f 31", Long64, 2),                                   // rdtsc
    ("0f 33", Long64, 2),                                   // rdpmc
    ("0f 01 f9", Long64, 3),                                // rdtscp
    ("f4", Long64, 1),                                      // hlt
    ("f3 90", Long64, 2),                                   // pause
    ("0f 08", Long64, 2),                                   // invd
    ("0f 09", Long64, 2),                                   // wbinvd
    ("0f 06", Long64, 2),                                   // clts
    ("0f 01 d1", Long64, 3),                                // xsetbv
    ("0f 01 c8", Long64, 3),                                // monitor
    ("0f 01 c9", Long64, 3),                                // mwait
    ("0f 01 c1", Long64, 3),                                // vmcall
    ("0f 01 d9", Long64, 3),                                // vmmcall
    ("0f 01 d8", Long64, 3),                                // vmrun
    ("0f 01 da", Long64, 3),                                // vmload
    ("0f 01 db", Long64, 3),                                // vmsave
    ("0f 01 dc", Long64, 3),                                // stgi
    ("0f 01 dd", Long64, 3),                                // clgi
    ("0f 01 de", Long64, 3),                                // skinit
    ("0f 01 df", Long64, 3),                                // invlpga
    ("0f 01 c2", Long64, 3),                                // vmlaunch
    ("0f 01 c3", Long64, 3),                                // vmresume
    ("0f 01 c4", Long64, 3),                                // vmxoff
    ("f3 0f c7 30", Long64, 4),                             // vmxon [rax]
    ("66 0f c7 30", Long64, 4),                             // vmclear [rax]
    ("0f c7 30", Long64, 3),                                // vmptrld [rax]
    ("0f c7 38", Long64, 3),                                // vmptrst [rax]
    ("0f c7 74 24 08", Long64, 5),                          // vmptrld [rsp+8]
    ("0f c7 f0", Long64, 3),                                // rdrand eax
    ("0f 78 c8", Long64, 3),                                // vmread rax, rcx
    ("0f 79 04 24", Long64, 4),                             // vmwrite rax, [rsp]
    ("66 0f 38 80 08", Long64, 5),                          // invept rcx, [rax]
    ("66 0f 38 81 0d 00 00 00 00", Long64, 9),              // invvpid rcx, [rip]
    ("66 0f 38 82 08", Long64, 5),                          // invpcid rcx, [rax]
    ("0f 20 c0", Long64, 3),                                // mov rax, cr0
    ("0f 22 d8", Long64, 3),                                // mov cr3, rax
    ("44 0f 20 c0", Long64, 4),                             // mov rax, cr8
    ("0f 20 40", Long64, 3),                                // mod is ignored
    ("0f 21 f8", Long64, 3),                                // mov rax, dr7
    ("0f 23 c0", Long64, 3),                                // mov dr0, rax
    ("0f 01 f0", Long64, 3),                                // lmsw ax
    ("0f 01 30", Long64, 3),                                // lmsw [rax]
    ("0f 01 e0", Long64, 3),                                // smsw eax
    ("0f 00 d8", Long64, 3),                                // ltr ax
    ("0f 00 10", Long64, 3),                                // lldt [rax]
    ("e4 60", Long64, 2),                                   // in al, 0x60
    ("e5 40", Long64, 2),                                   // in eax, 0x40
    ("e6 80", Long64, 2),                                   // out 0x80, al
    ("e7 80", Long64, 2),                                   // out 0x80, eax
    ("ec", Long64, 1),                                      // in al, dx
    ("66 ed", Long64, 2),                                   // in ax, dx
    ("ee", Long64, 1),                                      // out dx, al
    ("ef", Long64, 1),                                      // out dx, eax
    ("f3 6c", Long64, 2),                                   // rep insb
    ("f3 6d", Long64, 2),                                   // rep insd
    ("f3 66 6f", Long64, 3),                                // rep outsw
    ("6e", Long64, 1),                                      // outsb
    ("0f 01 38", Long64, 3),                                // invlpg [rax]
    ("0f 01 3c 24", Long64, 4),                             // invlpg [rsp]
    ("0f 01 10", Long64, 3),                                // lgdt [rax]
    ("0f 01 18", Long64, 3),                                // lidt [rax]
    ("0f 01 00", Long64, 3),                                // sgdt [rax]
    ("0f 01 08", Long64, 3),                                // sidt [rax]
    ("0f 01 15 00 00 00 00", Long64, 7),                    // lgdt [rip]
    ("0f 01 90 00 10 00 00", Long64, 7),                    // lgdt [rax+0x1000]
    ("48 8b 04 25 00 10 00 00", Long64, 8),                 // mov rax, [0x1000]
    ("8b 05 10 00 00 00", Long64, 6),                       // mov eax, [rip+0x10]
    ("c7 00 78 56 34 12", Long64, 6),                       // mov dword [rax], 0x12345678
    ("48 c7 40 08 ff ff ff ff", Long64, 8),                 // mov qword [rax+8], -1
    ("44 8b 4c 24 08", Long64, 5),                          // mov r9d, [rsp+8]
    ("41 8b 45 00", Long64, 4),                             // mov eax, [r13+0]
    ("42 8b 04 25 00 00 00 00", Long64, 8),                 // mov eax, [r12*1+0]: SIB, no base
    ("89 c0", Long64, 2),                                   // mov eax, eax
    ("a1 00 10 00 00 00 00 00 00", Long64, 9),              // mov eax, [moffs64]
    ("67 a0 00 10 00 00", Long64, 6),                       // mov al, [moffs32]
    ("2e 3e 26 64 65 36 f0 66 67 f2 f3 0f a2", Long64, 13), // every legacy prefix
    ("66 48 0f a2", Long64, 4),                             // REX after a legacy prefix
    ("0f a2", Protected32, 2),
    ("ed", Protected32, 1),
    ("0f 01 c1", Protected32, 3),
    ("8b 04 24", Protected32, 3),                       // mov eax, [esp]
    ("8b 05 00 10 00 00", Protected32, 6),              // mov eax, [0x1000]
    ("c7 05 00 10 00 00 01 00 00 00", Protected32, 10), // mov dword [0x1000], 1
    ("66 c7 00 34 12", Protected32, 5),                 // mov word [eax], 0x1234
    ("a1 00 10 00 00", Protected32, 5),                 // mov eax, [moffs32]
    ("66 67 a1 00 10", Protected32, 5),                 // mov ax, [moffs16]
    ("67 8b 07", Protected32, 3),                       // mov eax, [bx]
    ("67 8b 06 34 12", Protected32, 5),                 // mov eax, [0x1234]
    ("67 8b 47 10", Protected32, 4),                    // mov eax, [bx+0x10]
    ("67 8b 87 00 10", Protected32, 5),                 // mov eax, [bx+0x1000]
    ("8b 07", Real, 2),                                 // mov ax, [bx]
    ("66 8b 07", Real, 3),                              // mov eax, [bx]
    ("67 8b 04 24", Real, 4),                           // mov ax, [esp]
    ("c7 06 00 10 34 12", Real, 6),                     // mov word [0x1000], 0x1234
    ("66 c7 06 00 10 78 56 34 12", Protected16, 9),     // mov dword [0x1000], imm32
    ("e6 80", Real, 2),
];

#[test]
fn lengths() {
    for &(s, mode, len) in LENGTHS {
        assert_eq!(insn_len(&hex(s), mode), Ok(len), "{s} in {mode:?}");
        // Bytes after the instruction are not read.
        let mut more = hex(s);
        more.extend_from_slice(&[0x0f; 16]);
        assert_eq!(insn_len(&more, mode), Ok(len), "{s} + more in {mode:?}");
    }
}

#[test]
fn every_truncation_is_reported() {
    for &(s, mode, len) in LENGTHS {
        let b = hex(s);
        for cut in 0..len {
            assert_eq!(insn_len(&b[..cut], mode), Err(DecodeError::Truncated), "{s}[..{cut}]");
            if decode_mmio(&b, mode).is_ok() {
                assert_eq!(decode_mmio(&b[..cut], mode), Err(DecodeError::Truncated));
            }
        }
    }
}

#[test]
fn the_15_byte_limit() {
    assert_eq!(insn_len(&[0x66; 16], Long64), Err(DecodeError::TooLong));
    assert_eq!(insn_len(&[0x66; 15], Long64), Err(DecodeError::TooLong));
    assert_eq!(insn_len(&[0x66; 10], Long64), Err(DecodeError::Truncated));
    let mut b = vec![0x2e; 13];
    b.extend_from_slice(&[0x0f, 0xa2]);
    assert_eq!(insn_len(&b, Long64), Ok(15));
    b.insert(0, 0x3e);
    assert_eq!(insn_len(&b, Long64), Err(DecodeError::TooLong));
    // Long through its operands: 10 prefixes, REX, C7, ModR/M, SIB, disp32, imm32.
    let b = hex("66 67 f0 2e 3e 26 64 65 36 2e 48 c7 84 24 00 00 00 00 ff ff ff ff");
    assert_eq!(insn_len(&b, Long64), Err(DecodeError::TooLong));
    assert_eq!(decode_mmio(&b, Long64), Err(DecodeError::TooLong));
}

#[test]
fn unknown_instructions() {
    let unsupported = |s: &str, mode| match insn_len(&hex(s), mode) {
        Err(DecodeError::Unsupported { opcode }) => opcode,
        other => panic!("{s}: {other:?}"),
    };
    assert_eq!(unsupported("cc", Long64), 0xcc);
    assert_eq!(unsupported("0f 0b", Long64), 0x0f0b);
    assert_eq!(unsupported("0f 01 d0", Long64), 0x0f01d0); // xgetbv
    assert_eq!(unsupported("0f 01 28", Long64), 0x0f0128);
    assert_eq!(unsupported("0f 00 20", Long64), 0x0f0020); // verr
    assert_eq!(unsupported("0f c7 08", Long64), 0x0fc708); // cmpxchg8b
    assert_eq!(unsupported("0f 38 00 c0", Long64), 0x0f3800);
    assert_eq!(unsupported("66 0f 78 c0 00 00", Long64), 0x0f78); // extrq
    assert_eq!(unsupported("c6 08 00", Long64), 0xc608);
    assert_eq!(unsupported("c7 c8 00 00 00 00", Long64), 0xc7c8);
    assert_eq!(unsupported("48 0f a2", Protected32), 0x48); // dec eax
    assert_eq!(unsupported("63 00", Protected32), 0x63); // arpl
    assert_eq!(unsupported("c5 f8 77", Long64), 0xc5); // vex
}

/// (bytes, mode, length, size, op) of `mov`s that reach MMIO.
#[rustfmt::skip]
const MMIO: &[(&str, CpuMode, usize, u8, MmioOp)] = &[
    ("89 08", Long64, 2, 4, store(Reg::Gpr(1))),                 // mov [rax], ecx
    ("48 89 08", Long64, 3, 8, store(Reg::Gpr(1))),              // mov [rax], rcx
    ("66 89 08", Long64, 3, 2, store(Reg::Gpr(1))),              // mov [rax], cx
    ("4c 89 40 10", Long64, 4, 8, store(Reg::Gpr(8))),           // mov [rax+16], r8
    ("48 66 89 08", Long64, 4, 2, store(Reg::Gpr(1))),           // REX then 66: REX ignored
    ("88 20", Long64, 2, 1, store(Reg::HighByte(0))),            // mov [rax], ah
    ("40 88 20", Long64, 3, 1, store(Reg::Gpr(4))),              // mov [rax], spl
    ("44 88 00", Long64, 3, 1, store(Reg::Gpr(8))),              // mov [rax], r8b
    ("8a 38", Long64, 2, 1, load(Reg::HighByte(3), 1, false)),   // mov bh, [rax]
    ("40 8a 38", Long64, 3, 1, load(Reg::Gpr(7), 1, false)),     // mov dil, [rax]
    ("8b 05 10 00 00 00", Long64, 6, 4, load(Reg::Gpr(0), 4, false)),
    ("44 8b 4c 24 08", Long64, 5, 4, load(Reg::Gpr(9), 4, false)),
    ("48 8b 04 25 00 10 00 00", Long64, 8, 8, load(Reg::Gpr(0), 8, false)),
    ("66 8b 00", Long64, 3, 2, load(Reg::Gpr(0), 2, false)),     // mov ax, [rax]
    ("0f b6 00", Long64, 3, 1, load(Reg::Gpr(0), 4, false)),     // movzx eax, byte [rax]
    ("48 0f b7 00", Long64, 4, 2, load(Reg::Gpr(0), 8, false)),  // movzx rax, word [rax]
    ("66 0f b6 00", Long64, 4, 1, load(Reg::Gpr(0), 2, false)),  // movzx ax, byte [rax]
    ("0f be 08", Long64, 3, 1, load(Reg::Gpr(1), 4, true)),      // movsx ecx, byte [rax]
    ("4c 0f bf 00", Long64, 4, 2, load(Reg::Gpr(8), 8, true)),   // movsx r8, word [rax]
    ("48 63 00", Long64, 3, 4, load(Reg::Gpr(0), 8, true)),      // movsxd rax, dword [rax]
    ("a0 00 10 00 00 00 00 00 00", Long64, 9, 1, load(Reg::Gpr(0), 1, false)),
    ("48 a3 00 10 00 00 00 00 00 00", Long64, 10, 8, store(Reg::Gpr(0))),
    ("a2 00 10 00 00", Protected32, 5, 1, store(Reg::Gpr(0))),
    ("8a 20", Protected32, 2, 1, load(Reg::HighByte(0), 1, false)), // mov ah, [eax]
    ("8b 07", Real, 2, 2, load(Reg::Gpr(0), 2, false)),
    ("c7 00 78 56 34 12", Long64, 6, 4, imm(0x1234_5678)),
    ("48 c7 40 08 ff ff ff ff", Long64, 8, 8, imm(u64::MAX)),
    ("48 c7 00 00 00 00 80", Long64, 7, 8, imm(0xffff_ffff_8000_0000)),
    ("66 c7 00 34 12", Long64, 5, 2, imm(0x1234)),
    ("c6 40 01 ab", Long64, 4, 1, imm(0xab)),
    ("66 c7 00 34 12", Protected32, 5, 2, imm(0x1234)),
];

const fn store(r: Reg) -> MmioOp {
    MmioOp::Store { src: MmioSrc::Reg(r) }
}
const fn imm(v: u64) -> MmioOp {
    MmioOp::Store { src: MmioSrc::Imm(v) }
}
const fn load(dst: Reg, dst_size: u8, sign_extend: bool) -> MmioOp {
    MmioOp::Load { dst, dst_size, sign_extend }
}

#[test]
fn mmio_accesses() {
    for &(s, mode, len, size, op) in MMIO {
        assert_eq!(decode_mmio(&hex(s), mode), Ok(MmioInsn { len, size, op }), "{s}");
        assert_eq!(insn_len(&hex(s), mode), Ok(len), "{s}");
        for cut in 0..len {
            assert_eq!(decode_mmio(&hex(s)[..cut], mode), Err(DecodeError::Truncated));
        }
    }
}

#[test]
fn mmio_needs_a_memory_operand() {
    assert_eq!(
        decode_mmio(&hex("89 c0"), Long64),
        Err(DecodeError::RegisterOperand { opcode: 0x89 })
    );
    assert_eq!(
        decode_mmio(&hex("0f b6 c0"), Long64),
        Err(DecodeError::RegisterOperand { opcode: 0x0fb6 })
    );
    assert_eq!(
        decode_mmio(&hex("0f a2"), Long64),
        Err(DecodeError::Unsupported { opcode: 0x0fa2 })
    );
    assert_eq!(decode_mmio(&hex("f4"), Long64), Err(DecodeError::Unsupported { opcode: 0xf4 }));
}

fn insn(s: &str) -> MmioInsn {
    decode_mmio(&hex(s), Long64).unwrap()
}

#[test]
fn load_results_follow_register_write_rules() {
    let old = 0x1111_2222_3333_4444;
    assert_eq!(
        insn("48 8b 00").load_result(old, 0xaabb_ccdd_eeff_0011),
        Some(0xaabb_ccdd_eeff_0011)
    );
    assert_eq!(insn("8b 00").load_result(old, 0xaabb_ccdd_eeff_0011), Some(0xeeff_0011));
    assert_eq!(insn("66 8b 00").load_result(old, 0xffff_abcd), Some(0x1111_2222_3333_abcd));
    assert_eq!(insn("8a 00").load_result(old, 0x1ab), Some(0x1111_2222_3333_44ab));
    assert_eq!(insn("8a 20").load_result(old, 0xab), Some(0x1111_2222_3333_ab44));
    assert_eq!(insn("0f b6 00").load_result(old, 0x80), Some(0x80));
    assert_eq!(insn("0f be 00").load_result(old, 0x80), Some(0xffff_ff80));
    assert_eq!(insn("48 0f be 00").load_result(old, 0x80), Some(0xffff_ffff_ffff_ff80));
    assert_eq!(insn("66 0f be 00").load_result(old, 0x80), Some(0x1111_2222_3333_ff80));
    assert_eq!(insn("48 63 00").load_result(old, 0x8000_0000), Some(0xffff_ffff_8000_0000));
    assert_eq!(insn("89 00").load_result(old, 1), None);
}

#[test]
fn store_values() {
    let gpr = |n: u8| 0x1111_2222_3333_4400 | u64::from(n);
    assert_eq!(insn("89 08").store_value(gpr), Some(0x3333_4401));
    assert_eq!(insn("48 89 08").store_value(gpr), Some(0x1111_2222_3333_4401));
    assert_eq!(insn("66 89 08").store_value(gpr), Some(0x4401));
    assert_eq!(insn("88 08").store_value(gpr), Some(0x01));
    assert_eq!(insn("88 28").store_value(gpr), Some(0x44)); // ch
    assert_eq!(insn("c6 00 ab").store_value(gpr), Some(0xab));
    assert_eq!(insn("48 c7 00 ff ff ff ff").store_value(gpr), Some(u64::MAX));
    assert_eq!(insn("8b 00").store_value(gpr), None);
}

#[test]
fn modes_from_state() {
    assert_eq!(CpuMode::from_state(false, false, false, false, false), Real);
    assert_eq!(CpuMode::from_state(true, true, false, false, false), Real);
    assert_eq!(CpuMode::from_state(true, false, false, false, false), Protected16);
    assert_eq!(CpuMode::from_state(true, false, false, false, true), Protected32);
    assert_eq!(CpuMode::from_state(true, false, true, false, true), Protected32);
    assert_eq!(CpuMode::from_state(true, false, true, true, false), Long64);
}

#[test]
fn never_panics_on_any_two_bytes() {
    for mode in [Real, Protected16, Protected32, Long64] {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let bytes = [a, b, 0x24, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                if let Ok(len) = insn_len(&bytes, mode) {
                    assert!(len <= MAX_INSN_LEN);
                }
                let _ = decode_mmio(&bytes[..3], mode);
            }
        }
    }
}
