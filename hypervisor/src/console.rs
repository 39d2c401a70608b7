//! The hypervisor's serial console on COM1, and the `log` facade on top of it.
//!
//! Lines are written with interrupts masked while the lock (a spin lock) is held, so an exception
//! handler that logs never deadlocks against the code it interrupted on this CPU; `println!`
//! and log records hold it for a whole line, so lines from different CPUs never mix. Before the UART is set up
//! (or if its self-test fails) output is dropped, never a hang.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

/// COM1's base port: the hypervisor keeps it for itself.
pub const COM1: u16 = 0x3f8;

static CONSOLE: Mutex<Option<Uart16550Tty<PioBackend>>> = Mutex::new(None);

/// TSC ticks without a received byte after which COM1's receiver counts as quiet once the UART
/// is set up, and the most ticks spent waiting for that (see [`settle_receiver`]). Under Bochs,
/// whose TSC counts instructions, the stray byte (at the crate's default trigger level of 14)
/// came about 20,000 ticks after the self-test.
const QUIET_TICKS: u64 = 100_000;
const SETTLE_TICKS_MAX: u64 = 1_000_000;
/// Bytes [`settle_receiver`] dropped.
static STRAY: AtomicU64 = AtomicU64::new(0);

/// Bytes COM1 received (and the hypervisor dropped) right after its self-test.
pub fn stray_bytes() -> u64 {
    STRAY.load(Ordering::Relaxed)
}

/// COM1's set-up: the crate's default (9600 8N1, FIFOs on) with the receive FIFO's trigger
/// level at one byte, so that a received byte shows in LSR.DR at once.
///
/// With a higher trigger level a byte below it waits for the FIFO's character timeout
/// (PC16550D datasheet, FCR bits 7:6 and "FIFO interrupt mode operation"), and Bochs 2.7's
/// model of that timeout misfires: its `serial.fifo` timer can fire after the FIFO was
/// drained and set DR with nothing in it, and a read of RBR then returns a stale byte (see
/// [`settle_receiver`] and `docs/testing.md`, "Bochs' stray '7'"). At level one Bochs never
/// arms that timer. A console loses nothing by it: the hypervisor polls, and the receive
/// interrupt only wakes an idle CPU, which now happens on the first byte, not a timeout later.
const CONFIG: Config = Config {
    fifo_trigger_level: Some(uart_16550::spec::registers::FifoTriggerLevel::One),
    ..Config::DEFAULT
};

/// Sets up COM1 ([`CONFIG`]). Returns false when the UART failed its loopback self-test.
pub fn init() -> bool {
    // SAFETY: COM1 belongs to the hypervisor for its whole life; nothing else drives it.
    let uart = unsafe { Uart16550Tty::new_port(COM1, CONFIG) };
    let ok = uart.is_ok();
    *CONSOLE.lock() = uart.ok();
    if ok {
        settle_receiver();
    }
    ok
}

/// Drops what COM1 receives until it has been quiet for [`QUIET_TICKS`].
///
/// The UART's loopback self-test (`uart_16550`'s `test_loopback`, whose 16-byte message ends
/// in "1337") left a byte behind under Bochs while the trigger level was the crate's 14: the
/// 15th and 16th looped-back bytes armed Bochs' FIFO character timeout, the test drained the
/// FIFO, and the timeout then set LSR.DR with the FIFO empty; RBR then reads Bochs' stale
/// `rx_fifo[0]`, which after the drain's left shifts is the message's last byte, 0x37 ('7').
/// Measured with a probe build polling right after the test: one '7' at poll 346 under Bochs,
/// none under QEMU; it reached the debug keys as `no debug key '7'`. [`CONFIG`]'s trigger level
/// of one byte keeps that timer from being armed; this wait stays as a guard for other UARTs
/// (nothing typed before the banner is meant for anyone, so dropping it loses nothing).
///
/// The wait is in TSC ticks, not polls: how long a poll takes is nobody's promise (a poll
/// through the UART crate and its lock took ten times the instructions of a bare LSR read, and
/// a count of bare reads then ended before Bochs' byte came). Each poll is one read of the line
/// status register (and of the receive buffer when it says data is ready): this runs before
/// anything else can use COM1.
fn settle_receiver() {
    use crate::arch::x86::instr::{inb, rdtsc};
    let start = rdtsc();
    let mut last = start;
    loop {
        let now = rdtsc();
        if now.wrapping_sub(last) >= QUIET_TICKS || now.wrapping_sub(start) >= SETTLE_TICKS_MAX {
            return;
        }
        // SAFETY: COM1 belongs to the hypervisor and nothing else runs yet; reading LSR (and
        // RBR when LSR.DR is set) only takes a received byte (PC16550D datasheet, LSR bit 0).
        if unsafe { inb(COM1 + 5) } & 1 != 0 {
            // SAFETY: as above: the byte is dropped.
            unsafe { inb(COM1) };
            STRAY.fetch_add(1, Ordering::Relaxed);
            last = now;
        }
    }
}

