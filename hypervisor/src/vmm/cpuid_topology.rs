//! What CPUID tells one vCPU about itself and its partition (pure, host-tested): its initial
//! APIC ID and a synthetic topology of one package, one core per vCPU, one thread per core,
//! APIC ID = vCPU index (the IDs the partition's MADT lists, `vmm/vlapic.rs`). The host's
//! cache sizes stay; only who shares them changes (L3 by every core, lower levels per core).
//!
//! - Intel (SDM Vol. 2A, CPUID leaves 01H, 04H, 0BH, 1FH; Vol. 3A §9.9 "Topology
//!   identification"): leaf 1 EBX[31:24] the initial APIC ID, EBX[23:16] the logical
//!   processors per package with EDX.HTT; leaf 4 EAX[31:26] cores per package - 1 and
//!   EAX[25:14] processors sharing the cache - 1; leaves 0xB/0x1F an SMT level (shift 0, one
//!   processor), a core level (shift ceil(log2 N), N processors), then an invalid level, with
//!   the x2APIC ID in EDX of every subleaf.
//! - AMD (APM Vol. 3 Appendix E.4.1, E.4.7, E.4.14-E.4.15): 0x8000_0001 ECX.CmpLegacy when
//!   N > 1; 0x8000_0008 ECX NC = N - 1, ApicIdSize; 0x8000_001D EAX[25:14] sharing;
//!   0x8000_001E the extended APIC ID, the core (compute unit) ID, one thread per core, one
//!   node; 0x8000_0026 (extended topology) not offered: a guest falls back to 0xB.
//! - The APIC feature bit (leaf 1 EDX bit 9, AMD 0x8000_0001 EDX bit 9) reads 0 while the
//!   vCPU's APIC is globally disabled (IA32_APIC_BASE.EN = 0, SDM Vol. 3A §11.4.3).

use super::cpuid::Regs;

/// What the CPUID answer of one vCPU depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuCpuid {
    /// Its initial (and x2APIC) APIC ID: its index in the partition.
    pub apic_id: u32,
    /// The partition's vCPU count (at least 1).
    pub vcpus: u32,
    /// IA32_APIC_BASE.EN.
    pub apic_enabled: bool,
    /// CR4.OSXSAVE.
    pub osxsave: bool,
    /// The host's highest basic leaf (leaf 0 EAX): leaf 0x1F and 0xB are only answered
    /// synthetically where they exist (above it Intel answers the highest basic leaf's data).
    pub max_basic: u32,
}

/// True for the leaves whose answer depends on the vCPU: the backends' fast paths leave them
/// to the run loop, which knows the vCPU ([`topology`]).
#[inline(always)]
pub const fn per_vcpu(leaf: u32) -> bool {
    matches!(leaf, 1 | 4 | 0xb | 0x1f | 0x8000_0001 | 0x8000_0008 | 0x8000_001d..=0x8000_001e)
        || leaf == 0x8000_0026
}

const L1_EDX_APIC: u32 = 1 << 9;
const L1_EDX_HTT: u32 = 1 << 28;
const X1_ECX_CMP_LEGACY: u32 = 1 << 1;
const X1_EDX_APIC: u32 = 1 << 9;
/// Leaf 0xB/0x1F ECX[15:8] level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// ceil(log2 n): the APIC ID bits the cores of a package take.
pub const fn core_shift(n: u32) -> u32 {
    if n <= 1 { 0 } else { 32 - (n - 1).leading_zeros() }
}

