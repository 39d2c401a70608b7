//! What a guest sees from CPUID: the host's answer, with the hypervisor-present bit set,
//! VMX/SVM and what the hypervisor does not virtualize hidden (above all every feature whose
//! MSRs the allow-list in `vmm/msr.rs` does not offer), the TSC frequency where the boot
//! measured it, and the hypervisor leaves 0x4000_0000.. answered with this project's signature
//! (pure, host-tested).

use super::cpuid_topology::topology;
pub use super::cpuid_topology::{VcpuCpuid, per_vcpu};
use core::sync::atomic::{AtomicU32, Ordering};
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
    pub const L1_ECX_DTES64: u32 = 1 << 2;
    pub const L1_ECX_MONITOR: u32 = 1 << 3;
    pub const L1_ECX_DS_CPL: u32 = 1 << 4;
    pub const L1_ECX_VMX: u32 = 1 << 5;
    pub const L1_ECX_SMX: u32 = 1 << 6;
    pub const L1_ECX_EST: u32 = 1 << 7;
    pub const L1_ECX_TM2: u32 = 1 << 8;
    pub const L1_ECX_SDBG: u32 = 1 << 11;
    pub const L1_ECX_PDCM: u32 = 1 << 15;
    pub const L1_ECX_DCA: u32 = 1 << 18;
    pub const L1_ECX_X2APIC: u32 = 1 << 21;
    pub const L1_ECX_TSC_DEADLINE: u32 = 1 << 24;
    pub const L1_ECX_OSXSAVE: u32 = 1 << 27;
    pub const L1_ECX_HYPERVISOR: u32 = 1 << 31;
    pub const L1_EDX_DS: u32 = 1 << 21;
    pub const L1_EDX_ACPI: u32 = 1 << 22;
    /// The on-chip local APIC (leaf 1 and, on AMD, leaf 0x8000_0001 EDX bit 9): every vCPU has
    /// a virtual one (`vmm/vlapic.rs`), with x2APIC mode and the TSC-deadline timer.
    pub const L1_EDX_APIC: u32 = 1 << 9;
    pub const L1_EDX_TM: u32 = 1 << 29;
    pub const L1_EDX_PBE: u32 = 1 << 31;
    /// Leaf 7.0 EBX: TSC_ADJUST, SGX, INVPCID (needs a VMX control), RDT-M, MPX, RDT-A, PT.
    pub const L7_EBX_HIDDEN: u32 =
        (1 << 1) | (1 << 2) | (1 << 10) | (1 << 12) | (1 << 14) | (1 << 15) | (1 << 25);
    #[cfg(test)]
    pub const L7_EBX_INVPCID: u32 = 1 << 10;
    /// Leaf 7.0 ECX: PKU, WAITPKG, CET_SS, TME, LA57, RDPID, KL, BUS_LOCK_DETECT, SGX_LC, PKS.
    pub const L7_ECX_HIDDEN: u32 = (1 << 3)
        | (1 << 5)
        | (1 << 7)
        | (1 << 13)
        | (1 << 16)
        | (1 << 22)
        | (1 << 23)
        | (1 << 24)
        | (1 << 30)
        | (1 << 31);
    #[cfg(test)]
    pub const L7_ECX_RDPID: u32 = 1 << 22;
    /// Leaf 7.0 EDX: SRBDS_CTRL, RTM_ALWAYS_ABORT, TSX_FORCE_ABORT, PCONFIG, ARCH_LBR,
    /// CET_IBT, IBRS/IBPB, STIBP, L1D_FLUSH, ARCH_CAPABILITIES, CORE_CAPABILITIES, SSBD.
    pub const L7_EDX_HIDDEN: u32 =
        (1 << 9) | (1 << 11) | (1 << 13) | (1 << 18) | (1 << 19) | (1 << 20) | (0x3f << 26);
    #[cfg(test)]
    pub const L7_EDX_SPEC_CTRL: u32 = 1 << 26;
    #[cfg(test)]
    pub const L7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
    /// Leaf 7.1 EAX: HRESET. EBX: PPIN.
    pub const L7_1_EAX_HRESET: u32 = 1 << 22;
    pub const L7_1_EBX_PPIN: u32 = 1 << 0;
    /// Leaf 0xD.1 EAX: XSAVES (IA32_XSS, a VMX control) and XFD (IA32_XFD).
    pub const LD_1_EAX_HIDDEN: u32 = (1 << 3) | (1 << 4);
    /// Leaf 8000_0001 ECX: SVM, OSVW, IBS, SKINIT, WDT, LWP, TCE, NODEID_MSR, PERFCTR_CORE,
    /// PERFCTR_NB, DBX, PERFTSC, PERFCTR_LLC, MWAITX.
    pub const X1_ECX_HIDDEN: u32 = (1 << 2)
        | (1 << 9)
        | (1 << 10)
        | (1 << 12)
        | (1 << 13)
        | (1 << 15)
        | (1 << 17)
        | (1 << 19)
        | (1 << 23)
        | (1 << 24)
        | (1 << 26)
        | (1 << 27)
        | (1 << 28)
        | (1 << 29);
    pub const X1_EDX_RDTSCP: u32 = 1 << 27;
    /// Leaf 8000_0007 EDX: the invariant TSC.
    pub const X7_EDX_INVARIANT_TSC: u32 = 1 << 8;
    /// Leaf 8000_0008 EBX: IRPERF, IBPB, IBRS, STIBP and their variants (16-19), PPIN,
    /// SSBD, VIRT_SSBD, CPPC, BRS.
    pub const X8_EBX_HIDDEN: u32 = (1 << 1)
        | (1 << 12)
        | (1 << 14)
        | (1 << 15)
        | (0xf << 16)
        | (1 << 23)
        | (1 << 24)
        | (1 << 25)
        | (1 << 27)
        | (1 << 31);
    /// Leaf 8000_0021 EAX: automatic IBRS (an EFER bit the guest may not set).
    pub const X21_EAX_AUTO_IBRS: u32 = 1 << 8;
}

