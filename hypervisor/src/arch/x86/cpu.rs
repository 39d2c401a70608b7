//! CPU identification and the virtualization capabilities in detail.
//!
//! The decoders are pure functions over raw CPUID/MSR values (host-tested); [`detect`] reads
//! the hardware. Intel: SDM Vol. 3D Appendix A (VMX capability reporting). AMD: APM Vol. 2
//! §15.4 and CPUID Fn8000_000A.

use super::instr::rdmsr;
use core::fmt;
use raw_cpuid::CpuId;

pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const IA32_VMX_BASIC: u32 = 0x480;
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
pub const IA32_VMX_MISC: u32 = 0x485;
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
pub const VM_CR: u32 = 0xc001_0114;

/// Intel VMX capabilities, decoded from the capability MSRs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    pub revision: u32,
    pub vmxon_region_size: u32,
    pub true_controls: bool,
    /// IA32_FEATURE_CONTROL as the firmware left it.
    pub feature_control: u64,
    pub secondary_controls: bool,
    pub ept: bool,
    pub ept_4level: bool,
    pub ept_wb: bool,
    pub ept_2m: bool,
    pub ept_1g: bool,
    pub ept_ad: bool,
    pub invept: bool,
    pub vpid: bool,
    pub invvpid: bool,
    pub unrestricted_guest: bool,
    pub preemption_timer: bool,
    /// The preemption timer counts down once every 2^rate TSC ticks.
    pub preemption_timer_rate: u8,
}

impl VmxCaps {
    /// Decodes the capability MSRs. `procbased2` and `ept_vpid` are 0 where the CPU does not
    /// offer secondary controls (they must not be read then).
    pub fn decode(
        basic: u64,
        pinbased: u64,
        procbased: u64,
        procbased2: u64,
        misc: u64,
        ept_vpid: u64,
        feature_control: u64,
    ) -> Self {
        let allowed1 = |msr: u64, bit: u32| (msr >> 32) & (1 << bit) != 0;
        let secondary = allowed1(procbased, 31);
        let ept = secondary && allowed1(procbased2, 1);
        let vpid = secondary && allowed1(procbased2, 5);
        let cap = |bit: u32| ept_vpid & (1 << bit) != 0;
        Self {
            revision: (basic & 0x7fff_ffff) as u32,
            vmxon_region_size: ((basic >> 32) & 0x1fff) as u32,
            true_controls: basic & (1 << 55) != 0,
            feature_control,
            secondary_controls: secondary,
            ept,
            ept_4level: ept && cap(6),
            ept_wb: ept && cap(14),
            ept_2m: ept && cap(16),
            ept_1g: ept && cap(17),
            ept_ad: ept && cap(21),
            invept: ept && cap(20),
            vpid,
            invvpid: vpid && cap(32),
            unrestricted_guest: secondary && allowed1(procbased2, 7),
            preemption_timer: allowed1(pinbased, 6),
            preemption_timer_rate: (misc & 0x1f) as u8,
        }
    }

    /// True when the firmware locked IA32_FEATURE_CONTROL with VMX (outside SMX) disabled.
    pub fn disabled_by_firmware(&self) -> bool {
        self.feature_control & 1 != 0 && self.feature_control & (1 << 2) == 0
    }
}

/// AMD SVM capabilities (CPUID Fn8000_000A).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmCaps {
    pub revision: u8,
    pub asids: u32,
    pub npt: bool,
    pub nrip_save: bool,
    pub vmcb_clean: bool,
    pub flush_by_asid: bool,
    pub decode_assists: bool,
    /// VM_CR.SVMDIS: the firmware disabled SVM.
    pub disabled_by_firmware: bool,
}

