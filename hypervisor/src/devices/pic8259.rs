//! A pair of virtual 8259A programmable interrupt controllers, cascaded as in every PC since
//! the AT: the master at ports 0x20/0x21 with the slave's INT on its IR2, the slave at
//! 0xa0/0xa1 (Intel 8259A datasheet, "Programming the 8259A").
//!
//! Each partition has its own pair. Its interrupt sources raise and lower lines with
//! [`PicPair::set_irq`]; before each VM entry the hypervisor asks [`PicPair::pending_vector`]
//! whether the CPU's INTR input would be asserted, and when it injects that interrupt it runs
//! the INTA cycle with [`PicPair::acknowledge`]. End-of-interrupt commands are recorded
//! ([`PicPair::take_eois`]), so the hypervisor can re-enable a host line it forwarded only once
//! the guest has serviced the device.
//!
//! Implemented: the ICW1-ICW4 initialisation sequence (vector base, single or cascaded, auto
//! EOI), OCW1 (mask), OCW2 (non-specific and specific EOI; the rotate forms end the interrupt
//! but priorities stay fixed), OCW3 (read IRR or ISR, poll), edge-triggered inputs with IR0
//! the highest priority. Not implemented, as no PC operating system relies on them: rotating
//! priorities, special mask mode, special fully nested mode, buffered mode, 8080 call vectors.

/// Fixed priorities (IR0 highest): the highest of the unmasked `requests` that no interrupt in
/// `service` of the same or a higher priority holds back. Asked before every VM entry, so it
/// is bit arithmetic, not a walk over the eight lines.
fn highest_request(requests: u8, service: u8) -> Option<u8> {
    if requests == 0 {
        return None;
    }
    let line = requests.trailing_zeros();
    // Lines 0..=line: an in-service one among them blocks the request.
    let at_or_above = ((2u16 << line) - 1) as u8;
    (service & at_or_above == 0).then_some(line as u8)
}

/// One 8259A.
#[derive(Clone, Debug, Default)]
struct Chip {
    /// Interrupt request register: lines that saw a rising edge and wait for INTA.
    irr: u8,
    /// In-service register: interrupts acknowledged and not yet ended.
    isr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// Input levels as last set, for edge detection.
    level: u8,
    /// ICW2: the vector of IR0 (bits 7:3).
    base: u8,
    /// Next initialisation word expected on the odd port: 2, 3, 4, or 0 when initialised.
    init_step: u8,
    needs_icw4: bool,
    single: bool,
    auto_eoi: bool,
    /// OCW3: reads of the even port return the ISR instead of the IRR.
    read_isr: bool,
    /// OCW3 poll command: the next even-port read acknowledges and returns the level.
    poll: bool,
    /// Lines whose interrupt ended since the last [`PicPair::take_eois`].
    eois: u8,
}

impl Chip {
    /// The highest-priority requested, unmasked line that no interrupt in service of equal or
    /// higher priority blocks; `extra` are request bits from outside IRR (the cascade).
    fn highest(&self, extra: u8) -> Option<u8> {
        highest_request((self.irr | extra) & !self.imr, self.isr)
    }

    fn set_level(&mut self, line: u8, high: bool) {
        let bit = 1 << line;
        if high && self.level & bit == 0 {
            self.irr |= bit;
        }
        if high {
            self.level |= bit;
        } else {
            self.level &= !bit;
        }
    }

    /// The INTA cycle for `line`: IRR to ISR (unless auto EOI).
    fn ack(&mut self, line: u8) {
        let bit = 1 << line;
        self.irr &= !bit;
        if self.auto_eoi {
            self.eois |= bit;
        } else {
            self.isr |= bit;
        }
    }

