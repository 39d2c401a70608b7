//! The guest's MSRs: an allow-list. Listed MSRs live in the vCPU's hardware state (VMCS/VMCB
//! fields or the CPU's own MSRs, see [`HwMsr`]), in a software copy, or read as a constant;
//! every other RDMSR/WRMSR gets #GP(0), exactly as a CPU without that MSR would answer (pure,
//! host-tested).
//!
//! The rule that ties this list to `vmm/cpuid.rs`: no MSR that the guest's CPUID says exists
//! raises #GP. Features whose MSRs are not offered are hidden there (the PMU,
//! TSC_ADJUST, speculation controls, RDTSCP/RDPID, XSAVES, CET, ...). Linux probes most other
//! MSRs with `rdmsrl_safe` and takes the #GP. The table with each MSR and what the guest gets
//! is in `docs/guest-contract.md`.

use super::vcpu::HwMsr;
use core::sync::atomic::{AtomicU64, Ordering};

pub const IA32_TSC: u32 = 0x10;
pub const IA32_PLATFORM_ID: u32 = 0x17;
pub const IA32_APIC_BASE: u32 = 0x1b;
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
pub const IA32_MTRRCAP: u32 = 0xfe;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_MCG_CAP: u32 = 0x179;
pub const IA32_MCG_STATUS: u32 = 0x17a;
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const IA32_EFER: u32 = 0xc000_0080;
pub const IA32_STAR: u32 = 0xc000_0081;
pub const IA32_LSTAR: u32 = 0xc000_0082;
pub const IA32_CSTAR: u32 = 0xc000_0083;
pub const IA32_FMASK: u32 = 0xc000_0084;
pub const IA32_FS_BASE: u32 = 0xc000_0100;
pub const IA32_GS_BASE: u32 = 0xc000_0101;
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const IA32_TSC_AUX: u32 = 0xc000_0103;
/// AMD: PerfEvtSel0-3 at 0xC001_0000-3, PerfCtr0-3 at 0xC001_0004-7 (APM Vol. 2 §13.2.1).
pub const AMD_PERF_EVTSEL0: u32 = 0xc001_0000;
pub const AMD_PERF_CTR0: u32 = 0xc001_0004;
pub const AMD_SYSCFG: u32 = 0xc001_0010;
pub const AMD_HWCR: u32 = 0xc001_0015;
pub const AMD_INT_PENDING_MSG: u32 = 0xc001_0055;
pub const AMD_DE_CFG: u32 = 0xc001_1029;

const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const CR0_PG: u64 = 1 << 31;

/// IA32_MISC_ENABLE as the guest reads it (SDM Vol. 4 Table 2-2): fast strings (bit 0, Linux
/// keeps ERMS/REP_GOOD only with it), BTS unavailable (bit 11) and PEBS unavailable (bit 12)
/// (no debug store: Linux's `init_intel` reads both when DS is offered, and DS is hidden);
/// performance monitoring (bit 7), Enhanced SpeedStep (16), MONITOR (18), limit-CPUID (22) and
/// XD-disable (34) clear: those features are hidden or on.
pub const MISC_ENABLE_VALUE: u64 = 1 | (1 << 11) | (1 << 12);
/// AMD HWCR as the guest reads it: TscFreqSel (bit 24), the TSC counts at the P0 frequency
/// (Linux's `bsp_init_amd` warns "TSC doesn't count with P0 frequency" without it once the
/// invariant TSC is offered, APM Vol. 2 §A.7 / BKDG).
pub const HWCR_VALUE: u64 = 1 << 24;
/// AMD DE_CFG as the guest reads it: LFENCE is dispatch serializing (bit 1), which Linux's
/// `init_amd` otherwise tries to set.
pub const DE_CFG_VALUE: u64 = 1 << 1;
/// Power-on PAT (SDM Vol. 3A §13.12.4).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// MTRR_DEF_TYPE as firmware leaves it: MTRRs enabled (bit 11), default type write-back, no
/// fixed or variable ranges (MTRRCAP reads 0). Linux 6.1 turns PAT off when MTRRs are off.
pub const MTRR_DEF_TYPE_RESET: u64 = (1 << 11) | 6;

/// The host CPU's vendor, which decides the vendor-specific MSRs (the guest sees the host's
/// vendor string in CPUID leaf 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
}