impl SvmCaps {
    /// Decodes CPUID Fn8000_000A (EAX, EBX, EDX) and the VM_CR MSR.
    pub fn decode(eax: u32, ebx: u32, edx: u32, vm_cr: u64) -> Self {
        let bit = |b: u32| edx & (1 << b) != 0;
        Self {
            revision: (eax & 0xff) as u8,
            asids: ebx,
            npt: bit(0),
            nrip_save: bit(3),
            vmcb_clean: bit(5),
            flush_by_asid: bit(6),
            decode_assists: bit(7),
            disabled_by_firmware: vm_cr & (1 << 4) != 0,
        }
    }
}

/// Which hardware virtualization this CPU offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virt {
    Vmx(VmxCaps),
    Svm(SvmCaps),
    None,
}

/// What the banner says about the CPU.
#[derive(Clone, Copy, Debug)]
pub struct CpuInfo {
    vendor: [u8; 12],
    brand: [u8; 48],
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    pub gib_pages: bool,
    pub virt: Virt,
}

impl CpuInfo {
    pub fn vendor(&self) -> &str {
        core::str::from_utf8(&self.vendor).unwrap_or("?")
    }

    pub fn brand(&self) -> &str {
        core::str::from_utf8(&self.brand)
            .unwrap_or("?")
            .trim_matches(|c: char| c == '\0' || c == ' ')
    }
}

/// Reads CPUID and, where the CPU offers VMX or SVM, its capability MSRs.
pub fn detect() -> CpuInfo {
    let id = CpuId::new();
    let mut info = CpuInfo {
        vendor: [b'?'; 12],
        brand: [b' '; 48],
        family: 0,
        model: 0,
        stepping: 0,
        gib_pages: false,
        virt: Virt::None,
    };
    if let Some(v) = id.get_vendor_info() {
        let s = v.as_str().as_bytes();
        let n = s.len().min(12);
        info.vendor[..n].copy_from_slice(&s[..n]);
    }
    if let Some(b) = id.get_processor_brand_string() {
        let s = b.as_str().as_bytes();
        let n = s.len().min(48);
        info.brand[..n].copy_from_slice(&s[..n]);
    }
    let features = id.get_feature_info();
    if let Some(f) = &features {
        info.family = f.family_id();
        info.model = f.model_id();
        info.stepping = f.stepping_id();
    }
    let ext = id.get_extended_processor_and_feature_identifiers();
    info.gib_pages = ext.as_ref().is_some_and(|e| e.has_1gib_pages());
    if features.as_ref().is_some_and(|f| f.has_vmx()) {
        // SAFETY: CPUID.1:ECX.VMX = 1, so the basic capability MSRs exist (SDM Vol. 3D A.1);
        // the secondary and EPT/VPID MSRs are read only when their presence bits are set.
        info.virt = Virt::Vmx(unsafe {
            let basic = rdmsr(IA32_VMX_BASIC);
            let true_ctls = basic & (1 << 55) != 0;
            let pin =
                rdmsr(if true_ctls { IA32_VMX_TRUE_PINBASED_CTLS } else { IA32_VMX_PINBASED_CTLS });
            let proc = rdmsr(if true_ctls {
                IA32_VMX_TRUE_PROCBASED_CTLS
            } else {
                IA32_VMX_PROCBASED_CTLS
            });
            let secondary = proc & (1 << 63) != 0;
            let proc2 = if secondary { rdmsr(IA32_VMX_PROCBASED_CTLS2) } else { 0 };
            let ept_vpid_present = proc2 & ((1 << 33) | (1 << 37)) != 0;
            let ept_vpid = if ept_vpid_present { rdmsr(IA32_VMX_EPT_VPID_CAP) } else { 0 };
            VmxCaps::decode(
                basic,
                pin,
                proc,
                proc2,
                rdmsr(IA32_VMX_MISC),
                ept_vpid,
                rdmsr(IA32_FEATURE_CONTROL),
            )
        });
    } else if ext.as_ref().is_some_and(|e| e.has_svm()) {
        let r = raw_cpuid::cpuid!(0x8000_000a);
        // SAFETY: CPUID Fn8000_0001:ECX.SVM = 1, so VM_CR exists (APM Vol. 2 §15.30.1).
        let vm_cr = unsafe { rdmsr(VM_CR) };
        info.virt = Virt::Svm(SvmCaps::decode(r.eax, r.ebx, r.edx, vm_cr));
    }
    info
}

