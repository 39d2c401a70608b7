//! The console: the partition's virtual 16550 UART at COM1 (`0x3f8`).

use core::fmt::{self, Write};

use crate::instr::{inb, outb};

/// COM1 base port.
pub const COM1: u16 = 0x3f8;
/// Line control register.
pub const LCR: u16 = COM1 + 3;
/// Line status register.
pub const LSR: u16 = COM1 + 5;
/// Scratch register.
pub const SCR: u16 = COM1 + 7;
/// LSR: data ready (a received byte waits in RBR).
pub const LSR_DR: u8 = 1 << 0;
/// LSR: transmit holding register empty.
pub const LSR_THRE: u8 = 1 << 5;
/// LSR: transmitter empty.
pub const LSR_TEMT: u8 = 1 << 6;

/// How many LSR polls before a byte is sent anyway (a model that never sets THRE must not hang
/// the guest; its output is then the model's problem).
const THRE_POLLS: u32 = 100_000;

/// 8 data bits, no parity, one stop bit, interrupts off.
pub fn init() {
    // SAFETY: COM1 is the partition's own virtual UART (guest contract).
    unsafe {
        outb(COM1 + 1, 0x00);
        outb(LCR, 0x03);
    }
}

/// Sends one byte, waiting for THRE first.
pub fn put_byte(b: u8) {
    // SAFETY: COM1 is the partition's own virtual UART (guest contract).
    unsafe {
        for _ in 0..THRE_POLLS {
            if inb(LSR) & LSR_THRE != 0 {
                break;
            }
        }
        outb(COM1, b);
    }
}

/// The next received byte, if one is waiting (LSR.DR set; RBR at `COM1` with LCR.DLAB clear,
/// which [`init`] leaves it). Never blocks: poll it, yielding in between. An LSR of `0xff`
/// (no UART answering) counts as nothing received.
pub fn read_byte() -> Option<u8> {
    // SAFETY: COM1 is the partition's own virtual UART (guest contract); reading LSR and RBR
    // only consumes the received byte.
    unsafe {
        let lsr = inb(LSR);
        (lsr != 0xff && lsr & LSR_DR != 0).then(|| inb(COM1))
    }
}

/// The console as a `fmt::Write` sink.
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(put_byte);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Console::write_str never fails.
    let _ = Console.write_fmt(args);
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
