//! A partition's interrupt sources and which one the vCPU takes next.
//!
//! Two kinds reach a vCPU: vectors the hypervisor raises directly (the timer hypercall, channel
//! notifications; kept in a 256-bit request register, as a local APIC's IRR) and the partition's
//! virtual 8259 pair (its UART on IRQ 4 and, for the management partition, the host IRQ lines
//! of the devices it owns). The highest vector wins, as the local APIC ranks them; an 8259
//! interrupt is acknowledged (its INTA cycle) only when it is injected.

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

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
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
}

/// The interrupt the vCPU should take next, if any.
pub fn next(direct: &VectorSet, pic: &PicPair) -> Option<Source> {
    match (direct.highest(), pic.pending_vector()) {
        (Some(d), Some(p)) if p > d => Some(Source::Pic(p)),
        (Some(d), _) => Some(Source::Direct(d)),
        (None, Some(p)) => Some(Source::Pic(p)),
        (None, None) => None,
    }
}

/// Takes the interrupt `source` names out of its controller: the vector to inject.
pub fn take(source: Source, direct: &mut VectorSet, pic: &mut PicPair) -> u8 {
    match source {
        Source::Direct(v) => {
            direct.clear(v);
            v
        }
        Source::Pic(_) => pic.acknowledge(),
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

    #[test]
    fn a_timer_and_a_notification_are_both_delivered() {
        let mut d = VectorSet::default();
        let mut pic = PicPair::default();
        d.set(0x40);
        d.set(0x31);
        let first = next(&d, &pic).unwrap();
        assert_eq!(take(first, &mut d, &mut pic), 0x40);
        let second = next(&d, &pic).unwrap();
        assert_eq!(take(second, &mut d, &mut pic), 0x31);
        assert_eq!(next(&d, &pic), None);
    }

    #[test]
    fn the_higher_vector_wins_between_pic_and_direct() {
        let mut d = VectorSet::default();
        let mut pic = PicPair::default();
        pic.write(0x21, 0xfe); // IRQ 0 unmasked, at the BIOS vector 8
        pic.set_irq(0, true);
        d.set(0x30);
        assert_eq!(next(&d, &pic), Some(Source::Direct(0x30)));
        d.clear(0x30);
        let s = next(&d, &pic).unwrap();
        assert_eq!(s, Source::Pic(0x08));
        assert_eq!(take(s, &mut d, &mut pic), 0x08);
        assert_eq!(next(&d, &pic), None, "in service");
    }
}