    fn end(&mut self, line: u8) {
        let bit = 1 << line;
        if self.isr & bit != 0 {
            self.isr &= !bit;
            self.eois |= bit;
        }
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1: start initialisation. The edge-sense circuits, IMR and ISR are reset.
            *self = Self {
                base: self.base,
                init_step: 2,
                needs_icw4: v & 0x01 != 0,
                single: v & 0x02 != 0,
                eois: self.eois | self.isr,
                ..Self::default()
            };
        } else if v & 0x08 != 0 {
            // OCW3.
            if v & 0x04 != 0 {
                self.poll = true;
            }
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
        } else {
            // OCW2: R SL EOI in bits 7:5, the level in 2:0.
            match v >> 5 {
                0b001 | 0b101 => {
                    if let Some(line) = (0..8).find(|l| self.isr & (1 << l) != 0) {
                        self.end(line);
                    }
                }
                0b011 | 0b111 => self.end(v & 7),
                _ => {} // rotate in AEOI mode, set priority, no-op: priorities stay fixed
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init_step {
            2 => {
                self.base = v & 0xf8;
                self.init_step = if !self.single {
                    3
                } else if self.needs_icw4 {
                    4
                } else {
                    0
                };
            }
            3 => self.init_step = if self.needs_icw4 { 4 } else { 0 },
            4 => {
                self.auto_eoi = v & 0x02 != 0;
                self.init_step = 0;
            }
            _ => self.imr = v,
        }
    }
}

/// The cascaded pair: IRQ 0-7 on the master, 8-15 on the slave (on the master's IR2).
#[derive(Clone, Debug)]
pub struct PicPair {
    chips: [Chip; 2],
}

impl Default for PicPair {
    /// The state firmware leaves before an OS reprograms the chips: IRQ 0-7 at vectors 8-15,
    /// 8-15 at 0x70-0x77 (the BIOS layout), every line masked.
    fn default() -> Self {
        let chip = |base| Chip { base, imr: 0xff, ..Chip::default() };
        Self { chips: [chip(0x08), chip(0x70)] }
    }
}

/// The master's input the slave is wired to.
const CASCADE: u8 = 2;

impl PicPair {
    /// Sets input `irq` (0-15) to a level; a rising edge requests an interrupt.
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        if irq < 16 {
            self.chips[usize::from(irq / 8)].set_level(irq % 8, high);
        }
    }

    /// The slave's INT output, as the master's IR2 sees it.
    fn slave_int(&self) -> u8 {
        if self.chips[1].highest(0).is_some() { 1 << CASCADE } else { 0 }
    }

    /// True when some line of either chip has an unmasked request. When false,
    /// [`Self::pending_vector`] is `None`: a cheap test to ask first before every entry.
    pub fn any_requested(&self) -> bool {
        self.chips.iter().any(|c| c.irr & !c.imr != 0)
    }

    /// True while `irq`'s request waits in its chip's IRR (raised, not yet acknowledged).
    pub fn requested(&self, irq: u8) -> bool {
        irq < 16 && self.chips[usize::from(irq / 8)].irr & (1 << (irq % 8)) != 0
    }

    /// The vector the pair would deliver now, if its INT output is asserted.
    pub fn pending_vector(&self) -> Option<u8> {
        let [m, s] = &self.chips;
        let line = m.highest(self.slave_int())?;
        if line == CASCADE && !m.single {
            return s.highest(0).map(|l| s.base | l);
        }
        Some(m.base | line)
    }

    /// The INTA cycle: the vector of the highest-priority request, now in service (vector 7
    /// of the chip, a spurious interrupt, when nothing is requested any more).
    pub fn acknowledge(&mut self) -> u8 {
        let cascade = self.slave_int();
        let [m, s] = &mut self.chips;
        match m.highest(cascade) {
            Some(CASCADE) if !m.single => {
                m.ack(CASCADE);
                match s.highest(0) {
                    Some(line) => {
                        s.ack(line);
                        s.base | line
                    }
                    None => s.base | 7,
                }
            }
            Some(line) => {
                m.ack(line);
                m.base | line
            }
            None => m.base | 7,
        }
    }

    /// A guest read of port `port` (0x20, 0x21, 0xa0 or 0xa1).
    pub fn read(&mut self, port: u16) -> u8 {
        let chip = usize::from(port >= 0xa0);
        if port & 1 == 1 {
            return self.chips[chip].imr;
        }
        if self.chips[chip].poll {
            self.chips[chip].poll = false;
            return self.poll(chip);
        }
        let c = &self.chips[chip];
        if c.read_isr { c.isr } else { c.irr }
    }

    /// The poll command's read: 0x80 | level when a request is pending (now in service).
    fn poll(&mut self, chip: usize) -> u8 {
        let extra = if chip == 0 { self.slave_int() } else { 0 };
        let c = &mut self.chips[chip];
        match c.highest(extra) {
            Some(line) => {
                c.ack(line);
                0x80 | line
            }
            None => 0,
        }
    }