/// The highest hypervisor leaf (leaf 0x4000_0000 EAX).
pub const HV_MAX_LEAF: u32 = CPUID_MAX_LEAF;
/// The timing leaf: EAX = TSC frequency in kHz, EBX = local APIC timer (bus) frequency in kHz,
/// 0 where unknown (the convention VMware and others use).
pub const HV_TIMING_LEAF: u32 = 0x4000_0010;

/// TSC frequency in kHz (0: unknown), set once at boot by [`set_tsc_khz`].
static TSC_KHZ: AtomicU32 = AtomicU32::new(0);
/// Local APIC timer frequency in kHz (0: unknown).
static BUS_KHZ: AtomicU32 = AtomicU32::new(0);

/// Records the host TSC frequency measured at boot (guests run on the host's TSC, unscaled and
/// unoffset): leaves 0x15, 0x16 and 0x4000_0010 report it. 0 means unknown.
/// The TSC frequency in kHz set at boot (0: unknown).
pub fn tsc_khz() -> u32 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// The local APIC timer counts at the TSC's rate (`devices/lapic.rs`), so the bus frequency
/// is the TSC's too.
pub fn set_tsc_khz(khz: u32) {
    TSC_KHZ.store(khz, Ordering::Relaxed);
    BUS_KHZ.store(khz, Ordering::Relaxed);
}

/// Records the frequency of the guest's local APIC timer (leaf 0x4000_0010 EBX, 0x16 ECX).
pub fn set_bus_khz(khz: u32) {
    BUS_KHZ.store(khz, Ordering::Relaxed);
}

/// The frequency leaves, from the TSC and bus frequencies in kHz (0: unknown, then the leaves
/// read 0 and a kernel calibrates the TSC against its PIT).
///
/// - 0x15 (Intel, SDM Vol. 2A CPUID): TSC = ECX × EBX / EAX Hz. The "crystal" given is the
///   TSC itself (EAX = 1, EBX = 1, ECX = TSC Hz; EBX = 2, 3, ... where the TSC exceeds 32
///   bits of Hz). Linux's `native_calibrate_tsc` takes it as a known frequency.
/// - 0x16: base and maximum frequency in MHz (the TSC's), bus frequency in MHz.
/// - 0x4000_0010: TSC kHz, bus kHz.
#[inline(always)]
pub fn frequency_leaf(leaf: u32, tsc_khz: u32, bus_khz: u32) -> Regs {
    if tsc_khz == 0 {
        return Regs { ebx: if leaf == HV_TIMING_LEAF { bus_khz } else { 0 }, ..Regs::default() };
    }
    match leaf {
        0x15 => {
            let hz = u64::from(tsc_khz) * 1000;
            let n = hz.div_ceil(u64::from(u32::MAX)) as u32;
            Regs { eax: 1, ebx: n, ecx: (hz / u64::from(n)) as u32, edx: 0 }
        }
        0x16 => Regs { eax: tsc_khz / 1000, ebx: tsc_khz / 1000, ecx: bus_khz / 1000, edx: 0 },
        _ => Regs { eax: tsc_khz, ebx: bus_khz, ecx: 0, edx: 0 },
    }
}

