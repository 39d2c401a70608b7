//! Guest writes to control registers: which values the architecture refuses with #GP(0) and
//! what a valid write stores. Pure, so that every rule is host-tested; `dispatch.rs` applies
//! the verdict.
//!
//! The rules are those of MOV to CR0/CR3/CR4 (SDM Vol. 2B "MOV—Move to/from Control
//! Registers", Vol. 3A §2.5 and §4.5, APM Vol. 2 §3.1), with one refusal of our own: leaving
//! long mode (clearing CR0.PG with EFER.LMA set) is not offered. Hardware allows it from
//! compatibility mode; no guest of this hypervisor needs it.

/// CR0 bits.
pub const CR0_PE: u64 = 1 << 0;
pub const CR0_TS: u64 = 1 << 3;
pub const CR0_NW: u64 = 1 << 29;
pub const CR0_CD: u64 = 1 << 30;
pub const CR0_PG: u64 = 1 << 31;
/// CR4 bits.
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_VMXE: u64 = 1 << 13;
pub const CR4_SMXE: u64 = 1 << 14;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const CR4_OSXSAVE: u64 = 1 << 18;
/// EFER bits.
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
/// CR3 bit 63 with CR4.PCIDE: do not invalidate the PCID's entries; never stored (SDM §4.10.4.1).
const CR3_NO_FLUSH: u64 = 1 << 63;

/// The guest state a CR write is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CR4 bits the guest may set ([`cr4_guest_bits`] on the host).
    pub cr4_allowed: u64,
    /// The physical-address width the guest sees (CPUID 0x8000_0008 EAX[7:0]).
    pub maxphyaddr: u8,
}

/// The value to store for a write of `v` to CR`cr`, or why it raises #GP(0).
pub fn check_write(cr: u8, v: u64, s: &CrState) -> Result<u64, &'static str> {
    let long_mode = s.efer & EFER_LMA != 0;
    match cr {
        0 => {
            if v >> 32 != 0 {
                Err("reserved CR0 bits")
            } else if v & CR0_PG != 0 && v & CR0_PE == 0 {
                Err("CR0.PG without CR0.PE")
            } else if v & CR0_NW != 0 && v & CR0_CD == 0 {
                Err("CR0.NW without CR0.CD")
            } else if long_mode && v & CR0_PG == 0 {
                Err("leaving long mode is not supported")
            } else if s.cr0 & CR0_PG == 0
                && v & CR0_PG != 0
                && s.efer & EFER_LME != 0
                && s.cr4 & CR4_PAE == 0
            {
                Err("CR0.PG with EFER.LME and without CR4.PAE")
            } else {
                Ok(v)
            }
        }
        3 => {
            if !long_mode {
                // Outside long mode CR3 is 32 bits wide (SDM §4.3, §4.4.1).
                return Ok(v & 0xffff_ffff);
            }
            let v = if s.cr4 & CR4_PCIDE != 0 { v & !CR3_NO_FLUSH } else { v };
            let reserved = u64::MAX << s.maxphyaddr.min(52);
            if v & reserved != 0 { Err("reserved CR3 bits") } else { Ok(v) }
        }
        4 => {
            if v & (CR4_VMXE | CR4_SMXE) != 0 {
                Err("CR4.VMXE/SMXE: VMX and SMX are not offered")
            } else if v & !s.cr4_allowed != 0 {
                Err("reserved CR4 bits")
            } else if long_mode && v & CR4_PAE == 0 {
                Err("clearing CR4.PAE in long mode")
            } else if s.cr4 & CR4_PCIDE == 0
                && v & CR4_PCIDE != 0
                && (!long_mode || s.cr3 & 0xfff != 0)
            {
                Err("CR4.PCIDE outside long mode or with CR3[11:0] not 0")
            } else {
                Ok(v)
            }
        }
        8 => {
            if v >> 4 != 0 {
                Err("reserved CR8 bits")
            } else {
                Ok(v)
            }
        }
        _ => Err("no such control register"),
    }
}

/// The new CR0 of CLTS (TS cleared) or of LMSW with `source` (SDM Vol. 2A LMSW: bits 3:0 are
/// loaded, except that PE can be set but not cleared).
pub fn lmsw(cr0: u64, source: u64) -> u64 {
    (cr0 & !0xe) | (source & 0xf)
}

/// CR4 bits a guest may set (SDM Vol. 3A §2.5), VMXE and SMXE excluded: VME PVI TSD DE PSE PAE
/// MCE PGE PCE OSFXSR OSXMMEXCPT always; UMIP FSGSBASE PCIDE OSXSAVE SMEP SMAP where the CPU
/// has the feature (each is reserved, #GP on setting it, where it does not).
pub fn cr4_guest_bits() -> u64 {
    let l1 = core::arch::x86_64::__cpuid_count(1, 0);
    let l7 = core::arch::x86_64::__cpuid_count(7, 0);
    let has = |reg: u32, bit: u32| reg & (1 << bit) != 0;
    [
        (has(l7.ecx, 2), 1 << 11),
        (has(l7.ebx, 0), 1 << 16),
        (has(l1.ecx, 17), CR4_PCIDE),
        (has(l1.ecx, 26), CR4_OSXSAVE),
        (has(l7.ebx, 7), 1 << 20),
        (has(l7.ebx, 20), 1 << 21),
    ]
    .iter()
    .filter(|(present, _)| *present)
    .fold(0x7ff, |bits, (_, bit)| bits | bit)
}