    /// A guest write of `v` to port `port` (0x20, 0x21, 0xa0 or 0xa1).
    pub fn write(&mut self, port: u16, v: u8) {
        let chip = &mut self.chips[usize::from(port >= 0xa0)];
        if port & 1 == 1 { chip.write_data(v) } else { chip.write_command(v) }
    }

    /// The IRQ lines whose interrupt ended (EOI, auto EOI or reinitialisation) since the last
    /// call.
    pub fn take_eois(&mut self) -> u16 {
        let [m, s] = &mut self.chips;
        let eois = u16::from(m.eois & !(1 << CASCADE)) | (u16::from(s.eois) << 8);
        m.eois = 0;
        s.eois = 0;
        eois
    }

    /// The IRQ lines the guest has unmasked (a slave line counts only while IR2 is unmasked).
    pub fn unmasked(&self) -> u16 {
        let [m, s] = &self.chips;
        let slave = if m.imr & (1 << CASCADE) == 0 { !s.imr } else { 0 };
        u16::from(!m.imr) | (u16::from(slave) << 8)
    }

    /// One line for reports: vector bases, IRR, ISR, IMR of both chips.
    pub fn describe(&self) -> alloc::string::String {
        let [m, s] = &self.chips;
        alloc::format!(
            "pic: master base {:#04x} irr {:#04x} isr {:#04x} imr {:#04x} inputs {:#04x}, slave base {:#04x} irr {:#04x} isr {:#04x} imr {:#04x} inputs {:#04x}",
            m.base,
            m.irr,
            m.isr,
            m.imr,
            m.level,
            s.base,
            s.irr,
            s.isr,
            s.imr,
            s.level
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_requested_means_nothing_pending() {
        let mut pic = programmed();
        assert!(!pic.any_requested());
        assert_eq!(pic.pending_vector(), None);
        pic.write(0xa1, 0xff); // every slave line masked
        pic.set_irq(12, true);
        assert!(!pic.any_requested(), "a masked request is not one");
        assert_eq!(pic.pending_vector(), None);
        pic.write(0xa1, 0x00);
        assert!(pic.any_requested());
        assert_eq!(pic.pending_vector(), Some(0x2c));
        // Whatever the registers, `requested` false implies no pending vector.
        for imr in [0x00u8, 0x0f, 0xf0, 0xfb, 0xff] {
            let mut p = programmed();
            p.write(0x21, imr);
            for irq in 0..16 {
                p.set_irq(irq, true);
                assert!(p.any_requested() || p.pending_vector().is_none());
            }
        }
    }

    #[test]
    fn highest_request_is_the_walk_over_the_lines() {
        // The datasheet's fixed priority, line by line, against the bit arithmetic: every
        // combination of requests and in-service lines.
        let walk = |requests: u8, service: u8| {
            for line in 0..8 {
                if service & (1 << line) != 0 {
                    return None;
                }
                if requests & (1 << line) != 0 {
                    return Some(line);
                }
            }
            None
        };
        for requests in 0..=255u8 {
            for service in 0..=255u8 {
                assert_eq!(
                    highest_request(requests, service),
                    walk(requests, service),
                    "requests {requests:#010b}, in service {service:#010b}"
                );
            }
        }
    }

    /// The initialisation every PC OS performs: IRQ 0-7 at 0x20, 8-15 at 0x28, cascade on IR2.
    fn programmed() -> PicPair {
        let mut p = PicPair::default();
        for (port, v) in [
            (0x20, 0x11),
            (0xa0, 0x11),
            (0x21, 0x20),
            (0xa1, 0x28),
            (0x21, 0x04),
            (0xa1, 0x02),
            (0x21, 0x01),
            (0xa1, 0x01),
            (0x21, 0x00),
            (0xa1, 0x00),
        ] {
            p.write(port, v);
        }
        p
    }

    #[test]
    fn starts_masked_at_the_bios_vectors() {
        let mut p = PicPair::default();
        p.set_irq(1, true);
        assert_eq!(p.pending_vector(), None, "masked");
        p.write(0x21, 0xfd);
        assert_eq!(p.pending_vector(), Some(0x09));
    }

    #[test]
    fn initialisation_sets_the_vector_base_and_clears_the_mask() {
        let mut p = programmed();
        assert_eq!(p.read(0x21), 0);
        p.set_irq(0, true);
        assert_eq!(p.pending_vector(), Some(0x20));
        assert_eq!(p.acknowledge(), 0x20);
        assert_eq!(p.pending_vector(), None, "in service, no new edge");
        p.write(0x20, 0x0b);
        assert_eq!(p.read(0x20), 0x01, "ISR via OCW3");
        p.write(0x20, 0x20);
        assert_eq!(p.read(0x20), 0x00);
        assert_eq!(p.take_eois(), 1);
        assert_eq!(p.take_eois(), 0);
    }

    #[test]
    fn edges_not_levels_request() {
        let mut p = programmed();
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x23);
        p.write(0x20, 0x20);
        p.set_irq(3, true);
        assert_eq!(p.pending_vector(), None, "held high: no new edge");
        p.set_irq(3, false);
        p.set_irq(3, true);
        assert_eq!(p.pending_vector(), Some(0x23));
    }

    #[test]
    fn slave_lines_go_through_the_cascade() {
        let mut p = programmed();
        p.set_irq(14, true);
        assert_eq!(p.pending_vector(), Some(0x2e));
        assert_eq!(p.acknowledge(), 0x2e);
        p.write(0xa0, 0x0b);
        p.write(0x20, 0x0b);
        assert_eq!((p.read(0xa0), p.read(0x20)), (0x40, 0x04), "both in service");
        p.set_irq(1, true);
        assert_eq!(p.pending_vector(), Some(0x21), "IR1 outranks IR2");
        p.set_irq(15, true);
        p.write(0xa0, 0x20);
        p.write(0x20, 0x62); // specific EOI of IR2
        assert_eq!(p.take_eois(), 1 << 14);
        assert_eq!(p.acknowledge(), 0x21);
        p.write(0x20, 0x20);
        assert_eq!(p.acknowledge(), 0x2f, "then the slave's IRQ 15");
    }

    #[test]
    fn priority_and_masking() {
        let mut p = programmed();
        p.write(0x21, 0x10); // mask IRQ 4
        p.set_irq(4, true);
        p.set_irq(6, true);
        assert_eq!(p.acknowledge(), 0x26);
        p.set_irq(5, true);
        assert_eq!(p.pending_vector(), Some(0x25), "IR5 outranks IR6 in service");
        p.write(0x21, 0x00);
        assert_eq!(p.pending_vector(), Some(0x24), "unmasked: the latched edge shows");
        p.set_irq(7, true);
        p.write(0x20, 0x20); // ends IR6
        assert_eq!(p.acknowledge(), 0x24);
        assert_eq!(p.pending_vector(), None, "IR5 and IR7 wait behind IR4 in service");
        assert_eq!(p.acknowledge(), 0x27, "an INTA now gets the spurious vector");
        p.write(0x20, 0x20);
        assert_eq!(p.acknowledge(), 0x25);
        p.write(0x20, 0x20);
        assert_eq!(p.acknowledge(), 0x27, "the real IR7");
        assert_eq!(p.read(0x20), 0x00, "IRR empty");
    }

    #[test]
    fn auto_eoi_and_poll() {
        let mut p = PicPair::default();
        for (port, v) in [(0x20, 0x13), (0x21, 0x40), (0x21, 0x03), (0x21, 0x00)] {
            p.write(port, v);
        }
        p.set_irq(2, true);
        assert_eq!(p.acknowledge(), 0x42, "single mode: IR2 is an ordinary line");
        assert_eq!(p.take_eois(), 0, "IR2 is the cascade line in reports");
        p.set_irq(5, true);
        assert_eq!(p.acknowledge(), 0x45);
        assert_eq!(p.take_eois(), 1 << 5, "auto EOI ends it at once");
        p.set_irq(6, true);
        p.write(0x20, 0x0c);
        assert_eq!(p.read(0x20), 0x86, "poll: level 6");
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn unmasked_lines_follow_the_cascade() {
        let mut p = PicPair::default();
        p.write(0x21, 0xfb);
        p.write(0xa1, 0xbf);
        assert_eq!(p.unmasked(), (1 << 2) | (1 << 14));
        p.write(0x21, 0xff);
        assert_eq!(p.unmasked(), 0);
    }
}
