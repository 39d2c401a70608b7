//! COM1, a 16550 UART at 0x3f8, polled (PC16550D datasheet, "Registers"), and `println!`.

use crate::cpu::{inb, outb};
use core::fmt;

const COM1: u16 = 0x3f8;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

/// 115200 8N1, FIFOs on, UART interrupts off.
pub fn init() {
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xc7);
    outb(COM1 + 4, 0x0b);
}

fn put(b: u8) {
    let mut budget = 1_000_000u32;
    while inb(COM1 + 5) & LSR_THRE == 0 && budget > 0 {
        budget -= 1;
    }
    outb(COM1, b);
}

/// Waits until everything written has left the UART (bounded).
pub fn drain() {
    let mut budget = 1_000_000u32;
    while inb(COM1 + 5) & LSR_TEMT == 0 && budget > 0 {
        budget -= 1;
    }
}

pub struct Com1;

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            put(b);
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Com1, $($arg)*);
    }};
}