/// The host's physical-address width (CPUID 0x8000_0008 EAX[7:0]; 36 without that leaf, SDM
/// Vol. 3A §4.1.4), which the guest's CPUID passes on.
pub fn maxphyaddr() -> u8 {
    if core::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0008 {
        core::arch::x86_64::__cpuid(0x8000_0008).eax as u8
    } else {
        36
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64-bit mode, as a partition starts: PE|PG and friends, PAE, LME|LMA.
    fn long() -> CrState {
        CrState {
            cr0: 0x8001_0033,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            cr4_allowed: 0x7ff | CR4_PCIDE | CR4_OSXSAVE,
            maxphyaddr: 40,
        }
    }

    #[test]
    fn cr0_rules() {
        let s = long();
        assert_eq!(check_write(0, s.cr0 | CR0_TS, &s), Ok(s.cr0 | CR0_TS));
        assert_eq!(check_write(0, s.cr0 | CR0_CD | CR0_NW, &s), Ok(s.cr0 | CR0_CD | CR0_NW));
        assert!(check_write(0, s.cr0 | CR0_NW, &s).is_err(), "NW without CD");
        assert!(check_write(0, s.cr0 | 1 << 32, &s).is_err(), "bits 63:32");
        assert!(check_write(0, s.cr0 & !CR0_PG, &s).is_err(), "PG cleared in long mode");
        assert!(check_write(0, s.cr0 & !CR0_PE, &s).is_err(), "PG without PE");
        // Protected mode without paging, LME set: PG needs PAE.
        let legacy = CrState { cr0: 0x11, cr4: 0, efer: EFER_LME, ..s };
        assert!(check_write(0, 0x8000_0011, &legacy).is_err());
        let pae = CrState { cr4: CR4_PAE, ..legacy };
        assert_eq!(check_write(0, 0x8000_0011, &pae), Ok(0x8000_0011));
        // Without LME, 32-bit paging needs no PAE, and PG may be cleared again.
        let plain = CrState { efer: 0, ..legacy };
        assert_eq!(check_write(0, 0x8000_0011, &plain), Ok(0x8000_0011));
        let paged = CrState { cr0: 0x8000_0011, ..plain };
        assert_eq!(check_write(0, 0x11, &paged), Ok(0x11));
    }

    #[test]
    fn cr3_rules() {
        let s = long();
        assert_eq!(check_write(3, 0xff_ffff_f000, &s), Ok(0xff_ffff_f000));
        assert!(check_write(3, 1 << 40, &s).is_err(), "above MAXPHYADDR");
        assert!(check_write(3, 1 << 62, &s).is_err(), "bit 62");
        assert!(check_write(3, 1 << 63 | 0x1000, &s).is_err(), "bit 63 without PCIDE");
        let pcid = CrState { cr4: CR4_PAE | CR4_PCIDE, ..s };
        assert_eq!(check_write(3, 1 << 63 | 0x2005, &pcid), Ok(0x2005), "no-flush bit dropped");
        let legacy = CrState { cr0: 0x8000_0011, cr4: 0, efer: 0, ..s };
        assert_eq!(check_write(3, 0xffff_ffff_1234_5000, &legacy), Ok(0x1234_5000));
    }

    #[test]
    fn cr4_and_cr8_rules() {
        let s = long();
        assert_eq!(check_write(4, CR4_PAE | CR4_OSXSAVE, &s), Ok(CR4_PAE | CR4_OSXSAVE));
        assert!(check_write(4, CR4_PAE | CR4_VMXE, &s).is_err());
        assert!(check_write(4, CR4_PAE | 1 << 23, &s).is_err(), "not offered");
        assert!(check_write(4, 0, &s).is_err(), "PAE cleared in long mode");
        assert_eq!(check_write(4, CR4_PAE | CR4_PCIDE, &s), Ok(CR4_PAE | CR4_PCIDE));
        let tagged = CrState { cr3: 0x1001, ..s };
        assert!(check_write(4, CR4_PAE | CR4_PCIDE, &tagged).is_err(), "CR3[11:0] not 0");
        let legacy = CrState { cr0: 0x11, cr4: 0, efer: 0, ..s };
        assert!(check_write(4, CR4_PCIDE, &legacy).is_err(), "PCIDE outside long mode");
        assert_eq!(check_write(8, 15, &s), Ok(15));
        assert!(check_write(8, 16, &s).is_err());
        assert!(check_write(2, 0, &s).is_err());
    }

    #[test]
    fn lmsw_loads_four_bits_and_cannot_clear_pe() {
        assert_eq!(lmsw(0x8001_0033, 0), 0x8001_0031, "PE stays, MP cleared");
        assert_eq!(lmsw(0x10, 0xffff), 0x1f);
        assert_eq!(lmsw(0x8001_003b, 0x0001) & CR0_TS, 0, "TS cleared like CLTS");
    }
}
