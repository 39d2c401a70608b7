//! A virtual 16550A UART (a PC's COM port: eight registers from 0x3F8), as a pure state machine.
//!
//! Registers, bits, interrupt priorities and reset values from the TI/National PC16550D
//! datasheet (SNLS378C): table 2 (register summary), 8.6.3 (LSR), 8.6.4 (IIR, table 5),
//! 8.6.5 (IER), 8.6.6 (MCR, loopback), 8.6.7 (MSR), 8.6.8 (SCR), 8.6.9 (FCR).
//!
//! Transmission is instant: a byte written to THR lands in the output buffer (or, in loopback,
//! in the receive FIFO), so THRE and TEMT always read as set. Received bytes come from
//! [`Uart16550::push_input`]. With FIFOs enabled the receiver holds 16 bytes; without, one.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Register offsets from the base port.
pub mod reg {
    /// RBR (read) / THR (write); DLL when LCR.DLAB = 1.
    pub const DATA: u8 = 0;
    /// IER; DLM when LCR.DLAB = 1.
    pub const IER: u8 = 1;
    /// IIR (read) / FCR (write).
    pub const IIR_FCR: u8 = 2;
    pub const LCR: u8 = 3;
    pub const MCR: u8 = 4;
    pub const LSR: u8 = 5;
    pub const MSR: u8 = 6;
    pub const SCR: u8 = 7;
}

/// Receive FIFO depth of the 16550A.
pub const FIFO_SIZE: usize = 16;
/// Transmitted bytes held for the caller; more are counted in [`Uart16550::lost_output`].
pub const OUTPUT_CAPACITY: usize = 4096;
/// The divisor latch is against this rate (1.8432 MHz / 16).
pub const BASE_BAUD: u32 = 115_200;

// IER bits.
const IER_RDA: u8 = 1 << 0;
const IER_THRE: u8 = 1 << 1;
const IER_RLS: u8 = 1 << 2;
const IER_MS: u8 = 1 << 3;
// IIR values (bit 0 clear: an interrupt is pending).
const IIR_NONE: u8 = 0x01;
const IIR_MS: u8 = 0x00;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_RLS: u8 = 0x06;
const IIR_TIMEOUT: u8 = 0x0c;
const IIR_FIFO: u8 = 0xc0;
// FCR bits.
const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;
// LCR bits.
const LCR_DLAB: u8 = 1 << 7;
// MCR bits.
const MCR_DTR: u8 = 1 << 0;
const MCR_RTS: u8 = 1 << 1;
const MCR_OUT1: u8 = 1 << 2;
const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;
// LSR bits.
const LSR_DR: u8 = 1 << 0;
const LSR_OE: u8 = 1 << 1;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
// MSR bits: deltas in 3:0, line states in 7:4.
const MSR_DCTS: u8 = 1 << 0;
const MSR_DDSR: u8 = 1 << 1;
const MSR_TERI: u8 = 1 << 2;
const MSR_DDCD: u8 = 1 << 3;
const MSR_CTS: u8 = 1 << 4;
const MSR_DSR: u8 = 1 << 5;
const MSR_RI: u8 = 1 << 6;
const MSR_DCD: u8 = 1 << 7;
/// The modem inputs outside loopback: a connected line (CTS, DSR, DCD asserted).
const MSR_CONNECTED: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

/// One emulated 16550A.
#[derive(Debug)]
pub struct Uart16550 {
    ier: u8,
    /// FCR bits kept: enable and the trigger level (7:6).
    fcr: u8,
    lcr: u8,
    mcr: u8,
    /// The sticky LSR error bits (only OE can happen here).
    lsr_errors: u8,
    /// MSR bits 3:0, cleared when MSR is read.
    msr_deltas: u8,
    scr: u8,
    divisor: u16,
    /// The THR-empty interrupt: set when THR empties, cleared by reading IIR or writing THR.
    thre_pending: bool,
    rx: VecDeque<u8>,
    output: Vec<u8>,
    lost_output: u64,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// A UART in its reset state (IER, FCR, LCR, MCR clear; no FIFOs; nothing pending).
    pub fn new() -> Self {
        Self {
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            msr_deltas: 0,
            scr: 0,
            divisor: 0,
            thre_pending: false,
            rx: VecDeque::with_capacity(FIFO_SIZE),
            output: Vec::new(),
            lost_output: 0,
        }
    }

