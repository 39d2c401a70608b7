//! The kernel command line, parsed once at boot.
//!
//! Options are `key=value` words separated by spaces. Every word is accounted for: an unknown key
//! or a bad value is reported by name, never silently ignored.

use log::LevelFilter;

/// A deliberate fault to trigger after the banner (`fault=`), to test the exception path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `fault=pf`: read an unmapped address.
    PageFault,
    /// `fault=ud`: execute `ud2`.
    InvalidOpcode,
}

/// The faulting address used by `fault=pf`: canonical, never mapped.
pub const FAULT_ADDRESS: u64 = 0x0000_7fff_dead_0000;

/// Parsed options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub log_level: LevelFilter,
    pub fault: Option<Fault>,
    /// `bench=1`: run the native measurement loops before the partitions.
    pub bench: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { log_level: LevelFilter::Info, fault: None, bench: false }
    }
}

/// What was wrong with one word of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem<'a> {
    UnknownOption(&'a str),
    BadValue { key: &'a str, value: &'a str },
}

impl core::fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownOption(k) => write!(f, "unknown command-line option `{k}`"),
            Self::BadValue { key, value } => {
                write!(f, "bad value `{value}` for command-line option `{key}`")
            }
        }
    }
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    Some(match v {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Parses `line`, calling `report` for each word it cannot use.
pub fn parse<'a>(line: &'a str, mut report: impl FnMut(Problem<'a>)) -> Options {
    let mut o = Options::default();
    for word in line.split_ascii_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let ok = match key {
            "loglevel" => parse_level(value).map(|l| o.log_level = l).is_some(),
            "fault" => match value {
                "pf" => Some(Fault::PageFault),
                "ud" => Some(Fault::InvalidOpcode),
                _ => None,
            }
            .map(|f| o.fault = Some(f))
            .is_some(),
            "bench" => parse_bool(value).map(|b| o.bench = b).is_some(),
            _ => {
                report(Problem::UnknownOption(key));
                continue;
            }
        };
        if !ok {
            report(Problem::BadValue { key, value });
        }
    }
    o
}

/// Strips the image path that multiboot loaders put first on the command line.
pub fn strip_image_path(line: &str) -> &str {
    let line = line.trim_start();
    match line.split_once(char::is_whitespace) {
        Some((first, rest)) if !first.contains('=') => rest,
        None if !line.contains('=') => "",
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn parse_all(line: &str) -> (Options, Vec<Problem<'_>>) {
        let mut problems = Vec::new();
        let o = parse(line, |p| problems.push(p));
        (o, problems)
    }

    #[test]
    fn defaults_on_empty_line() {
        assert_eq!(parse_all("   "), (Options::default(), Vec::new()));
    }

    #[test]
    fn known_options() {
        let (o, p) = parse_all("loglevel=debug fault=pf bench=1");
        assert!(p.is_empty());
        assert_eq!(o.log_level, LevelFilter::Debug);
        assert_eq!(o.fault, Some(Fault::PageFault));
        assert!(o.bench);
    }

    #[test]
    fn unknown_and_bad_are_reported_by_name() {
        let (o, p) = parse_all("frobnicate=3 loglevel=loud quiet fault=ud");
        assert_eq!(
            p,
            [
                Problem::UnknownOption("frobnicate"),
                Problem::BadValue { key: "loglevel", value: "loud" },
                Problem::UnknownOption("quiet"),
            ]
        );
        assert_eq!(o.log_level, LevelFilter::Info);
        assert_eq!(o.fault, Some(Fault::InvalidOpcode));
    }

    #[test]
    fn image_path_is_stripped() {
        assert_eq!(strip_image_path("/boot/hv.elf loglevel=debug"), "loglevel=debug");
        assert_eq!(strip_image_path("target/hv-multiboot"), "");
        assert_eq!(strip_image_path("loglevel=debug"), "loglevel=debug");
        assert_eq!(strip_image_path(""), "");
    }
}
