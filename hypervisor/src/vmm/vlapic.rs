//! A vCPU's virtual local APIC: the [`Lapic`] model behind IA32_APIC_BASE (SDM Vol. 3A
//! §11.4.4, §11.12.1), its xAPIC page at the APIC base and its x2APIC MSRs (§11.12.1.2),
//! IA32_TSC_DEADLINE (§11.5.4.1), the TPR as CR8 shows it (§11.8.6), and IPI delivery.
//!
//! [`Vlapic`] is pure (host-tested); the functions at the end are the glue the exit handlers
//! call with the partition. The APIC page is no RAM in any partition: a guest's RAM ends at
//! 1 GiB, the management partition's is host RAM, and `passthrough` keeps the page from it.
//! Accesses to it fault in the second-level table and come here (`dispatch::paging`).
//!
//! The state a partition starts with is what a PC's firmware leaves (MP specification
//! §3.6.2.2, virtual wire): APIC enabled at 0xFEE0_0000 in xAPIC mode, software-enabled
//! with the spurious vector 0xFF, LINT0 unmasked in ExtINT mode (the 8259's INTR passes),
//! LINT1 unmasked in NMI mode, every other LVT entry masked.

use super::log_limit::{LogLimit, dropped_note};
use super::msr::IA32_TSC_DEADLINE;
use super::partition::Partition;
use crate::devices::clock::Clock;
use crate::devices::lapic::{DeliveryMode, Destination, GeneralProtection, Ipi, Lapic, reg};
use alloc::rc::Rc;

/// The architectural APIC base (IA32_APIC_BASE after reset).
pub const APIC_BASE: u64 = 0xfee0_0000;
/// Bytes of the xAPIC page.
pub const APIC_PAGE_SIZE: u64 = 0x1000;
/// IA32_APIC_BASE bits (SDM Vol. 3A §11.4.4, Figure 11-5; §11.12.1, Table 11-5).
pub const BASE_BSP: u64 = 1 << 8;
pub const BASE_EXTD: u64 = 1 << 10;
pub const BASE_EN: u64 = 1 << 11;
/// The x2APIC MSR range (§11.12.1.2: 0x800-0x8FF; registers up to 0x83F).
pub const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;

/// Why a write of IA32_APIC_BASE is refused with #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseError {
    /// A reserved bit (7:0, 9) set.
    Reserved,
    /// EXTD set with EN clear: the invalid state of Table 11-5.
    Invalid,
    /// x2APIC to xAPIC without disabling first (§11.12.5).
    X2apicToXapic,
    /// Disabled straight to x2APIC (§11.12.5).
    DisabledToX2apic,
    /// The guest asked to move the APIC page, which this hypervisor does not do.
    Moved,
}

impl BaseError {
    pub fn why(self) -> &'static str {
        match self {
            Self::Reserved => "reserved IA32_APIC_BASE bit",
            Self::Invalid => "x2APIC enable without global enable (invalid state)",
            Self::X2apicToXapic => "x2APIC to xAPIC without disabling the APIC first",
            Self::DisabledToX2apic => "disabled APIC straight to x2APIC mode",
            Self::Moved => "moving the local APIC base away from 0xfee00000 is not supported",
        }
    }
}

/// What delivering an IPI did to its receiver ([`Vlapic::deliver_ipi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiEffect {
    /// A fixed (or lowest-priority) vector now requested in IRR.
    Requested,
    /// An NMI is pending ([`Vlapic::take_nmi`]).
    Nmi,
    /// INIT (assert): the receiver should go to its wait-for-SIPI state.
    Init,
    /// Start-up IPI with its vector (the real-mode start page).
    StartUp(u8),
    /// Nothing: SMI, a reserved mode, an INIT level de-assert.
    Ignored,
}

