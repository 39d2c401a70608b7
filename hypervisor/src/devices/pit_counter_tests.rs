use super::*;

/// A counter programmed at tick `t` with `mode`, two-byte access, binary, gate high.
fn programmed(t: u64, mode: u8) -> Counter {
    let mut c = Counter::running(0, 0, Access::LsbMsb, 1, true);
    c.program(t, mode, Access::LsbMsb, false);
    c.take_edges(t);
    c
}

fn write16(c: &mut Counter, t: u64, v: u16) {
    c.write(t, v as u8);
    c.write(t, (v >> 8) as u8);
}

fn read16(c: &mut Counter, t: u64) -> u16 {
    let lo = c.read(t);
    u16::from(lo) | u16::from(c.read(t)) << 8
}

fn status(c: &mut Counter, t: u64) -> u8 {
    c.latch_status(t);
    c.read(t)
}

#[test]
fn mode0_counts_down_and_out_rises_n_plus_one_ticks_after_the_write() {
    let mut c = programmed(100, 0);
    assert!(!c.output(100), "mode 0 starts low");
    write16(&mut c, 100, 10);
    assert_eq!(read16(&mut c, 101), 10, "loaded on the next CLK");
    assert_eq!(read16(&mut c, 105), 6);
    assert_eq!((read16(&mut c, 110), c.output(110)), (1, false));
    assert_eq!(c.next_edge(110), Some(111));
    assert_eq!((read16(&mut c, 111), c.output(111)), (0, true), "terminal count");
    assert_eq!((read16(&mut c, 112), c.output(112)), (0xffff, true), "keeps counting, wraps");
    assert_eq!(c.take_edges(5_000_000), 1, "one edge per count");
    assert_eq!(c.next_edge(5_000_000), None);
}

#[test]
fn mode0_first_byte_stops_counting_and_drops_out() {
    let mut c = programmed(0, 0);
    write16(&mut c, 0, 5);
    assert!(c.output(50), "long past terminal count");
    c.write(60, 0x20);
    assert!(!c.output(60), "first byte: OUT low at once");
    let frozen = c.ce(60);
    assert_eq!(c.ce(90), frozen, "and counting stops");
    c.write(90, 0x00);
    assert_eq!(read16(&mut c, 91), 0x20);
    assert_eq!(read16(&mut c, 91 + 0x20), 0);
    assert!(c.output(91 + 0x20));
}

#[test]
fn mode0_gate_low_suspends_counting() {
    let mut c = programmed(0, 0);
    write16(&mut c, 0, 10);
    c.set_gate(4, false); // k = 3
    assert_eq!(read16(&mut c, 500), 7);
    assert_eq!(c.next_edge(500), None, "no edge while suspended");
    c.set_gate(500, true);
    assert_eq!(read16(&mut c, 503), 4);
    assert!(!c.output(506) && c.output(507), "seven more pulses to terminal count");
}

#[test]
fn mode0_loaded_with_the_gate_low_waits() {
    let mut c = programmed(0, 0);
    c.set_gate(0, false);
    write16(&mut c, 0, 3);
    assert_eq!(read16(&mut c, 100), 3);
    c.set_gate(100, true);
    assert!(!c.output(102) && c.output(103));
}

#[test]
fn mode2_rate_generator_pulses_low_one_tick_per_period() {
    let mut c = programmed(0, 2);
    assert!(c.output(0), "mode 2 starts high");
    write16(&mut c, 0, 5);
    let seq: Vec<(u16, bool)> = (1..=11).map(|t| (read16(&mut c, t), c.output(t))).collect();
    assert_eq!(
        seq,
        [
            (5, true),
            (4, true),
            (3, true),
            (2, true),
            (1, false),
            (5, true),
            (4, true),
            (3, true),
            (2, true),
            (1, false),
            (5, true)
        ]
    );
    assert_eq!(c.take_edges(11), 2, "edges at ticks 6 and 11");
    assert_eq!(c.next_edge(11), Some(16));
    assert_eq!(c.next_edge(13), Some(16));
    assert_eq!(c.take_edges(1 + 5 * 1000), 998);
}

#[test]
fn mode2_new_count_waits_for_the_end_of_the_period() {
    let mut c = programmed(0, 2);
    write16(&mut c, 0, 10);
    write16(&mut c, 4, 3); // k = 3: seven ticks of the old period left
    assert_eq!(status(&mut c, 4) & 0x40, 0x40, "null count until loaded");
    assert_eq!(read16(&mut c, 10), 10 - 9);
    assert_eq!(c.next_edge(10), Some(11));
    assert_eq!((read16(&mut c, 11), status(&mut c, 11) & 0x40), (3, 0));
    assert_eq!(c.take_edges(11), 1);
    assert_eq!(read16(&mut c, 13), 1);
    assert_eq!(c.take_edges(14), 1, "the new period: edge at 14");
    assert_eq!(c.take_edges(14 + 3 * 10), 10);
}