/// MSRs kept in software, in [`SoftMsrs`] order.
const SOFT: [u32; 9] = [
    IA32_MTRR_DEF_TYPE,
    AMD_PERF_EVTSEL0,
    AMD_PERF_EVTSEL0 + 1,
    AMD_PERF_EVTSEL0 + 2,
    AMD_PERF_EVTSEL0 + 3,
    AMD_PERF_CTR0,
    AMD_PERF_CTR0 + 1,
    AMD_PERF_CTR0 + 2,
    AMD_PERF_CTR0 + 3,
];

/// The software copies.
#[derive(Clone, Copy, Debug)]
pub struct SoftMsrs([u64; SOFT.len()]);

impl Default for SoftMsrs {
    fn default() -> Self {
        let mut v = [0; SOFT.len()];
        v[0] = MTRR_DEF_TYPE_RESET;
        Self(v)
    }
}

/// Where an allowed MSR lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Hardware(HwMsr),
    Software(usize),
    /// Reads as this value; writes [`check_write`] accepts are ignored.
    Constant(u64),
    /// The time-stamp counter.
    Tsc,
    /// The vCPU's local APIC (`vmm/vlapic.rs`): IA32_APIC_BASE, IA32_TSC_DEADLINE and the
    /// x2APIC registers, whose own rules decide what faults.
    Apic,
}

/// Where `msr` lives on a `vendor` CPU, or `None` when the guest may not touch it. Each entry
/// says who needs it.
pub fn place(msr: u32, vendor: Vendor) -> Option<Place> {
    let intel = vendor == Vendor::Intel;
    let amd = vendor == Vendor::Amd;
    Some(match msr {
        // Architectural, used by the CPU itself while the guest runs: the guest's values are in
        // the hardware (VMCS/VMCB fields, VMLOAD/VMSAVE, or switched lazily on VMX).
        IA32_EFER => Place::Hardware(HwMsr::Efer),
        IA32_FS_BASE => Place::Hardware(HwMsr::FsBase),
        IA32_GS_BASE => Place::Hardware(HwMsr::GsBase),
        IA32_KERNEL_GS_BASE => Place::Hardware(HwMsr::KernelGsBase),
        IA32_SYSENTER_CS => Place::Hardware(HwMsr::SysenterCs),
        IA32_SYSENTER_ESP => Place::Hardware(HwMsr::SysenterEsp),
        IA32_SYSENTER_EIP => Place::Hardware(HwMsr::SysenterEip),
        IA32_STAR => Place::Hardware(HwMsr::Star),
        IA32_LSTAR => Place::Hardware(HwMsr::Lstar),
        // Intel has no 32-bit SYSCALL but keeps the MSR (Linux writes it on every CPU).
        IA32_CSTAR => Place::Hardware(HwMsr::Cstar),
        IA32_FMASK => Place::Hardware(HwMsr::Fmask),
        IA32_PAT => Place::Hardware(HwMsr::Pat),
        IA32_TSC => Place::Tsc,
        // CPUID.1:EDX.APIC, ECX.x2APIC and ECX.TSC_DEADLINE: the virtual local APIC.
        IA32_APIC_BASE | IA32_TSC_DEADLINE | 0x800..=0x8ff => Place::Apic,
        // CPUID.1:EDX.MTRR: Linux's `mtrr_bp_init` reads MTRRCAP (no ranges, no WC) and the
        // default type; the guest's MTRRs have no effect on memory types (second-level tables
        // decide).
        IA32_MTRRCAP => Place::Constant(0),
        IA32_MTRR_DEF_TYPE => Place::Software(0),
        // CPUID.1:EDX.MCA with MCG_CAP = 0: no banks, no MCG_CTL, no extended state. Linux's
        // `mcheck_cpu_init` reads MCG_CAP and clears MCG_STATUS.
        IA32_MCG_CAP | IA32_MCG_STATUS => Place::Constant(0),
        // Microcode revision (Intel BIOS_SIGN_ID, AMD PATCH_LEVEL): Linux writes 0, runs CPUID
        // and reads it back (`intel_get_microcode_revision`, non-safe accessors).
        IA32_BIOS_SIGN_ID => Place::Constant(0),
        // Intel: locked, VMX off, consistent with the hidden VMX bit (`init_ia32_feat_ctl`).
        IA32_FEATURE_CONTROL if intel => Place::Constant(1),
        // Intel: read by `early_init_intel`/`init_intel` with non-safe accessors.
        IA32_MISC_ENABLE if intel => Place::Constant(MISC_ENABLE_VALUE),
        // Intel: platform id for microcode matching (read without `_safe`).
        IA32_PLATFORM_ID if intel => Place::Constant(0),
        // AMD: the legacy performance counters, architectural on every AMD CPU (APM Vol. 2
        // §13.2). Storage only: a counter reads what was last written and never counts, an
        // enabled event never overflows, so no PMI ever comes. Linux's perf probes them
        // (`check_hw_exists`) and the NMI watchdog then simply never fires.
        m if amd && (AMD_PERF_EVTSEL0..AMD_PERF_CTR0 + 4).contains(&m) => {
            Place::Software(1 + (m - AMD_PERF_EVTSEL0) as usize)
        }
        // AMD: read by `bsp_init_amd` (non-safe) when the invariant TSC is offered.
        AMD_HWCR if amd => Place::Constant(HWCR_VALUE),
        // AMD: SYSCFG reads 0: no SME, no MTRR extensions (Linux's MTRR code reads it).
        AMD_SYSCFG if amd => Place::Constant(0),
        // AMD: `init_amd` sets LFENCE-serializing here; it already is.
        AMD_DE_CFG if amd => Place::Constant(DE_CFG_VALUE),
        // AMD family 0Fh/10h: read without `_safe` by Linux's erratum-400 idle code (QEMU's
        // qemu64 CPU is family 0Fh model 6Bh): no C1E.
        AMD_INT_PENDING_MSG if amd => Place::Constant(0),
        _ => return None,
    })
}