/// One vCPU's local APIC with its IA32_APIC_BASE.
pub struct Vlapic {
    pub apic: Lapic,
    /// IA32_APIC_BASE: the base, EN, EXTD and BSP bits.
    base: u64,
    /// CR8 as last synchronised with the TPR ([`Vlapic::sync_cr8`]).
    cr8: u8,
    /// Log lines this vCPU's guest causes at will (a refused base move, IPIs not delivered,
    /// APs started): [`Vlapic::log_admit`].
    log: LogLimit,
}

impl Vlapic {
    /// The APIC of the vCPU with APIC ID `id` (the bootstrap processor when `bsp`), as a PC's
    /// firmware leaves it (see the module text).
    pub fn new(clock: Rc<dyn Clock>, id: u32, bsp: bool) -> Self {
        let mut apic = Lapic::new(clock, id);
        apic.write(reg::SVR, 0x1ff);
        apic.write(reg::LVT_LINT0, 7 << 8);
        apic.write(reg::LVT_LINT1, 4 << 8);
        let base = APIC_BASE | BASE_EN | if bsp { BASE_BSP } else { 0 };
        Self { apic, base, cr8: 0, log: LogLimit::new() }
    }

    /// IA32_APIC_BASE as RDMSR reads it.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// True when the APIC is globally enabled (IA32_APIC_BASE.EN).
    pub fn enabled(&self) -> bool {
        self.base & BASE_EN != 0
    }

    /// True when the xAPIC page answers at the base (enabled, not in x2APIC mode).
    pub fn xapic_mode(&self) -> bool {
        self.base & (BASE_EN | BASE_EXTD) == BASE_EN
    }

    /// WRMSR IA32_APIC_BASE: the mode transitions of §11.12.5 (Figure 11-8), the BSP bit
    /// read-only, the base fixed at 0xFEE0_0000 (a move is refused with [`BaseError::Moved`]).
    pub fn set_base(&mut self, v: u64) -> Result<(), BaseError> {
        const RESERVED: u64 = 0xff | (1 << 9);
        if v & RESERVED != 0 {
            return Err(BaseError::Reserved);
        }
        let (en, extd) = (v & BASE_EN != 0, v & BASE_EXTD != 0);
        if extd && !en {
            return Err(BaseError::Invalid);
        }
        let (was_en, was_extd) = (self.enabled(), self.base & BASE_EXTD != 0);
        if was_extd && en && !extd {
            return Err(BaseError::X2apicToXapic);
        }
        if !was_en && extd {
            return Err(BaseError::DisabledToX2apic);
        }
        if v & !0xfff != APIC_BASE {
            return Err(BaseError::Moved);
        }
        if was_en && !en {
            // Clearing EN resets the APIC to its power-up state (§11.4.3) and leaves x2APIC
            // mode (§11.12.5); re-enabling finds that state.
            self.apic.power_up();
        } else if extd && !was_extd {
            self.apic.set_x2apic(true);
        }
        self.base = (self.base & BASE_BSP) | (v & (BASE_EN | BASE_EXTD)) | APIC_BASE;
        Ok(())
    }

