//! The VMCB as the CPU reads it (APM Vol. 2 Appendix B): the control area (Table B-1,
//! 0x000-0x3FF) and the state-save area (Table B-2, from 0x400), with the encodings the backend
//! writes into them: segment attributes, EVENTINJ/EXITINTINFO, interrupt control.
//!
//! Offsets in the comments are from the start of each area; the asserts at the end check them.

use crate::vmm::vcpu::{Event, Segment};
use bitflags::bitflags;
use core::mem::{offset_of, size_of};

bitflags! {
    /// Intercept vector 3, control offset 0x00C. Bit n causes exit code 0x60 + n.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Intercept1: u32 {
        const INTR = 1 << 0;
        const NMI = 1 << 1;
        const SMI = 1 << 2;
        const INIT = 1 << 3;
        const VINTR = 1 << 4;
        const CR0_SEL_WRITE = 1 << 5;
        const IDTR_READ = 1 << 6;
        const GDTR_READ = 1 << 7;
        const LDTR_READ = 1 << 8;
        const TR_READ = 1 << 9;
        const IDTR_WRITE = 1 << 10;
        const GDTR_WRITE = 1 << 11;
        const LDTR_WRITE = 1 << 12;
        const TR_WRITE = 1 << 13;
        const RDTSC = 1 << 14;
        const RDPMC = 1 << 15;
        const PUSHF = 1 << 16;
        const POPF = 1 << 17;
        const CPUID = 1 << 18;
        const RSM = 1 << 19;
        const IRET = 1 << 20;
        const INTN = 1 << 21;
        const INVD = 1 << 22;
        const PAUSE = 1 << 23;
        const HLT = 1 << 24;
        const INVLPG = 1 << 25;
        const INVLPGA = 1 << 26;
        const IOIO_PROT = 1 << 27;
        const MSR_PROT = 1 << 28;
        const TASK_SWITCH = 1 << 29;
        const FERR_FREEZE = 1 << 30;
        const SHUTDOWN = 1 << 31;
    }
}

bitflags! {
    /// Intercept vector 4, control offset 0x010. Bit n causes exit code 0x80 + n.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Intercept2: u32 {
        const VMRUN = 1 << 0;
        const VMMCALL = 1 << 1;
        const VMLOAD = 1 << 2;
        const VMSAVE = 1 << 3;
        const STGI = 1 << 4;
        const CLGI = 1 << 5;
        const SKINIT = 1 << 6;
        const RDTSCP = 1 << 7;
        const ICEBP = 1 << 8;
        const WBINVD = 1 << 9;
        const MONITOR = 1 << 10;
        const MWAIT = 1 << 11;
        const MWAIT_CONDITIONAL = 1 << 12;
        const XSETBV = 1 << 13;
        const RDPRU = 1 << 14;
        const EFER_WRITE_TRAP = 1 << 15;
    }
}

bitflags! {
    /// Virtual interrupt control, control offset 0x060 (§15.21.4).
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct IntCtl: u32 {
        /// The guest's CR8 while V_INTR_MASKING is set.
        const V_TPR = 0xff;
        const V_IRQ = 1 << 8;
        const V_GIF = 1 << 9;
        const V_INTR_PRIO = 0xf << 16;
        const V_IGN_TPR = 1 << 20;
        /// Guest RFLAGS.IF and CR8 mask only virtual interrupts; the host's IF at VMRUN
        /// keeps masking physical ones.
        const V_INTR_MASKING = 1 << 24;
        const V_GIF_ENABLE = 1 << 25;
        const AVIC_ENABLE = 1 << 31;
    }
}

/// Interrupt state (offset 0x068): the guest is in an STI/MOV SS shadow.
pub const INTERRUPT_SHADOW: u64 = 1 << 0;
/// TLB_CONTROL values (offset 0x05C, §15.16.1).
pub const TLB_FLUSH_NOTHING: u8 = 0;
pub const TLB_FLUSH_ALL: u8 = 1;
/// Nested paging control (offset 0x090): NP_ENABLE.
pub const NP_ENABLE: u64 = 1 << 0;
/// EXITINFO1 of a CR access intercept with decode assists: bit 63 says bits 3:0 name the GPR
/// (§15.33.1).
pub const CR_GPR_VALID: u64 = 1 << 63;