/// The host's vendor (CPUID leaf 0), cached.
pub fn host_vendor() -> Vendor {
    static CACHE: AtomicU64 = AtomicU64::new(0);
    match CACHE.load(Ordering::Relaxed) {
        1 => Vendor::Intel,
        2 => Vendor::Amd,
        _ => {
            let r = core::arch::x86_64::__cpuid(0);
            // "AuthenticAMD" / "HygonGenuine": EBX "Auth" / "Hygo".
            let amd =
                r.ebx == u32::from_le_bytes(*b"Auth") || r.ebx == u32::from_le_bytes(*b"Hygo");
            CACHE.store(if amd { 2 } else { 1 }, Ordering::Relaxed);
            if amd { Vendor::Amd } else { Vendor::Intel }
        }
    }
}

/// What a write check needs to know besides the MSR and the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteCtx {
    /// The guest's CR0.
    pub cr0: u64,
    /// CPUID.8000_0001:EDX.NX (bit 20) as the guest sees it.
    pub nx: bool,
    /// CPUID.8000_0001:EDX.SYSCALL (bit 11) as the guest sees it.
    pub syscall: bool,
    /// MAXPHYADDR (CPUID.8000_0008:EAX[7:0]).
    pub phys_bits: u8,
}

impl WriteCtx {
    /// The context for a guest with control register 0 `cr0` on this host (the guest sees the
    /// host's NX, SYSCALL and address width).
    pub fn host(cr0: u64) -> Self {
        static CACHE: AtomicU64 = AtomicU64::new(0);
        let mut c = CACHE.load(Ordering::Relaxed);
        if c == 0 {
            let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
            let edx =
                if max >= 0x8000_0001 { core::arch::x86_64::__cpuid(0x8000_0001).edx } else { 0 };
            let phys = if max >= 0x8000_0008 {
                core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff
            } else {
                36
            };
            c = (1 << 63) | u64::from(edx) << 8 | u64::from(phys);
            CACHE.store(c, Ordering::Relaxed);
        }
        let edx = (c >> 8) as u32;
        Self { cr0, nx: edx & (1 << 20) != 0, syscall: edx & (1 << 11) != 0, phys_bits: c as u8 }
    }
}

/// A WRMSR of EFER (SDM Vol. 3A §2.2.1 and Vol. 4 Table 2-2; APM Vol. 2 §3.1.7): the value to
/// store, or why it is refused with #GP. Reserved and unsupported bits (SVME included: SVM is
/// not offered; NXE and SCE only where CPUID offers NX and SYSCALL) fault; changing LME while
/// CR0.PG = 1 faults; LMA is read-only: a write keeps the current LMA (as the CPU does).
pub fn efer_write(value: u64, old: u64, ctx: &WriteCtx) -> Result<u64, &'static str> {
    let mut allowed = EFER_LME | EFER_LMA;
    if ctx.syscall {
        allowed |= EFER_SCE;
    }
    if ctx.nx {
        allowed |= EFER_NXE;
    }
    if value & !allowed != 0 {
        return Err("reserved or unsupported EFER bit");
    }
    if (value ^ old) & EFER_LME != 0 && ctx.cr0 & CR0_PG != 0 {
        return Err("EFER.LME changed while CR0.PG = 1");
    }
    Ok((value & !EFER_LMA) | (old & EFER_LMA))
}