    /// Reads `size` bytes at `offset` of the xAPIC page. Registers are 32 bits wide at
    /// 16-byte-aligned offsets (§11.4.1); a narrower read inside a register's first dword
    /// gets its bytes, anything else reads 0. With the APIC disabled or in x2APIC mode the
    /// page is not there: all-ones, as absent hardware (§11.12.1.2).
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> u64 {
        if !self.xapic_mode() {
            return if size >= 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 };
        }
        let within = offset & 0xf;
        if within >= 4 {
            return 0;
        }
        let v = u64::from(self.apic.read((offset & 0xff0) as u32)) >> (8 * within);
        if size >= 4 { v } else { v & ((1u64 << (size * 8)) - 1) }
    }

    /// Writes at `offset` of the xAPIC page: a 32-bit (or wider: the low 32 bits) write at a
    /// register's offset; other writes are dropped (§11.4.1: registers take 32-bit
    /// accesses). Returns the IPI an ICR write sends.
    pub fn mmio_write(&mut self, offset: u64, size: u8, v: u64) -> Option<Ipi> {
        if !self.xapic_mode() || offset & 0xf != 0 || size < 4 {
            return None;
        }
        self.apic.write(offset as u32, v as u32)
    }

    /// RDMSR of an x2APIC register; `None`: #GP.
    pub fn read_msr(&mut self, msr: u32) -> Option<u64> {
        self.apic.read_msr(msr)
    }

    /// WRMSR of an x2APIC register; `Err`: #GP. Returns the IPI an ICR write sends.
    pub fn write_msr(&mut self, msr: u32, v: u64) -> Result<Option<Ipi>, GeneralProtection> {
        self.apic.write_msr(msr, v)
    }

    /// CR8 and the TPR are one register (§11.8.6.1: CR8[3:0] is TPR[7:4]); the backends keep
    /// CR8. Given the vCPU's CR8, takes a change of it into the TPR, and returns the CR8 the
    /// vCPU should hold after a TPR write through the page or an MSR.
    pub fn sync_cr8(&mut self, cr8: u64) -> u64 {
        let cr8 = (cr8 & 0xf) as u8;
        if cr8 != self.cr8 {
            self.apic.set_tpr(u32::from(cr8) << 4);
        }
        self.cr8 = (self.apic.tpr() >> 4) as u8;
        u64::from(self.cr8)
    }

    /// True when the 8259's interrupt reaches the CPU: the APIC globally disabled, or
    /// [`Lapic::extint_open`].
    pub fn extint_open(&self) -> bool {
        !self.enabled() || self.apic.extint_open()
    }

    /// The vector the APIC would deliver now (none while globally disabled).
    pub fn pending(&self) -> Option<u8> {
        if self.enabled() && self.apic.has_requests() { self.apic.pending() } else { None }
    }

    /// The TSC at which the APIC timer next raises an interrupt.
    pub fn next_deadline(&self) -> Option<u64> {
        self.apic.timer_wake()
    }

    /// True when this APIC receives an IPI sent to `dest` by `sender_is_self` (the sending
    /// APIC is this one) or by another APIC of the partition (§11.6.1, §11.6.2).
    pub fn is_target(&self, dest: Destination, sender_is_self: bool) -> bool {
        match dest {
            Destination::SelfOnly => sender_is_self,
            Destination::AllIncludingSelf => true,
            Destination::AllExcludingSelf => !sender_is_self,
            Destination::Physical(d) => self.apic.matches_physical(d),
            Destination::Logical(d) => self.apic.matches_logical(d),
        }
    }

    /// Delivers `ipi` to this APIC (the caller has checked [`Vlapic::is_target`]): the entry
    /// point for routing IPIs between the vCPUs of a partition. Fixed and lowest-priority
    /// vectors go to IRR (edge-triggered), an NMI is kept for [`Vlapic::take_nmi`], INIT and
    /// start-up are returned for the caller to act on.
    pub fn deliver_ipi(&mut self, ipi: &Ipi) -> IpiEffect {
        if !self.enabled() {
            return IpiEffect::Ignored;
        }
        match ipi.mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.apic.accept(ipi.vector, false);
                IpiEffect::Requested
            }
            DeliveryMode::Nmi => {
                self.apic.latch_nmi();
                IpiEffect::Nmi
            }
            DeliveryMode::Init if !ipi.deassert => IpiEffect::Init,
            DeliveryMode::StartUp => IpiEffect::StartUp(ipi.vector),
            _ => IpiEffect::Ignored,
        }
    }

    /// One line for reports: mode, SVR, TPR, the highest requested and in-service vectors,
    /// the timer and LINT0 entries and the timer's next expiry.
    pub fn describe(&mut self) -> alloc::string::String {
        let mode = match (self.enabled(), self.apic.x2apic()) {
            (false, _) => "disabled",
            (true, false) => "xAPIC",
            (true, true) => "x2APIC",
        };
        let top = |a: &mut Lapic, base: u32| {
            (0..8u32).rev().find_map(|i| {
                let w = a.read(base + i * 16);
                (w != 0).then(|| i * 32 + 31 - w.leading_zeros())
            })
        };
        let (irr, isr) = (top(&mut self.apic, reg::IRR), top(&mut self.apic, reg::ISR));
        alloc::format!(
            "local APIC {mode}, SVR {:#x}, TPR {:#x}, IRR top {irr:x?}, ISR top {isr:x?}, LVT timer {:#x}, LINT0 {:#x}, timer due {:?}",
            self.apic.read(reg::SVR),
            self.apic.tpr(),
            self.apic.read(reg::LVT_TIMER),
            self.apic.read(reg::LVT_LINT0),
            self.apic.next_deadline(),
        )
    }

    /// May a line about something this vCPU's guest did be logged now? `Some(note)`: yes,
    /// with `note` to end it (how many were left out before); `None`: no (rate-limited,
    /// `vmm/log_limit.rs`).
    pub fn log_admit(&mut self) -> Option<alloc::string::String> {
        let (now, hz) = self.apic.now();
        self.log.admit(now, hz).map(dropped_note)
    }

    /// Takes a pending NMI (the latch is the APIC's: [`Lapic::latch_nmi`]).
    pub fn take_nmi(&mut self) -> bool {
        self.apic.take_nmi()
    }

    /// True when an NMI waits for the vCPU (part of [`Lapic::has_requests`], the flag test
    /// before every entry).
    #[inline]
    pub fn nmi_pending(&self) -> bool {
        self.apic.nmi_pending()
    }

    /// The LINT1 pin is asserted (an edge; on a PC, the chipset's NMI line): what its LVT
    /// entry says (SDM Vol. 3A §11.5.1): nothing while masked, an NMI in NMI mode, the
    /// entry's vector in fixed mode (level-triggered with the trigger-mode bit). With the APIC
    /// globally disabled the pin is the CPU's NMI input itself (§11.4.3). Returns true when
    /// something was raised.
    pub fn lint1(&mut self) -> bool {
        const MODE_FIXED: u32 = 0;
        const MODE_NMI: u32 = 4;
        if !self.enabled() {
            self.apic.latch_nmi();
            return true;
        }
        let lvt = self.apic.read(reg::LVT_LINT1);
        if lvt & (1 << 16) != 0 {
            return false;
        }
        match (lvt >> 8) & 7 {
            MODE_NMI => self.apic.latch_nmi(),
            MODE_FIXED => self.apic.accept(lvt as u8, lvt & (1 << 15) != 0),
            // SMI, INIT and ExtINT on LINT1 do not exist on a PC.
            _ => return false,
        }
        true
    }
}

