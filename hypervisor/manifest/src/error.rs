//! Why a manifest was refused, in one short line.

use alloc::format;
use alloc::string::String;
use core::fmt;

/// Characters of a bad value an error message shows (escaped as Rust's `{:?}` does), so that a
/// 5 MB string makes a short line.
pub const SHOWN: usize = 64;

/// Longest message an error carries (the TOML parser's own ones are cut to it).
const MESSAGE_MAX: usize = 240;

/// Why a manifest was refused: `manifest line 7: partition "probe": field memory: ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based; 0 when the error is about the whole file.
    pub line: usize,
    /// `"name"` (quoted) or `#index` (1-based) of the partition concerned.
    pub partition: Option<String>,
    pub field: Option<&'static str>,
    pub message: String,
}

impl ManifestError {
    /// An error about the text itself, not one partition.
    pub fn syntax(line: usize, message: impl Into<String>) -> Self {
        Self { line, partition: None, field: None, message: message.into() }
    }

    /// The error as a tool that knows the file shows it: `scenarios/x.toml line 9: ...`.
    pub fn located<'a>(&'a self, file: &'a str) -> Located<'a> {
        Located { error: self, file }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, file: &str) -> fmt::Result {
        match self.line {
            0 => write!(f, "{file}: ")?,
            n => write!(f, "{file} line {n}: ")?,
        }
        if let Some(p) = &self.partition {
            write!(f, "partition {p}: ")?;
        }
        if let Some(field) = self.field {
            write!(f, "field {field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The hypervisor's form: `manifest line 7: partition "probe": field memory: ...`.
impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, "manifest")
    }
}

/// A [`ManifestError`] shown with its file's name in place of `manifest`.
#[derive(Clone, Copy, Debug)]
pub struct Located<'a> {
    error: &'a ManifestError,
    file: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.write(f, self.file)
    }
}

/// A value as an error message shows it: quoted and escaped, and past [`SHOWN`] characters cut
/// with `...` and its length (`"xxxx..." (5242880 bytes)`).
pub fn shorten(s: &str) -> String {
    let mut shown = 0;
    for (at, c) in s.char_indices() {
        shown += c.escape_debug().count();
        if shown > SHOWN {
            return format!("{:?}... ({} bytes)", &s[..at], s.len());
        }
    }
    format!("{s:?}")
}

/// A message from the TOML parser or serde, made safe to log: each quoted run (between
/// backticks or double quotes) cut past [`SHOWN`] bytes, control characters shown as `?`, the
/// whole cut past [`MESSAGE_MAX`] bytes.
pub(crate) fn tame(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message.trim_end();
    while let Some(open) = rest.find(['`', '"']) {
        let quote = &rest[open..=open];
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let Some(close) = rest.find(quote) else {
            break;
        };
        let inner = &rest[..close];
        if inner.len() > SHOWN {
            let mut cut = SHOWN;
            while !inner.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&format!("{}...{quote} ({} bytes)", &inner[..cut], inner.len()));
        } else {
            out.push_str(inner);
            out.push_str(quote);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    let mut tamed: String = out.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if tamed.len() > MESSAGE_MAX {
        let mut cut = MESSAGE_MAX;
        while !tamed.is_char_boundary(cut) {
            cut -= 1;
        }
        tamed.truncate(cut);
        tamed.push_str("...");
    }
    tamed
}
