//! The PC's 8254 programmable interval timer at ports 0x40-0x43, and system control port B
//! (port 0x61), which carries counter 2's gate and output.
//!
//! The counters run off a 1.193182 MHz clock, derived here from the TSC through the
//! partition's [`Clock`]: PIT tick = TSC × 1193182 / TSC Hz. Counter 0's OUT drives IRQ 0,
//! counter 2 feeds the speaker and is what Linux calibrates the TSC against; counter 1 (DRAM
//! refresh on old PCs) is implemented like the others. Counters 0 and 1 have their gates
//! tied high; counter 2's gate is port 0x61 bit 0. Programming semantics are in
//! [`super::pit_counter`].
//!
//! IRQ 0: [`Pit::irq0_edges`] says how many rising edges OUT0 had since it was last asked
//! and [`Pit::next_irq0_deadline`] when the next one comes. Edges are counted, never queued,
//! so a partition descheduled for a long time costs nothing to catch up: the caller raises
//! IRQ 0 once when the count is non-zero, which is what a real PC does when the 8259 misses
//! ticks (IRR holds one request however many edges arrive while it is set).
//!
//! Reset state (what a PC BIOS leaves): counter 0 in mode 3 with count 0 (65536, 18.2 Hz),
//! counter 1 in mode 2 with count 18 (LSB only), counter 2 in mode 3 with count 0x533
//! (the BIOS beep, 896 Hz) and its gate low; port 0x61 zero.

use super::clock::{Clock, scale, scale_up};
use super::pit_counter::{Access, Counter};
use super::shared::{Shared, read_bytes, write_bytes};
use crate::vmm::bus::Device;
use alloc::rc::Rc;

/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Port 0x61 bits.
pub mod port61 {
    /// Counter 2's gate (read/write).
    pub const GATE2: u8 = 1 << 0;
    /// Speaker data enable (read/write; there is no speaker).
    pub const SPEAKER: u8 = 1 << 1;
    /// Read/write bits: gate, speaker, parity and channel check enables.
    pub const WRITABLE: u8 = 0x0f;
    /// Refresh request toggle (read-only): flips on every read, so code that polls it for a
    /// change makes progress.
    pub const REFRESH: u8 = 1 << 4;
    /// Counter 2's OUT (read-only).
    pub const OUT2: u8 = 1 << 5;
}

/// The 8254 and port 0x61's state. Attach it at 0x40..0x44 (shared, see
/// [`super::shared`]) and a [`PitPort61`] made from the same handle at 0x61..0x62.
pub struct Pit {
    clock: Rc<dyn Clock>,
    counters: [Counter; 3],
    /// Port 0x61 bits 3:0 as written.
    port61: u8,
    refresh: bool,
    /// The latest PIT tick seen: time never runs backwards for the counters.
    last_tick: u64,
}

impl Pit {
    /// A PIT in the state firmware leaves (module documentation), reading time from `clock`.
    pub fn new(clock: Rc<dyn Clock>) -> Self {
        let now = scale(clock.now(), PIT_HZ, clock.hz());
        Self {
            clock,
            counters: [
                Counter::running(now, 3, Access::LsbMsb, 0, true),
                Counter::running(now, 2, Access::Lsb, 18, true),
                Counter::running(now, 3, Access::LsbMsb, 0x533, false),
            ],
            port61: 0,
            refresh: false,
            last_tick: now,
        }
    }

    /// The PIT tick now.
    fn tick(&mut self) -> u64 {
        self.last_tick = self.last_tick.max(self.tick_peek());
        self.last_tick
    }

    fn tick_peek(&self) -> u64 {
        scale(self.clock.now(), PIT_HZ, self.clock.hz()).max(self.last_tick)
    }

    /// A guest read of port 0x40 + `port` (0-3; 3, the control port, reads 0xFF).
    pub fn read_port(&mut self, port: u8) -> u8 {
        let now = self.tick();
        match self.counters.get_mut(usize::from(port)) {
            Some(c) => c.read(now),
            None => 0xff,
        }
    }

    /// A guest write to port 0x40 + `port` (0-3).
    pub fn write_port(&mut self, port: u8, v: u8) {
        let now = self.tick();
        match self.counters.get_mut(usize::from(port)) {
            Some(c) => c.write(now, v),
            None => self.control(now, v),
        }
    }

    /// A control word: SC1:SC0 select the counter (11: read-back), RW1:RW0 the access (00:
    /// counter latch), M2:M0 the mode, bit 0 BCD.
    fn control(&mut self, now: u64, v: u8) {
        let sc = usize::from(v >> 6);
        if sc == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches status, bits 3:1
            // select counters 2, 1, 0.
            for (i, c) in self.counters.iter_mut().enumerate() {
                if v & (2 << i) != 0 {
                    if v & 0x10 == 0 {
                        c.latch_status(now);
                    }
                    if v & 0x20 == 0 {
                        c.latch_count(now);
                    }
                }
            }
            return;
        }
        let c = &mut self.counters[sc];
        match Access::from_bits(v >> 4) {
            None => c.latch_count(now),
            Some(access) => c.program(now, (v >> 1) & 7, access, v & 1 != 0),
        }
    }

    /// A guest read of port 0x61.
    pub fn read_port61(&mut self) -> u8 {
        let now = self.tick();
        let out2 = self.counters[2].output(now);
        let v = self.port61
            | if self.refresh { port61::REFRESH } else { 0 }
            | if out2 { port61::OUT2 } else { 0 };
        self.refresh = !self.refresh;
        v
    }

    /// A guest write to port 0x61.
    pub fn write_port61(&mut self, v: u8) {
        let now = self.tick();
        self.port61 = v & port61::WRITABLE;
        self.counters[2].set_gate(now, v & port61::GATE2 != 0);
    }

    /// Rising edges of counter 0's OUT (IRQ 0) since the last call.
    pub fn irq0_edges(&mut self) -> u64 {
        let now = self.tick();
        self.counters[0].take_edges(now)
    }

    /// The TSC at which counter 0's OUT next rises, if its mode and count bring a rising edge.
    /// It can be near: a guest may program a period of 2 PIT ticks (1.7 µs), so callers that
    /// size time slices from it should keep a minimum of their own.
    pub fn next_irq0_deadline(&self) -> Option<u64> {
        let tick = self.counters[0].next_edge(self.tick_peek())?;
        Some(scale_up(tick, self.clock.hz().max(1), PIT_HZ))
    }
}

impl Device for Pit {
    fn name(&self) -> &'static str {
        "pit8254"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        read_bytes(offset, size, 4, |p| self.read_port(p as u8))
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        write_bytes(offset, size, 4, value, |p, v| self.write_port(p as u8, v));
    }
}

/// Port 0x61 (system control port B) as a device of its own, sharing the PIT's state.
pub struct PitPort61(pub Shared<Pit>);

impl Device for PitPort61 {
    fn name(&self) -> &'static str {
        "port61"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let mut pit = self.0.borrow_mut();
        read_bytes(offset, size, 1, |_| pit.read_port61())
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        let mut pit = self.0.borrow_mut();
        write_bytes(offset, size, 1, value, |_, v| pit.write_port61(v));
    }
}

#[cfg(test)]
#[path = "pit8254_tests.rs"]
mod tests;