/// The guest's CPUID answer for `leaf`/`subleaf`, given the host's answer and whether the
/// guest has set CR4.OSXSAVE.
///
/// Every feature whose MSRs `vmm/msr.rs` does not offer is hidden here, so no MSR the guest's
/// CPUID says exists raises #GP (see `docs/guest-contract.md`).
#[inline(always)]
pub fn guest_cpuid(leaf: u32, subleaf: u32, host: Regs, guest_osxsave: bool) -> Regs {
    // Leaf 0 (highest leaf, vendor) passes through; answered first, it skips the dispatch
    // below (it is what the benchmarks' CPUID round trip executes).
    if leaf == 0 {
        return host;
    }
    let mut r = host;
    match leaf {
        1 => {
            r.ecx &= !(bit::L1_ECX_VMX
                | bit::L1_ECX_SMX
                | bit::L1_ECX_MONITOR
                | bit::L1_ECX_PDCM
                | bit::L1_ECX_OSXSAVE
                | bit::L1_ECX_DTES64
                | bit::L1_ECX_DS_CPL
                | bit::L1_ECX_EST
                | bit::L1_ECX_TM2
                | bit::L1_ECX_SDBG
                | bit::L1_ECX_DCA);
            r.edx &= !(bit::L1_EDX_DS | bit::L1_EDX_ACPI | bit::L1_EDX_TM | bit::L1_EDX_PBE);
            if guest_osxsave {
                r.ecx |= bit::L1_ECX_OSXSAVE;
            }
            // The virtual local APIC, whatever the host has: xAPIC, x2APIC, TSC deadline.
            r.ecx |= bit::L1_ECX_HYPERVISOR | bit::L1_ECX_X2APIC | bit::L1_ECX_TSC_DEADLINE;
            r.edx |= bit::L1_EDX_APIC;
            // One logical processor, initial APIC ID 0 (`vcpu_cpuid` says which vCPU).
            r.ebx = (r.ebx & 0xffff) | (1 << 16);
        }
        // MONITOR/MWAIT, power management (thermal, HWP, EPB, APERF/MPERF), the PMU, RDT
        // monitoring and allocation, SGX, processor trace: not offered.
        5 | 6 | 0xa | 0xf | 0x10 | 0x12 | 0x14 => r = Regs::default(),
        7 => match subleaf {
            0 => {
                r.ebx &= !bit::L7_EBX_HIDDEN;
                r.ecx &= !bit::L7_ECX_HIDDEN;
                r.edx &= !bit::L7_EDX_HIDDEN;
            }
            1 => {
                r.eax &= !bit::L7_1_EAX_HRESET;
                r.ebx &= !bit::L7_1_EBX_PPIN;
            }
            // Subleaf 2 EDX lists SPEC_CTRL controls; nothing beyond is offered.
            _ => r = Regs::default(),
        },
        0xd if subleaf == 1 => {
            r.eax &= !bit::LD_1_EAX_HIDDEN;
            (r.ecx, r.edx) = (0, 0); // IA32_XSS bits: none
        }
        0x15 | 0x16 | HV_TIMING_LEAF => {
            r = frequency_leaf(
                leaf,
                TSC_KHZ.load(Ordering::Relaxed),
                BUS_KHZ.load(Ordering::Relaxed),
            )
        }
        0x4000_0000 => {
            let w = |i: usize| {
                u32::from_le_bytes([
                    CPUID_SIGNATURE[i],
                    CPUID_SIGNATURE[i + 1],
                    CPUID_SIGNATURE[i + 2],
                    CPUID_SIGNATURE[i + 3],
                ])
            };
            r = Regs { eax: HV_MAX_LEAF, ebx: w(0), ecx: w(4), edx: w(8) };
        }
        0x4000_0001 => r = Regs { eax: VERSION as u32, ..Regs::default() },
        0x4000_0002..=0x4fff_ffff => r = Regs::default(),
        0x8000_0001 => {
            r.ecx &= !bit::X1_ECX_HIDDEN;
            // EDX bit 9 (AMD's copy of leaf 1's APIC bit, reserved on Intel) passes through.
            r.edx &= !bit::X1_EDX_RDTSCP;
        }
        // Power management: only the invariant TSC, where the host has it.
        0x8000_0007 => r = Regs { edx: r.edx & bit::X7_EDX_INVARIANT_TSC, ..Regs::default() },
        0x8000_0008 => r.ebx &= !bit::X8_EBX_HIDDEN,
        // SVM features, IBS, SME/SEV, AMD PQoS, PerfMonV2: none.
        0x8000_000a | 0x8000_001b | 0x8000_001f | 0x8000_0020 | 0x8000_0022 => r = Regs::default(),
        0x8000_0021 => r.eax &= !bit::X21_EAX_AUTO_IBRS,
        _ => {}
    }
    r
}