struct YesNo(bool);

impl fmt::Display for YesNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "yes" } else { "no" })
    }
}

impl fmt::Display for VmxCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VMX rev {:#x} (VMXON region {} bytes, true controls {}), EPT {} (4-level {}, WB {}, 2M {}, 1G {}, A/D {}, INVEPT {}), VPID {} (INVVPID {}), unrestricted guest {}, preemption timer {} (TSC/{}), feature control {:#x}",
            self.revision,
            self.vmxon_region_size,
            YesNo(self.true_controls),
            YesNo(self.ept),
            YesNo(self.ept_4level),
            YesNo(self.ept_wb),
            YesNo(self.ept_2m),
            YesNo(self.ept_1g),
            YesNo(self.ept_ad),
            YesNo(self.invept),
            YesNo(self.vpid),
            YesNo(self.invvpid),
            YesNo(self.unrestricted_guest),
            YesNo(self.preemption_timer),
            1u32 << self.preemption_timer_rate,
            self.feature_control,
        )
    }
}

impl fmt::Display for SvmCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SVM rev {}, NPT {}, NRIP save {}, {} ASIDs, decode assists {}, VMCB clean bits {}, flush by ASID {}{}",
            self.revision,
            YesNo(self.npt),
            YesNo(self.nrip_save),
            self.asids,
            YesNo(self.decode_assists),
            YesNo(self.vmcb_clean),
            YesNo(self.flush_by_asid),
            if self.disabled_by_firmware { ", DISABLED by firmware (VM_CR.SVMDIS)" } else { "" },
        )
    }
}

impl fmt::Display for Virt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vmx(c) => c.fmt(f),
            Self::Svm(c) => c.fmt(f),
            Self::None => f.write_str("no hardware virtualization (neither VMX nor SVM)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_decode_reads_the_right_bits() {
        // Revision 0x10, 4 KiB region, true controls; preemption timer allowed; secondary
        // controls with EPT, VPID and unrestricted guest; EPT caps 4-level, WB, 2M, 1G, INVEPT.
        let basic = 0x10 | (0x1000 << 32) | (1 << 55);
        let pin = 1 << (32 + 6);
        let proc = 1 << (32 + 31);
        let proc2 = (1 << 33) | (1 << 37) | (1 << 39);
        let ept = (1 << 6) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 20) | (1 << 32);
        let c = VmxCaps::decode(basic, pin, proc, proc2, 5, ept, 5);
        assert_eq!(c.revision, 0x10);
        assert_eq!(c.vmxon_region_size, 4096);
        assert!(c.true_controls && c.secondary_controls && c.ept && c.vpid && c.invvpid);
        assert!(c.ept_4level && c.ept_wb && c.ept_2m && c.ept_1g && c.invept && !c.ept_ad);
        assert!(c.unrestricted_guest && c.preemption_timer);
        assert_eq!(c.preemption_timer_rate, 5);
        assert!(!c.disabled_by_firmware());
    }

    #[test]
    fn vmx_without_secondary_controls_has_no_ept() {
        let c = VmxCaps::decode(0x10, 0, 0, u64::MAX, 0, u64::MAX, 1);
        assert!(!c.ept && !c.vpid && !c.unrestricted_guest && !c.ept_1g);
        assert!(c.disabled_by_firmware(), "locked with VMX off");
    }

    #[test]
    fn svm_decode() {
        let c = SvmCaps::decode(1, 8, 0b1000_1001, 1 << 4);
        assert_eq!(c.asids, 8);
        assert!(c.npt && c.nrip_save && c.decode_assists && !c.vmcb_clean);
        assert!(c.disabled_by_firmware);
    }
}
