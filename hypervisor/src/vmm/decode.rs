//! A small x86 instruction decoder for the exits that need one: the length of the instruction
//! that exited, where the CPU gives no next RIP (SVM without NRIP save, such as QEMU TCG), and
//! the meaning of a `mov` that touched emulated MMIO (EPT violations and nested page faults say
//! where, not what).
//!
//! Encoding from the Intel SDM Vol. 2 (rev. 084): 2.1 (legacy prefixes, ModR/M and SIB, tables
//! 2-1 to 2-3 for 16- and 32-bit addressing), 2.2.1 (REX, RIP-relative addressing), 2.3.11 (the
//! 15-byte limit), appendix A (opcode maps); the SVM opcodes from the AMD APM Vol. 3, 15.
//! Only the instructions listed at [`insn_len`] and [`decode_mmio`] are known; anything else is
//! refused, never guessed.

use core::fmt;

/// The architectural maximum length of one instruction (SDM 2.3.11).
pub const MAX_INSN_LEN: usize = 15;

/// How the CPU reads instruction bytes: from CS.L and CS.D (SDM 3.4.5, "code segment").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real or virtual-8086 mode: 16-bit operands and addresses.
    Real,
    /// Protected (or compatibility) mode with CS.D = 0.
    Protected16,
    /// Protected (or compatibility) mode with CS.D = 1.
    Protected32,
    /// 64-bit mode: EFER.LMA and CS.L.
    Long64,
}

impl CpuMode {
    /// The mode a vCPU is in, from CR0.PE, RFLAGS.VM, EFER.LMA and its CS attributes.
    pub const fn from_state(
        cr0_pe: bool,
        rflags_vm: bool,
        efer_lma: bool,
        cs_l: bool,
        cs_d: bool,
    ) -> Self {
        if !cr0_pe || rflags_vm {
            Self::Real
        } else if efer_lma && cs_l {
            Self::Long64
        } else if cs_d {
            Self::Protected32
        } else {
            Self::Protected16
        }
    }

    const fn is_16bit(self) -> bool {
        matches!(self, Self::Real | Self::Protected16)
    }
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does: fetch more.
    Truncated,
    /// The instruction would be longer than [`MAX_INSN_LEN`] (the CPU raises #GP).
    TooLong,
    /// Not an instruction this decoder knows. `opcode` holds the opcode bytes after the prefixes,
    /// most significant first (`0xf4`, `0x0f01`, `0x0f3880`); for group opcodes selected by the
    /// ModR/M byte (`0f 00`, `0f 01`, `0f c7`, `c6`, `c7`) the ModR/M byte follows (`0x0f01d0`).
    Unsupported { opcode: u32 },
    /// [`decode_mmio`]: a known `mov` whose operand is a register, which cannot touch MMIO.
    RegisterOperand { opcode: u32 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated => f.write_str("instruction bytes end before the instruction does"),
            Self::TooLong => write!(f, "instruction longer than {MAX_INSN_LEN} bytes"),
            Self::Unsupported { opcode } => {
                write!(f, "unsupported instruction (opcode {opcode:#x})")
            }
            Self::RegisterOperand { opcode } => {
                write!(f, "instruction (opcode {opcode:#x}) has no memory operand")
            }
        }
    }
}

/// A general-purpose register, numbered as the encoding does: 0 RAX, 1 RCX, 2 RDX, 3 RBX,
/// 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8..15 R8..R15.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// The register's low bytes (as many as the access size).
    Gpr(u8),
    /// AH, CH, DH or BH (`HighByte(0..=3)`): bits 15:8 of RAX, RCX, RDX or RBX.
    HighByte(u8),
}

impl Reg {
    /// The number of the 64-bit register that holds this one.
    pub const fn index(self) -> u8 {
        match self {
            Self::Gpr(n) | Self::HighByte(n) => n,
        }
    }
}

/// Where a store's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioSrc {
    Reg(Reg),
    /// An immediate, already sign-extended to the access size.
    Imm(u64),
}

/// What a `mov` does with its memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOp {
    /// Read `size` bytes into `dst`, extended (by zeros, or by sign for `movsx`) to `dst_size`
    /// bytes; see [`MmioInsn::load_result`].
    Load { dst: Reg, dst_size: u8, sign_extend: bool },
    /// Write `size` bytes; see [`MmioInsn::store_value`].
    Store { src: MmioSrc },
}