/// True when `gpa` is in the partition's xAPIC page.
pub fn claims(gpa: u64) -> bool {
    (APIC_BASE..APIC_BASE + APIC_PAGE_SIZE).contains(&gpa)
}

/// Takes a CR8 write the backend kept into vCPU `vc`'s TPR.
fn sync_from_cr8(p: &mut Partition, vc: usize) {
    let slot = &mut p.vcpus[vc];
    let cr8 = slot.vcpu.cr(8);
    slot.lapic.sync_cr8(cr8);
}

/// After a TPR write through the APIC: CR8 follows.
fn sync_to_cr8(p: &mut Partition, vc: usize) {
    let slot = &mut p.vcpus[vc];
    let old = slot.vcpu.cr(8);
    let cr8 = slot.lapic.sync_cr8(old);
    if cr8 != old {
        slot.vcpu.set_cr(8, cr8);
    }
}

/// A read of `size` bytes at `gpa` in vCPU `vc`'s APIC page.
pub fn mmio_read(p: &mut Partition, vc: usize, gpa: u64, size: u8) -> u64 {
    sync_from_cr8(p, vc);
    p.vcpus[vc].lapic.mmio_read(gpa - APIC_BASE, size)
}

/// A write at `gpa` in vCPU `vc`'s APIC page.
pub fn mmio_write(p: &mut Partition, vc: usize, gpa: u64, size: u8, v: u64) {
    // The timer's LVT, initial count and divide, and the SVR (a software disable masks it):
    // its next interrupt moves (not EOI, the frequent write).
    p.rearm |= matches!(gpa - APIC_BASE, 0xf0 | 0x320 | 0x380 | 0x3e0);
    sync_from_cr8(p, vc);
    let level_eoi = super::vioapic::level_eoi(p, vc, (gpa - APIC_BASE) as u32);
    let ipi = p.vcpus[vc].lapic.mmio_write(gpa - APIC_BASE, size, v);
    if let Some(vector) = level_eoi {
        super::vioapic::eoi(p, vector);
    }
    after_write(p, vc, ipi);
}

