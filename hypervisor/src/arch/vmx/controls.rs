//! VMX control words computed from the capability MSRs (SDM Vol. 3D Appendix A.3-A.5): a
//! control the CPU must have set is set, one it cannot set is cleared, and a control the
//! hypervisor *requires* but the CPU lacks is an error that names it, before any VM entry.

use bitflags::bitflags;

bitflags! {
    /// Pin-based VM-execution controls (SDM Vol. 3C §25.6.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Pin: u32 {
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        const NMI_EXITING = 1 << 3;
        const VIRTUAL_NMIS = 1 << 5;
        const PREEMPTION_TIMER = 1 << 6;
    }

    /// Primary processor-based VM-execution controls (§25.6.2, Table 25-6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Proc: u32 {
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        const USE_TSC_OFFSETTING = 1 << 3;
        const HLT_EXITING = 1 << 7;
        const INVLPG_EXITING = 1 << 9;
        const MWAIT_EXITING = 1 << 10;
        const RDPMC_EXITING = 1 << 11;
        const RDTSC_EXITING = 1 << 12;
        const CR3_LOAD_EXITING = 1 << 15;
        const CR3_STORE_EXITING = 1 << 16;
        const CR8_LOAD_EXITING = 1 << 19;
        const CR8_STORE_EXITING = 1 << 20;
        const USE_TPR_SHADOW = 1 << 21;
        /// Needs "virtual NMIs" (SDM Vol. 3C §27.2.1.1).
        const NMI_WINDOW_EXITING = 1 << 22;
        const MOV_DR_EXITING = 1 << 23;
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        const USE_IO_BITMAPS = 1 << 25;
        const USE_MSR_BITMAPS = 1 << 28;
        const MONITOR_EXITING = 1 << 29;
        const PAUSE_EXITING = 1 << 30;
        const SECONDARY_CONTROLS = 1 << 31;
    }

    /// Secondary processor-based VM-execution controls (§25.6.2, Table 25-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Proc2: u32 {
        const ENABLE_EPT = 1 << 1;
        const ENABLE_RDTSCP = 1 << 3;
        const ENABLE_VPID = 1 << 5;
        const WBINVD_EXITING = 1 << 6;
        const UNRESTRICTED_GUEST = 1 << 7;
        /// PAUSE-loop exiting (SDM Vol. 3C §26.1.3; PLE_Gap and PLE_Window, §25.6.13).
        const PAUSE_LOOP_EXITING = 1 << 10;
        const ENABLE_INVPCID = 1 << 12;
        const ENABLE_XSAVES = 1 << 20;
    }

    /// VM-exit controls (§25.7.1, Table 25-13).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Exit: u32 {
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        const ACK_INTERRUPT_ON_EXIT = 1 << 15;
        const SAVE_PAT = 1 << 18;
        const LOAD_PAT = 1 << 19;
        const SAVE_EFER = 1 << 20;
        const LOAD_EFER = 1 << 21;
        const SAVE_PREEMPTION_TIMER = 1 << 22;
    }

    /// VM-entry controls (§25.8.1, Table 25-15).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Entry: u32 {
        const IA32E_MODE_GUEST = 1 << 9;
        const LOAD_PAT = 1 << 14;
        const LOAD_EFER = 1 << 15;
    }
}

/// A control the hypervisor needs and the CPU cannot set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingControl {
    /// Which control word ("pin-based", "secondary processor-based", ...).
    pub word: &'static str,
    /// The control's name.
    pub control: &'static str,
}

impl core::fmt::Display for MissingControl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "the CPU cannot set the {} control {}", self.word, self.control)
    }
}

/// Computes a control word from a capability MSR value (allowed-0 settings in bits 31:0,
/// allowed-1 settings in bits 63:32): `required` must be settable, `optional` is set where
/// the CPU allows, and every bit the CPU insists on is set.
pub fn compute<F: bitflags::Flags<Bits = u32> + Copy>(
    word: &'static str,
    cap: u64,
    required: F,
    optional: F,
) -> Result<u32, MissingControl> {
    let must_be_one = cap as u32;
    let may_be_one = (cap >> 32) as u32;
    if let Some((control, _)) = required.iter_names().find(|(_, f)| f.bits() & !may_be_one != 0) {
        return Err(MissingControl { word, control });
    }
    Ok(((required.bits() | optional.bits()) & may_be_one) | must_be_one)
}

/// CR0 or CR4 bits the CPU fixes in VMX operation (IA32_VMX_CRn_FIXED0/1, SDM A.7/A.8):
/// `fixed0` bits must be 1, bits clear in `fixed1` must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBits {
    pub fixed0: u64,
    pub fixed1: u64,
}

impl FixedBits {
    /// `v` adjusted to the fixed bits.
    pub const fn apply(&self, v: u64) -> u64 {
        (v | self.fixed0) & self.fixed1
    }

    /// True when `v` already honours them.
    pub const fn allows(&self, v: u64) -> bool {
        self.apply(v) == v
    }

    /// The bits the guest may not choose freely: the guest/host mask for this register.
    pub const fn owned_by_host(&self) -> u64 {
        self.fixed0 | !self.fixed1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_optional_and_forced_bits() {
        // Allowed-0: bit 1 must be 1. Allowed-1: bits 0,1,3,6 may be 1.
        let cap = 0b10 | (0b100_1011u64 << 32);
        let v = compute(
            "pin-based",
            cap,
            Pin::EXTERNAL_INTERRUPT_EXITING,
            Pin::PREEMPTION_TIMER | Pin::VIRTUAL_NMIS,
        )
        .unwrap();
        assert_eq!(v, 0b100_0011, "ext-int + forced bit 1 + preemption timer; no virtual NMIs");
    }

    #[test]
    fn missing_required_control_is_named() {
        let cap = 0xffff_ffffu64 << 32 & !(u64::from(Proc2::ENABLE_EPT.bits()) << 32);
        let e = compute(
            "secondary processor-based",
            cap,
            Proc2::ENABLE_EPT | Proc2::ENABLE_VPID,
            Proc2::empty(),
        )
        .unwrap_err();
        assert_eq!(e, MissingControl { word: "secondary processor-based", control: "ENABLE_EPT" });
        assert_eq!(
            alloc::format!("{e}"),
            "the CPU cannot set the secondary processor-based control ENABLE_EPT"
        );
    }

    #[test]
    fn fixed_bits() {
        // Typical CR0: PE, NE, PG fixed to 1; CD/NW free.
        let f = FixedBits { fixed0: 0x8000_0021, fixed1: 0xffff_ffff };
        assert_eq!(f.apply(0x10), 0x8000_0031);
        assert!(!f.allows(0x11));
        assert_eq!(f.owned_by_host() & 0xffff_ffff, 0x8000_0021);
    }
}
