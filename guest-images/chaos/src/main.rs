//! The chaos guest: random sensitive instructions, each inside [`guest_rt::expect_exception`],
//! so that every fault it takes is caught and counted and the guest runs on. It looks for a
//! hypervisor that panics, hangs, lets one partition disturb another, or stops this partition
//! for something the architecture allows.
//!
//! Command line: `seed=N` (default: from the RTC and the TSC), `ops=N` (default 20000),
//! `trace=N` (name every operation from the N-th on, before it runs), `strict=1` (also the
//! operations left out while a known hypervisor bug stands: see `control::cr`). It
//! prints `chaos: seed N, ops M` first, so any failure replays with `seed=N`, and ends with
//! `chaos: N operations, M faults caught, ...` and `PASS chaos` (shutdown status 0). What it
//! does and what it leaves out on purpose (the exclusion list): `docs/guests.md`, "The chaos
//! guest", and each module's documentation.
#![no_std]
#![no_main]

mod control;
mod cpu;
mod hcall;
mod io;
mod mmio;
mod msr;
mod remap;
mod rng;
mod timer;

use core::sync::atomic::{AtomicU64, Ordering};

use guest_rt::exception::{InterruptFrame, register_handler};
use guest_rt::{Exception, StartInfo, expect_exception, instr, println};

use rng::Rng;

guest_rt::entry!(main);

const DEFAULT_OPS: u64 = 20_000;
/// An operation that takes longer than this is named on the console (a hint where time goes).
const SLOW_OP_TICKS: u64 = 50_000_000;

/// What every operation gets: the generator, the partition's RAM size, the tallies.
pub struct Ctx {
    pub rng: Rng,
    pub ram_size: u64,
    /// Faults caught (exceptions raised inside an operation).
    pub faults: u64,
    /// Also the operations left out until known hypervisor bugs are fixed (`strict=1`); see
    /// each use.
    pub strict: bool,
    /// Tracing (`trace=`): operations may print what they are about to do.
    pub tracing: bool,
    /// Integrity failures: the hypervisor gave a result the architecture forbids. Each prints a
    /// `FAIL chaos-...` line (the first few) and makes the run fail.
    pub failures: u64,
}

impl Ctx {
    /// Runs `f` and counts the exception it raised, if any.
    pub fn catch<F: FnOnce()>(&mut self, f: F) -> Option<Exception> {
        let e = expect_exception(f);
        if e.is_some() {
            self.faults += 1;
        }
        e
    }

    /// Records an integrity failure: what went wrong, printed for the first few.
    pub fn fail(&mut self, what: core::fmt::Arguments<'_>) {
        self.failures += 1;
        if self.failures <= 8 {
            println!("FAIL chaos-integrity: {what}");
        }
    }
}

/// An operation and how often it is drawn (weight out of [`TOTAL_WEIGHT`]).
struct Op {
    name: &'static str,
    weight: u64,
    run: fn(&mut Ctx),
}

const OPS: [Op; 16] = [
    Op { name: "cpuid", weight: 10, run: cpu::cpuid },
    Op { name: "misc", weight: 4, run: cpu::misc },
    Op { name: "single-step", weight: 2, run: cpu::single_step },
    Op { name: "msr", weight: 18, run: msr::run },
    Op { name: "efer", weight: 2, run: msr::efer },
    Op { name: "cr", weight: 8, run: control::cr },
    Op { name: "dr", weight: 4, run: control::dr },
    Op { name: "xcr0", weight: 2, run: control::xcr0 },
    Op { name: "port", weight: 18, run: io::port },
    Op { name: "string-io", weight: 5, run: io::string },
    Op { name: "mmio", weight: 12, run: mmio::run },
    Op { name: "ram", weight: 2, run: mmio::ram },
    Op { name: "hypercall", weight: 8, run: hcall::run },
    Op { name: "timer", weight: 2, run: timer::run },
    Op { name: "remap-data", weight: 2, run: remap::data },
    Op { name: "remap-code", weight: 2, run: remap::code },
];

const TOTAL_WEIGHT: u64 = {
    let mut sum = 0;
    let mut i = 0;
    while i < OPS.len() {
        sum += OPS[i].weight;
        i += 1;
    }
    sum
};

/// Interrupts taken at vectors 32..=255 (timer hypercall, 8259 lines the guest unmasked).
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

fn on_interrupt(_frame: &mut InterruptFrame) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    // Non-specific EOI to both virtual 8259s, in case the vector came from one: an in-service
    // bit left set would block that line and all below it. Harmless when none is in service.
    // SAFETY: the partition's own virtual PIC pair (guest contract).
    unsafe {
        instr::outb(0xa0, 0x20);
        instr::outb(0x20, 0x20);
    }
}