#[test]
fn mode2_gate_low_forces_out_high_and_rising_edge_reloads() {
    let mut c = programmed(0, 2);
    c.set_gate(0, false);
    write16(&mut c, 0, 4);
    assert_eq!(read16(&mut c, 50), 4, "held at the count");
    c.set_gate(50, true);
    assert!(!c.output(54), "low pulse 4 ticks after the trigger's CLK");
    c.set_gate(54, false);
    assert!(c.output(54), "gate low forces OUT high");
    assert_eq!(c.take_edges(54), 1, "which is a rising edge");
    assert_eq!(read16(&mut c, 99), 1, "CE held");
    c.set_gate(99, true);
    assert_eq!(read16(&mut c, 100), 4, "reloaded");
}

#[test]
fn mode3_square_wave_even_and_odd() {
    let mut c = programmed(0, 3);
    write16(&mut c, 0, 6);
    let even: Vec<(u16, bool)> = (1..=7).map(|t| (read16(&mut c, t), c.output(t))).collect();
    assert_eq!(
        even,
        [(6, true), (4, true), (2, true), (6, false), (4, false), (2, false), (6, true)]
    );
    let mut c = programmed(0, 3);
    write16(&mut c, 0, 5);
    let odd: Vec<(u16, bool)> = (1..=6).map(|t| (read16(&mut c, t), c.output(t))).collect();
    assert_eq!(odd, [(4, true), (2, true), (0, true), (4, false), (2, false), (4, true)]);
    assert_eq!(c.take_edges(1 + 5 * 7), 7, "one rising edge per period");
    assert_eq!(c.next_edge(1 + 5 * 7), Some(1 + 5 * 8));
}

#[test]
fn mode3_new_count_takes_over_at_the_end_of_the_half_cycle() {
    let mut c = programmed(0, 3);
    write16(&mut c, 0, 100);
    write16(&mut c, 11, 20); // k = 10, high half ends at k = 50 (tick 51)
    assert_eq!(c.next_edge(11), Some(51 + 10), "new count's low half is 10 ticks");
    assert!(c.output(50));
    assert_eq!((c.output(51), read16(&mut c, 51)), (false, 20));
    assert_eq!(c.take_edges(61), 1);
    assert!(c.output(61));
    assert_eq!(c.take_edges(61 + 20 * 5), 5);
}

#[test]
fn mode3_count_during_the_low_half_takes_over_at_the_period_end() {
    let mut c = programmed(0, 3);
    write16(&mut c, 0, 100);
    write16(&mut c, 71, 20); // k = 70, low half
    assert_eq!(c.next_edge(71), Some(101));
    assert_eq!(c.take_edges(101), 1);
    assert_eq!(c.next_edge(101), Some(121));
}

#[test]
fn mode4_strobes_once() {
    let mut c = programmed(0, 4);
    assert!(c.output(0));
    write16(&mut c, 0, 3);
    let outs: Vec<bool> = (1..=7).map(|t| c.output(t)).collect();
    assert_eq!(outs, [true, true, true, false, true, true, true], "low for one tick at CE 0");
    assert_eq!(c.take_edges(1000), 1);
}

#[test]
fn mode4_next_edge() {
    let mut c = programmed(10, 4);
    write16(&mut c, 10, 100);
    assert_eq!(c.next_edge(10), Some(10 + 1 + 100 + 1));
    assert_eq!(c.next_edge(112), None);
}

#[test]
fn mode1_one_shot_on_the_gate_and_retrigger() {
    let mut c = programmed(0, 1);
    c.set_gate(0, false);
    write16(&mut c, 0, 4);
    assert_eq!(status(&mut c, 5) & 0xc0, 0xc0, "OUT high, null count until triggered");
    assert!(c.output(100));
    c.set_gate(100, true);
    assert_eq!(status(&mut c, 101) & 0xc0, 0x00, "triggered: low, loaded");
    assert_eq!(read16(&mut c, 102), 3);
    c.set_gate(103, false);
    c.set_gate(103, true); // retrigger: four more from 104
    assert!(!c.output(107) && c.output(108));
    assert_eq!(c.take_edges(108), 1);
}

#[test]
fn mode5_strobe_on_the_gate() {
    let mut c = programmed(0, 5);
    c.set_gate(0, false);
    write16(&mut c, 0, 2);
    assert_eq!(c.next_edge(10), None, "waits for a trigger");
    c.set_gate(10, true);
    assert_eq!(c.next_edge(10), Some(14));
    assert!(c.output(12) && !c.output(13) && c.output(14));
}

