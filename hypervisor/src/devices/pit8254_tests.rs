use super::*;
use crate::devices::clock::ManualClock;
use crate::devices::shared::shared;
use crate::vmm::bus::Bus;
use alloc::boxed::Box;

/// TSC ticks per PIT tick in most tests: a 2.98 GHz TSC.
const TICK: u64 = 2500;

struct Pc {
    clock: Rc<ManualClock>,
    pit: Shared<Pit>,
    io: Bus,
}

impl Pc {
    fn new(hz: u64) -> Self {
        let clock = Rc::new(ManualClock::new(hz));
        clock.set(1_000_000 * TICK);
        let pit = shared(Pit::new(clock.clone()));
        let mut io = Bus::default();
        io.attach(0x40..0x44, Box::new(pit.clone()));
        io.attach(0x61..0x62, Box::new(PitPort61(pit.clone())));
        Self { clock, pit, io }
    }
    fn inb(&mut self, port: u64) -> u8 {
        self.io.read(port, 1) as u8
    }
    fn outb(&mut self, port: u64, v: u8) {
        self.io.write(port, 1, u64::from(v));
    }
    /// Two reads of a counter in LSB/MSB mode.
    fn count(&mut self, port: u64) -> u16 {
        let lo = self.inb(port);
        u16::from(lo) | u16::from(self.inb(port)) << 8
    }
    fn edges(&self) -> u64 {
        self.pit.borrow_mut().irq0_edges()
    }
    fn deadline(&self) -> Option<u64> {
        self.pit.borrow().next_irq0_deadline()
    }
}

/// Linux `quick_pit_calibrate()` (arch/x86/kernel/tsc.c): counter 2 in mode 0 from 0xffff,
/// its gate on through port 0x61, then the MSB polled as it steps down every 256 ticks.
#[test]
fn linux_fast_tsc_calibration_sequence() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    let v = pc.inb(0x61);
    pc.outb(0x61, (v & !0x02) | 0x01);
    pc.outb(0x43, 0xb0);
    pc.outb(0x42, 0xff);
    pc.outb(0x42, 0xff);
    let t0 = pc.clock.now();
    pc.clock.set(t0 + TICK);
    assert_eq!(pc.count(0x42), 0xffff);
    for i in 1..=0xffu64 {
        pc.clock.set(t0 + (256 * i) * TICK);
        assert_eq!(pc.count(0x42) >> 8, 0xff - i as u16 + 1, "MSB holds for 256 ticks");
        pc.clock.set(t0 + (1 + 256 * i) * TICK);
        assert_eq!(pc.count(0x42) >> 8, 0xff - i as u16, "then steps down");
        assert_eq!(pc.inb(0x61) & port61::OUT2, 0, "OUT2 low before terminal count");
    }
    pc.clock.set(t0 + 0xffff * TICK);
    assert_eq!((pc.count(0x42), pc.inb(0x61) & port61::OUT2), (1, 0));
    pc.clock.set(t0 + 0x10000 * TICK);
    assert_eq!((pc.count(0x42), pc.inb(0x61) & port61::OUT2), (0, port61::OUT2));
}

/// Linux `pit_calibrate_tsc()`: a 10 ms count in counter 2, bit 5 of port 0x61 polled until
/// it rises, against a TSC that is not a multiple of the PIT clock.
#[test]
fn linux_slow_tsc_calibration_sequence() {
    let hz = 3_000_000_000;
    let mut pc = Pc::new(hz);
    let latch: u16 = (PIT_HZ / 100) as u16;
    let v = pc.inb(0x61);
    pc.outb(0x61, (v & !0x02) | 0x01);
    pc.outb(0x43, 0xb0);
    pc.outb(0x42, latch as u8);
    pc.outb(0x42, (latch >> 8) as u8);
    let t0 = pc.clock.now();
    let mut polls = 0;
    while pc.inb(0x61) & port61::OUT2 == 0 {
        pc.clock.advance(1000);
        polls += 1;
        assert!(polls < 100_000);
    }
    let delta = pc.clock.now() - t0;
    let expected = (u64::from(latch) + 1) * hz / PIT_HZ;
    assert!(delta.abs_diff(expected) <= 1001, "{delta} vs {expected}");
    // The frequency Linux derives from it: within 0.01 %.
    let measured = delta * PIT_HZ / u64::from(latch);
    assert!(measured.abs_diff(hz) < hz / 10_000, "{measured}");
}

