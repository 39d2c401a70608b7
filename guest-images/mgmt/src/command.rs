//! The shell's commands: one input line to a [`Command`], or a [`ParseError`] that says what
//! is wrong with it. Words are separated by spaces or tabs; `create` keeps the rest of its line,
//! spacing included, as the new partition's command line.

use core::fmt;

/// Memory of a partition `create` makes when the line names none (MiB).
pub const DEFAULT_MIB: u64 = 16;

/// One shell command, borrowing its words from the input line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A blank line.
    Empty,
    Help,
    List,
    Create {
        name: &'a str,
        image: &'a str,
        mib: u64,
        cmdline: &'a str,
        /// Host CPUs of its own (`IMAGE@1,2`), as a mask of CPU indices; 0: none.
        cpus: u64,
        /// Its vCPUs (`IMAGE*2`; the hypervisor checks the count, 1..=8).
        vcpus: u64,
    },
    Start(&'a str),
    Pause(&'a str),
    Resume(&'a str),
    Destroy(&'a str),
    Console(&'a str),
    Stats(&'a str),
    /// `chan NAME` creates a channel; `chan` alone prints the counters.
    Chan(Option<&'a str>),
    Shutdown(u64),
}

/// Every command with its arguments and what it does, for `help` and usage messages.
pub const COMMANDS: [(&str, &str, &str); 11] = [
    ("help", "", "this list"),
    ("list", "", "the partitions: id, name, state, memory, exit status"),
    (
        "create",
        "NAME IMAGE[+INITRD|+MODULE...][*VCPUS][@CPU,...] [MIB] [CMDLINE...]",
        "a partition from boot module IMAGE (ELF64, multiboot with its boot modules or a Linux bzImage with its initrd module; MIB default 16), with VCPUS vCPUs after * (1 to 8, default 1), on host CPUs of its own after @, stopped until `start`",
    ),
    ("start", "NAME", "runs a created partition"),
    ("pause", "NAME", "stops running a partition, keeping it"),
    ("resume", "NAME", "runs a paused partition again"),
    ("destroy", "NAME", "stops a partition and frees its memory"),
    ("console", "NAME", "what the partition wrote to its console since the last look"),
    ("stats", "NAME", "the partition's exit counts"),
    ("chan", "[NAME]", "a channel with NAME whose messages are echoed; alone: the counters"),
    ("shutdown", "[STATUS]", "ends this partition, and with it the run (status default 0)"),
];

/// The commands: (name, arguments, what it does).
pub fn commands() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    COMMANDS.iter().copied()
}

/// How command `name` is used: `start NAME`, `list`.
pub struct Usage(pub &'static str);

impl fmt::Display for Usage {
    /// Honours a width (`{:<40}`), padding on the right.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args = commands().find(|(n, _, _)| *n == self.0).map_or("", |(_, args, _)| args);
        f.write_str(self.0)?;
        let mut len = self.0.len();
        if !args.is_empty() {
            write!(f, " {args}")?;
            len += 1 + args.len();
        }
        for _ in len..f.width().unwrap_or(0) {
            f.write_str(" ")?;
        }
        Ok(())
    }
}

/// Why a line is not a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// The first word names no command.
    Unknown(&'a str),
    /// A required argument is missing.
    Missing { command: &'static str, what: &'static str },
    /// A word after the last argument.
    Extra { command: &'static str, word: &'a str },
    /// A word that must be a number is not one (or does not fit 64 bits).
    BadNumber { command: &'static str, what: &'static str, word: &'a str },
}

impl fmt::Display for ParseError<'_> {
    /// The text after `error: `: `<command>: <reason>`, or the unknown-command message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unknown(word) => write!(f, "unknown command `{word}` (help lists them)"),
            Self::Missing { command, what } => {
                write!(f, "{command}: missing {what} (usage: {})", Usage(command))
            }
            Self::Extra { command, word } => {
                write!(f, "{command}: unexpected `{word}` (usage: {})", Usage(command))
            }
            Self::BadNumber { command, what, word } => {
                write!(f, "{command}: {what} `{word}` is not a number")
            }
        }
    }
}

/// Splits a line into words, keeping what is left after each.
struct Words<'a> {
    rest: &'a str,
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest.trim_start_matches(is_space);
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let end = s.find(is_space).unwrap_or(s.len());
        let (word, rest) = s.split_at(end);
        self.rest = rest;
        Some(word)
    }

    /// The rest of the line without its leading and trailing blanks.
    fn rest(&self) -> &'a str {
        self.rest.trim_matches(is_space)
    }
}

/// A decimal or `0x` hexadecimal number.
pub fn number(word: &str) -> Option<u64> {
    match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) => word.parse().ok(),
        None => None,
    }
}