/// A decoded MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInsn {
    /// Instruction length in bytes, prefixes included.
    pub len: usize,
    /// Bytes accessed in memory: 1, 2, 4 or 8.
    pub size: u8,
    pub op: MmioOp,
}

/// The low `size` bytes of `v`.
const fn truncate(v: u64, size: u8) -> u64 {
    if size >= 8 { v } else { v & ((1 << (size * 8)) - 1) }
}

/// `v`'s low `size` bytes, sign-extended to 64 bits.
const fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - 8 * size as u32;
    (((v << shift) as i64) >> shift) as u64
}

impl MmioInsn {
    /// For a load: the new value of register `dst.index()`, given its `old` value and the
    /// `size` bytes read from the device in the low bytes of `data`. Follows the register-write
    /// rules of 64-bit mode: a 4-byte write clears bits 63:32, 1- and 2-byte writes keep the
    /// rest. `None` for a store.
    pub fn load_result(&self, old: u64, data: u64) -> Option<u64> {
        let MmioOp::Load { dst, dst_size, sign_extend: signed } = self.op else {
            return None;
        };
        let value = truncate(data, self.size);
        let value = truncate(if signed { sign_extend(value, self.size) } else { value }, dst_size);
        Some(match (dst, dst_size) {
            (Reg::HighByte(_), _) => (old & !0xff00) | (value << 8),
            (Reg::Gpr(_), 4 | 8) => value,
            (Reg::Gpr(_), size) => (old & !truncate(u64::MAX, size)) | value,
        })
    }

    /// For a store: the `size` bytes to write (in the low bytes, the rest zero), reading a
    /// source register by number through `gpr`. `None` for a load.
    pub fn store_value(&self, gpr: impl FnOnce(u8) -> u64) -> Option<u64> {
        let MmioOp::Store { src } = self.op else {
            return None;
        };
        Some(match src {
            MmioSrc::Imm(v) => truncate(v, self.size),
            MmioSrc::Reg(Reg::Gpr(n)) => truncate(gpr(n), self.size),
            MmioSrc::Reg(Reg::HighByte(n)) => (gpr(n) >> 8) & 0xff,
        })
    }
}

/// Legacy and REX prefixes seen before the opcode (SDM 2.1.1, 2.2.1).
#[derive(Clone, Copy, Default)]
struct Prefixes {
    operand_size: bool,
    address_size: bool,
    rep: bool,
    repne: bool,
    /// The REX byte, if one came right before the opcode.
    rex: Option<u8>,
}

/// The fields of a ModR/M byte.
#[derive(Clone, Copy)]
struct ModRm {
    byte: u8,
    reg: u8,
}

impl ModRm {
    const fn is_memory(self) -> bool {
        self.byte >> 6 != 3
    }
}

/// A `mov` recognised by [`Decoder::mov`].
struct Mov {
    size: u8,
    op: MmioOp,
    memory: bool,
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    mode: CpuMode,
    p: Prefixes,
}

