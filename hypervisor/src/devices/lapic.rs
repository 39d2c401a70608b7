//! A local APIC as a pure state machine (SDM vol. 3A ch. 11, "Advanced Programmable Interrupt
//! Controller"): the xAPIC register page (§11.4.1, Table 11-1) and the x2APIC MSRs that map
//! onto it (§11.12.1.2), interrupt acceptance through IRR/ISR/TMR with task and processor
//! priority (§11.8), EOI (§11.8.5), the spurious-vector register and software disable
//! (§11.9, §11.4.7.2), the error status register (§11.5.3), the LVT timer in one-shot,
//! periodic and TSC-deadline modes (§11.5.4) and the interrupt command register (§11.6), whose
//! writes come out as an [`Ipi`] for the partition to route to its vCPUs.
//!
//! Time comes from a [`Clock`]: the timer counts at the clock's rate divided by the divide
//! configuration, so its "bus clock" is the TSC rate the partition is told (CPUID
//! 0x4000_0010). Nothing here touches hardware; the partition asks [`Lapic::next_deadline`]
//! when to look again and calls [`Lapic::tick`] then.
//!
//! The timer lives in `lapic_timer.rs`, the x2APIC MSR interface (its #GP rules) in
//! `lapic_x2apic.rs`.

use super::clock::Clock;
use alloc::rc::Rc;

/// Register offsets in the xAPIC page (§11.4.1, Table 11-1).
pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const APR: u32 = 0x90;
    pub const PPR: u32 = 0xa0;
    pub const EOI: u32 = 0xb0;
    pub const RRD: u32 = 0xc0;
    pub const LDR: u32 = 0xd0;
    pub const DFR: u32 = 0xe0;
    pub const SVR: u32 = 0xf0;
    pub const ISR: u32 = 0x100;
    pub const TMR: u32 = 0x180;
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const LVT_CMCI: u32 = 0x2f0;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
    /// x2APIC only (MSR 0x83F).
    pub const SELF_IPI: u32 = 0x3f0;
}

/// Version register: version 0x14 (an integrated APIC), six LVT entries (max LVT index 5:
/// timer, thermal, performance, LINT0, LINT1, error), no EOI-broadcast suppression.
const VERSION: u32 = 0x14 | (5 << 16);
const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASK: u32 = 1 << 16;
/// ESR bits (§11.5.3, Figure 11-9).
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;
/// LVT timer mode (bits 18:17).
const TIMER_MODE_SHIFT: u32 = 17;
const TIMER_ONE_SHOT: u32 = 0;
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;
/// [`Lapic::has_requests`]'s bit for a waiting NMI (bits 0-7: the IRR words).
const NMI_LATCH: u16 = 1 << 8;
/// The LVT entries in register order (the CMCI entry, at 0x2F0, is kept apart).
const LVTS: usize = 6;

/// What an ICR write asks for (§11.6.1, Figure 11-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub mode: DeliveryMode,
    pub vector: u8,
    /// Level-triggered INIT with the level bit clear: the "INIT level de-assert" that only
    /// synchronises arbitration IDs; it starts nothing (§11.6.1).
    pub deassert: bool,
    pub dest: Destination,
}

/// ICR bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    /// 011 and 111: reserved.
    Reserved,
}

/// Who receives an IPI: the shorthand (bits 19:18) or the destination field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The sender only.
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
    /// Physical APIC ID (0xFF in xAPIC mode, 0xFFFF_FFFF in x2APIC mode: all).
    Physical(u32),
    /// A logical destination, matched against each receiver's LDR/DFR ([`Lapic::matches_logical`]).
    Logical(u32),
}

/// An x2APIC MSR access the CPU refuses with #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralProtection;