/// Rewrites `r`, the vCPU-independent answer for `leaf`/`subleaf` (`guest_cpuid`), with what
/// the vCPU `v` is.
pub fn topology(leaf: u32, subleaf: u32, mut r: Regs, v: &VcpuCpuid) -> Regs {
    let n = v.vcpus.max(1);
    let shift = core_shift(n);
    match leaf {
        1 => {
            r.ebx = (r.ebx & 0xffff) | (v.apic_id & 0xff) << 24 | n.min(0xff) << 16;
            if n > 1 {
                r.edx |= L1_EDX_HTT;
            } else {
                r.edx &= !L1_EDX_HTT;
            }
            if !v.apic_enabled {
                r.edx &= !L1_EDX_APIC;
            }
        }
        // Deterministic cache parameters; type 0 (EAX[4:0]) ends the list and stays zero.
        4 if r.eax & 0x1f != 0 => {
            let level = (r.eax >> 5) & 7;
            let sharing = if level >= 3 { n - 1 } else { 0 };
            r.eax = (r.eax & 0x3fff) | (sharing.min(0xfff) << 14) | ((n - 1).min(0x3f) << 26);
        }
        0xb | 0x1f if leaf <= v.max_basic => {
            r = match subleaf {
                0 => Regs { eax: 0, ebx: 1, ecx: LEVEL_SMT << 8, edx: 0 },
                1 => Regs { eax: shift, ebx: n, ecx: LEVEL_CORE << 8 | 1, edx: 0 },
                _ => Regs { eax: 0, ebx: 0, ecx: subleaf & 0xff, edx: 0 },
            };
            r.edx = v.apic_id;
        }
        0x8000_0001 => {
            if n > 1 {
                r.ecx |= X1_ECX_CMP_LEGACY;
            } else {
                r.ecx &= !X1_ECX_CMP_LEGACY;
            }
            if !v.apic_enabled {
                r.edx &= !X1_EDX_APIC;
            }
        }
        0x8000_0008 => r.ecx = shift << 12 | (n - 1).min(0xff),
        // Cache topology (with TopologyExtensions): as leaf 4's sharing.
        0x8000_001d if r.eax & 0x1f != 0 => {
            let level = (r.eax >> 5) & 7;
            let sharing = if level >= 3 { n - 1 } else { 0 };
            r.eax = (r.eax & !(0xfff << 14)) | (sharing.min(0xfff) << 14);
        }
        // Extended APIC ID; EBX: core ID, one thread per core; ECX: one node, node 0.
        0x8000_001e => r = Regs { eax: v.apic_id, ebx: v.apic_id & 0xff, ecx: 0, edx: 0 },
        0x8000_0026 => r = Regs::default(),
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Regs = Regs { eax: u32::MAX, ebx: u32::MAX, ecx: u32::MAX, edx: u32::MAX };

    fn vcpu(apic_id: u32, vcpus: u32) -> VcpuCpuid {
        VcpuCpuid { apic_id, vcpus, apic_enabled: true, osxsave: false, max_basic: 0x20 }
    }

    #[test]
    fn shifts() {
        let got: [u32; 9] = core::array::from_fn(|i| core_shift(i as u32));
        assert_eq!(got, [0, 0, 1, 2, 2, 3, 3, 3, 3]);
        assert_eq!(core_shift(64), 6);
        assert_eq!(core_shift(65), 7);
    }

    #[test]
    fn leaf1_initial_apic_id_and_count() {
        let r = topology(1, 0, Regs { ebx: 0x0008_0800, edx: 0, ..ALL }, &vcpu(3, 5));
        assert_eq!(r.ebx, 0x0305_0800, "APIC ID 3, 5 logical processors, CLFLUSH kept");
        assert_ne!(r.edx & L1_EDX_HTT, 0, "HTT with more than one");
        let r = topology(1, 0, ALL, &vcpu(0, 1));
        assert_eq!(r.ebx >> 16, 0x0001);
        assert_eq!(r.edx & L1_EDX_HTT, 0, "no HTT alone");
    }

    #[test]
    fn apic_bit_follows_the_global_enable() {
        let off = VcpuCpuid { apic_enabled: false, ..vcpu(1, 2) };
        assert_eq!(topology(1, 0, ALL, &off).edx & L1_EDX_APIC, 0);
        assert_eq!(topology(0x8000_0001, 0, ALL, &off).edx & X1_EDX_APIC, 0);
        assert_ne!(topology(1, 0, ALL, &vcpu(1, 2)).edx & L1_EDX_APIC, 0);
        assert_ne!(topology(0x8000_0001, 0, ALL, &vcpu(1, 2)).edx & X1_EDX_APIC, 0);
        // Intel's reserved bit stays 0.
        assert_eq!(topology(0x8000_0001, 0, Regs::default(), &vcpu(1, 2)).edx, 0);
    }

    #[test]
    fn leaf4_sharing_per_level() {
        // L1 data cache (type 1, level 1) and L3 (type 3, level 3), host says 16 cores.
        let l1 = Regs { eax: 0x3c00_4121, ..Regs::default() };
        let l3 = Regs { eax: 0x3c07_c163, ..Regs::default() };
        let r = topology(4, 0, l1, &vcpu(0, 4));
        assert_eq!((r.eax >> 26, (r.eax >> 14) & 0xfff, r.eax & 0x3fff), (3, 0, 0x0121));
        let r = topology(4, 3, l3, &vcpu(0, 4));
        assert_eq!((r.eax >> 26, (r.eax >> 14) & 0xfff, r.eax & 0x3fff), (3, 3, 0x0163));
        let r = topology(4, 3, l3, &vcpu(0, 1));
        assert_eq!(r.eax >> 14, 0, "one vCPU shares with nobody");
        assert_eq!(topology(4, 4, Regs { ebx: 7, ..Regs::default() }, &vcpu(0, 4)).eax, 0);
    }

    #[test]
    fn extended_topology_levels() {
        for leaf in [0xb, 0x1f] {
            let v = vcpu(5, 6);
            assert_eq!(topology(leaf, 0, ALL, &v), Regs { eax: 0, ebx: 1, ecx: 0x100, edx: 5 });
            assert_eq!(topology(leaf, 1, ALL, &v), Regs { eax: 3, ebx: 6, ecx: 0x201, edx: 5 });
            assert_eq!(topology(leaf, 2, ALL, &v), Regs { eax: 0, ebx: 0, ecx: 2, edx: 5 });
            assert_eq!(topology(leaf, 0x1_07, ALL, &v).ecx, 7);
            let one = topology(leaf, 1, ALL, &vcpu(0, 1));
            assert_eq!((one.eax, one.ebx, one.edx), (0, 1, 0));
        }
        // Above the host's highest basic leaf the answer is the host's.
        let low = VcpuCpuid { max_basic: 0xd, ..vcpu(1, 2) };
        assert_eq!(topology(0x1f, 0, ALL, &low), ALL);
        assert_eq!(topology(0xb, 0, ALL, &low).edx, 1, "0xB exists below 0xD");
        let lower = VcpuCpuid { max_basic: 0xa, ..low };
        assert_eq!(topology(0xb, 0, ALL, &lower), ALL);
    }

    #[test]
    fn amd_leaves() {
        let r = topology(0x8000_0008, 0, ALL, &vcpu(2, 8));
        assert_eq!((r.eax, r.ecx), (u32::MAX, 3 << 12 | 7));
        assert_eq!(topology(0x8000_0008, 0, ALL, &vcpu(0, 1)).ecx, 0);
        assert_ne!(topology(0x8000_0001, 0, Regs::default(), &vcpu(0, 2)).ecx & 2, 0);
        assert_eq!(topology(0x8000_0001, 0, ALL, &vcpu(0, 1)).ecx & 2, 0);
        let r = topology(0x8000_001e, 0, ALL, &vcpu(6, 8));
        assert_eq!(r, Regs { eax: 6, ebx: 6, ecx: 0, edx: 0 });
        let l3 = Regs { eax: 0x0003_c163, ..Regs::default() };
        assert_eq!((topology(0x8000_001d, 3, l3, &vcpu(0, 8)).eax >> 14) & 0xfff, 7);
        let l2 = Regs { eax: 0x0003_c143, ..Regs::default() };
        assert_eq!((topology(0x8000_001d, 2, l2, &vcpu(0, 8)).eax >> 14) & 0xfff, 0);
        assert_eq!(topology(0x8000_0026, 0, ALL, &vcpu(0, 8)), Regs::default());
    }

    #[test]
    fn fast_paths_leave_the_vcpu_leaves() {
        for leaf in [1, 4, 0xb, 0x1f, 0x8000_0001, 0x8000_0008, 0x8000_001d, 0x8000_001e] {
            assert!(per_vcpu(leaf), "{leaf:#x}");
        }
        for leaf in [0, 2, 7, 0xd, 0x4000_0000, 0x8000_0000, 0x8000_0006] {
            assert!(!per_vcpu(leaf), "{leaf:#x}");
        }
    }
}