impl<'a> Decoder<'a> {
    /// Reads the prefixes; returns the decoder and the first opcode byte.
    fn new(bytes: &'a [u8], mode: CpuMode) -> Result<(Self, u8), DecodeError> {
        let mut d = Self { bytes, pos: 0, mode, p: Prefixes::default() };
        loop {
            let b = d.byte()?;
            match b {
                0x66 => d.p.operand_size = true,
                0x67 => d.p.address_size = true,
                0xf2 => d.p.repne = true,
                0xf3 => d.p.rep = true,
                0xf0 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
                0x40..=0x4f if mode == CpuMode::Long64 => {
                    d.p.rex = Some(b);
                    continue;
                }
                _ => return Ok((d, b)),
            }
            // A REX prefix followed by a legacy prefix is ignored (SDM 2.2.1).
            d.p.rex = None;
        }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads an `n`-byte little-endian value.
    fn le(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0;
        for i in 0..n {
            v |= u64::from(self.byte()?) << (8 * i);
        }
        Ok(v)
    }

    fn rex_bit(&self, bit: u8) -> bool {
        self.p.rex.is_some_and(|r| r & bit != 0)
    }

    /// Operand size in bytes for instructions whose default is 32 bits.
    fn operand_size(&self) -> u8 {
        if self.mode == CpuMode::Long64 && self.rex_bit(8) {
            8
        } else if self.mode.is_16bit() != self.p.operand_size {
            2
        } else {
            4
        }
    }

    /// Address size in bytes.
    fn address_size(&self) -> u8 {
        match (self.mode, self.p.address_size) {
            (CpuMode::Long64, false) => 8,
            (CpuMode::Long64, true) => 4,
            (m, override_) if m.is_16bit() != override_ => 2,
            _ => 4,
        }
    }

    /// Reads a ModR/M byte and the SIB byte and displacement it calls for.
    fn modrm(&mut self) -> Result<ModRm, DecodeError> {
        let byte = self.byte()?;
        let (md, rm) = (byte >> 6, byte & 7);
        let disp = if md == 3 {
            0
        } else if self.address_size() == 2 {
            // SDM table 2-1: [disp16] replaces [bp] when mod = 00.
            match (md, rm) {
                (0, 6) | (2, _) => 2,
                (1, _) => 1,
                _ => 0,
            }
        } else {
            // SDM table 2-2: rm = 100 brings a SIB byte; base 101 with mod = 00 means disp32
            // (RIP-relative when there is no SIB in 64-bit mode). REX.B does not change these.
            let base = if rm == 4 { self.byte()? & 7 } else { rm };
            match (md, base) {
                (0, 5) | (2, _) => 4,
                (1, _) => 1,
                _ => 0,
            }
        };
        self.le(disp)?;
        Ok(ModRm { byte, reg: (byte >> 3) & 7 })
    }

    /// The register named by ModR/M.reg, with REX.R.
    fn reg(&self, m: ModRm) -> u8 {
        m.reg | if self.rex_bit(4) { 8 } else { 0 }
    }

    /// An 8-bit register by number: without any REX prefix, 4..7 are AH, CH, DH, BH.
    fn reg8(&self, n: u8) -> Reg {
        if self.p.rex.is_none() && (4..8).contains(&n) { Reg::HighByte(n - 4) } else { Reg::Gpr(n) }
    }

    /// The `mov` forms that can access MMIO; `opcode` as in [`DecodeError::Unsupported`].
    fn mov(&mut self, opcode: u32) -> Result<Mov, DecodeError> {
        let load =
            |dst, size, dst_size, sign_extend| (size, MmioOp::Load { dst, dst_size, sign_extend });
        let store = |src, size| (size, MmioOp::Store { src });
        let os = self.operand_size();
        if let 0xa0..=0xa3 = opcode {
            // moffs: an address-sized absolute offset; the register is always AL/eAX/rAX.
            self.le(self.address_size())?;
            let size = if opcode & 1 == 0 { 1 } else { os };
            let (size, op) = if opcode & 2 == 0 {
                load(Reg::Gpr(0), size, size, false)
            } else {
                store(MmioSrc::Reg(Reg::Gpr(0)), size)
            };
            return Ok(Mov { size, op, memory: true });
        }
        let movsxd = opcode == 0x63 && self.mode == CpuMode::Long64;
        if !matches!(opcode, 0x88..=0x8b | 0xc6 | 0xc7 | 0x0fb6 | 0x0fb7 | 0x0fbe | 0x0fbf)
            && !movsxd
        {
            return Err(DecodeError::Unsupported { opcode });
        }
        let m = self.modrm()?;
        let r = self.reg(m);
        let (size, op) = match opcode {
            0x88 => store(MmioSrc::Reg(self.reg8(r)), 1),
            0x89 => store(MmioSrc::Reg(Reg::Gpr(r)), os),
            0x8a => load(self.reg8(r), 1, 1, false),
            0x8b => load(Reg::Gpr(r), os, os, false),
            0x63 => load(Reg::Gpr(r), os.min(4), os, true),
            0x0fb6 | 0x0fb7 | 0x0fbe | 0x0fbf => {
                load(Reg::Gpr(r), if opcode & 1 == 0 { 1 } else { 2 }, os, opcode & 8 != 0)
            }
            _ if m.reg != 0 => {
                return Err(DecodeError::Unsupported { opcode: opcode << 8 | u32::from(m.byte) });
            }
            0xc6 => store(MmioSrc::Imm(self.le(1)?), 1),
            _ => {
                // C7 /0: imm16 or imm32, the latter sign-extended for a 64-bit store.
                let imm = self.le(os.min(4))?;
                store(MmioSrc::Imm(if os == 8 { sign_extend(imm, 4) } else { imm }), os)
            }
        };
        Ok(Mov { size, op, memory: m.is_memory() })
    }

    /// Two- and three-byte opcodes (after 0F) of exiting instructions.
    fn two_byte(&mut self) -> Result<(), DecodeError> {
        let op = self.byte()?;
        let opcode = 0x0f00 | u32::from(op);
        let group = |m: ModRm| DecodeError::Unsupported { opcode: opcode << 8 | u32::from(m.byte) };
        match op {
            // CLTS, INVD, WBINVD, WRMSR, RDTSC, RDMSR, RDPMC, GETSEC, CPUID.
            0x06 | 0x08 | 0x09 | 0x30..=0x33 | 0x37 | 0xa2 => {}
            // MOV to/from CR and DR: mod is ignored, the operand is always a register.
            0x20..=0x23 => {
                self.byte()?;
            }
            // SLDT, STR, LLDT, LTR.
            0x00 => {
                let m = self.modrm()?;
                if m.reg > 3 {
                    return Err(group(m));
                }
            }
            0x01 => {
                let m = self.modrm()?;
                let known = if m.is_memory() {
                    // SGDT, SIDT, LGDT, LIDT, SMSW, LMSW, INVLPG.
                    m.reg != 5
                } else {
                    // VMCALL..VMXOFF, MONITOR, MWAIT, XSETBV, the SVM group (VMRUN..INVLPGA),
                    // SMSW r, LMSW r, RDTSCP.
                    matches!(m.byte, 0xc1..=0xc4 | 0xc8 | 0xc9 | 0xd1 | 0xd8..=0xdf | 0xe0..=0xe7 | 0xf0..=0xf7 | 0xf9)
                };
                if !known {
                    return Err(group(m));
                }
            }
            // VMREAD, VMWRITE (with 66/F2/F3 these are other instructions).
            0x78 | 0x79 => {
                if self.p.operand_size || self.p.rep || self.p.repne {
                    return Err(DecodeError::Unsupported { opcode });
                }
                self.modrm()?;
            }
            // Group 9: /6 VMPTRLD, VMCLEAR, VMXON (or RDRAND); /7 VMPTRST (or RDSEED, RDPID).
            0xc7 => {
                let m = self.modrm()?;
                if m.reg < 6 {
                    return Err(group(m));
                }
            }
            // INVEPT, INVVPID, INVPCID.
            0x38 => {
                let op3 = self.byte()?;
                if !(0x80..=0x82).contains(&op3) {
                    return Err(DecodeError::Unsupported { opcode: opcode << 8 | u32::from(op3) });
                }
                self.modrm()?;
            }
            _ => {
                self.mov(opcode)?;
            }
        }
        Ok(())
    }
}

/// The length of the instruction at the start of `bytes`, prefixes included.
///
/// Knows the instructions that cause VM exits: CPUID, RDMSR, WRMSR, RDTSC, RDTSCP, RDPMC, HLT,
/// PAUSE, INVD, WBINVD, XSETBV, MONITOR, MWAIT, GETSEC, CLTS, LMSW, SMSW, MOV to/from CR and DR,
/// SGDT/SIDT/LGDT/LIDT, SLDT/STR/LLDT/LTR, INVLPG, IN/OUT (all forms), INS/OUTS (REP or not),
/// VMCALL, VMMCALL, the other VMX instructions (VMXON, VMCLEAR, VMPTRLD, VMPTRST, VMREAD,
/// VMWRITE, VMLAUNCH, VMRESUME, VMXOFF, INVEPT, INVVPID, INVPCID), the SVM ones (VMRUN, VMLOAD,
/// VMSAVE, STGI, CLGI, SKINIT, INVLPGA), RDRAND/RDSEED, and the `mov` forms of [`decode_mmio`]
/// (register forms too).
pub fn insn_len(bytes: &[u8], mode: CpuMode) -> Result<usize, DecodeError> {
    let (mut d, op) = Decoder::new(bytes, mode)?;
    match op {
        // HLT, IN/OUT with DX, INS/OUTS, NOP/PAUSE.
        0xf4 | 0xec..=0xef | 0x6c..=0x6f | 0x90 => {}
        // IN/OUT with an imm8 port.
        0xe4..=0xe7 => {
            d.byte()?;
        }
        0x0f => d.two_byte()?,
        _ => {
            d.mov(u32::from(op))?;
        }
    }
    Ok(d.pos)
}

/// Decodes a `mov` that accessed memory: MOV r/m8,r8 (88), MOV r/m,r (89), MOV r8,r/m8 (8A),
/// MOV r,r/m (8B), MOV r/m8,imm8 (C6 /0), MOV r/m,imm (C7 /0), MOV with moffs (A0..A3),
/// MOVZX (0F B6, 0F B7), MOVSX (0F BE, 0F BF) and, in 64-bit mode, MOVSXD (63).
pub fn decode_mmio(bytes: &[u8], mode: CpuMode) -> Result<MmioInsn, DecodeError> {
    let (mut d, op) = Decoder::new(bytes, mode)?;
    let opcode = if op == 0x0f { 0x0f00 | u32::from(d.byte()?) } else { u32::from(op) };
    let mov = d.mov(opcode)?;
    if !mov.memory {
        return Err(DecodeError::RegisterOperand { opcode });
    }
    Ok(MmioInsn { len: d.pos, size: mov.size, op: mov.op })
}

/// A decoded `MOV CRn, r` (0F 22) or `MOV r, CRn` (0F 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovCr {
    /// Instruction length in bytes, prefixes included.
    pub len: usize,
    /// The control register: ModR/M.reg with REX.R.
    pub cr: u8,
    /// 0F 22 writes the control register; 0F 20 reads it.
    pub write: bool,
    /// The general-purpose register: ModR/M.rm with REX.B.
    pub gpr: u8,
}

