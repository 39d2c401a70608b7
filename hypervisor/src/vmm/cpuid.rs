//! What a guest sees from CPUID: the host's answer, with the hypervisor-present bit set,
//! VMX/SVM and what the hypervisor does not virtualize hidden, and the hypervisor leaves
//! 0x4000_0000.. answered with this project's signature (pure, host-tested).

use hvabi::hypercall::{CPUID_MAX_LEAF, CPUID_SIGNATURE, VERSION};

/// Registers of one CPUID answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

mod bit {
    pub const L1_ECX_MONITOR: u32 = 1 << 3;
    pub const L1_ECX_VMX: u32 = 1 << 5;
    pub const L1_ECX_SMX: u32 = 1 << 6;
    pub const L1_ECX_PDCM: u32 = 1 << 15;
    pub const L1_ECX_X2APIC: u32 = 1 << 21;
    pub const L1_ECX_TSC_DEADLINE: u32 = 1 << 24;
    pub const L1_ECX_OSXSAVE: u32 = 1 << 27;
    pub const L1_ECX_HYPERVISOR: u32 = 1 << 31;
    pub const L7_EBX_INVPCID: u32 = 1 << 10;
    pub const X1_ECX_SVM: u32 = 1 << 2;
    pub const X1_EDX_RDTSCP: u32 = 1 << 27;
}

/// The guest's CPUID answer for `leaf`/`subleaf`, given the host's answer and whether the
/// guest has set CR4.OSXSAVE.
pub fn guest_cpuid(leaf: u32, subleaf: u32, host: Regs, guest_osxsave: bool) -> Regs {
    let _ = subleaf;
    let mut r = host;
    match leaf {
        1 => {
            r.ecx &= !(bit::L1_ECX_VMX
                | bit::L1_ECX_SMX
                | bit::L1_ECX_MONITOR
                | bit::L1_ECX_PDCM
                | bit::L1_ECX_X2APIC
                | bit::L1_ECX_TSC_DEADLINE
                | bit::L1_ECX_OSXSAVE);
            if guest_osxsave {
                r.ecx |= bit::L1_ECX_OSXSAVE;
            }
            r.ecx |= bit::L1_ECX_HYPERVISOR;
            // One logical processor, initial APIC ID 0.
            r.ebx = (r.ebx & 0xffff) | (1 << 16);
        }
        5 | 6 | 0xa => r = Regs::default(), // MONITOR/MWAIT, power, PMU: not offered
        7 if subleaf == 0 => r.ebx &= !bit::L7_EBX_INVPCID,
        0x4000_0000 => {
            let w = |i: usize| {
                u32::from_le_bytes([
                    CPUID_SIGNATURE[i],
                    CPUID_SIGNATURE[i + 1],
                    CPUID_SIGNATURE[i + 2],
                    CPUID_SIGNATURE[i + 3],
                ])
            };
            r = Regs { eax: CPUID_MAX_LEAF, ebx: w(0), ecx: w(4), edx: w(8) };
        }
        0x4000_0001 => r = Regs { eax: VERSION as u32, ..Regs::default() },
        0x4000_0002..=0x4fff_ffff => r = Regs::default(),
        0x8000_0001 => {
            r.ecx &= !bit::X1_ECX_SVM;
            r.edx &= !bit::X1_EDX_RDTSCP;
        }
        0x8000_000a => r = Regs::default(), // SVM features: none
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Regs = Regs { eax: u32::MAX, ebx: u32::MAX, ecx: u32::MAX, edx: u32::MAX };

    #[test]
    fn leaf1_hides_vmx_and_sets_hypervisor_bit() {
        let r = guest_cpuid(1, 0, ALL, false);
        assert_eq!(r.ecx & bit::L1_ECX_VMX, 0);
        assert_eq!(r.ecx & bit::L1_ECX_OSXSAVE, 0);
        assert_ne!(r.ecx & bit::L1_ECX_HYPERVISOR, 0);
        assert_eq!(r.ebx >> 16, 1);
        assert_ne!(guest_cpuid(1, 0, ALL, true).ecx & bit::L1_ECX_OSXSAVE, 0);
        assert_ne!(guest_cpuid(1, 0, Regs::default(), false).ecx & bit::L1_ECX_HYPERVISOR, 0);
    }

    #[test]
    fn hypervisor_leaves() {
        let r = guest_cpuid(0x4000_0000, 0, ALL, false);
        assert_eq!(r.eax, CPUID_MAX_LEAF);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&sig, b"MicroHVisor!");
        assert_eq!(guest_cpuid(0x4000_0001, 0, ALL, false).eax, VERSION as u32);
        assert_eq!(guest_cpuid(0x4000_0005, 0, ALL, false), Regs::default());
    }

    #[test]
    fn svm_and_rdtscp_hidden() {
        let r = guest_cpuid(0x8000_0001, 0, ALL, false);
        assert_eq!(r.ecx & bit::X1_ECX_SVM, 0);
        assert_eq!(r.edx & bit::X1_EDX_RDTSCP, 0);
        assert_eq!(guest_cpuid(0x8000_000a, 0, ALL, false), Regs::default());
        assert_eq!(guest_cpuid(0, 0, ALL, false), ALL, "other leaves pass through");
    }
}