/// Parses one input line.
pub fn parse(line: &str) -> Result<Command<'_>, ParseError<'_>> {
    let mut words = Words { rest: line };
    let Some(first) = words.next() else { return Ok(Command::Empty) };
    // The command's name as a 'static str, for the error messages.
    let Some(command) = commands().map(|(n, _, _)| n).find(|n| *n == first) else {
        return Err(ParseError::Unknown(first));
    };
    let mut required =
        |what: &'static str| words.next().ok_or(ParseError::Missing { command, what });
    let cmd = match command {
        "help" => Command::Help,
        "list" => Command::List,
        "create" => {
            let name = required("NAME")?;
            let word = required("IMAGE")?;
            let (image, cpus) = match word.split_once('@') {
                Some((image, list)) => (image, cpu_mask(list, command)?),
                None => (word, 0),
            };
            // `*N` after the image (and its modules) and before `@`: the vCPU count.
            let (image, vcpus) = match image.rsplit_once('*') {
                Some((image, n)) => (
                    image,
                    number(n).ok_or(ParseError::BadNumber { command, what: "VCPUS", word: n })?,
                ),
                None => (image, 1),
            };
            // A third word that starts with a digit is the memory size; anything else begins
            // the command line.
            let save = words.rest;
            let mib = match words.next() {
                Some(w) if w.starts_with(|c: char| c.is_ascii_digit()) => {
                    number(w).ok_or(ParseError::BadNumber { command, what: "MIB", word: w })?
                }
                _ => {
                    words.rest = save;
                    DEFAULT_MIB
                }
            };
            return Ok(Command::Create { name, image, mib, cmdline: words.rest(), cpus, vcpus });
        }
        "start" => Command::Start(required("NAME")?),
        "pause" => Command::Pause(required("NAME")?),
        "resume" => Command::Resume(required("NAME")?),
        "destroy" => Command::Destroy(required("NAME")?),
        "console" => Command::Console(required("NAME")?),
        "stats" => Command::Stats(required("NAME")?),
        "chan" => Command::Chan(words.next()),
        "shutdown" => match words.next() {
            None => Command::Shutdown(0),
            Some(w) => Command::Shutdown(number(w).ok_or(ParseError::BadNumber {
                command,
                what: "STATUS",
                word: w,
            })?),
        },
        _ => return Err(ParseError::Unknown(first)),
    };
    match words.next() {
        Some(word) => Err(ParseError::Extra { command, word }),
        None => Ok(cmd),
    }
}

