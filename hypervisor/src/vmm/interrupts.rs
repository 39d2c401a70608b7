//! A partition's interrupt sources and which one the vCPU takes next.
//!
//! Three kinds reach a vCPU: vectors the hypervisor raises directly (the timer hypercall,
//! channel notifications; kept in a 256-bit request register, the para-virtual path, no EOI),
//! the vCPU's virtual local APIC (its timer, IPIs; acknowledged into ISR, ended by EOI) and
//! the partition's virtual 8259 pair (its UART on IRQ 4 and, for the management partition, the
//! host IRQ lines of the devices it owns), which reaches the CPU through the APIC's LINT0 in
//! ExtINT mode. The highest vector wins; an 8259 interrupt is acknowledged (its INTA cycle)
//! only when it is injected.

use super::vlapic::Vlapic;
use crate::devices::pic8259::PicPair;

/// 256 interrupt vectors, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorSet([u64; 4]);

impl VectorSet {
    pub fn set(&mut self, v: u8) {
        self.0[usize::from(v / 64)] |= 1 << (v % 64);
    }

    pub fn clear(&mut self, v: u8) {
        self.0[usize::from(v / 64)] &= !(1 << (v % 64));
    }

    pub fn contains(&self, v: u8) -> bool {
        self.0[usize::from(v / 64)] & (1 << (v % 64)) != 0
    }

    /// One test of the four words or'ed (the run loop asks before every entry).
    #[inline]
    pub fn is_empty(&self) -> bool {
        (self.0[0] | self.0[1] | self.0[2] | self.0[3]) == 0
    }

    /// The highest vector in the set.
    pub fn highest(&self) -> Option<u8> {
        (0..4)
            .rev()
            .find(|&i| self.0[i] != 0)
            .map(|i| (i * 64 + 63) as u8 - self.0[i].leading_zeros() as u8)
    }
}

/// Where the next interrupt comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A directly raised vector.
    Direct(u8),
    /// The 8259 pair (its vector is known after the INTA cycle).
    Pic(u8),
    /// The local APIC's highest requested vector above its processor priority.
    Apic(u8),
}

/// The interrupt the vCPU should take next, if any: the highest vector among the direct
/// ones, the local APIC's (above its PPR, SDM Vol. 3A §11.8.3) and the 8259 pair's, the
/// last only while the APIC lets ExtINT through (virtual wire, [`Vlapic::extint_open`]).
/// `pic` is the 8259 pair where this vCPU has it wired (the bootstrap processor).
pub fn next(direct: &VectorSet, pic: Option<&PicPair>, apic: &Vlapic) -> Option<Source> {
    // Ranked in place (this runs before entries with something requested and for each halted
    // vCPU per slice): on equal vectors the later source wins, in the order direct, APIC, PIC.
    let mut best = direct.highest().map(Source::Direct);
    if let Some(v) = apic.pending()
        && best.is_none_or(|b| v >= b.vector())
    {
        best = Some(Source::Apic(v));
    }
    if let Some(pic) = pic
        && apic.extint_open()
        && let Some(v) = pic.pending_vector()
        && best.is_none_or(|b| v >= b.vector())
    {
        best = Some(Source::Pic(v));
    }
    best
}

impl Source {
    /// The vector it names (the 8259's before its INTA cycle).
    fn vector(self) -> u8 {
        match self {
            Source::Direct(v) | Source::Pic(v) | Source::Apic(v) => v,
        }
    }
}