    /// A guest read of the register at `offset` (0..=7; anything else reads 0xFF).
    pub fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            reg::DATA if dlab => self.divisor as u8,
            reg::IER if dlab => (self.divisor >> 8) as u8,
            reg::DATA => self.rx.pop_front().unwrap_or(0),
            reg::IER => self.ier,
            reg::IIR_FCR => {
                let iir = self.iir();
                if iir == IIR_THRE {
                    self.thre_pending = false;
                }
                iir | if self.fifo_enabled() { IIR_FIFO } else { 0 }
            }
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => {
                let lsr = self.lsr();
                self.lsr_errors = 0;
                lsr
            }
            reg::MSR => {
                let msr = self.modem_inputs() | self.msr_deltas;
                self.msr_deltas = 0;
                msr
            }
            reg::SCR => self.scr,
            _ => 0xff,
        }
    }

    /// A guest write of `value` to the register at `offset` (0..=7; anything else is ignored).
    pub fn write(&mut self, offset: u8, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            reg::DATA if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            reg::IER if dlab => self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8),
            reg::DATA => self.transmit(value),
            reg::IER => {
                let enabling_thre = value & IER_THRE != 0 && self.ier & IER_THRE == 0;
                self.ier = value & 0x0f;
                // THR is always empty, so enabling its interrupt raises it at once.
                if enabling_thre {
                    self.thre_pending = true;
                }
            }
            reg::IIR_FCR => self.write_fcr(value),
            reg::LCR => self.lcr = value,
            reg::MCR => {
                let before = self.modem_inputs();
                self.mcr = value & 0x1f;
                self.note_modem_change(before, self.modem_inputs());
            }
            reg::SCR => self.scr = value,
            // LSR and MSR are read-only (writing them is for factory test only).
            _ => {}
        }
    }

    /// A byte arriving on the line. If the receiver is full, it is lost and LSR.OE is set
    /// (without FIFOs the new byte overwrites the unread one, as the datasheet says). Check
    /// [`input_room`](Self::input_room) first to lose nothing.
    pub fn push_input(&mut self, byte: u8) {
        if self.rx.len() >= self.rx_capacity() {
            self.lsr_errors |= LSR_OE;
            if self.fifo_enabled() {
                return;
            }
            self.rx.clear();
        }
        self.rx.push_back(byte);
    }

    /// How many bytes [`push_input`](Self::push_input) can take without an overrun.
    pub fn input_room(&self) -> usize {
        self.rx_capacity().saturating_sub(self.rx.len())
    }

    /// Takes the transmitted bytes, oldest first.
    pub fn drain_output(&mut self) -> alloc::vec::Drain<'_, u8> {
        self.output.drain(..)
    }

    /// Bytes transmitted while the output buffer was full (never drained).
    pub fn lost_output(&self) -> u64 {
        self.lost_output
    }

    /// The chip's INTR output: some source enabled in IER is active (IIR bit 0 clear).
    pub fn interrupt_pending(&self) -> bool {
        self.iir() != IIR_NONE
    }

    /// What a PC's interrupt controller sees: INTR passes only when MCR.OUT2 is set, and the
    /// OUT2 pin is held inactive in loopback mode.
    pub fn irq_line(&self) -> bool {
        self.interrupt_pending() && self.mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2
    }

    /// The divisor latch (DLM:DLL); 0 until the guest programs it.
    pub fn divisor(&self) -> u16 {
        self.divisor
    }

    /// The line rate the guest programmed, if it did.
    pub fn baud(&self) -> Option<u32> {
        (self.divisor != 0).then(|| BASE_BAUD / u32::from(self.divisor))
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_ENABLE != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() { FIFO_SIZE } else { 1 }
    }

    /// The receive FIFO's interrupt trigger level (FCR bits 7:6).
    fn rx_trigger(&self) -> usize {
        [1, 4, 8, 14][usize::from(self.fcr >> 6)]
    }

    fn transmit(&mut self, byte: u8) {
        if self.mcr & MCR_LOOP != 0 {
            self.push_input(byte);
        } else if self.output.len() < OUTPUT_CAPACITY {
            self.output.push(byte);
        } else {
            self.lost_output += 1;
        }
        // Sent at once: THR is empty again.
        self.thre_pending = true;
    }

    fn write_fcr(&mut self, value: u8) {
        // Changing the enable bit clears both FIFOs.
        if (value ^ self.fcr) & FCR_ENABLE != 0 || value & FCR_CLEAR_RX != 0 {
            self.rx.clear();
        }
        self.fcr = value & (FCR_ENABLE | 0xc0);
    }

    fn lsr(&self) -> u8 {
        let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
        dr | self.lsr_errors | LSR_THRE | LSR_TEMT
    }

    /// Line states in MSR bits 7:4: a connected line, or in loopback the MCR outputs
    /// (RTS to CTS, DTR to DSR, OUT1 to RI, OUT2 to DCD).
    fn modem_inputs(&self) -> u8 {
        if self.mcr & MCR_LOOP == 0 {
            return MSR_CONNECTED;
        }
        let m = self.mcr;
        let on = |bit: u8, msr: u8| if m & bit != 0 { msr } else { 0 };
        on(MCR_RTS, MSR_CTS) | on(MCR_DTR, MSR_DSR) | on(MCR_OUT1, MSR_RI) | on(MCR_OUT2, MSR_DCD)
    }

    fn note_modem_change(&mut self, before: u8, after: u8) {
        let changed = before ^ after;
        let delta = |msr: u8, d: u8| if changed & msr != 0 { d } else { 0 };
        self.msr_deltas |=
            delta(MSR_CTS, MSR_DCTS) | delta(MSR_DSR, MSR_DDSR) | delta(MSR_DCD, MSR_DDCD);
        // TERI: the trailing edge of RI only.
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            self.msr_deltas |= MSR_TERI;
        }
    }

    /// The highest-priority enabled source (datasheet table 5), without the FIFO bits.
    fn iir(&self) -> u8 {
        if self.ier & IER_RLS != 0 && self.lsr_errors != 0 {
            IIR_RLS
        } else if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            // Below the trigger level the FIFO reports a character timeout; time passes
            // instantly here, so the timeout has always expired.
            if self.fifo_enabled() && self.rx.len() < self.rx_trigger() {
                IIR_TIMEOUT
            } else {
                IIR_RDA
            }
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE
        } else if self.ier & IER_MS != 0 && self.msr_deltas != 0 {
            IIR_MS
        } else {
            IIR_NONE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reg::*;
    use super::*;

    fn uart() -> Uart16550 {
        Uart16550::new()
    }

    fn out(u: &mut Uart16550) -> Vec<u8> {
        u.drain_output().collect()
    }

    #[test]
    fn reset_state() {
        let mut u = uart();
        assert_eq!(u.read(IER), 0);
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        assert_eq!(u.read(LCR), 0);
        assert_eq!(u.read(MCR), 0);
        assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read(MSR), MSR_CTS | MSR_DSR | MSR_DCD);
        assert!(!u.interrupt_pending());
        assert_eq!(u.read(8), 0xff);
        u.write(8, 1);
    }

    #[test]
    fn transmits_to_output() {
        let mut u = uart();
        for b in b"hi\n" {
            u.write(DATA, *b);
        }
        assert_eq!(u.read(LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
        assert_eq!(out(&mut u), b"hi\n");
        assert_eq!(out(&mut u), b"");
    }

    #[test]
    fn output_is_bounded() {
        let mut u = uart();
        for _ in 0..OUTPUT_CAPACITY + 3 {
            u.write(DATA, b'x');
        }
        assert_eq!(u.lost_output(), 3);
        assert_eq!(out(&mut u).len(), OUTPUT_CAPACITY);
        u.write(DATA, b'y');
        assert_eq!(out(&mut u), b"y");
    }

    #[test]
    fn receives_input() {
        let mut u = uart();
        assert_eq!(u.input_room(), 1);
        u.push_input(b'a');
        assert_eq!(u.read(LSR) & LSR_DR, LSR_DR);
        assert_eq!(u.read(DATA), b'a');
        assert_eq!(u.read(LSR) & LSR_DR, 0);
    }

    #[test]
    fn dlab_switches_data_and_ier_to_the_divisor() {
        let mut u = uart();
        u.write(IER, 0x0f);
        u.write(LCR, 0x83);
        u.write(DATA, 0x01);
        u.write(IER, 0x00);
        assert_eq!((u.read(DATA), u.read(IER)), (0x01, 0x00));
        assert_eq!(u.divisor(), 1);
        assert_eq!(u.baud(), Some(115_200));
        u.write(DATA, 0x0c);
        u.write(IER, 0x01);
        assert_eq!(u.divisor(), 0x010c);
        // Nothing reached THR or IER while DLAB was set.
        assert_eq!(out(&mut u), b"");
        u.write(LCR, 0x03);
        assert_eq!(u.read(LCR), 0x03);
        assert_eq!(u.read(IER), 0x0f);
        u.write(DATA, b'z');
        assert_eq!(out(&mut u), b"z");
        assert_eq!(uart().baud(), None);
    }

    #[test]
    fn ier_keeps_four_bits() {
        let mut u = uart();
        u.write(IER, 0xff);
        assert_eq!(u.read(IER), 0x0f);
    }

    #[test]
    fn scratch_round_trip() {
        let mut u = uart();
        for v in [0x00, 0x55, 0xaa, 0xff] {
            u.write(SCR, v);
            assert_eq!(u.read(SCR), v);
        }
    }

    #[test]
    fn fifo_enable_shows_in_iir_and_clears() {
        let mut u = uart();
        u.write(IIR_FCR, FCR_ENABLE);
        assert_eq!(u.read(IIR_FCR), IIR_FIFO | IIR_NONE);
        assert_eq!(u.input_room(), FIFO_SIZE);
        u.push_input(1);
        u.push_input(2);
        u.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.read(LSR) & LSR_DR, 0);
        u.push_input(3);
        u.write(IIR_FCR, 0);
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        assert_eq!(u.read(LSR) & LSR_DR, 0, "disabling the FIFO clears it");
    }

    #[test]
    fn fifo_overrun_keeps_the_fifo_and_sets_oe() {
        let mut u = uart();
        u.write(IIR_FCR, FCR_ENABLE);
        for b in 0..FIFO_SIZE as u8 + 2 {
            u.push_input(b);
        }
        assert_eq!(u.input_room(), 0);
        assert_eq!(u.read(LSR), LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT);
        assert_eq!(u.read(LSR) & LSR_OE, 0, "reading LSR clears OE");
        let got: Vec<u8> = (0..FIFO_SIZE).map(|_| u.read(DATA)).collect();
        assert_eq!(got, (0..FIFO_SIZE as u8).collect::<Vec<_>>());
        assert_eq!(u.read(LSR) & LSR_DR, 0);
    }

    #[test]
    fn overrun_without_fifo_overwrites() {
        let mut u = uart();
        u.push_input(1);
        u.push_input(2);
        assert_eq!(u.read(LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(u.read(DATA), 2);
    }

    #[test]
    fn loopback_returns_transmitted_bytes_and_reflects_mcr() {
        let mut u = uart();
        u.write(MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        // Linux's 8250 probe: loopback with RTS and OUT2 must read back CTS and DCD.
        assert_eq!(u.read(MSR) & 0xf0, MSR_CTS | MSR_DCD);
        u.write(DATA, b'L');
        assert_eq!(out(&mut u), b"");
        assert_eq!(u.read(LSR) & LSR_DR, LSR_DR);
        assert_eq!(u.read(DATA), b'L');
        u.write(MCR, MCR_LOOP | MCR_DTR | MCR_OUT1);
        assert_eq!(u.read(MSR), MSR_DSR | MSR_RI | MSR_DCTS | MSR_DDSR | MSR_DDCD);
        u.write(MCR, MCR_LOOP);
        assert_eq!(u.read(MSR), MSR_DDSR | MSR_TERI, "TERI on RI's trailing edge");
        assert_eq!(u.read(MSR), 0, "reading MSR clears the deltas");
        u.write(MCR, 0);
        u.write(DATA, b'N');
        assert_eq!(out(&mut u), b"N");
        assert_eq!(u.read(MCR), 0);
    }

    #[test]
    fn thre_interrupt_raised_by_enabling_cleared_by_reading_iir() {
        let mut u = uart();
        u.write(IER, IER_THRE);
        assert!(u.interrupt_pending());
        assert_eq!(u.read(IIR_FCR), IIR_THRE);
        assert!(!u.interrupt_pending());
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        u.write(DATA, b'x');
        assert_eq!(u.read(IIR_FCR), IIR_THRE);
        // Re-writing IER with the bit already set raises nothing new.
        u.write(IER, IER_THRE);
        assert!(!u.interrupt_pending());
        u.write(IER, 0);
        u.write(IER, IER_THRE);
        assert!(u.interrupt_pending());
    }

    #[test]
    fn rx_interrupt_until_drained() {
        let mut u = uart();
        u.write(IER, IER_RDA);
        u.push_input(b'k');
        assert_eq!(u.read(IIR_FCR), IIR_RDA);
        assert_eq!(u.read(IIR_FCR), IIR_RDA, "reading IIR does not clear it");
        u.read(DATA);
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
    }

    #[test]
    fn fifo_reports_timeout_below_the_trigger_level() {
        let mut u = uart();
        u.write(IER, IER_RDA);
        u.write(IIR_FCR, FCR_ENABLE | 0x40); // trigger at 4
        u.push_input(1);
        assert_eq!(u.read(IIR_FCR), IIR_FIFO | IIR_TIMEOUT);
        for b in 2..=4 {
            u.push_input(b);
        }
        assert_eq!(u.read(IIR_FCR), IIR_FIFO | IIR_RDA);
    }

    #[test]
    fn iir_priority() {
        let mut u = uart();
        u.write(IER, IER_RDA | IER_THRE | IER_RLS | IER_MS);
        u.write(MCR, MCR_LOOP | MCR_RTS); // modem status change
        u.push_input(1);
        u.push_input(2); // overrun: line status
        assert_eq!(u.read(IIR_FCR), IIR_RLS);
        u.read(LSR);
        assert_eq!(u.read(IIR_FCR), IIR_RDA);
        u.read(DATA);
        assert_eq!(u.read(IIR_FCR), IIR_THRE);
        assert_eq!(u.read(IIR_FCR), IIR_MS);
        u.read(MSR);
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        assert!(!u.interrupt_pending());
    }

    #[test]
    fn irq_line_needs_out2_outside_loopback() {
        let mut u = uart();
        u.write(IER, IER_THRE);
        assert!(u.interrupt_pending());
        assert!(!u.irq_line());
        u.write(MCR, MCR_OUT2);
        assert!(u.irq_line());
        u.write(MCR, MCR_OUT2 | MCR_LOOP);
        assert!(u.interrupt_pending() && !u.irq_line());
    }

    #[test]
    fn line_and_modem_status_are_read_only() {
        let mut u = uart();
        u.write(LSR, 0xff);
        u.write(MSR, 0xff);
        assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read(MSR), MSR_CONNECTED);
    }
}