/// Decodes a MOV to or from a control register, for CR exits that do not name the register
/// (SVM without decode assists, APM Vol. 2 §15.33.1). The ModR/M byte always names a register:
/// its mod bits are ignored (SDM Vol. 2B, MOV—Move to/from Control Registers).
pub fn decode_mov_cr(bytes: &[u8], mode: CpuMode) -> Result<MovCr, DecodeError> {
    let (mut d, op) = Decoder::new(bytes, mode)?;
    if op != 0x0f {
        return Err(DecodeError::Unsupported { opcode: u32::from(op) });
    }
    let op2 = d.byte()?;
    if op2 != 0x20 && op2 != 0x22 {
        return Err(DecodeError::Unsupported { opcode: 0x0f00 | u32::from(op2) });
    }
    let m = d.byte()?;
    let cr = ((m >> 3) & 7) | if d.rex_bit(4) { 8 } else { 0 };
    let gpr = (m & 7) | if d.rex_bit(1) { 8 } else { 0 };
    Ok(MovCr { len: d.pos, cr, write: op2 == 0x22, gpr })
}

/// The instructions other than MOV that write CR0: the CR0 write intercept catches them too
/// (APM Vol. 2 §15.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr0Write {
    /// CLTS (0F 06): clears CR0.TS.
    Clts,
    /// LMSW (0F 01 /6) from a general-purpose register (ModR/M.rm with REX.B), or from memory
    /// (`None`).
    Lmsw { gpr: Option<u8> },
}

/// Decodes CLTS or LMSW, for CR0 write exits that are not a MOV to CR0.
pub fn decode_cr0_write(bytes: &[u8], mode: CpuMode) -> Result<Cr0Write, DecodeError> {
    let (mut d, op) = Decoder::new(bytes, mode)?;
    if op != 0x0f {
        return Err(DecodeError::Unsupported { opcode: u32::from(op) });
    }
    match d.byte()? {
        0x06 => Ok(Cr0Write::Clts),
        0x01 => {
            let m = d.byte()?;
            if (m >> 3) & 7 != 6 {
                return Err(DecodeError::Unsupported { opcode: 0x0f0100 | u32::from(m) });
            }
            let gpr = (m >> 6 == 3).then(|| (m & 7) | if d.rex_bit(1) { 8 } else { 0 });
            Ok(Cr0Write::Lmsw { gpr })
        }
        op2 => Err(DecodeError::Unsupported { opcode: 0x0f00 | u32::from(op2) }),
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