fn after_write(p: &mut Partition, vc: usize, ipi: Option<Ipi>) {
    sync_to_cr8(p, vc);
    if let Some(ipi) = ipi {
        // To the vCPUs of this partition it names (`vmm/ipi.rs`).
        p.send_ipi(vc, ipi);
    }
}

/// RDMSR by vCPU `vc` of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC MSR; `None`: #GP.
pub fn rdmsr(p: &mut Partition, vc: usize, msr: u32) -> Option<u64> {
    match msr {
        super::msr::IA32_APIC_BASE => Some(p.vcpus[vc].lapic.base()),
        IA32_TSC_DEADLINE => Some(p.vcpus[vc].lapic.apic.tsc_deadline()),
        m => {
            sync_from_cr8(p, vc);
            p.vcpus[vc].lapic.read_msr(m)
        }
    }
}

/// WRMSR by vCPU `vc` of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC MSR; `Err`: #GP,
/// with why.
pub fn wrmsr(p: &mut Partition, vc: usize, msr: u32, v: u64) -> Result<(), &'static str> {
    // IA32_APIC_BASE, IA32_TSC_DEADLINE, and the x2APIC SVR, LVT timer, initial count and
    // divide (SDM Vol. 3A §11.12.1.2): the timer's next interrupt moves.
    p.rearm |= matches!(msr, 0x1b | 0x6e0 | 0x80f | 0x832 | 0x838 | 0x83e);
    match msr {
        super::msr::IA32_APIC_BASE => {
            let r = p.vcpus[vc].lapic.set_base(v);
            if r == Err(BaseError::Moved)
                && let Some(note) = p.vcpus[vc].lapic.log_admit()
            {
                log::warn!(
                    "partition {}: IA32_APIC_BASE <- {v:#x}: {} (#GP){note}",
                    p.name,
                    BaseError::Moved.why()
                );
            }
            if r.is_ok() {
                // A disable resets the TPR (§11.4.3): CR8 follows, or its stale value would
                // come back into the TPR at the next synchronisation.
                sync_to_cr8(p, vc);
            }
            r.map_err(BaseError::why)
        }
        IA32_TSC_DEADLINE => {
            p.vcpus[vc].lapic.apic.set_tsc_deadline(v);
            Ok(())
        }
        m => {
            sync_from_cr8(p, vc);
            // x2APIC MSR 0x800 + n is register n << 4 (SDM Vol. 3A §11.12.1.2).
            let level_eoi = super::vioapic::level_eoi(p, vc, m.wrapping_sub(0x800) << 4);
            let ipi = p.vcpus[vc].lapic.write_msr(m, v).map_err(|_| "x2APIC register refused")?;
            if let Some(vector) = level_eoi {
                super::vioapic::eoi(p, vector);
            }
            after_write(p, vc, ipi);
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "vlapic_tests.rs"]
mod tests;
