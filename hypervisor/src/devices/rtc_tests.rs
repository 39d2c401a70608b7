use super::*;
use crate::devices::clock::ManualClock;

/// A 1 GHz TSC: one tick per nanosecond.
const HZ: u64 = 1_000_000_000;
const START: u64 = 5 * HZ;
/// 2026-12-04 14:09:33 UTC, a Friday.
const EPOCH: u64 = 1_796_393_373;

fn rtc_at(epoch: u64) -> (Rc<ManualClock>, Rtc) {
    let clock = Rc::new(ManualClock::new(HZ));
    clock.set(START);
    let rtc = Rtc::new(clock.clone(), epoch, START);
    (clock, rtc)
}

fn get(rtc: &mut Rtc, index: u8) -> u8 {
    rtc.write(0, 1, u64::from(index));
    rtc.read(1, 1) as u8
}

fn put(rtc: &mut Rtc, index: u8, v: u8) {
    rtc.write(0, 1, u64::from(index));
    rtc.write(1, 1, u64::from(v));
}

/// Seconds, minutes, hours, weekday, day, month, year, century.
fn time(rtc: &mut Rtc) -> [u8; 8] {
    TIME_REGS.map(|r| get(rtc, r))
}

#[test]
fn known_epoch_in_bcd() {
    let (_, mut rtc) = rtc_at(EPOCH);
    assert_eq!(time(&mut rtc), [0x33, 0x09, 0x14, 0x06, 0x04, 0x12, 0x26, 0x20]);
    assert_eq!((get(&mut rtc, reg::A), get(&mut rtc, reg::B)), (0x26, 0x02));
    assert_eq!(get(&mut rtc, reg::D), D_VRT);
}

#[test]
fn binary_mode() {
    let (_, mut rtc) = rtc_at(EPOCH);
    put(&mut rtc, reg::B, B_24H | B_DM_BINARY);
    assert_eq!(time(&mut rtc), [33, 9, 14, 6, 4, 12, 26, 20]);
}

#[test]
fn twelve_hour_mode() {
    for (hour, bcd, binary) in [
        (0, 0x12, 12),
        (1, 0x01, 1),
        (11, 0x11, 11),
        (12, 0x92, 0x8c),
        (13, 0x81, 0x81),
        (14, 0x82, 0x82),
        (23, 0x91, 0x8b),
    ] {
        let (_, mut rtc) = rtc_at(EPOCH - 14 * 3600 + hour * 3600);
        put(&mut rtc, reg::B, 0);
        assert_eq!(get(&mut rtc, reg::HOURS), bcd, "{hour}:00 BCD");
        put(&mut rtc, reg::B, B_DM_BINARY);
        assert_eq!(get(&mut rtc, reg::HOURS), binary, "{hour}:00 binary");
    }
}

#[test]
fn uip_only_in_the_244_us_before_the_update() {
    let (clock, mut rtc) = rtc_at(EPOCH);
    let uip = |rtc: &mut Rtc| get(rtc, reg::A) & A_UIP != 0;
    assert!(!uip(&mut rtc));
    clock.set(START + HZ - 244_001);
    assert!(!uip(&mut rtc));
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x33);
    clock.set(START + HZ - 244_000);
    assert!(uip(&mut rtc));
    clock.set(START + HZ - 1);
    assert!(uip(&mut rtc));
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x33);
    clock.set(START + HZ);
    assert!(!uip(&mut rtc));
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x34);
    clock.set(START + 7 * HZ - 100_000);
    assert!(uip(&mut rtc));
    put(&mut rtc, reg::B, B_24H | B_SET);
    assert!(!uip(&mut rtc), "no updates while SET");
}

#[test]
fn time_rolls_over_minutes_days_months_years_and_leap_days() {
    for (epoch, then) in [
        // 2024-02-28 23:59:59 (Wed) + 1 s: the leap day, a Thursday.
        (1_709_164_799, [0x00, 0x00, 0x00, 0x05, 0x29, 0x02, 0x24, 0x20]),
        // 1999-12-31 23:59:59 + 1 s: the century changes.
        (946_684_799, [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]),
        // 2100-02-28 23:59:59 (Sun) + 1 s: 2100 is no leap year.
        (4_107_542_399, [0x00, 0x00, 0x00, 0x02, 0x01, 0x03, 0x00, 0x21]),
    ] {
        let (clock, mut rtc) = rtc_at(epoch);
        assert_eq!(get(&mut rtc, reg::SECONDS), 0x59);
        clock.advance(HZ);
        assert_eq!(time(&mut rtc), then, "{epoch}");
    }
    let (clock, mut rtc) = rtc_at(EPOCH);
    clock.advance(27 * HZ);
    assert_eq!(time(&mut rtc)[..3], [0x00, 0x10, 0x14]);
    clock.advance(30 * 86_400 * HZ);
    assert_eq!(time(&mut rtc), [0x00, 0x10, 0x14, 0x01, 0x03, 0x01, 0x27, 0x20], "2027-01-03");
}

