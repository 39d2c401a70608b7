//! The VMX instructions (SDM Vol. 3C Chapter 32), each wrapped so its failure becomes a typed
//! error: VMfailInvalid (CF = 1) or VMfailValid (ZF = 1, with the VM-instruction error number
//! in the current VMCS).

use core::arch::asm;

/// How a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// No current VMCS (or a VMXON/VMCLEAR/VMPTRLD operand problem without one).
    Invalid,
    /// Failed with a current VMCS; the number is its VM-instruction error field.
    Valid(u64),
}

impl core::fmt::Display for VmFail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Invalid => f.write_str("VMfailInvalid"),
            Self::Valid(n) => {
                write!(f, "VMfailValid: error {n}: {}", super::fields::instruction_error_name(*n))
            }
        }
    }
}

const CF: u64 = 1;
const ZF: u64 = 1 << 6;

fn check(rflags: u64) -> Result<(), VmFail> {
    if rflags & CF != 0 {
        Err(VmFail::Invalid)
    } else if rflags & ZF != 0 {
        // SAFETY: ZF = 1 means a current VMCS exists, and the error field is always readable.
        let n =
            unsafe { vmread_raw(super::fields::ReadOnly::InstructionError as u32) }.unwrap_or(0);
        Err(VmFail::Valid(n))
    } else {
        Ok(())
    }
}

/// VMXON with the region at physical `pa`.
///
/// # Safety
/// CR0/CR4 honour the VMX fixed bits, CR4.VMXE = 1, IA32_FEATURE_CONTROL allows VMX, and `pa`
/// is a 4 KiB-aligned page holding the VMCS revision identifier, owned by the hypervisor.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller guarantees the preconditions above (SDM Vol. 3C §24.7).
    unsafe {
        asm!("vmxon [{pa}]", "pushfq", "pop {rf}", pa = in(reg) &pa, rf = lateout(reg) rflags)
    };
    check(rflags)
}

/// VMXOFF.
///
/// # Safety
/// In VMX root operation; nothing may use VMX afterwards.
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller guarantees VMX root operation.
    unsafe { asm!("vmxoff", "pushfq", "pop {rf}", rf = lateout(reg) rflags) };
    check(rflags)
}

/// VMCLEAR of the VMCS at `pa`.
///
/// # Safety
/// `pa` is a VMCS region owned by the caller.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller owns the region.
    unsafe {
        asm!("vmclear [{pa}]", "pushfq", "pop {rf}", pa = in(reg) &pa, rf = lateout(reg) rflags)
    };
    check(rflags)
}

/// VMPTRLD of the VMCS at `pa`.
///
/// # Safety
/// `pa` is a VMCS region owned by the caller, with the right revision identifier.
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller owns the region.
    unsafe {
        asm!("vmptrld [{pa}]", "pushfq", "pop {rf}", pa = in(reg) &pa, rf = lateout(reg) rflags)
    };
    check(rflags)
}

/// VMREAD of `field` in the current VMCS.
///
/// # Safety
/// In VMX root operation.
pub unsafe fn vmread_raw(field: u32) -> Result<u64, VmFail> {
    let (v, rflags): (u64, u64);
    // SAFETY: VMREAD only reads the current VMCS; the caller guarantees VMX operation.
    unsafe {
        asm!("vmread {v}, {f}", "pushfq", "pop {rf}", f = in(reg) u64::from(field), v = lateout(reg) v, rf = lateout(reg) rflags)
    };
    if rflags & (CF | ZF) != 0 {
        // Do not recurse into `check` for the error field itself.
        return Err(if rflags & CF != 0 { VmFail::Invalid } else { VmFail::Valid(12) });
    }
    Ok(v)
}

/// VMWRITE of `field` in the current VMCS.
///
/// # Safety
/// In VMX root operation; the value keeps the hypervisor's invariants (host state, bitmaps and
/// table pointers it owns).
pub unsafe fn vmwrite_raw(field: u32, v: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller guarantees VMX operation and a sound value.
    unsafe {
        asm!("vmwrite {f}, {v}", "pushfq", "pop {rf}", f = in(reg) u64::from(field), v = in(reg) v, rf = lateout(reg) rflags)
    };
    check(rflags)
}

/// INVEPT single-context (type 1) for `eptp`, or all-context (type 2) when `eptp` is 0.
///
/// # Safety
/// In VMX root operation with INVEPT supported.
pub unsafe fn invept(eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let kind: u64 = if eptp == 0 { 2 } else { 1 };
    let rflags: u64;
    // SAFETY: the descriptor is a valid 128-bit INVEPT descriptor (SDM Vol. 3C §32, INVEPT).
    unsafe {
        asm!("invept {k}, [{d}]", "pushfq", "pop {rf}", k = in(reg) kind, d = in(reg) &desc, rf = lateout(reg) rflags)
    };
    check(rflags)
}

/// INVVPID single-context (type 1) for `vpid`.
///
/// # Safety
/// In VMX root operation with INVVPID supported; `vpid` is not 0.
pub unsafe fn invvpid(vpid: u16) -> Result<(), VmFail> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let rflags: u64;
    // SAFETY: the descriptor is a valid INVVPID descriptor.
    unsafe {
        asm!("invvpid {k}, [{d}]", "pushfq", "pop {rf}", k = in(reg) 1u64, d = in(reg) &desc, rf = lateout(reg) rflags)
    };
    check(rflags)
}

/// VMREAD without the failure check, for the exit fast path.
///
/// # Safety
/// A VMCS is current and `field` exists on this CPU (otherwise the result is undefined).
#[inline(always)]
pub unsafe fn vmread_unchecked(field: u32) -> u64 {
    let v: u64;
    // SAFETY: the caller guarantees a current VMCS and a supported field.
    unsafe {
        asm!("vmread {v}, {f}", f = in(reg) u64::from(field), v = lateout(reg) v, options(nostack))
    };
    v
}

/// VMWRITE without the failure check, for the exit fast path.
///
/// # Safety
/// A VMCS is current, `field` is a writable guest-state field and `v` a valid value for it.
#[inline(always)]
pub unsafe fn vmwrite_unchecked(field: u32, v: u64) {
    // SAFETY: the caller guarantees the preconditions.
    unsafe {
        asm!("vmwrite {f}, {v}", f = in(reg) u64::from(field), v = in(reg) v, options(nostack))
    };
}