fn main(info: &'static StartInfo) -> u64 {
    let cmdline = info.cmdline();
    let seed = option(cmdline, "seed").unwrap_or_else(clock_seed);
    let ops = option(cmdline, "ops").unwrap_or(DEFAULT_OPS);
    // `trace=N`: name each operation from the N-th on before it runs (to find the one that
    // stopped a run; slow, one console line per operation).
    let trace = option(cmdline, "trace").unwrap_or(u64::MAX);
    println!("chaos: seed {seed}, ops {ops}");
    for vector in 32..=255u8 {
        register_handler(vector, on_interrupt);
    }
    register_handler(1, control::on_debug);
    if let Err(e) = mmio::init().and_then(|()| remap::init()) {
        println!("FAIL chaos-setup: {e}");
        return 1;
    }
    let strict = option(cmdline, "strict").is_some_and(|v| v != 0);
    let mut ctx = Ctx {
        rng: Rng::new(seed),
        ram_size: info.ram_size,
        strict,
        tracing: false,
        faults: 0,
        failures: 0,
    };
    let mut drawn = [0u64; OPS.len()];
    let mut ticks = [0u64; OPS.len()];
    for n in 0..ops {
        let i = draw(ctx.rng.below(TOTAL_WEIGHT));
        drawn[i] += 1;
        ctx.tracing = n >= trace;
        if ctx.tracing {
            println!("chaos: op {n}: {}", OPS[i].name);
        }
        let start = instr::rdtsc();
        (OPS[i].run)(&mut ctx);
        let took = instr::rdtsc().wrapping_sub(start);
        ticks[i] += took;
        if took > SLOW_OP_TICKS {
            println!("chaos: op {n} ({}) took {took} TSC ticks", OPS[i].name);
        }
        if (n + 1) % 10_000 == 0 && n + 1 < ops {
            println!("chaos: {} operations, {} faults caught so far", n + 1, ctx.faults);
        }
    }
    instr::cli();
    control::restore_debug();
    // Two lines: the hypervisor's console cuts longer ones.
    for half in [0..OPS.len() / 2, OPS.len() / 2..OPS.len()] {
        let mut buf = [0u8; 200];
        println!("chaos: by kind: {}", tally(&mut buf, &OPS[half.clone()], &drawn[half.clone()]));
    }
    for half in [0..OPS.len() / 2, OPS.len() / 2..OPS.len()] {
        let mut avg = [0u64; OPS.len()];
        for i in half.clone() {
            avg[i] = ticks[i] / drawn[i].max(1);
        }
        let mut buf = [0u8; 200];
        println!("chaos: TSC ticks per op: {}", tally(&mut buf, &OPS[half.clone()], &avg[half]));
    }
    println!(
        "chaos: {ops} operations, {} faults caught, {} interrupts, {} integrity failures",
        ctx.faults,
        INTERRUPTS.load(Ordering::Relaxed),
        ctx.failures
    );
    if ctx.failures != 0 {
        println!("FAIL chaos: {} integrity failures (seed {seed})", ctx.failures);
        return 1;
    }
    println!("PASS chaos");
    0
}

/// The operation that `pick` (in `0..TOTAL_WEIGHT`) falls on.
fn draw(mut pick: u64) -> usize {
    for (i, op) in OPS.iter().enumerate() {
        if pick < op.weight {
            return i;
        }
        pick -= op.weight;
    }
    0
}

/// `name value, ...` for each operation, in `buf`.
fn tally<'a>(buf: &'a mut [u8], ops: &[Op], drawn: &[u64]) -> &'a str {
    struct W<'b>(&'b mut [u8], usize);
    impl core::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = (self.1 + s.len()).min(self.0.len());
            self.0[self.1..end].copy_from_slice(&s.as_bytes()[..end - self.1]);
            self.1 = end;
            Ok(())
        }
    }
    let mut w = W(buf, 0);
    for (i, (op, n)) in ops.iter().zip(drawn).enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!("{sep}{} {n}", op.name));
    }
    let len = w.1;
    core::str::from_utf8(&buf[..len]).unwrap_or("?")
}

/// The number after `name=` in the command line (decimal, or hex with `0x`).
fn option(cmdline: &str, name: &str) -> Option<u64> {
    cmdline.split_ascii_whitespace().find_map(|word| {
        let v = word.strip_prefix(name)?.strip_prefix('=')?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    })
}

/// A seed from the partition's RTC (seconds, minutes, hours) and the TSC, for runs without
/// `seed=`: different every run, printed so that it replays.
fn clock_seed() -> u64 {
    let mut rtc = 0u64;
    for reg in [0u8, 2, 4, 7, 8, 9] {
        // SAFETY: the partition's own virtual RTC/CMOS (index 0x70, data 0x71); reading a
        // time register changes nothing.
        let v = unsafe {
            instr::outb(0x70, reg);
            instr::inb(0x71)
        };
        rtc = rtc << 8 | u64::from(v);
    }
    let mut r = Rng::new(rtc ^ instr::rdtsc().rotate_left(32));
    r.next() >> 1
}