/// The control area, VMCB offset 0x000 (Table B-1).
#[repr(C)]
#[derive(Debug)]
pub struct Control {
    /// 0x000: bits 15:0 intercept reads of CR0-15, bits 31:16 writes.
    pub intercept_cr: u32,
    /// 0x004: bits 15:0 intercept reads of DR0-15, bits 31:16 writes.
    pub intercept_dr: u32,
    /// 0x008: one bit per exception vector.
    pub intercept_exceptions: u32,
    /// 0x00C
    pub intercept1: Intercept1,
    /// 0x010
    pub intercept2: Intercept2,
    /// 0x014: INVLPGB, INVPCID, MCOMMIT, TLBSYNC... (none used).
    pub intercept3: u32,
    _reserved_018: [u8; 0x24],
    /// 0x03C
    pub pause_filter_threshold: u16,
    /// 0x03E
    pub pause_filter_count: u16,
    /// 0x040: physical address of the 12 KiB I/O permission map.
    pub iopm_base_pa: u64,
    /// 0x048: physical address of the 8 KiB MSR permission map.
    pub msrpm_base_pa: u64,
    /// 0x050
    pub tsc_offset: u64,
    /// 0x058
    pub guest_asid: u32,
    /// 0x05C
    pub tlb_control: u8,
    _reserved_05d: [u8; 3],
    /// 0x060
    pub int_ctl: IntCtl,
    /// 0x064: V_INTR_VECTOR in bits 7:0.
    pub int_vector: u32,
    /// 0x068: [`INTERRUPT_SHADOW`]; bit 1 GUEST_INTERRUPT_MASK.
    pub int_state: u64,
    /// 0x070
    pub exit_code: u64,
    /// 0x078
    pub exit_info1: u64,
    /// 0x080
    pub exit_info2: u64,
    /// 0x088: same format as EVENTINJ.
    pub exit_int_info: u64,
    /// 0x090: [`NP_ENABLE`], SEV and SEV-ES enables.
    pub np_control: u64,
    /// 0x098
    pub avic_apic_bar: u64,
    /// 0x0A0
    pub ghcb_pa: u64,
    /// 0x0A8
    pub event_inj: u64,
    /// 0x0B0
    pub n_cr3: u64,
    /// 0x0B8: LBR and VMLOAD/VMSAVE virtualization.
    pub virt_ext: u64,
    /// 0x0C0
    pub clean_bits: u32,
    _reserved_0c4: u32,
    /// 0x0C8: next sequential RIP (with NRIP save).
    pub next_rip: u64,
    /// 0x0D0: bytes fetched (with decode assists) and the bytes themselves.
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    /// 0x0E0-0x3FF: AVIC tables, VMSA pointer, reserved, reserved for host software.
    _reserved_0e0: [u8; 0x320],
}

/// A segment in the state-save area: selector, packed attributes, limit, base.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seg {
    pub selector: u16,
    /// Type 3:0, S 4, DPL 6:5, P 7, AVL 8, L 9, D/B 10, G 11.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// The state-save area, VMCB offset 0x400 (Table B-2).
#[repr(C)]
#[derive(Debug)]
pub struct SaveArea {
    /// 0x000
    pub es: Seg,
    /// 0x010
    pub cs: Seg,
    /// 0x020
    pub ss: Seg,
    /// 0x030
    pub ds: Seg,
    /// 0x040: FS, GS, LDTR, TR are loaded by VMLOAD and stored by VMSAVE, not by VMRUN.
    pub fs: Seg,
    /// 0x050
    pub gs: Seg,
    /// 0x060: only limit and base are used.
    pub gdtr: Seg,
    /// 0x070
    pub ldtr: Seg,
    /// 0x080
    pub idtr: Seg,
    /// 0x090
    pub tr: Seg,
    _reserved_0a0: [u8; 0x2b],
    /// 0x0CB
    pub cpl: u8,
    _reserved_0cc: u32,
    /// 0x0D0
    pub efer: u64,
    _reserved_0d8: [u8; 0x70],
    /// 0x148
    pub cr4: u64,
    /// 0x150
    pub cr3: u64,
    /// 0x158
    pub cr0: u64,
    /// 0x160
    pub dr7: u64,
    /// 0x168
    pub dr6: u64,
    /// 0x170
    pub rflags: u64,
    /// 0x178
    pub rip: u64,
    _reserved_180: [u8; 0x58],
    /// 0x1D8
    pub rsp: u64,
    /// 0x1E0: S_CET, SSP, ISST_ADDR.
    _reserved_1e0: [u8; 0x18],
    /// 0x1F8
    pub rax: u64,
    /// 0x200: STAR through SYSENTER_EIP are VMLOAD/VMSAVE state.
    pub star: u64,
    /// 0x208
    pub lstar: u64,
    /// 0x210
    pub cstar: u64,
    /// 0x218
    pub sfmask: u64,
    /// 0x220
    pub kernel_gs_base: u64,
    /// 0x228
    pub sysenter_cs: u64,
    /// 0x230
    pub sysenter_esp: u64,
    /// 0x238
    pub sysenter_eip: u64,
    /// 0x240
    pub cr2: u64,
    _reserved_248: [u8; 0x20],
    /// 0x268: the guest's PAT under nested paging.
    pub g_pat: u64,
    /// 0x270
    pub dbgctl: u64,
    /// 0x278-0x297: BR_FROM, BR_TO, LASTEXCPFROM, LASTEXCPTO.
    pub lbr: [u64; 4],
    /// 0x298 to the end of the page: reserved and SEV-ES fields.
    _reserved_298: [u8; 0x968],
}