/// Linux `mc146818_set_time()`: SET, divider reset, the new time, then both restored.
#[test]
fn set_bit_lets_the_guest_set_the_time() {
    let (clock, mut rtc) = rtc_at(EPOCH);
    clock.advance(HZ / 3);
    let b = get(&mut rtc, reg::B);
    put(&mut rtc, reg::B, b | B_SET);
    let a = get(&mut rtc, reg::A);
    put(&mut rtc, reg::A, a | 0x70);
    for (r, v) in [
        (reg::YEAR, 0x31),
        (reg::MONTH, 0x07),
        (reg::DAY, 0x15),
        (reg::HOURS, 0x08),
        (reg::MINUTES, 0x30),
        (reg::SECONDS, 0x00),
    ] {
        put(&mut rtc, r, v);
    }
    clock.advance(5 * HZ);
    assert_eq!(time(&mut rtc)[..3], [0x00, 0x30, 0x08], "stopped");
    put(&mut rtc, reg::B, b);
    clock.advance(5 * HZ);
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x00, "still stopped: divider in reset");
    put(&mut rtc, reg::A, a);
    clock.advance(HZ / 2 - 1);
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x00);
    clock.advance(1);
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x01, "first update half a second on");
    clock.advance(HZ);
    assert_eq!(time(&mut rtc), [0x02, 0x30, 0x08, 0x03, 0x15, 0x07, 0x31, 0x20], "2031-07-15, Tue");
}

#[test]
fn set_bit_alone_restarts_a_second_later_and_clears_uie() {
    let (clock, mut rtc) = rtc_at(EPOCH);
    put(&mut rtc, reg::B, B_24H | B_UIE);
    put(&mut rtc, reg::B, B_24H | B_SET | B_UIE);
    assert_eq!(get(&mut rtc, reg::B), B_24H | B_SET, "SET clears UIE");
    put(&mut rtc, reg::CENTURY, 0x19);
    put(&mut rtc, reg::YEAR, 0x99);
    clock.advance(HZ / 4);
    put(&mut rtc, reg::B, B_24H);
    clock.advance(HZ - 1);
    assert_eq!(time(&mut rtc)[6..], [0x99, 0x19]);
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x33);
    clock.advance(1);
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x34);
}

#[test]
fn writes_while_running_take_effect_at_once() {
    let (clock, mut rtc) = rtc_at(EPOCH);
    clock.advance(HZ / 2);
    put(&mut rtc, reg::MINUTES, 0x45);
    assert_eq!(time(&mut rtc)[..3], [0x33, 0x45, 0x14]);
    clock.advance(HZ / 2);
    assert_eq!(get(&mut rtc, reg::SECONDS), 0x34, "phase kept");
    put(&mut rtc, reg::WEEKDAY, 0x01);
    assert_eq!(get(&mut rtc, reg::WEEKDAY), 0x06, "weekday follows the date");
}

#[test]
fn garbage_time_bytes_are_clamped() {
    let (clock, mut rtc) = rtc_at(EPOCH);
    put(&mut rtc, reg::B, B_24H | B_SET);
    for r in TIME_REGS {
        put(&mut rtc, r, 0xff);
    }
    put(&mut rtc, reg::B, B_24H);
    clock.advance(HZ);
    let t = time(&mut rtc);
    assert!(t.iter().all(|&b| b & 0x0f <= 9 && b >> 4 <= 9), "valid BCD again: {t:02x?}");
}

#[test]
fn nmi_mask_bit_and_index_port() {
    let (_, mut rtc) = rtc_at(EPOCH);
    rtc.write(0, 1, 0x80 | u64::from(reg::SECONDS));
    assert!(rtc.nmi_masked());
    assert_eq!(rtc.read(1, 1), 0x33, "bit 7 is not part of the index");
    assert_eq!(rtc.read(0, 1), 0xff, "port 0x70 is write-only");
    rtc.write(0, 1, u64::from(reg::SECONDS));
    assert!(!rtc.nmi_masked());
    rtc.write(0, 2, 0x2100 | 0x80 | u64::from(reg::MINUTES)); // index, then data
    assert_eq!(get(&mut rtc, reg::MINUTES), 0x21);
}

#[test]
fn register_c_flags_and_irq8() {
    let (clock, mut rtc) = rtc_at(EPOCH);
    assert_eq!(get(&mut rtc, reg::C), 0);
    clock.advance(HZ);
    assert_eq!(get(&mut rtc, reg::C), C_UF | C_PF, "update ended, 1024 Hz ticks; no IRQF");
    put(&mut rtc, reg::A, 0x20); // no periodic rate
    assert_eq!(get(&mut rtc, reg::C), 0, "reading clears");
    put(&mut rtc, reg::B, B_24H | B_UIE);
    assert!(!rtc.irq8_pending());
    assert_eq!(rtc.next_irq8_deadline(), Some(START + 2 * HZ));
    clock.advance(HZ);
    assert!(rtc.irq8_pending());
    assert_eq!(rtc.next_irq8_deadline(), None, "already asserted");
    assert_eq!(get(&mut rtc, reg::C), C_IRQF | C_UF);
    assert!(!rtc.irq8_pending());
    put(&mut rtc, reg::C, 0xff);
    put(&mut rtc, reg::D, 0x00);
    assert_eq!((get(&mut rtc, reg::C), get(&mut rtc, reg::D)), (0, D_VRT), "read-only");
}