/// Linux's periodic i8253 clockevent: counter 0 in mode 2 with LATCH for HZ = 250.
#[test]
fn periodic_irq0_edges_and_deadlines() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    let latch: u64 = (PIT_HZ + 125) / 250;
    pc.outb(0x43, 0x34);
    pc.outb(0x40, latch as u8);
    pc.outb(0x40, (latch >> 8) as u8);
    let t0 = pc.clock.now();
    pc.edges(); // whatever the BIOS-state counter did before
    let first = t0 + (1 + latch) * TICK;
    assert_eq!(pc.deadline(), Some(first));
    pc.clock.set(first - 1);
    assert_eq!(pc.edges(), 0);
    pc.clock.set(first);
    assert_eq!(pc.edges(), 1);
    assert_eq!(pc.deadline(), Some(first + latch * TICK));
    pc.clock.set(first + 3 * latch * TICK + 7);
    assert_eq!(pc.edges(), 3);
    // Descheduled for ten seconds: one count, nothing queued.
    pc.clock.advance(10 * PIT_HZ * TICK);
    assert_eq!(pc.edges(), 10 * PIT_HZ / latch, "2499.86 periods from a period boundary");
    assert_eq!(pc.edges(), 0);
    let now = pc.clock.now();
    let d = pc.deadline().unwrap();
    assert!(d > now && d <= now + latch * TICK);
}

/// Linux's one-shot i8253 clockevent: mode 4, each event a new count.
#[test]
fn oneshot_irq0_in_mode4() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    pc.outb(0x43, 0x38);
    pc.edges();
    assert_eq!(pc.deadline(), None, "no count yet");
    pc.outb(0x40, 0xe8);
    pc.outb(0x40, 0x03); // 1000
    let t0 = pc.clock.now();
    assert_eq!(pc.deadline(), Some(t0 + 1002 * TICK), "low at CE 0, high one tick later");
    pc.clock.set(t0 + 1002 * TICK);
    assert_eq!((pc.edges(), pc.deadline()), (1, None));
}

#[test]
fn read_back_latches_status_and_counts() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    pc.outb(0x43, 0x34);
    pc.outb(0x40, 0x00);
    pc.outb(0x40, 0x10); // 0x1000
    let t0 = pc.clock.now();
    pc.outb(0x43, 0xc2); // status and count of counter 0
    assert_eq!(pc.inb(0x40), 0x40 | 0x80 | 0x30 | 0x04, "null count before the load CLK");
    assert_eq!(pc.count(0x40), 0x1000);
    pc.clock.set(t0 + 0x11 * TICK);
    pc.outb(0x43, 0xda); // counts only, counters 0 and 2
    pc.clock.advance(50 * TICK);
    assert_eq!(pc.count(0x40), 0x1000 - 0x10, "latched 50 ticks ago");
    pc.outb(0x43, 0xe2); // status only
    assert_eq!(pc.inb(0x40), 0x80 | 0x30 | 0x04);
    assert_eq!(pc.count(0x40), 0x1000 - 0x10 - 50, "live");
    assert_eq!(pc.count(0x42), 0x533, "counter 2's latched count: gate low, held");
    assert_eq!(pc.inb(0x43), 0xff, "the control port reads nothing");
}

#[test]
fn counter_latch_command_through_port_0x43() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    pc.outb(0x43, 0x34);
    pc.outb(0x40, 0x00);
    pc.outb(0x40, 0x00);
    let t0 = pc.clock.now();
    pc.clock.set(t0 + 101 * TICK);
    pc.outb(0x43, 0x00);
    pc.clock.advance(1000 * TICK);
    assert_eq!(pc.count(0x40), 0u16.wrapping_sub(100));
}