#[test]
fn latch_holds_the_count_until_both_bytes_are_read() {
    let mut c = programmed(0, 2);
    write16(&mut c, 0, 1000);
    c.latch_count(11); // CE 990
    c.latch_count(20); // ignored: the first is unread
    assert_eq!(c.read(300), (990 & 0xff) as u8);
    assert_eq!(c.read(400), (990 >> 8) as u8);
    assert_eq!(read16(&mut c, 501), 500, "live again");
}

#[test]
fn status_byte_fields() {
    let mut c = Counter::running(0, 0, Access::LsbMsb, 1, true);
    c.program(0, 6, Access::Msb, true);
    assert_eq!(status(&mut c, 0), 0x40 | 0x80 | 0x20 | (6 << 1) | 1, "mode as written");
    c.write(0, 0x12); // BCD 1200
    assert_eq!(status(&mut c, 0), 0x40 | 0x80 | 0x20 | (6 << 1) | 1, "not loaded yet");
    assert_eq!(status(&mut c, 1), 0x80 | 0x20 | (6 << 1) | 1);
    c.latch_status(2);
    c.latch_count(2);
    c.latch_status(3); // ignored
    assert_eq!(c.read(9), 0xa0 | (6 << 1) | 1, "status first");
    assert_eq!(c.read(9), 0x11, "then the count: 1199 in BCD, MSB");
}

#[test]
fn single_byte_access_modes() {
    let mut c = programmed(0, 0);
    c.program(0, 0, Access::Lsb, false);
    c.write(0, 0x80);
    assert_eq!((c.read(1), c.read(1)), (0x80, 0x80), "LSB every read");
    c.program(10, 0, Access::Msb, false);
    c.write(10, 0x02);
    assert_eq!(c.read(11 + 0x100), 0x01, "count 0x200, 0x100 later");
}

#[test]
fn zero_means_the_modulus() {
    let mut c = programmed(0, 2);
    write16(&mut c, 0, 0);
    assert_eq!(read16(&mut c, 1), 0, "65536 reads as 0");
    assert_eq!(read16(&mut c, 2), 0xffff);
    assert_eq!(c.next_edge(2), Some(1 + 65_536));
    let mut c = Counter::running(0, 0, Access::LsbMsb, 1, true);
    c.program(0, 2, Access::LsbMsb, true);
    write16(&mut c, 0, 0);
    assert_eq!(read16(&mut c, 2), 0x9999, "BCD: 10000 counts");
    assert_eq!(c.next_edge(2), Some(1 + 10_000));
    let mut c = Counter::running(0, 0, Access::LsbMsb, 1, true);
    c.program(0, 0, Access::LsbMsb, true);
    write16(&mut c, 0, 0x0005);
    assert_eq!(read16(&mut c, 7), 0x9999, "BCD wraps below zero to 9999");
    write16(&mut c, 10, 0xffff);
    assert_eq!(read16(&mut c, 11), to_bcd(16_665 % 10_000), "non-BCD digits, reduced");
}

#[test]
fn count_of_one_in_modes_2_and_3_never_toggles() {
    for mode in [2, 3] {
        let mut c = programmed(0, mode);
        write16(&mut c, 0, 1);
        assert_eq!(c.take_edges(1_000), 0);
        assert_eq!(c.next_edge(1_000), None);
        assert_eq!(read16(&mut c, 1_000), if mode == 2 { 1 } else { 0 }, "mode 3 loads n - 1");
    }
}

#[test]
fn control_word_sets_out_and_can_make_an_edge() {
    let mut c = programmed(0, 0);
    write16(&mut c, 0, 1000);
    assert_eq!(c.take_edges(10), 0);
    c.program(10, 2, Access::LsbMsb, false);
    assert!(c.output(10));
    assert_eq!(c.take_edges(10), 1, "OUT low to high is an edge on IRQ 0");
    assert_eq!(c.next_edge(10), None, "no count yet");
    c.program(20, 0, Access::LsbMsb, false);
    assert!(!c.output(20));
}

#[test]
fn edges_are_counted_not_queued() {
    let mut c = programmed(0, 2);
    write16(&mut c, 0, 2);
    assert_eq!(c.take_edges(u64::MAX - 1), (u64::MAX - 2) / 2);
    assert_eq!(c.take_edges(u64::MAX), 1);
    assert_eq!(c.take_edges(u64::MAX), 0);
    assert_eq!(c.take_edges(5), 0, "time never runs backwards");
    let _ = c.next_edge(u64::MAX);
}
