//! PASS/FAIL lines: each check prints `PASS name` or `FAIL name: why` and is counted; the
//! summary is `barepc: N checks, M failed`.

use core::fmt;

/// A reason, formatted without an allocator (cut at 120 bytes: clippy's `result_large_err`
/// limit is 128).
pub struct Why {
    buf: [u8; 120],
    len: u8,
}

impl Why {
    pub fn new(args: fmt::Arguments<'_>) -> Self {
        let mut w = Why { buf: [0; 120], len: 0 };
        let _ = fmt::write(&mut w, args);
        w
    }
}

impl fmt::Write for Why {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if usize::from(self.len) < self.buf.len() {
                self.buf[usize::from(self.len)] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("(not UTF-8)"),
        )
    }
}

impl From<&str> for Why {
    fn from(s: &str) -> Self {
        Why::new(format_args!("{s}"))
    }
}

impl From<crate::idt::Fault> for Why {
    fn from(f: crate::idt::Fault) -> Self {
        Why::new(format_args!("exception {} (error {:#x}) at RIP {:#x}", f.vector, f.error, f.rip))
    }
}

/// `Err(Why)` from a format string.
#[macro_export]
macro_rules! why {
    ($($arg:tt)*) => { $crate::checks::Why::new(format_args!($($arg)*)) };
}

/// `Ok(())` when `cond` holds, else `Err(why!(...))`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if $cond { Ok(()) } else { Err($crate::why!($($arg)*)) }
    };
}

#[derive(Default)]
pub struct Checks {
    pub run: u32,
    pub failed: u32,
}

impl Checks {
    pub fn check(&mut self, name: &str, verdict: Result<(), Why>) {
        self.run += 1;
        match verdict {
            Ok(()) => crate::println!("PASS {name}"),
            Err(why) => {
                self.failed += 1;
                crate::println!("FAIL {name}: {why}");
            }
        }
    }
}