#[test]
fn port61_bits() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    assert_eq!(pc.inb(0x61), port61::OUT2, "gate low in mode 3: OUT2 high");
    assert_eq!(pc.inb(0x61), port61::OUT2 | port61::REFRESH, "refresh toggles per read");
    pc.outb(0x61, 0xff);
    let v = pc.inb(0x61) & !port61::REFRESH;
    assert_eq!(v & 0xcf, 0x0f, "bits 3:0 as written, 7:6 zero");
    pc.outb(0x61, 0x00);
    pc.outb(0x43, 0xb0);
    pc.outb(0x42, 10);
    pc.outb(0x42, 0);
    pc.clock.advance(1000 * TICK);
    assert_eq!(pc.inb(0x61) & port61::OUT2, 0, "mode 0 with the gate low does not count");
    pc.outb(0x61, port61::GATE2 | port61::SPEAKER);
    pc.clock.advance(9 * TICK);
    assert_eq!(pc.inb(0x61) & 0x23, 0x03, "counting from the gate's rising edge");
    pc.clock.advance(TICK);
    assert_eq!(pc.inb(0x61) & 0x23, 0x23);
}

#[test]
fn bios_state_ticks_at_18_hz() {
    let pc = Pc::new(PIT_HZ * TICK);
    let t0 = pc.clock.now();
    assert_eq!(pc.deadline(), Some(t0 + (1 + 65_536) * TICK));
    pc.clock.advance(PIT_HZ * TICK);
    assert_eq!(pc.edges(), 18);
}

#[test]
fn wide_accesses_reach_consecutive_ports() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    pc.io.write(0x42, 2, 0x34b0); // 0x42 gets 0xb0 (a count byte), 0x43 gets 0x34
    pc.io.write(0x40, 2, 0x1234); // counter 0 LSB 0x34, counter 1 (LSB mode) 0x12
    pc.io.write(0x40, 1, 0x00);
    let t0 = pc.clock.now();
    pc.clock.set(t0 + TICK);
    assert_eq!(pc.count(0x40), 0x0034);
    assert_eq!(pc.io.read(0x43, 4), 0xffff_ffff, "the control port and beyond read 0xff");
}

#[test]
fn time_running_backwards_is_ignored() {
    let mut pc = Pc::new(PIT_HZ * TICK);
    pc.outb(0x43, 0x34);
    pc.outb(0x40, 0);
    pc.outb(0x40, 1);
    let t0 = pc.clock.now();
    pc.clock.set(t0 + 101 * TICK);
    let before = pc.count(0x40);
    pc.clock.set(t0 - 5000 * TICK);
    assert_eq!(pc.count(0x40), before);
    assert!(pc.deadline().unwrap() > t0);
}

/// Every control word, every offset and access size, random data and time jumps: no panic,
/// and every deadline lies ahead.
#[test]
fn hostile_accesses_never_panic() {
    let mut pc = Pc::new(3_000_000_007);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20_000u64 {
        let r = rnd();
        if round < 256 * 4 {
            pc.outb(0x43, (round / 4) as u8);
        }
        let size = [1, 2, 4, 8][(r & 3) as usize];
        let port = 0x40 + (r >> 2) % 4;
        match (r >> 8) % 5 {
            0 => pc.io.write(port, size, rnd()),
            1 => drop(pc.io.read(port, size)),
            2 => pc.io.write(0x61, size, rnd()),
            3 => drop(pc.io.read(0x61, size)),
            _ => pc.outb(0x43, rnd() as u8),
        }
        let jump = match (r >> 16) % 8 {
            0 => rnd() >> 20,
            1 => 0,
            _ => rnd() % 100_000,
        };
        pc.clock.advance(jump);
        pc.edges();
        if let Some(d) = pc.deadline() {
            assert!(d > pc.clock.now() || pc.clock.now() == u64::MAX, "round {round}");
        }
    }
}

#[test]
fn any_offset_and_size_is_safe() {
    let pc = Pc::new(PIT_HZ * TICK);
    let mut pit = pc.pit.clone();
    let mut p61 = PitPort61(pc.pit.clone());
    for offset in [0, 1, 3, 4, 5, 100, u64::MAX] {
        for size in [0, 1, 2, 3, 4, 8, 16, 255] {
            for v in [0, 0x36, 0xff, u64::MAX] {
                pit.write(offset, size, v);
                let r = pit.read(offset, size);
                assert!(size >= 8 || r < 1 << (8 * size), "{offset} {size}");
                p61.write(offset, size, v);
                p61.read(offset, size);
            }
        }
    }
    assert_eq!(p61.name(), "port61");
}