/// One local APIC.
pub struct Lapic {
    clock: Rc<dyn Clock>,
    id: u32,
    /// The ID the APIC was made with: the x2APIC ID, and the xAPIC ID after power-up.
    initial_id: u32,
    x2apic: bool,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    irr: [u32; 8],
    /// Bit i set when `irr[i]` is not 0, and [`NMI_LATCH`] while an NMI waits: the one-load
    /// test [`Lapic::has_requests`] makes before every entry.
    irr_words: u16,
    isr: [u32; 8],
    tmr: [u32; 8],
    /// ESR as last latched, and errors seen since.
    esr: u32,
    esr_pending: u32,
    cmci: u32,
    /// Timer, thermal, performance, LINT0, LINT1, error.
    lvt: [u32; LVTS],
    icr_low: u32,
    icr_high: u32,
    divide: u32,
    initial: u32,
    /// TSC when the count was loaded or the divisor last changed (one-shot and periodic).
    start: u64,
    /// Counts already done at `start` (a divisor change keeps them).
    done_at_start: u64,
    /// TSC at which the timer fires next (0: not armed).
    expiry: u64,
    /// IA32_TSC_DEADLINE.
    tsc_deadline: u64,
}

impl Lapic {
    /// An APIC in its power-up state (§11.4.7.1): every LVT masked, software-disabled
    /// (SVR = 0xFF), flat logical model, nothing pending.
    pub fn new(clock: Rc<dyn Clock>, id: u32) -> Self {
        Self {
            clock,
            id,
            initial_id: id,
            x2apic: false,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xff,
            irr: [0; 8],
            irr_words: 0,
            isr: [0; 8],
            tmr: [0; 8],
            esr: 0,
            esr_pending: 0,
            cmci: LVT_MASK,
            lvt: [LVT_MASK; LVTS],
            icr_low: 0,
            icr_high: 0,
            divide: 0,
            initial: 0,
            start: 0,
            done_at_start: 0,
            expiry: 0,
            tsc_deadline: 0,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The state after INIT (§11.4.7.3): the power-up state but for the APIC ID (as the
    /// guest may have written it) and the mode (the caller keeps that, §11.12.5.1).
    pub fn reset(&mut self) {
        let id = self.id;
        *self = Self::new(self.clock.clone(), self.initial_id);
        self.id = id;
    }

    /// Back to the power-up state (§11.4.7.1) with the APIC ID it was made with: what clearing
    /// IA32_APIC_BASE's global enable does (§11.4.3: re-enabling finds the power-up state).
    pub fn power_up(&mut self) {
        *self = Self::new(self.clock.clone(), self.initial_id);
    }

    /// The TSC now and its rate in Hz (for callers that rate-limit what they log).
    pub fn now(&self) -> (u64, u64) {
        (self.clock.now(), self.clock.hz())
    }

    /// True in x2APIC mode.
    pub fn x2apic(&self) -> bool {
        self.x2apic
    }

    /// The task-priority register.
    pub fn tpr(&self) -> u32 {
        self.tpr
    }

    /// Sets the task-priority register (a MOV to CR8 writes TPR[7:4] and clears TPR[3:0],
    /// SDM Vol. 3A §11.8.6.1).
    pub fn set_tpr(&mut self, tpr: u32) {
        self.tpr = tpr & 0xff;
    }

    /// True when some vector is requested (IRR not empty), whatever the priorities, or an NMI
    /// waits: the cheap test before an entry.
    #[inline]
    pub fn has_requests(&self) -> bool {
        self.irr_words != 0
    }

    /// Latches an NMI (an NMI IPI, LINT1 in NMI mode, an I/O APIC NMI message): NMIs do not
    /// queue, a second before the first is taken is the same one (SDM Vol. 3A §6.7.1 lets one
    /// more wait while a handler runs: this latch is that one). Reset and INIT drop it.
    pub fn latch_nmi(&mut self) {
        self.irr_words |= NMI_LATCH;
    }

    /// True when an NMI waits.
    #[inline]
    pub fn nmi_pending(&self) -> bool {
        self.irr_words & NMI_LATCH != 0
    }

    /// Takes the waiting NMI.
    pub fn take_nmi(&mut self) -> bool {
        let was = self.nmi_pending();
        self.irr_words &= !NMI_LATCH;
        was
    }

    /// True when the 8259's INTR reaches the CPU through this APIC (the virtual-wire mode of
    /// the MP specification §3.6.2.2, SDM §11.5.1): LINT0 unmasked in ExtINT delivery mode,
    /// or the APIC software-disabled (then it is out of the way, as a PC's APIC is until its
    /// kernel programs it).
    pub fn extint_open(&self) -> bool {
        const EXTINT: u32 = 7;
        let lint0 = self.lvt[3];
        !self.enabled() || (lint0 & LVT_MASK == 0 && (lint0 >> 8) & 7 == EXTINT)
    }

    fn enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// Records an error in the ESR (§11.5.3) and raises the LVT error entry's interrupt.
    fn error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[5];
        if lvt & LVT_MASK == 0 && lvt as u8 >= 16 {
            self.set_irr(lvt as u8);
        }
    }

    fn set_irr(&mut self, v: u8) {
        self.irr[usize::from(v / 32)] |= 1 << (v % 32);
        self.irr_words |= 1 << (v / 32);
    }

    /// Reads the register at `offset` of the xAPIC page (a 32-bit access to a 16-byte-aligned
    /// register; other offsets read 0 and set "illegal register address").
    pub fn read(&mut self, offset: u32) -> u32 {
        match offset {
            reg::ID => {
                if self.x2apic {
                    self.id
                } else {
                    self.id << 24
                }
            }
            reg::VERSION => VERSION,
            reg::TPR => self.tpr,
            reg::APR | reg::RRD | reg::EOI => 0,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            o @ reg::ISR..=0x170 if o % 16 == 0 => self.isr[((o - reg::ISR) / 16) as usize],
            o @ reg::TMR..=0x1f0 if o % 16 == 0 => self.tmr[((o - reg::TMR) / 16) as usize],
            o @ reg::IRR..=0x270 if o % 16 == 0 => self.irr[((o - reg::IRR) / 16) as usize],
            reg::ESR => self.esr,
            reg::LVT_CMCI => self.cmci,
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH => self.icr_high,
            o @ reg::LVT_TIMER..=reg::LVT_ERROR if o % 16 == 0 => {
                self.lvt[((o - reg::LVT_TIMER) / 16) as usize]
            }
            reg::TIMER_INITIAL => self.initial,
            reg::TIMER_CURRENT => self.current_count(self.clock.now()),
            reg::TIMER_DIVIDE => self.divide,
            _ => {
                self.error(ESR_ILLEGAL_REGISTER);
                0
            }
        }
    }

    /// True for a register of the xAPIC page that software can only read (Table 11-1): a
    /// write to it is ignored, no error (§11.5.3's "illegal register address" is for
    /// registers that do not exist).
    fn read_only(offset: u32) -> bool {
        matches!(offset, reg::VERSION | reg::APR | reg::PPR | reg::RRD | reg::TIMER_CURRENT)
            || (reg::ISR..=0x270).contains(&offset) && offset.is_multiple_of(16)
    }

    /// Writes the register at `offset`; an ICR low write returns the IPI it sends.
    pub fn write(&mut self, offset: u32, v: u32) -> Option<Ipi> {
        match offset {
            reg::ID if !self.x2apic => self.id = v >> 24,
            reg::TPR => self.tpr = v & 0xff,
            reg::EOI => self.eoi(),
            reg::LDR if !self.x2apic => self.ldr = v & 0xff00_0000,
            reg::DFR if !self.x2apic => self.dfr = v | 0x0fff_ffff,
            reg::SVR => {
                self.svr = v & 0x3ff;
                if !self.enabled() {
                    // Software disable masks every LVT entry (§11.4.7.2).
                    self.lvt.iter_mut().for_each(|l| *l |= LVT_MASK);
                    self.cmci |= LVT_MASK;
                }
            }
            // A write latches the errors seen since the last one (§11.5.3).
            reg::ESR => self.esr = core::mem::take(&mut self.esr_pending),
            reg::LVT_CMCI => self.cmci = self.lvt_value(v, 0x0001_07ff),
            reg::ICR_HIGH if !self.x2apic => self.icr_high = v & 0xff00_0000,
            reg::ICR_LOW => {
                self.icr_low = v & 0x000c_cfff;
                return self.send();
            }
            reg::LVT_TIMER => self.write_lvt_timer(v),
            reg::LVT_THERMAL | reg::LVT_PERF => {
                self.lvt[((offset - reg::LVT_TIMER) / 16) as usize] = self.lvt_value(v, 0x0001_07ff)
            }
            reg::LVT_LINT0 | reg::LVT_LINT1 => {
                self.lvt[((offset - reg::LVT_TIMER) / 16) as usize] = self.lvt_value(v, 0x0001_a7ff)
            }
            reg::LVT_ERROR => self.lvt[5] = self.lvt_value(v, 0x0001_00ff),
            reg::TIMER_INITIAL => self.write_initial_count(v),
            reg::TIMER_DIVIDE => self.write_divide(v),
            reg::SELF_IPI if self.x2apic => {
                let vector = v as u8;
                if vector < 16 {
                    // Both: the self IPI is sent and received here (§11.5.3, bits 5 and 6).
                    self.error(ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR);
                } else {
                    self.accept(vector, false);
                }
            }
            o if Self::read_only(o) => {}
            // Registers that do not exist: "illegal register address".
            _ => self.error(ESR_ILLEGAL_REGISTER),
        }
        None
    }

    /// An LVT value as stored: `writable` bits, the mask forced while software-disabled. An
    /// unmasked entry in fixed mode (or one without a mode field) with a vector below 16 is
    /// an illegal vector (§11.5.2: the APIC may signal it when it is written; this one does,
    /// as "receive illegal vector", the error a locally generated interrupt with it gives).
    fn lvt_value(&mut self, v: u32, writable: u32) -> u32 {
        let v = v & writable;
        let fixed = (v >> 8) & 7 == 0;
        if v & LVT_MASK == 0 && fixed && (v as u8) < 16 && self.enabled() {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
        }
        if self.enabled() { v } else { v | LVT_MASK }
    }

    /// A fixed interrupt arrives (from the timer, an IPI, an I/O APIC): set in IRR (and TMR
    /// for level-triggered ones). Vectors 0-15 are illegal (§11.5.3: "receive illegal
    /// vector"). A software-disabled APIC takes none (§11.4.7.2: it responds normally to INIT,
    /// NMI, SMI and start-up messages only; what is already in IRR and ISR stays).
    pub fn accept(&mut self, vector: u8, level: bool) {
        if !self.enabled() {
            return;
        }
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        let (w, b) = (usize::from(vector / 32), vector % 32);
        self.set_irr(vector);
        if level {
            self.tmr[w] |= 1 << b;
        } else {
            self.tmr[w] &= !(1 << b);
        }
    }

    fn highest(bits: &[u32; 8]) -> Option<u8> {
        (0..8)
            .rev()
            .find(|&i| bits[i] != 0)
            .map(|i| (i * 32 + 31 - bits[i].leading_zeros() as usize) as u8)
    }

    /// Processor priority (§11.8.3.1): the TPR or the highest in-service class, whichever
    /// is higher.
    fn ppr(&self) -> u32 {
        let isrv = Self::highest(&self.isr).map_or(0, u32::from);
        if self.tpr >> 4 >= isrv >> 4 { self.tpr } else { isrv & 0xf0 }
    }

    /// The vector the APIC would deliver now: the highest requested one whose priority class
    /// is above the processor priority (§11.8.3), with the APIC software-enabled or not (a
    /// disabled APIC still delivers what is pending, §11.4.7.2).
    pub fn pending(&self) -> Option<u8> {
        let v = Self::highest(&self.irr)?;
        (u32::from(v) >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// The CPU takes [`Lapic::pending`]'s vector (the INTA cycle): it moves from IRR to ISR.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending()?;
        let (w, b) = (usize::from(v / 32), v % 32);
        self.irr[w] &= !(1 << b);
        if self.irr[w] == 0 {
            self.irr_words &= !(1 << w);
        }
        self.isr[w] |= 1 << b;
        Some(v)
    }

    /// EOI: the highest in-service vector is done (§11.8.5).
    fn eoi(&mut self) {
        if let Some(v) = Self::highest(&self.isr) {
            self.isr[usize::from(v / 32)] &= !(1 << (v % 32));
        }
    }

    /// Builds the IPI an ICR low write sends (delivery status reads idle at once: the
    /// partition delivers it before the guest runs again).
    fn send(&mut self) -> Option<Ipi> {
        let low = self.icr_low;
        let mode = match (low >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            _ => DeliveryMode::Reserved,
        };
        let vector = low as u8;
        if matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && vector < 16 {
            self.error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        let field = if self.x2apic { self.icr_high } else { self.icr_high >> 24 };
        let logical = low & (1 << 11) != 0;
        let dest = match (low >> 18) & 3 {
            1 => Destination::SelfOnly,
            2 => Destination::AllIncludingSelf,
            3 => Destination::AllExcludingSelf,
            _ if logical => Destination::Logical(field),
            _ => Destination::Physical(field),
        };
        let level_init = mode == DeliveryMode::Init && low & (1 << 15) != 0;
        Some(Ipi { mode, vector, deassert: level_init && low & (1 << 14) == 0, dest })
    }

    /// True when this APIC is one of a logical destination's receivers (§11.6.2.2): flat
    /// model, a bit of the 8-bit logical ID; cluster model, the same cluster (bits 7:4) and a
    /// member bit (3:0), cluster 0xF with every member bit (0xFF) reaching all. In x2APIC mode
    /// the LDR is derived from the ID (§11.12.10.2): the cluster (bits 31:16) and a member bit
    /// (15:0), and 0xFFFF_FFFF is the broadcast (§11.12.9).
    pub fn matches_logical(&self, dest: u32) -> bool {
        if self.x2apic {
            let ldr = self.x2apic_ldr();
            return dest == u32::MAX || (dest >> 16 == ldr >> 16 && dest & ldr & 0xffff != 0);
        }
        let (dest, ldr) = (dest & 0xff, self.ldr >> 24);
        if self.dfr >> 28 == 0xf {
            dest & ldr != 0
        } else {
            dest == 0xff || (dest >> 4 == ldr >> 4 && dest & ldr & 0xf != 0)
        }
    }

    /// True when this APIC is the physical destination `dest` (or `dest` is the broadcast ID).
    pub fn matches_physical(&self, dest: u32) -> bool {
        let all = if self.x2apic { u32::MAX } else { 0xff };
        dest == all || dest == self.id
    }

    fn x2apic_ldr(&self) -> u32 {
        ((self.id >> 4) << 16) | (1 << (self.id & 0xf))
    }

    /// Switches between xAPIC and x2APIC mode (IA32_APIC_BASE bit 10, §11.12.1). The x2APIC
    /// ID is the initial APIC ID whatever the xAPIC ID register was set to (§11.12.5.1), and
    /// the LDR follows from it (§11.12.10.2).
    pub fn set_x2apic(&mut self, on: bool) {
        self.x2apic = on;
        if on {
            self.id = self.initial_id;
            self.ldr = self.x2apic_ldr();
        }
    }
}

#[path = "lapic_timer.rs"]
mod timer;
#[path = "lapic_x2apic.rs"]
mod x2apic;

#[cfg(test)]
#[path = "lapic_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "lapic_sdm_tests.rs"]
mod sdm_tests;