/// Takes the interrupt `source` names out of its controller: the vector to inject. An APIC
/// vector moves from IRR to ISR (the CPU's acknowledge, §11.8.4), to leave on EOI.
pub fn take(source: Source, direct: &mut VectorSet, pic: &mut PicPair, apic: &mut Vlapic) -> u8 {
    match source {
        Source::Direct(v) => {
            direct.clear(v);
            v
        }
        Source::Pic(_) => pic.acknowledge(),
        Source::Apic(v) => apic.apic.acknowledge().unwrap_or(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_set_keeps_every_vector() {
        let mut s = VectorSet::default();
        assert_eq!(s.highest(), None);
        for v in [32u8, 33, 64, 200, 255] {
            s.set(v);
        }
        assert!(s.contains(64) && !s.contains(65));
        assert_eq!(s.highest(), Some(255));
        s.clear(255);
        assert_eq!(s.highest(), Some(200));
        s.clear(200);
        s.clear(64);
        assert_eq!(s.highest(), Some(33));
        s.clear(33);
        s.clear(32);
        assert!(s.is_empty());
    }

    fn apic() -> Vlapic {
        let clock = alloc::rc::Rc::new(crate::devices::clock::ManualClock::new(1_000_000));
        Vlapic::new(clock, 0, true)
    }

    #[test]
    fn a_timer_and_a_notification_are_both_delivered() {
        let mut d = VectorSet::default();
        let mut pic = PicPair::default();
        let mut a = apic();
        d.set(0x40);
        d.set(0x31);
        let first = next(&d, Some(&pic), &a).unwrap();
        assert_eq!(take(first, &mut d, &mut pic, &mut a), 0x40);
        let second = next(&d, Some(&pic), &a).unwrap();
        assert_eq!(take(second, &mut d, &mut pic, &mut a), 0x31);
        assert_eq!(next(&d, Some(&pic), &a), None);
    }

    #[test]
    fn the_higher_vector_wins_between_pic_and_direct() {
        let mut d = VectorSet::default();
        let mut pic = PicPair::default();
        let mut a = apic();
        pic.write(0x21, 0xfe); // IRQ 0 unmasked, at the BIOS vector 8
        pic.set_irq(0, true);
        d.set(0x30);
        assert_eq!(next(&d, Some(&pic), &a), Some(Source::Direct(0x30)));
        d.clear(0x30);
        let s = next(&d, Some(&pic), &a).unwrap();
        assert_eq!(s, Source::Pic(0x08));
        assert_eq!(take(s, &mut d, &mut pic, &mut a), 0x08);
        assert_eq!(next(&d, Some(&pic), &a), None, "in service");
    }

    #[test]
    fn the_apic_ranks_with_the_others_and_gates_the_pic() {
        use crate::devices::lapic::reg;
        let mut d = VectorSet::default();
        let mut pic = PicPair::default();
        let mut a = apic();
        pic.write(0x21, 0xfe);
        pic.set_irq(0, true);
        a.apic.accept(0x50, false);
        d.set(0x30);
        // Firmware state: virtual wire, the PIC passes; the APIC's 0x50 is highest.
        let s = next(&d, Some(&pic), &a).unwrap();
        assert_eq!(s, Source::Apic(0x50));
        assert_eq!(take(s, &mut d, &mut pic, &mut a), 0x50);
        assert_eq!(a.apic.read(reg::ISR + 0x20) >> 16 & 1, 1, "acknowledged into ISR");
        assert_eq!(next(&d, Some(&pic), &a), Some(Source::Direct(0x30)));
        // LINT0 masked: the 8259 no longer reaches the CPU.
        d.clear(0x30);
        a.apic.write(reg::LVT_LINT0, 0x1_0700);
        assert_eq!(next(&d, Some(&pic), &a), None);
        // Software-disabled APIC: out of the way again.
        a.apic.write(reg::SVR, 0xff);
        assert_eq!(next(&d, Some(&pic), &a), Some(Source::Pic(0x08)));
        a.apic.write(reg::SVR, 0x1ff);
        a.apic.write(reg::LVT_LINT0, 0x700);
        assert_eq!(next(&d, Some(&pic), &a), Some(Source::Pic(0x08)));
        // TPR above a request holds it back until lowered; EOI ends the one in service.
        a.apic.write(reg::EOI, 0);
        a.apic.accept(0x61, false);
        a.apic.write(reg::TPR, 0x70);
        assert_eq!(next(&d, Some(&pic), &a), Some(Source::Pic(0x08)));
        a.apic.write(reg::TPR, 0);
        assert_eq!(next(&d, Some(&pic), &a), Some(Source::Apic(0x61)));
    }
}