fn with_console<R>(f: impl FnOnce(&mut Uart16550Tty<PioBackend>) -> R) -> Option<R> {
    x86_64::instructions::interrupts::without_interrupts(|| CONSOLE.lock().as_mut().map(f))
}

/// Which partition's console line is open on COM1 (its id + 1; 0 = none): a partition's
/// partial line (a prompt, an echoed key) is shown at once, and more of the same line follows
/// it without a new prefix. Any other output ends the open line first.
static OPEN_LINE: AtomicU64 = AtomicU64::new(0);

fn close_open_line(c: &mut Uart16550Tty<PioBackend>) {
    if OPEN_LINE.swap(0, Ordering::Relaxed) != 0 {
        let _ = c.write_str("\n");
    }
}

/// Writes formatted text to COM1.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    with_console(|c| {
        close_open_line(c);
        let _ = c.write_fmt(args);
    });
}

/// Writes formatted text and a newline to COM1 as one line: the lock is held for the whole
/// line, so lines from different CPUs never mix.
pub fn write_line(args: fmt::Arguments<'_>) {
    with_console(|c| {
        close_open_line(c);
        let _ = c.write_fmt(args);
        let _ = c.write_str("\n");
    });
}

/// Writes raw text to COM1.
pub fn write_str(s: &str) {
    with_console(|c| {
        close_open_line(c);
        let _ = c.write_str(s);
    });
}

/// Writes part of partition `owner`'s console line: after `prefix` unless that partition's
/// line is the one open; `end` ends the line.
pub fn write_partition_line(owner: u64, prefix: &str, text: &str, end: bool) {
    with_console(|c| {
        if OPEN_LINE.load(Ordering::Relaxed) != owner + 1 {
            close_open_line(c);
            let _ = c.write_str(prefix);
        }
        let _ = c.write_str(text);
        if end {
            let _ = c.write_str("\n");
            OPEN_LINE.store(0, Ordering::Relaxed);
        } else {
            OPEN_LINE.store(owner + 1, Ordering::Relaxed);
        }
    });
}

/// COM1's IRQ line at the host's 8259.
pub const COM1_IRQ: u8 = 4;

/// Lets COM1 raise [`COM1_IRQ`] when a byte arrives, so that an idle CPU halted waiting for
/// work wakes on a key: IER bit 0 (received data available) and MCR OUT2, which gates the
/// UART's interrupt output onto the ISA line on PCs (PC16550D datasheet, IER and MCR).
pub fn enable_receive_interrupt() {
    with_console(|_| {
        // SAFETY: COM1 belongs to the hypervisor; the lock orders this after any writer.
        // IER = 1 only adds the receive interrupt; MCR keeps DTR/RTS (bits 0-1) and sets OUT2.
        unsafe {
            crate::arch::x86::instr::outb(COM1 + 1, 0x01);
            let mcr = crate::arch::x86::instr::inb(COM1 + 4);
            crate::arch::x86::instr::outb(COM1 + 4, mcr | 0x08);
        }
    });
}

/// TSC at the last byte [`read_byte`] took, for its debug log.
static LAST_RX_TSC: AtomicU64 = AtomicU64::new(0);

/// Takes one received byte, if any. At debug level each byte is logged with the TSC and the
/// ticks since the previous one (to set typed input against the xtask's `typed.log`).
pub fn read_byte() -> Option<u8> {
    let b = with_console(|c| c.inner_mut().try_receive_byte().ok()).flatten()?;
    if log::log_enabled!(log::Level::Debug) {
        let now = crate::arch::x86::instr::rdtsc();
        let since = now.wrapping_sub(LAST_RX_TSC.swap(now, Ordering::Relaxed));
        log::debug!("COM1 rx {b:#04x} at tsc {now} (+{since})");
    }
    Some(b)
}

/// Waits until COM1 has sent everything (the UART transmits synchronously, so this only
/// takes the lock to order it after any writer).
pub fn flush() {
    with_console(|_| ());
}

/// Forces the console lock free, for the exception path when the fault hit while it was held.
/// Another CPU may hold it for a line it is writing: that one gets a moment to finish first.
///
/// # Safety
/// Only for the fatal paths (exception, panic), which never return to the interrupted writer.
pub unsafe fn force_unlock() {
    for _ in 0..1_000_000 {
        if !CONSOLE.is_locked() {
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the caller is a fatal path; the holder (this CPU's interrupted writer, or a CPU
    // that stopped mid-line) has had its chance and the report must come out.
    unsafe { CONSOLE.force_unlock() };
}

/// `print!` onto the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// `println!` onto the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::write_str("\n") };
    ($($arg:tt)*) => { $crate::console::write_line(format_args!($($arg)*)) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            with_console(|c| {
                close_open_line(c);
                let cpu = crate::arch::x86::smp::cpu_index();
                let _ = writeln!(c, "[cpu{cpu} {:5}] {}", record.level(), record.args());
            });
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the logger at `level`.
pub fn init_log(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
