//! Each vCPU's x87/SSE/AVX state and XCR0, switched at time-slice boundaries.
//!
//! Neither VM entry nor VMRUN switches the x87, SSE or AVX registers or XCR0 (SDM Vol. 3C
//! §27.3, §28.5; APM Vol. 2 §15.5): a vCPU finds in them whatever ran before it on this host
//! CPU. The hypervisor itself uses none of them (the target has no SSE), so each vCPU's state
//! stays in the registers while it runs and is saved when its slice ends and restored when its
//! next one begins: with XSAVE/XRSTOR (every component the CPU supports, XCR0 raised to all of
//! them around the save and the restore, so that no component leaks from one vCPU to another
//! even when their XCR0s differ, SDM Vol. 1 §13.7-§13.8), or with FXSAVE/FXRSTOR where the
//! CPU has no XSAVE (the x87 and SSE state, which needs CR4.OSFXSR on the host, Vol. 1
//! §10.5).

use alloc::alloc::{Layout, alloc_zeroed, dealloc};

/// XSAVE area offsets (SDM Vol. 1 §10.5.1, Table 10-2): FCW, MXCSR.
const FCW: usize = 0;
const MXCSR: usize = 24;
/// The legacy region FXSAVE writes.
const FXSAVE_BYTES: usize = 512;
/// FNINIT's control word and MXCSR's power-on value: every exception masked.
const FCW_INIT: u16 = 0x037f;
const MXCSR_INIT: u32 = 0x1f80;

/// How this host saves state: XSAVE with the components CPUID.(EAX=0DH,ECX=0) lists and the
/// area size it gives, or FXSAVE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Xsave { mask: u64, size: usize },
    Fxsave,
}

impl Method {
    /// What the CPU offers: XSAVE once CR4.OSXSAVE is on (boot sets it where CPUID has it).
    pub fn host() -> Self {
        let osxsave = x86_64::registers::control::Cr4::read_raw() & (1 << 18) != 0;
        if osxsave {
            let d = core::arch::x86_64::__cpuid_count(0xd, 0);
            let mask = (u64::from(d.edx) << 32) | u64::from(d.eax);
            Self::Xsave { mask, size: (d.ecx as usize).max(FXSAVE_BYTES + 64) }
        } else {
            Self::Fxsave
        }
    }

    fn size(self) -> usize {
        match self {
            Self::Xsave { size, .. } => size,
            Self::Fxsave => FXSAVE_BYTES,
        }
    }
}

/// One vCPU's saved state, its XCR0 and its CR2.
pub struct Fpu {
    method: Method,
    area: *mut u8,
    /// The guest's XCR0 (1: x87 only, its value after reset).
    pub xcr0: u64,
    /// The guest's CR2 while another vCPU runs. VM entry and exit do not switch CR2 under VMX
    /// (it is no VMCS field; SDM Vol. 3C §28.3, §29.5 leave it alone), so a vCPU that took a
    /// page fault, was preempted before its handler read CR2 and resumed after another vCPU's
    /// fault on this CPU read the other's address (a Debian SMP guest's busybox was killed with
    /// "segfault at 580cc4 ... error 7" for a store elsewhere). Under SVM the VMCB holds it.
    cr2: u64,
}

impl Fpu {
    /// The state after FNINIT with MXCSR at its power-on value, XCR0 = 1; `None` when the
    /// heap is out of room.
    pub fn new(method: Method) -> Option<Self> {
        // SAFETY: the layout has a non-zero size.
        let area = unsafe { alloc_zeroed(Self::layout(method)) };
        if area.is_null() {
            return None;
        }
        // SAFETY: the area was just allocated, at least 512 bytes; an XSAVE header of zeros
        // (XSTATE_BV = XCOMP_BV = 0) makes XRSTOR load every component's initial state.
        unsafe {
            area.add(FCW).cast::<u16>().write(FCW_INIT);
            area.add(MXCSR).cast::<u32>().write(MXCSR_INIT);
        }
        Some(Self { method, area, xcr0: 1, cr2: 0 })
    }

    fn layout(method: Method) -> Layout {
        Layout::from_size_align(method.size(), 64).expect("a small size, a power-of-two alignment")
    }

    /// Loads this vCPU's state into the registers (before its slice).
    pub fn restore(&self) {
        // SAFETY: CR2 only reports page-fault addresses: the hypervisor takes none, and the
        // guest's value goes back before its next entry.
        unsafe { core::arch::asm!("mov cr2, {}", in(reg) self.cr2, options(nostack, nomem)) };
        match self.method {
            Method::Xsave { mask, .. } => {
                // SAFETY: CR4.OSXSAVE is on (`Method::host`); `mask` is what the CPU supports,
                // so XCR0 may hold it; the area is 64-byte aligned, `size` bytes, written only
                // by `new` and XSAVE; the guest's XCR0 passed the XSETBV checks (or is 1).
                unsafe {
                    xsetbv(mask);
                    core::arch::asm!(
                        "xrstor64 [{}]", in(reg) self.area,
                        in("eax") mask as u32, in("edx") (mask >> 32) as u32,
                        options(nostack, preserves_flags),
                    );
                    xsetbv(self.xcr0);
                }
            }
            // SAFETY: the area is 16-byte aligned, 512 bytes, written only by `new` and
            // FXSAVE, so its MXCSR has no reserved bit set.
            Method::Fxsave => unsafe {
                core::arch::asm!("fxrstor64 [{}]", in(reg) self.area, options(nostack, preserves_flags))
            },
        }
    }

    /// Saves the registers as this vCPU's state (after its slice).
    pub fn save(&mut self) {
        // SAFETY: reading CR2 has no side effect.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) self.cr2, options(nostack, nomem)) };
        match self.method {
            Method::Xsave { mask, .. } => {
                // SAFETY: as in `restore`; XSAVE writes at most `size` bytes of the area.
                unsafe {
                    xsetbv(mask);
                    core::arch::asm!(
                        "xsave64 [{}]", in(reg) self.area,
                        in("eax") mask as u32, in("edx") (mask >> 32) as u32,
                        options(nostack, preserves_flags),
                    );
                }
            }
            // SAFETY: the area is 16-byte aligned and 512 bytes.
            Method::Fxsave => unsafe {
                core::arch::asm!("fxsave64 [{}]", in(reg) self.area, options(nostack, preserves_flags))
            },
        }
    }
}

/// Sets XCR0.
///
/// # Safety
/// CR4.OSXSAVE is on and `v` is a value the CPU accepts (bit 0 set, only supported bits, AVX
/// with SSE, SDM Vol. 1 §13.3).
unsafe fn xsetbv(v: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") v as u32, in("edx") (v >> 32) as u32,
            options(nostack, preserves_flags))
    };
}

impl Drop for Fpu {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.area, Self::layout(self.method)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_state_is_fninit_with_exceptions_masked() {
        for method in [Method::Fxsave, Method::Xsave { mask: 7, size: 832 }] {
            let f = Fpu::new(method).expect("heap");
            // SAFETY: the area is the vCPU's own, `method.size()` bytes, read here only.
            let bytes = unsafe { core::slice::from_raw_parts(f.area, method.size()) };
            assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), FCW_INIT);
            assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), MXCSR_INIT);
            assert!(bytes[512..].iter().all(|&b| b == 0), "an XSAVE header of zeros");
            assert_eq!(f.area as usize % 64, 0, "XSAVE needs 64-byte alignment");
            assert_eq!(f.xcr0, 1);
        }
    }
}