/// True when every byte of a PAT value is a defined memory type (0, 1, 4, 5, 6, 7) with bits
/// 7:3 clear (SDM Vol. 3A §13.12.2: anything else is #GP).
pub fn pat_valid(v: u64) -> bool {
    v.to_le_bytes().iter().all(|&t| matches!(t, 0 | 1 | 4..=7))
}

/// Checks a WRMSR of an allowed MSR: the value to store (the written one, or what the CPU
/// keeps of it), or why it is refused with #GP.
pub fn check_write(msr: u32, value: u64, old: u64, ctx: &WriteCtx) -> Result<u64, &'static str> {
    let canonical = |v: u64| ((v as i64) << 16 >> 16) as u64 == v;
    match msr {
        IA32_EFER => efer_write(value, old, ctx),
        IA32_FS_BASE | IA32_GS_BASE | IA32_KERNEL_GS_BASE | IA32_LSTAR | IA32_CSTAR
        | IA32_SYSENTER_ESP | IA32_SYSENTER_EIP
            if !canonical(value) =>
        {
            Err("non-canonical address")
        }
        // Bits 63:32 are reserved; the CPU keeps the 32-bit mask.
        IA32_FMASK => Ok(value & 0xffff_ffff),
        IA32_PAT if !pat_valid(value) => Err("undefined PAT memory type"),
        IA32_MTRR_DEF_TYPE if value & !0xcff != 0 => Err("reserved MTRR_DEF_TYPE bits"),
        IA32_MTRR_DEF_TYPE if !matches!(value & 0xff, 0 | 1 | 4 | 5 | 6) => {
            Err("undefined MTRR default memory type")
        }
        IA32_FEATURE_CONTROL => Err("IA32_FEATURE_CONTROL is locked"),
        IA32_MTRRCAP | IA32_MCG_CAP | IA32_PLATFORM_ID => Err("read-only MSR"),
        IA32_MCG_STATUS if value != 0 => Err("MCG_STATUS: only 0 may be written"),
        // PerfEvtSel: bits 63:42 and 39:36 are reserved (APM Vol. 2 §13.2.1).
        m if (AMD_PERF_EVTSEL0..AMD_PERF_CTR0).contains(&m) => {
            if value & (!((1u64 << 42) - 1) | (0xf << 36)) != 0 {
                Err("reserved PerfEvtSel bits")
            } else {
                Ok(value)
            }
        }
        // The counters are 48 bits wide.
        m if (AMD_PERF_CTR0..AMD_PERF_CTR0 + 4).contains(&m) => Ok(value & ((1 << 48) - 1)),
        _ => Ok(value),
    }
}

