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
    /// TSC when the count was loaded (one-shot and periodic).
    start: u64,
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
            expiry: 0,
            tsc_deadline: 0,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Back to the power-up state (§11.4.7.1), keeping the APIC ID: what clearing
    /// IA32_APIC_BASE's global enable does (§11.4.3).
    pub fn reset(&mut self) {
        *self = Self::new(self.clock.clone(), self.id);
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

    /// The TSC at which the timer next raises an interrupt: armed and unmasked (a masked
    /// timer raises nothing, so nothing needs waking for it).
    pub fn timer_wake(&self) -> Option<u64> {
        (self.expiry != 0 && self.lvt[0] & LVT_MASK == 0).then_some(self.expiry)
    }

    fn enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
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
                self.esr_pending |= ESR_ILLEGAL_REGISTER;
                0
            }
        }
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
            reg::LVT_TIMER => {
                let old_mode = self.timer_mode();
                self.lvt[0] = self.lvt_value(v, 0x0007_00ff);
                if self.timer_mode() != old_mode {
                    // A mode change disarms the timer (§11.5.4.1: the count and the deadline
                    // start over in the new mode).
                    self.initial = 0;
                    self.tsc_deadline = 0;
                    self.expiry = 0;
                }
            }
            reg::LVT_THERMAL | reg::LVT_PERF => {
                self.lvt[((offset - reg::LVT_TIMER) / 16) as usize] = self.lvt_value(v, 0x0001_07ff)
            }
            reg::LVT_LINT0 | reg::LVT_LINT1 => {
                self.lvt[((offset - reg::LVT_TIMER) / 16) as usize] = self.lvt_value(v, 0x0001_a7ff)
            }
            reg::LVT_ERROR => self.lvt[5] = self.lvt_value(v, 0x0001_00ff),
            reg::TIMER_INITIAL => {
                if self.timer_mode() != TIMER_TSC_DEADLINE {
                    self.initial = v;
                    self.start = self.clock.now();
                    self.expiry = if v == 0 { 0 } else { self.start + self.period() };
                }
            }
            reg::TIMER_DIVIDE => self.divide = v & 0b1011,
            reg::SELF_IPI if self.x2apic => self.accept(v as u8, false),
            // Read-only registers and holes: "illegal register address".
            _ => self.esr_pending |= ESR_ILLEGAL_REGISTER,
        }
        None
    }

    /// An LVT value as stored: `writable` bits, the mask forced while software-disabled.
    fn lvt_value(&self, v: u32, writable: u32) -> u32 {
        let v = v & writable;
        if self.enabled() { v } else { v | LVT_MASK }
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt[0] >> TIMER_MODE_SHIFT) & 3
    }

    /// The divide configuration's divisor (§11.5.4, Figure 11-10: bits 0, 1 and 3).
    fn divisor(&self) -> u64 {
        let code = (self.divide & 3) | ((self.divide >> 1) & 4);
        if code == 7 { 1 } else { 2 << code }
    }

    /// TSC ticks of one full count.
    fn period(&self) -> u64 {
        u64::from(self.initial).saturating_mul(self.divisor()).max(1)
    }

    fn current_count(&self, now: u64) -> u32 {
        if self.initial == 0 || self.timer_mode() == TIMER_TSC_DEADLINE {
            return 0;
        }
        let counts = now.saturating_sub(self.start) / self.divisor();
        match self.timer_mode() {
            TIMER_PERIODIC => self.initial - (counts % u64::from(self.initial)) as u32,
            // One-shot (and the reserved mode 3, which counts as one-shot).
            TIMER_ONE_SHOT | 3 => u64::from(self.initial).saturating_sub(counts) as u32,
            _ => 0,
        }
    }

    /// The TSC at which the timer fires next, if it is armed (masked or not: a masked timer
    /// still counts, it only raises nothing).
    pub fn next_deadline(&self) -> Option<u64> {
        (self.expiry != 0).then_some(self.expiry)
    }

    /// Moves the timer to `now`: raises its vector when it expired (once, however many
    /// periods passed: the IRR bit coalesces them) and re-arms a periodic timer.
    #[inline]
    pub fn tick(&mut self, now: u64) {
        // Before every entry: nothing due is the common case.
        if self.expiry == 0 || now < self.expiry {
            return;
        }
        self.expire(now);
    }

    /// The timer expired at `now` (see [`Lapic::tick`]).
    #[inline(never)]
    fn expire(&mut self, now: u64) {
        match self.timer_mode() {
            TIMER_PERIODIC => {
                let p = self.period();
                let missed = (now - self.expiry) / p;
                self.expiry += (missed + 1) * p;
            }
            TIMER_TSC_DEADLINE => {
                self.tsc_deadline = 0;
                self.expiry = 0;
            }
            _ => self.expiry = 0,
        }
        let lvt = self.lvt[0];
        if lvt & LVT_MASK == 0 {
            self.accept(lvt as u8, false);
        }
    }

    /// IA32_TSC_DEADLINE (MSR 0x6E0, §11.5.4.1): reads the armed deadline (0 once it fired).
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE { self.tsc_deadline } else { 0 }
    }

    /// Writes IA32_TSC_DEADLINE: arms (0 disarms) in TSC-deadline mode, ignored otherwise.
    pub fn set_tsc_deadline(&mut self, tsc: u64) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline = tsc;
            self.expiry = tsc;
        }
    }

    /// A fixed interrupt arrives (from the timer, an IPI, an I/O APIC): set in IRR (and TMR
    /// for level-triggered ones). Vectors 0-15 are illegal (§11.5.3: "receive illegal
    /// vector").
    pub fn accept(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
            self.raise_error();
            return;
        }
        let (w, b) = (usize::from(vector / 32), vector % 32);
        self.irr[w] |= 1 << b;
        self.irr_words |= 1 << w;
        if level {
            self.tmr[w] |= 1 << b;
        } else {
            self.tmr[w] &= !(1 << b);
        }
    }

    /// The LVT error entry's interrupt, for an error just recorded.
    fn raise_error(&mut self) {
        let lvt = self.lvt[5];
        if lvt & LVT_MASK == 0 && lvt as u8 >= 16 {
            let v = lvt as u8;
            self.irr[usize::from(v / 32)] |= 1 << (v % 32);
            self.irr_words |= 1 << (v / 32);
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
            self.esr_pending |= ESR_SEND_ILLEGAL_VECTOR;
            self.raise_error();
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
    /// member bit (3:0). In x2APIC mode the LDR is derived from the ID (§11.12.10.2).
    pub fn matches_logical(&self, dest: u32) -> bool {
        if self.x2apic {
            let ldr = self.x2apic_ldr();
            return dest >> 16 == ldr >> 16 && dest & ldr & 0xffff != 0;
        }
        let (dest, ldr) = (dest & 0xff, self.ldr >> 24);
        if self.dfr >> 28 == 0xf {
            dest & ldr != 0
        } else {
            dest >> 4 == ldr >> 4 && dest & ldr & 0xf != 0
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

    /// Switches between xAPIC and x2APIC mode (IA32_APIC_BASE bit 10, §11.12.1).
    pub fn set_x2apic(&mut self, on: bool) {
        self.x2apic = on;
        if on {
            self.ldr = self.x2apic_ldr();
        }
    }

    /// RDMSR of an x2APIC register (MSR 0x800 + offset / 16, §11.12.1.2); `None`: #GP (not in
    /// x2APIC mode, a write-only or absent register).
    pub fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let offset = msr.checked_sub(0x800).filter(|o| *o < 0x40)? << 4;
        if !self.x2apic || matches!(offset, reg::EOI | reg::SELF_IPI | reg::DFR | reg::APR) {
            return None;
        }
        if offset == reg::ICR_LOW {
            return Some(u64::from(self.icr_high) << 32 | u64::from(self.icr_low));
        }
        let before = self.esr_pending;
        let v = self.read(offset);
        if self.esr_pending & ESR_ILLEGAL_REGISTER != 0 && before & ESR_ILLEGAL_REGISTER == 0 {
            self.esr_pending = before;
            return None;
        }
        Some(u64::from(v))
    }

    /// WRMSR of an x2APIC register; `Err`: #GP (not in x2APIC mode, a read-only register,
    /// reserved bits: a non-zero EOI or ESR value).
    pub fn write_msr(&mut self, msr: u32, v: u64) -> Result<Option<Ipi>, GeneralProtection> {
        let offset = msr.checked_sub(0x800).filter(|o| *o < 0x40).ok_or(GeneralProtection)? << 4;
        let writable = matches!(
            offset,
            reg::TPR
                | reg::EOI
                | reg::SVR
                | reg::ESR
                | reg::LVT_CMCI
                | reg::ICR_LOW
                | reg::LVT_TIMER
                ..=reg::LVT_ERROR | reg::TIMER_INITIAL | reg::TIMER_DIVIDE | reg::SELF_IPI
        );
        if !self.x2apic || !writable || (matches!(offset, reg::EOI | reg::ESR) && v != 0) {
            return Err(GeneralProtection);
        }
        if offset == reg::ICR_LOW {
            self.icr_high = (v >> 32) as u32;
        }
        Ok(self.write(offset, v as u32))
    }
}

#[cfg(test)]
#[path = "lapic_tests.rs"]
mod tests;
