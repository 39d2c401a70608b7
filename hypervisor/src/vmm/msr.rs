//! The guest's MSRs: an allow-list. Listed MSRs are passed to the hardware guest state,
//! kept in a software copy, or answered with a constant; every other RDMSR/WRMSR gets #GP(0),
//! exactly as a CPU without that MSR would answer (pure, host-tested).

use super::vcpu::HwMsr;

pub const IA32_TSC: u32 = 0x10;
pub const IA32_APIC_BASE: u32 = 0x1b;
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
pub const IA32_MTRRCAP: u32 = 0xfe;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
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

/// EFER bits a guest may set: SCE, LME, LMA (read-only, checked separately), NXE.
pub const EFER_ALLOWED: u64 = 1 | (1 << 8) | (1 << 10) | (1 << 11);
const EFER_LMA: u64 = 1 << 10;

/// MSRs kept in software, in [`SoftMsrs`] order.
const SOFT: [u32; 9] = [
    IA32_PAT,
    IA32_MTRR_DEF_TYPE,
    IA32_STAR,
    IA32_LSTAR,
    IA32_CSTAR,
    IA32_FMASK,
    IA32_KERNEL_GS_BASE,
    IA32_TSC_AUX,
    IA32_APIC_BASE,
];

/// The software copies.
#[derive(Clone, Copy, Debug)]
pub struct SoftMsrs([u64; SOFT.len()]);

impl Default for SoftMsrs {
    fn default() -> Self {
        let mut v = [0; SOFT.len()];
        v[0] = 0x0007_0406_0007_0406; // PAT power-on value
        v[8] = 0xfee0_0900; // APIC base: BSP, enabled, default address
        Self(v)
    }
}

/// Where an allowed MSR lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Hardware(HwMsr),
    Software(usize),
    /// Reads as this value; writes are ignored.
    Constant(u64),
    /// The time-stamp counter.
    Tsc,
}

/// Where `msr` lives, or `None` when the guest may not touch it.
pub fn place(msr: u32) -> Option<Place> {
    Some(match msr {
        IA32_EFER => Place::Hardware(HwMsr::Efer),
        IA32_FS_BASE => Place::Hardware(HwMsr::FsBase),
        IA32_GS_BASE => Place::Hardware(HwMsr::GsBase),
        IA32_SYSENTER_CS => Place::Hardware(HwMsr::SysenterCs),
        IA32_SYSENTER_ESP => Place::Hardware(HwMsr::SysenterEsp),
        IA32_SYSENTER_EIP => Place::Hardware(HwMsr::SysenterEip),
        IA32_TSC => Place::Tsc,
        // Locked, VMX off: consistent with the hidden VMX feature bit.
        IA32_FEATURE_CONTROL => Place::Constant(1),
        IA32_BIOS_SIGN_ID | IA32_MTRRCAP => Place::Constant(0),
        IA32_MISC_ENABLE => Place::Constant(1),
        m => Place::Software(SOFT.iter().position(|&s| s == m)?),
    })
}

/// Why a WRMSR is refused with #GP even though the MSR is allowed.
pub fn check_write(msr: u32, value: u64, old: u64) -> Result<(), &'static str> {
    let canonical = |v: u64| ((v as i64) << 16 >> 16) as u64 == v;
    match msr {
        IA32_EFER if value & !EFER_ALLOWED != 0 => Err("reserved or unsupported EFER bit"),
        IA32_EFER if (value ^ old) & EFER_LMA != 0 => Err("EFER.LMA is read-only"),
        IA32_FS_BASE | IA32_GS_BASE | IA32_KERNEL_GS_BASE | IA32_LSTAR | IA32_CSTAR
        | IA32_SYSENTER_ESP | IA32_SYSENTER_EIP
            if !canonical(value) =>
        {
            Err("non-canonical address")
        }
        IA32_FEATURE_CONTROL => Err("IA32_FEATURE_CONTROL is locked"),
        IA32_TSC_AUX if value >> 32 != 0 => Err("reserved TSC_AUX bits"),
        _ => Ok(()),
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

    #[test]
    fn allow_list() {
        assert_eq!(place(IA32_EFER), Some(Place::Hardware(HwMsr::Efer)));
        assert_eq!(place(IA32_KERNEL_GS_BASE), Some(Place::Software(6)));
        assert_eq!(place(IA32_FEATURE_CONTROL), Some(Place::Constant(1)));
        for refused in [0x480, 0x48c, 0xc001_0114, 0xc001_0117, 0x1d9, 0x3b, 0xffff_ffff] {
            assert_eq!(place(refused), None, "{refused:#x}");
        }
        assert_eq!(SoftMsrs::default().get(0), 0x0007_0406_0007_0406);
    }

    #[test]
    fn write_checks() {
        let lma_on = 0xd00;
        assert!(check_write(IA32_EFER, lma_on | 1, lma_on).is_ok());
        assert!(check_write(IA32_EFER, lma_on | (1 << 12), lma_on).is_err(), "SVME refused");
        assert!(check_write(IA32_EFER, 0x900, lma_on).is_err(), "LMA is read-only");
        assert!(check_write(IA32_FS_BASE, 0x0000_8000_0000_0000, 0).is_err());
        assert!(check_write(IA32_FS_BASE, 0xffff_8000_0000_0000, 0).is_ok());
        assert!(check_write(IA32_FEATURE_CONTROL, 5, 1).is_err());
    }
}