impl SoftMsrs {
    pub fn get(&self, i: usize) -> u64 {
        self.0[i]
    }
    pub fn set(&mut self, i: usize, v: u64) {
        self.0[i] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: WriteCtx = WriteCtx { cr0: 0x8000_0011, nx: true, syscall: true, phys_bits: 40 };

    #[test]
    fn allow_list() {
        use Vendor::{Amd, Intel};
        assert_eq!(place(IA32_EFER, Intel), Some(Place::Hardware(HwMsr::Efer)));
        for (m, h) in [
            (IA32_KERNEL_GS_BASE, HwMsr::KernelGsBase),
            (IA32_STAR, HwMsr::Star),
            (IA32_LSTAR, HwMsr::Lstar),
            (IA32_CSTAR, HwMsr::Cstar),
            (IA32_FMASK, HwMsr::Fmask),
            (IA32_PAT, HwMsr::Pat),
        ] {
            assert_eq!(place(m, Intel), Some(Place::Hardware(h)), "{m:#x}");
            assert_eq!(place(m, Amd), Some(Place::Hardware(h)), "{m:#x}");
        }
        assert_eq!(place(IA32_FEATURE_CONTROL, Intel), Some(Place::Constant(1)));
        assert_eq!(place(IA32_MISC_ENABLE, Intel), Some(Place::Constant(MISC_ENABLE_VALUE)));
        assert_eq!(MISC_ENABLE_VALUE & 1, 1, "fast strings");
        assert_eq!(place(IA32_MCG_CAP, Amd), Some(Place::Constant(0)));
        assert_eq!(place(IA32_MCG_STATUS, Intel), Some(Place::Constant(0)));
        // Vendor-specific MSRs exist only on their vendor's CPUs.
        assert_eq!(place(IA32_FEATURE_CONTROL, Amd), None);
        assert_eq!(place(IA32_MISC_ENABLE, Amd), None);
        assert_eq!(place(AMD_HWCR, Amd), Some(Place::Constant(HWCR_VALUE)));
        assert_eq!(place(AMD_HWCR, Intel), None);
        assert_eq!(place(AMD_SYSCFG, Amd), Some(Place::Constant(0)));
        assert_eq!(place(AMD_PERF_EVTSEL0, Amd), Some(Place::Software(1)));
        assert_eq!(place(AMD_PERF_CTR0 + 3, Amd), Some(Place::Software(8)));
        assert_eq!(place(AMD_PERF_CTR0 + 4, Amd), None);
        assert_eq!(place(AMD_PERF_EVTSEL0, Intel), None);
        // Hidden in CPUID, so absent: TSC_AUX (RDTSCP/RDPID), the Intel PMU,
        // TSC_ADJUST, SPEC_CTRL, PRED_CMD, ARCH_CAPABILITIES, XSS, S_CET, DS_AREA, and the
        // VMX/SVM MSRs.
        for refused in [
            IA32_TSC_AUX,
            0xc1,
            0x186,
            0x38f,
            0x3b,
            0x48,
            0x49,
            0x10a,
            0xda0,
            0x6a2,
            0x600,
            0x480,
            0x48c,
            0xc001_0114,
            0xc001_0117,
            0xc001_0200,
            0x1d9,
            0xffff_ffff,
        ] {
            assert_eq!(place(refused, Intel), None, "{refused:#x}");
            assert_eq!(place(refused, Amd), None, "{refused:#x}");
        }
        assert_eq!(SoftMsrs::default().get(0), MTRR_DEF_TYPE_RESET);
    }

    /// The rule that ties this list to `vmm/cpuid.rs`: with every host feature present, each
    /// MSR the guest's CPUID still announces is placed, and the MSRs of hidden features are not.
    #[test]
    fn cpuid_and_allow_list_agree() {
        use super::super::cpuid::{Regs, guest_cpuid};
        let all = Regs { eax: u32::MAX, ebx: u32::MAX, ecx: u32::MAX, edx: u32::MAX };
        let q = |leaf, sub| guest_cpuid(leaf, sub, all, false);
        let (l1, l7, la, ld1) = (q(1, 0), q(7, 0), q(0xa, 0), q(0xd, 1));
        let (x1, x8) = (q(0x8000_0001, 0), q(0x8000_0008, 0));
        let has = |r: u32, b: u32| r & (1 << b) != 0;
        for vendor in [Vendor::Intel, Vendor::Amd] {
            let amd = vendor == Vendor::Amd;
            let claims: &[(bool, &[u32], &str)] = &[
                (has(l1.edx, 14), &[IA32_MCG_CAP, IA32_MCG_STATUS], "MCA"),
                (has(l1.edx, 12), &[IA32_MTRRCAP, IA32_MTRR_DEF_TYPE], "MTRR"),
                (has(l1.edx, 16), &[IA32_PAT], "PAT"),
                (has(l1.edx, 11), &[IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP], "SEP"),
                (has(l1.edx, 9), &[IA32_APIC_BASE], "APIC"),
                (has(l1.edx, 4), &[IA32_TSC], "TSC"),
                (has(x1.edx, 11), &[IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK], "SYSCALL"),
                (has(x1.edx, 29), &[IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE], "LM"),
                (has(l1.ecx, 24), &[0x6e0], "TSC deadline"),
                (has(l1.ecx, 15), &[0x345], "PDCM"),
                (has(l1.edx, 21), &[0x600], "DS"),
                (has(l7.ebx, 1), &[0x3b], "TSC_ADJUST"),
                (has(l7.edx, 26) || has(x8.ebx, 14) || has(x8.ebx, 24), &[0x48], "SPEC_CTRL"),
                (has(l7.edx, 29), &[0x10a], "ARCH_CAPABILITIES"),
                (has(l7.edx, 20) || has(l7.ecx, 7), &[0x6a2, 0x6a0], "CET"),
                (la.eax & 0xff != 0, &[0xc1, 0x186, 0x38f], "PMU"),
                (has(x1.edx, 27) || has(l7.ecx, 22), &[IA32_TSC_AUX], "RDTSCP/RDPID"),
                (has(ld1.eax, 3), &[0xda0], "XSAVES"),
                (has(ld1.eax, 4), &[0x1c4], "XFD"),
                (has(x1.ecx, 23), &[0xc001_0200], "PERFCTR_CORE"),
                (has(x1.ecx, 9), &[0xc001_0140], "OSVW"),
                (amd, &[AMD_PERF_EVTSEL0, AMD_PERF_CTR0 + 3, AMD_HWCR], "AMD"),
            ];
            for &(claimed, msrs, feature) in claims {
                for &m in msrs {
                    assert_eq!(place(m, vendor).is_some(), claimed, "{vendor:?} {feature} {m:#x}");
                }
            }
        }
    }

    #[test]
    fn efer_rules() {
        let lma_on = 0xd00;
        assert_eq!(efer_write(lma_on | 1, lma_on, &CTX), Ok(lma_on | 1));
        assert!(efer_write(lma_on | (1 << 12), lma_on, &CTX).is_err(), "SVME refused");
        assert!(efer_write(lma_on | (1 << 14), lma_on, &CTX).is_err(), "reserved bit");
        // LMA is read-only: a write keeps the current value.
        assert_eq!(efer_write(0xd00, 0x100, &WriteCtx { cr0: 0, ..CTX }), Ok(0x900));
        assert_eq!(efer_write(0x900, lma_on, &CTX), Ok(lma_on));
        // LME may not change while paging is on, either way.
        assert!(efer_write(0x800, lma_on, &CTX).is_err(), "clearing LME with PG=1");
        assert!(efer_write(0x100, 0, &CTX).is_err(), "setting LME with PG=1");
        let no_paging = WriteCtx { cr0: 0x11, ..CTX };
        assert_eq!(efer_write(0x100, 0, &no_paging), Ok(0x100));
        assert_eq!(efer_write(0, 0x100, &no_paging), Ok(0));
        // NXE and SCE follow CPUID.
        let bare = WriteCtx { nx: false, syscall: false, ..CTX };
        assert!(efer_write(lma_on | (1 << 11), lma_on, &bare).is_err(), "NXE without NX");
        assert!(efer_write(lma_on | 1, lma_on, &bare).is_err(), "SCE without SYSCALL");
        assert_eq!(efer_write(0x500, 0x500, &bare), Ok(0x500));
    }

    #[test]
    fn write_checks() {
        let ok = |m, v| check_write(m, v, 0, &CTX);
        assert!(ok(IA32_FS_BASE, 0x0000_8000_0000_0000).is_err());
        assert!(ok(IA32_LSTAR, 0x0000_8000_0000_0000).is_err());
        assert_eq!(ok(IA32_FS_BASE, 0xffff_8000_0000_0000), Ok(0xffff_8000_0000_0000));
        assert!(ok(IA32_FEATURE_CONTROL, 5).is_err());
        assert_eq!(ok(IA32_FMASK, 0xffff_ffff_0004_0700), Ok(0x0004_0700));
        // PAT: types 2 and 3 and bits 7:3 are undefined.
        assert_eq!(ok(IA32_PAT, PAT_RESET), Ok(PAT_RESET));
        assert_eq!(ok(IA32_PAT, 0x0001_0506_0007_0406), Ok(0x0001_0506_0007_0406));
        assert!(ok(IA32_PAT, 0x0002_0406_0007_0406).is_err());
        assert!(ok(IA32_PAT, 0x0007_0406_0007_0403).is_err());
        assert!(ok(IA32_PAT, 0x0007_0406_0007_0408).is_err());
        assert!(ok(IA32_MTRR_DEF_TYPE, 0x1806).is_err());
        assert!(ok(IA32_MTRR_DEF_TYPE, 0x802).is_err());
        assert_eq!(ok(IA32_MTRR_DEF_TYPE, 0xc00), Ok(0xc00));
        assert_eq!(ok(IA32_MCG_STATUS, 0), Ok(0));
        assert!(ok(IA32_MCG_STATUS, 1).is_err());
        assert!(ok(IA32_MCG_CAP, 0).is_err());
        assert!(ok(IA32_MTRRCAP, 0).is_err());
        assert_eq!(ok(AMD_PERF_EVTSEL0, 0x43_0076), Ok(0x43_0076));
        assert!(ok(AMD_PERF_EVTSEL0 + 2, 1 << 42).is_err());
        assert!(ok(AMD_PERF_EVTSEL0 + 2, 1 << 37).is_err());
        assert_eq!(ok(AMD_PERF_CTR0 + 1, u64::MAX), Ok((1 << 48) - 1));
    }
}