/// A whole VMCB: one 4 KiB-aligned page.
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct Vmcb {
    pub control: Control,
    pub save: SaveArea,
}

const _: () = {
    assert!(size_of::<Control>() == 0x400);
    assert!(offset_of!(Control, intercept1) == 0x00c);
    assert!(offset_of!(Control, intercept2) == 0x010);
    assert!(offset_of!(Control, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(Control, iopm_base_pa) == 0x040);
    assert!(offset_of!(Control, msrpm_base_pa) == 0x048);
    assert!(offset_of!(Control, tsc_offset) == 0x050);
    assert!(offset_of!(Control, guest_asid) == 0x058);
    assert!(offset_of!(Control, tlb_control) == 0x05c);
    assert!(offset_of!(Control, int_ctl) == 0x060);
    assert!(offset_of!(Control, int_vector) == 0x064);
    assert!(offset_of!(Control, int_state) == 0x068);
    assert!(offset_of!(Control, exit_code) == 0x070);
    assert!(offset_of!(Control, exit_info1) == 0x078);
    assert!(offset_of!(Control, exit_info2) == 0x080);
    assert!(offset_of!(Control, exit_int_info) == 0x088);
    assert!(offset_of!(Control, np_control) == 0x090);
    assert!(offset_of!(Control, event_inj) == 0x0a8);
    assert!(offset_of!(Control, n_cr3) == 0x0b0);
    assert!(offset_of!(Control, clean_bits) == 0x0c0);
    assert!(offset_of!(Control, next_rip) == 0x0c8);
    assert!(offset_of!(Control, insn_len) == 0x0d0);
    assert!(size_of::<Seg>() == 0x10);
    assert!(offset_of!(SaveArea, tr) == 0x090);
    assert!(offset_of!(SaveArea, cpl) == 0x0cb);
    assert!(offset_of!(SaveArea, efer) == 0x0d0);
    assert!(offset_of!(SaveArea, cr4) == 0x148);
    assert!(offset_of!(SaveArea, rip) == 0x178);
    assert!(offset_of!(SaveArea, rsp) == 0x1d8);
    assert!(offset_of!(SaveArea, rax) == 0x1f8);
    assert!(offset_of!(SaveArea, star) == 0x200);
    assert!(offset_of!(SaveArea, kernel_gs_base) == 0x220);
    assert!(offset_of!(SaveArea, sysenter_eip) == 0x238);
    assert!(offset_of!(SaveArea, cr2) == 0x240);
    assert!(offset_of!(SaveArea, g_pat) == 0x268);
    assert!(offset_of!(SaveArea, lbr) == 0x278);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(size_of::<Vmcb>() == 0x1000);
};

/// Neutral access rights (VMX layout: type/S/DPL/P in bits 7:0, AVL/L/D/G in bits 15:12) to the
/// VMCB's packed attributes (the same eight bits, then AVL/L/D/G in bits 11:8).
pub const fn attrib_from_access(access: u16) -> u16 {
    (access & 0xff) | ((access >> 4) & 0xf00)
}

/// The inverse of [`attrib_from_access`].
pub const fn access_from_attrib(attrib: u16) -> u16 {
    (attrib & 0xff) | ((attrib & 0xf00) << 4)
}

impl Seg {
    pub const fn from_segment(s: &Segment) -> Self {
        Self {
            selector: s.selector,
            attrib: attrib_from_access(s.access),
            limit: s.limit,
            base: s.base,
        }
    }

    pub const fn to_segment(self) -> Segment {
        Segment {
            selector: self.selector,
            base: self.base,
            limit: self.limit,
            access: access_from_attrib(self.attrib),
        }
    }
}

/// EVENTINJ and EXITINTINFO (§15.20): vector 7:0, type 10:8, EV 11, V 31, error code 63:32.
const EVENT_VALID: u64 = 1 << 31;
const EVENT_ERROR_VALID: u64 = 1 << 11;
const TYPE_INTR: u64 = 0;
const TYPE_NMI: u64 = 2;
const TYPE_EXCEPTION: u64 = 3;
/// The NMI's vector.
const VECTOR_NMI: u64 = 2;
const VECTOR_BP: u8 = 3;
const VECTOR_OF: u8 = 4;

/// The EVENTINJ value that delivers `e`.
pub const fn event_inj(e: Event) -> u64 {
    match e {
        Event::Exception { vector, error_code } => {
            let base = EVENT_VALID | (TYPE_EXCEPTION << 8) | vector as u64;
            match error_code {
                Some(code) => base | EVENT_ERROR_VALID | ((code as u64) << 32),
                None => base,
            }
        }
        Event::Interrupt { vector } => EVENT_VALID | (TYPE_INTR << 8) | vector as u64,
        // Type 2 (§15.20); the vector field is ignored for NMIs, 2 is what EXITINTINFO shows.
        Event::Nmi => EVENT_VALID | (TYPE_NMI << 8) | VECTOR_NMI,
    }
}

/// The event to deliver again after an exit that interrupted its delivery (EXITINTINFO).
/// Software interrupts and the INT3/INTO traps are not re-injected: RIP still points at the
/// instruction, which raises them again when the guest resumes. An NMI whose delivery was
/// interrupted is injected again.
pub const fn reinjected(exit_int_info: u64) -> Option<Event> {
    if exit_int_info & EVENT_VALID == 0 {
        return None;
    }
    let vector = (exit_int_info & 0xff) as u8;
    match (exit_int_info >> 8) & 7 {
        TYPE_INTR => Some(Event::Interrupt { vector }),
        TYPE_NMI => Some(Event::Nmi),
        TYPE_EXCEPTION if vector != VECTOR_BP && vector != VECTOR_OF => Some(Event::Exception {
            vector,
            error_code: if exit_int_info & EVENT_ERROR_VALID != 0 {
                Some((exit_int_info >> 32) as u32)
            } else {
                None
            },
        }),
        // Type 4 (INTn).
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::vcpu::{ACCESS_CODE64, ACCESS_DATA, ACCESS_TSS64};

    #[test]
    fn attributes_round_trip() {
        // 64-bit code: P, DPL 0, S, type 0xb; L and G.
        assert_eq!(attrib_from_access(ACCESS_CODE64), 0xa9b);
        // Data: P, S, type 3; D/B and G.
        assert_eq!(attrib_from_access(ACCESS_DATA), 0xc93);
        assert_eq!(attrib_from_access(ACCESS_TSS64), 0x08b);
        for a in [ACCESS_CODE64, ACCESS_DATA, ACCESS_TSS64, 0, 0xf0ff] {
            assert_eq!(access_from_attrib(attrib_from_access(a)), a);
        }
        let s = Segment { selector: 0x10, base: 0x1000, limit: 0xffff_ffff, access: ACCESS_DATA };
        assert_eq!(Seg::from_segment(&s).to_segment(), s);
    }

    #[test]
    fn event_injection_encoding() {
        assert_eq!(event_inj(Event::GP0), 0x8000_0b0d);
        assert_eq!(event_inj(Event::UD), 0x8000_0306);
        let pf = Event::Exception { vector: 14, error_code: Some(6) };
        assert_eq!(event_inj(pf), (6 << 32) | 0x8000_0b0e);
        assert_eq!(event_inj(Event::Interrupt { vector: 0x40 }), 0x8000_0040);
        assert_eq!(event_inj(Event::Nmi), 0x8000_0202);
    }

    #[test]
    fn interrupted_events_are_delivered_again() {
        for e in [Event::GP0, Event::UD, Event::Interrupt { vector: 0x40 }, Event::Nmi] {
            assert_eq!(reinjected(event_inj(e)), Some(e));
        }
        assert_eq!(reinjected(0x40), None, "not valid");
        assert_eq!(reinjected(0x8000_0480), None, "INT 0x80 runs again");
        assert_eq!(reinjected(0x8000_0303), None, "INT3 runs again");
        assert_eq!(reinjected(0x8000_0304), None, "INTO runs again");
    }
}