/// The host's highest basic leaf (leaf 0 EAX), cached.
pub fn host_max_basic() -> u32 {
    static CACHE: AtomicU32 = AtomicU32::new(0);
    match CACHE.load(Ordering::Relaxed) {
        0 => {
            let max = core::arch::x86_64::__cpuid(0).eax;
            CACHE.store(max, Ordering::Relaxed);
            max
        }
        max => max,
    }
}

/// The answer one vCPU gets: [`guest_cpuid`] with its topology, APIC ID and APIC state
/// (`vmm/cpuid_topology.rs`).
#[inline]
pub fn vcpu_cpuid(leaf: u32, subleaf: u32, host: Regs, v: &VcpuCpuid) -> Regs {
    let r = guest_cpuid(leaf, subleaf, host, v.osxsave);
    if per_vcpu(leaf) { topology(leaf, subleaf, r, v) } else { r }
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
    fn features_without_offered_msrs_are_hidden() {
        // Leaf 1: PMU capabilities, debug store, thermal, SpeedStep.
        let r = guest_cpuid(1, 0, ALL, false);
        for (bit, name) in
            [(bit::L1_ECX_PDCM, "PDCM"), (bit::L1_ECX_EST, "EST"), (bit::L1_ECX_DTES64, "DTES64")]
        {
            assert_eq!(r.ecx & bit, 0, "{name}");
        }
        assert_eq!(r.edx & (bit::L1_EDX_DS | bit::L1_EDX_ACPI | bit::L1_EDX_TM), 0);
        // The virtual local APIC is offered whatever the host has.
        let none = guest_cpuid(1, 0, Regs::default(), false);
        for r in [r, none] {
            assert_ne!(r.edx & bit::L1_EDX_APIC, 0, "local APIC");
            assert_ne!(r.ecx & bit::L1_ECX_X2APIC, 0, "x2APIC");
            assert_ne!(r.ecx & bit::L1_ECX_TSC_DEADLINE, 0, "TSC deadline");
        }
        assert_ne!(r.edx & (1 << 7 | 1 << 14), 0, "MCE/MCA stay (MCG_CAP = 0 banks)");
        assert_ne!(r.edx & (1 << 5 | 1 << 12 | 1 << 16), 0, "MSR, MTRR and PAT stay");
        // Leaf 7: SPEC_CTRL/PRED_CMD/ARCH_CAPABILITIES, TSC_ADJUST, RDPID, CET, WAITPKG.
        let r = guest_cpuid(7, 0, ALL, false);
        assert_eq!(r.edx & (bit::L7_EDX_SPEC_CTRL | bit::L7_EDX_ARCH_CAPABILITIES), 0);
        assert_eq!(r.edx & (1 << 20), 0, "CET_IBT");
        assert_eq!(r.ebx & (1 << 1 | bit::L7_EBX_INVPCID), 0, "TSC_ADJUST, INVPCID");
        assert_eq!(r.ecx & (bit::L7_ECX_RDPID | 1 << 7 | 1 << 5), 0, "RDPID, CET_SS, WAITPKG");
        assert_ne!(r.ebx & 1, 0, "FSGSBASE stays");
        assert_eq!(guest_cpuid(7, 2, ALL, false), Regs::default());
        // XSAVES and XFD: no IA32_XSS or IA32_XFD.
        let r = guest_cpuid(0xd, 1, ALL, false);
        assert_eq!(r.eax & bit::LD_1_EAX_HIDDEN, 0);
        assert_eq!((r.ecx, r.edx), (0, 0));
        assert_eq!(guest_cpuid(0xd, 0, ALL, false), ALL, "XCR0 bits pass through");
        // The PMU and power leaves.
        assert_eq!(guest_cpuid(0xa, 0, ALL, false), Regs::default());
        assert_eq!(guest_cpuid(6, 0, ALL, false), Regs::default());
        // AMD: extended PMU, IBS, OSVW, node id, speculation controls, SME/SEV.
        let r = guest_cpuid(0x8000_0001, 0, ALL, false);
        assert_eq!(r.ecx & (1 << 23 | 1 << 9 | 1 << 10 | 1 << 19), 0);
        let r = guest_cpuid(0x8000_0008, 0, ALL, false);
        assert_eq!(r.ebx & (1 << 12 | 1 << 14 | 1 << 24 | 1 << 25), 0);
        assert_eq!(r.eax, u32::MAX, "address sizes pass through");
        assert_eq!(guest_cpuid(0x8000_001f, 0, ALL, false), Regs::default());
    }

    #[test]
    fn invariant_tsc_passes_through_alone() {
        let r = guest_cpuid(0x8000_0007, 0, ALL, false);
        assert_eq!(r, Regs { edx: 1 << 8, ..Regs::default() });
        assert_eq!(guest_cpuid(0x8000_0007, 0, Regs::default(), false), Regs::default());
    }

    #[test]
    fn frequency_leaves() {
        // Unknown: zeros, the kernel calibrates itself.
        assert_eq!(frequency_leaf(0x15, 0, 0), Regs::default());
        assert_eq!(frequency_leaf(0x16, 0, 0), Regs::default());
        assert_eq!(frequency_leaf(HV_TIMING_LEAF, 0, 0), Regs::default());
        // 2.5 GHz: crystal = TSC, ratio 1/1.
        assert_eq!(
            frequency_leaf(0x15, 2_500_000, 0),
            Regs { eax: 1, ebx: 1, ecx: 2_500_000_000, edx: 0 }
        );
        // 5 GHz does not fit 32 bits of Hz: TSC = 2.5 GHz crystal × 2.
        let r = frequency_leaf(0x15, 5_000_000, 0);
        assert_eq!((r.eax, r.ebx, r.ecx), (1, 2, 2_500_000_000));
        // Linux's arithmetic: crystal_khz = ECX / 1000; tsc_khz = crystal_khz × EBX / EAX.
        for khz in [1, 999_999, 2_112_000, 4_294_967, 4_294_968, 6_000_001] {
            let r = frequency_leaf(0x15, khz, 0);
            let linux = (r.ecx / 1000) * r.ebx / r.eax;
            assert!(khz - linux <= r.ebx, "{khz} kHz: Linux computes {linux}");
        }
        assert_eq!(
            frequency_leaf(0x16, 2_500_000, 100_000),
            Regs { eax: 2500, ebx: 2500, ecx: 100, edx: 0 }
        );
        assert_eq!(
            frequency_leaf(HV_TIMING_LEAF, 2_500_000, 100_000),
            Regs { eax: 2_500_000, ebx: 100_000, ecx: 0, edx: 0 }
        );
        // The hypervisor leaves up to the timing leaf.
        assert_eq!(guest_cpuid(0x4000_0000, 0, ALL, false).eax, HV_TIMING_LEAF);
    }

    #[test]
    fn svm_and_rdtscp_hidden() {
        let r = guest_cpuid(0x8000_0001, 0, ALL, false);
        assert_eq!(r.ecx & (1 << 2), 0, "SVM");
        assert_eq!(r.edx & bit::X1_EDX_RDTSCP, 0);
        assert_eq!(guest_cpuid(0x8000_000a, 0, ALL, false), Regs::default());
        assert_eq!(guest_cpuid(0, 0, ALL, false), ALL, "other leaves pass through");
    }
}
