//! The PASS/FAIL reporter: one line per check, exactly `PASS name` or `FAIL name: why`.

use core::fmt::{self, Write};

use crate::println;

/// Longest failure reason kept (clippy's `result_large_err` limit is 128 bytes).
const WHY_LEN: usize = 120;

/// A short failure reason, formatted without an allocator (longer text is cut).
#[derive(Clone, Copy)]
pub struct Why {
    buf: [u8; WHY_LEN],
    len: u8,
}

impl Why {
    /// Formats `args` (see the [`why!`](crate::why) macro).
    pub fn new(args: fmt::Arguments<'_>) -> Self {
        let mut w = Self { buf: [0; WHY_LEN], len: 0 };
        // Cut text is still a useful reason; `write_str` never fails.
        let _ = w.write_fmt(args);
        w
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // `write_str` cuts only at char boundaries, so the buffer is always UTF-8.
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl Write for Why {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let len = usize::from(self.len);
        let mut take = s.len().min(WHY_LEN - len);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[len..len + take].copy_from_slice(&s.as_bytes()[..take]);
        // At most WHY_LEN (< 256) in all.
        self.len = (len + take) as u8;
        Ok(())
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A [`Why`] from format arguments: `why!("got {:#x}", v)`.
#[macro_export]
macro_rules! why {
    ($($arg:tt)*) => { $crate::checks::Why::new(format_args!($($arg)*)) };
}

/// `Ok(())` when the condition holds, else `Err(why!(...))`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if $cond { Ok::<(), $crate::checks::Why>(()) } else { Err($crate::why!($($arg)*)) }
    };
}

/// What a check can be given: a `bool`, or a `Result` whose error says why.
pub trait Verdict {
    /// `Ok(())` for a pass, else the reason written after `FAIL name: `.
    fn verdict(self, f: &mut dyn FnMut(fmt::Arguments<'_>)) -> bool;
}

impl Verdict for bool {
    fn verdict(self, f: &mut dyn FnMut(fmt::Arguments<'_>)) -> bool {
        if !self {
            f(format_args!("condition is false"));
        }
        self
    }
}

impl<T, E: fmt::Display> Verdict for Result<T, E> {
    fn verdict(self, f: &mut dyn FnMut(fmt::Arguments<'_>)) -> bool {
        match self {
            Ok(_) => true,
            Err(e) => {
                f(format_args!("{e}"));
                false
            }
        }
    }
}

/// Counts checks and failures and prints each result.
#[derive(Debug, Default)]
pub struct Checks {
    total: u64,
    failed: u64,
}

impl Checks {
    /// No checks yet.
    pub const fn new() -> Self {
        Self { total: 0, failed: 0 }
    }

    /// Prints `PASS name` or `FAIL name: why`; returns whether it passed.
    pub fn check(&mut self, name: &str, verdict: impl Verdict) -> bool {
        self.total += 1;
        let passed = verdict.verdict(&mut |why| println!("FAIL {name}: {why}"));
        if passed {
            println!("PASS {name}");
        } else {
            self.failed += 1;
        }
        passed
    }

    /// A check that `got == want`, printing both in hex when it fails.
    pub fn check_eq<T: PartialEq + fmt::LowerHex>(&mut self, name: &str, got: T, want: T) -> bool {
        let ok = got == want;
        self.check(name, ensure!(ok, "got {got:#x}, want {want:#x}"))
    }

    /// Checks so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Failed checks so far.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Prints `<guest>: N checks, M failed` and returns M (the guest's shutdown status).
    pub fn summary(&self, guest: &str) -> u64 {
        println!("{guest}: {} checks, {} failed", self.total, self.failed);
        self.failed
    }
}