#[test]
fn alarm_and_periodic_flags() {
    let (clock, mut rtc) = rtc_at(EPOCH);
    put(&mut rtc, reg::A, 0x20);
    put(&mut rtc, reg::SECONDS_ALARM, 0x40);
    put(&mut rtc, reg::MINUTES_ALARM, 0xc0); // any minute
    put(&mut rtc, reg::HOURS_ALARM, 0x14);
    put(&mut rtc, reg::B, B_24H | B_AIE);
    clock.advance(6 * HZ);
    assert_eq!(get(&mut rtc, reg::C), C_UF, "14:09:39, no alarm yet");
    clock.advance(HZ);
    assert_eq!(get(&mut rtc, reg::C), C_IRQF | C_AF | C_UF, "14:09:40");
    clock.advance(3600 * HZ);
    assert_eq!(get(&mut rtc, reg::C), C_IRQF | C_AF | C_UF, "matched at 14:59:40 on the way");
    clock.advance(2 * 86_400 * HZ + 3600 * HZ);
    assert_eq!(get(&mut rtc, reg::C), C_IRQF | C_AF | C_UF, "a long gap still sees it");
    put(&mut rtc, reg::A, 0x26); // 1024 Hz
    put(&mut rtc, reg::B, B_24H | B_PIE);
    get(&mut rtc, reg::C);
    let period = HZ / 1024 + 1;
    let d = rtc.next_irq8_deadline().unwrap();
    assert!(d > clock.now() && d <= clock.now() + period);
    clock.advance(period);
    assert_eq!(get(&mut rtc, reg::C) & (C_IRQF | C_PF), C_IRQF | C_PF);
    put(&mut rtc, reg::A, 0x20);
    clock.advance(period);
    assert_eq!(get(&mut rtc, reg::C) & C_PF, 0, "rate 0: no periodic flag");
}

#[test]
fn cmos_ram_and_memory_sizes() {
    let (_, mut rtc) = rtc_at(EPOCH);
    assert_eq!([0x0f, 0x10, 0x14].map(|r| get(&mut rtc, r)), [0x00, 0x00, 0x02]);
    assert_eq!((get(&mut rtc, 0x15), get(&mut rtc, 0x16)), (0x80, 0x02), "640 KiB");
    rtc.set_memory_sizes(639, 15 * 1024, 512 * 1024);
    assert_eq!(
        [0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35].map(|r| get(&mut rtc, r)),
        [0x7f, 0x02, 0x00, 0x3c, 0x00, 0x3c, 0x00, 0x20]
    );
    let sum: u16 = (0x10..=0x2d).map(|r| u16::from(get(&mut rtc, r))).sum();
    assert_eq!(u16::from(get(&mut rtc, 0x2e)) << 8 | u16::from(get(&mut rtc, 0x2f)), sum);
    rtc.set_memory_sizes(u64::MAX, u64::MAX, u64::MAX);
    assert_eq!((get(&mut rtc, 0x17), get(&mut rtc, 0x18)), (0xff, 0xff), "saturates");
    put(&mut rtc, 0x7f, 0xa5);
    put(&mut rtc, 0x40, 0x5a);
    assert_eq!((get(&mut rtc, 0x7f), get(&mut rtc, 0x40)), (0xa5, 0x5a));
    put(&mut rtc, 0xc0, 0x11); // index bit 7 is the NMI mask: this is 0x40
    assert_eq!(get(&mut rtc, 0x40), 0x11);
}

#[test]
fn hostile_accesses_never_panic() {
    let clock = Rc::new(ManualClock::new(3));
    let mut rtc = Rtc::new(clock.clone(), u64::MAX, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..30_000u64 {
        let r = rnd();
        let size = [1, 2, 4, 8][(r & 3) as usize];
        let offset = (r >> 2) % 3;
        if round < 512 {
            rtc.write(0, 1, round / 2);
            rtc.write(1, 1, rnd());
        } else if r >> 10 & 1 == 0 {
            rtc.write(offset, size, rnd());
        } else {
            rtc.read(offset, size);
        }
        clock.advance(match (r >> 12) % 6 {
            0 => rnd() >> 8,
            1 => 0,
            _ => rnd() % 10,
        });
        rtc.irq8_pending();
        let _ = rtc.next_irq8_deadline();
    }
}

#[test]
fn any_offset_and_size_is_safe() {
    let (_, mut rtc) = rtc_at(EPOCH);
    for offset in [0, 1, 2, 3, 100, u64::MAX] {
        for size in [0, 1, 2, 3, 4, 8, 16, 255] {
            for v in [0, 0x0b, 0x8c, 0xff, u64::MAX] {
                rtc.write(offset, size, v);
                let r = rtc.read(offset, size);
                assert!(size >= 8 || r < 1 << (8 * size), "{offset} {size}");
            }
        }
    }
}