/// `1,3`: a mask of host CPU indices (each below 64; the hypervisor checks the rest).
fn cpu_mask<'a>(list: &'a str, command: &'static str) -> Result<u64, ParseError<'a>> {
    let mut mask = 0u64;
    for w in list.split(',') {
        match number(w) {
            Some(i) if i < 64 => mask |= 1 << i,
            _ => return Err(ParseError::BadNumber { command, what: "CPU", word: w }),
        }
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn simple_commands() {
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse("  \t "), Ok(Command::Empty));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse(" list "), Ok(Command::List));
        assert_eq!(parse("start g1"), Ok(Command::Start("g1")));
        assert_eq!(parse("pause\tg1"), Ok(Command::Pause("g1")));
        assert_eq!(parse("resume g1"), Ok(Command::Resume("g1")));
        assert_eq!(parse("destroy g1"), Ok(Command::Destroy("g1")));
        assert_eq!(parse("console probe"), Ok(Command::Console("probe")));
        assert_eq!(parse("stats probe"), Ok(Command::Stats("probe")));
        assert_eq!(parse("chan"), Ok(Command::Chan(None)));
        assert_eq!(parse("chan chan"), Ok(Command::Chan(Some("chan"))));
        assert_eq!(parse("shutdown"), Ok(Command::Shutdown(0)));
        assert_eq!(parse("shutdown 3"), Ok(Command::Shutdown(3)));
        assert_eq!(parse("shutdown 0x10"), Ok(Command::Shutdown(16)));
    }

    #[test]
    fn create_takes_optional_memory_and_the_rest_as_cmdline() {
        let create = |name, image, mib, cmdline| {
            Ok(Command::Create { name, image, mib, cmdline, cpus: 0, vcpus: 1 })
        };
        assert_eq!(parse("create g1 probe"), create("g1", "probe", 16, ""));
        assert_eq!(parse("create g1 probe 32"), create("g1", "probe", 32, ""));
        assert_eq!(
            parse("create g1 attack 4 mode=oob-read  extra=1 "),
            create("g1", "attack", 4, "mode=oob-read  extra=1")
        );
        assert_eq!(parse("create g1 chan bench=1"), create("g1", "chan", 16, "bench=1"));
        assert_eq!(
            parse("create g1 probe 1O"),
            Err(ParseError::BadNumber { command: "create", what: "MIB", word: "1O" })
        );
        assert_eq!(
            parse("create g1"),
            Err(ParseError::Missing { command: "create", what: "IMAGE" })
        );
        assert_eq!(
            parse("create").unwrap_err().to_string(),
            "create: missing NAME (usage: create NAME IMAGE[+INITRD|+MODULE...][*VCPUS][@CPU,...] [MIB] [CMDLINE...])"
        );
    }

    #[test]
    fn create_takes_host_cpus_after_the_image() {
        let with = |cpus| {
            Ok(Command::Create { name: "g1", image: "probe", mib: 32, cmdline: "", cpus, vcpus: 1 })
        };
        assert_eq!(parse("create g1 probe@1 32"), with(0b10));
        assert_eq!(parse("create g1 probe@1,3 32"), with(0b1010));
        assert_eq!(parse("create g1 probe@0x3f 32"), with(1 << 63));
        assert_eq!(
            parse("create g1 probe@64"),
            Err(ParseError::BadNumber { command: "create", what: "CPU", word: "64" })
        );
        assert_eq!(
            parse("create g1 probe@"),
            Err(ParseError::BadNumber { command: "create", what: "CPU", word: "" })
        );
        assert_eq!(
            parse("create g1 probe@1,x").unwrap_err().to_string(),
            "create: CPU `x` is not a number"
        );
    }

    #[test]
    fn create_takes_a_vcpu_count_after_a_star() {
        let with = |image, vcpus, cpus| {
            Ok(Command::Create { name: "g1", image, mib: 16, cmdline: "vcpus=2", cpus, vcpus })
        };
        assert_eq!(parse("create g1 probe*2 vcpus=2"), with("probe", 2, 0));
        assert_eq!(parse("create g1 probe*2@1,2 vcpus=2"), with("probe", 2, 0b110));
        assert_eq!(parse("create g1 mb32+module.txt*3 vcpus=2"), with("mb32+module.txt", 3, 0));
        // The count is the hypervisor's to refuse (it says why): 0 and 9 parse.
        assert_eq!(parse("create g1 probe*0 vcpus=2"), with("probe", 0, 0));
        assert_eq!(parse("create g1 probe*9 vcpus=2"), with("probe", 9, 0));
        assert_eq!(
            parse("create g1 probe* 16"),
            Err(ParseError::BadNumber { command: "create", what: "VCPUS", word: "" })
        );
        assert_eq!(
            parse("create g1 probe*two").unwrap_err().to_string(),
            "create: VCPUS `two` is not a number"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(parse("frobnicate x"), Err(ParseError::Unknown("frobnicate")));
        assert_eq!(parse("x").unwrap_err().to_string(), "unknown command `x` (help lists them)");
        assert_eq!(
            parse("start").unwrap_err().to_string(),
            "start: missing NAME (usage: start NAME)"
        );
        assert_eq!(
            parse("start a b").unwrap_err().to_string(),
            "start: unexpected `b` (usage: start NAME)"
        );
        assert_eq!(
            parse("list all").unwrap_err().to_string(),
            "list: unexpected `all` (usage: list)"
        );
        assert_eq!(
            parse("shutdown x1").unwrap_err().to_string(),
            "shutdown: STATUS `x1` is not a number"
        );
        assert_eq!(
            parse("shutdown 99999999999999999999999").unwrap_err().to_string(),
            "shutdown: STATUS `99999999999999999999999` is not a number"
        );
        // Command names are exact: no prefixes, no case folding.
        assert_eq!(parse("LIST"), Err(ParseError::Unknown("LIST")));
        assert_eq!(parse("lis"), Err(ParseError::Unknown("lis")));
    }

    #[test]
    fn usage_lines() {
        assert_eq!(std::format!("{}", Usage("list")), "list");
        assert_eq!(std::format!("{}", Usage("start")), "start NAME");
        assert_eq!(std::format!("[{:<12}]", Usage("start")), "[start NAME  ]");
        assert_eq!(std::format!("[{:<3}]", Usage("start")), "[start NAME]");
    }

    #[test]
    fn numbers() {
        assert_eq!(number("0"), Some(0));
        assert_eq!(number("18446744073709551615"), Some(u64::MAX));
        assert_eq!(number("18446744073709551616"), None);
        assert_eq!(number("0xff"), Some(255));
        assert_eq!(number("0x"), None);
        assert_eq!(number("-1"), None);
        assert_eq!(number("+1"), None);
        assert_eq!(number(""), None);
        assert_eq!(number("0xfg"), None);
    }

    #[test]
    fn every_listed_command_parses() {
        for (name, args, _) in commands() {
            let line = std::format!("{name} {}", if args.is_empty() { "" } else { "x y" });
            let r = parse(&line);
            assert!(!matches!(r, Err(ParseError::Unknown(_))), "{line}: {r:?}");
        }
    }
}
