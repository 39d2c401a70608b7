//! The partition manifest: what runs, written by a person in a small subset of TOML and
//! checked here before anything starts (format and example: `docs/guests.md`).
//!
//! ```toml
//! name = "attack"            # optional: the scenario's name
//! [[partition]]
//! name = "probe"             # required, unique, 1..=31 of [a-z0-9_-]
//! image = "probe"            # required: the boot module holding the image
//! memory = 16                # MiB
//! ```
//!
//! The subset: `#` comments, `[[partition]]` tables, `key = value` with bare keys, values that
//! are strings (`"basic"` with escapes, `'literal'`), integers (decimal, `0x`/`0o`/`0b`, `_`
//! between digits), `true`/`false`, and arrays of strings (which may span lines). Anything else
//! is refused with the line it is on; so are unknown keys. No input makes the parser panic, and
//! it does not recurse.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Longest partition name (the start-info page holds 32 bytes).
pub const NAME_MAX: usize = 31;
/// Longest image name (a boot-pack entry name holds 47 bytes and a NUL).
pub const IMAGE_MAX: usize = hvabi::pack::NAME_LEN - 1;
/// Longest command line (the start-info page holds 256 bytes).
pub const CMDLINE_MAX: usize = 255;
/// Longest `cmdline` for a Linux partition (the kernel's own limit, `cmdline_size` in its
/// setup header, is checked when the image is loaded; x86 kernels take 2047).
pub const LINUX_CMDLINE_MAX: usize = 2047;
/// Longest device name.
pub const DEVICE_MAX: usize = 63;
/// Guest RAM bounds and default, in MiB.
pub const MEMORY_MIN_MIB: u64 = 2;
pub const MEMORY_MAX_MIB: u64 = 1024;
pub const MEMORY_DEFAULT_MIB: u64 = 16;
/// Most partitions in one manifest.
pub const MAX_PARTITIONS: usize = 64;
/// Bounds of `timeslice_us`.
pub const TIMESLICE_MIN_US: u64 = 10;
pub const TIMESLICE_MAX_US: u64 = 1_000_000;

/// A whole manifest, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The scenario's name (top-level `name`).
    pub name: Option<String>,
    /// The scheduler's time slice (top-level `timeslice_us`).
    pub timeslice_us: Option<u64>,
    /// At least one, in the order written.
    pub partitions: Vec<PartitionSpec>,
}

impl Manifest {
    /// The management partition, if the manifest has one.
    pub fn management(&self) -> Option<&PartitionSpec> {
        self.partitions.iter().find(|p| p.role == Role::Management)
    }
}

/// One `[[partition]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    pub name: String,
    pub role: Role,
    /// The boot module holding the image.
    pub image: String,
    pub format: ImageFormat,
    /// The boot module holding the initial RAM disk (`format = "linux"` only).
    pub initrd: Option<String>,
    /// Guest RAM in MiB (even, `MEMORY_MIN_MIB..=MEMORY_MAX_MIB`). 0 for a management
    /// partition without `memory`: all the host RAM the others do not use.
    pub memory_mib: u64,
    pub vcpus: u32,
    pub cmdline: String,
    /// Physical devices handed over (management partition only).
    pub devices: Vec<String>,
    pub on_stop: OnStop,
    pub expect: Expect,
    /// Line of the `[[partition]]` header, for later messages.
    pub line: usize,
}

impl PartitionSpec {
    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

/// Defines a field's enum with its manifest spellings.
macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant,)+ }

        impl $name {
            /// The spellings, for messages.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The manifest spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }

            fn from_text(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

keyword_enum!(
    /// `role`: at most one management partition.
    Role { Management = "management", Guest = "guest", }
);
keyword_enum!(
    /// `format`: how the image is loaded.
    ImageFormat {
        Elf64 = "elf64",
        Multiboot = "multiboot",
        /// A Linux bzImage, entered by the x86 boot protocol.
        Linux = "linux",
    }
);
keyword_enum!(
    /// `on_stop`: what happens when the partition stops.
    OnStop { Destroy = "destroy", Restart = "restart", PowerOff = "poweroff", }
);
keyword_enum!(
    /// `expect`: how the partition must end for the run to count as a success.
    Expect {
        /// Shutdown hypercall with status 0.
        Exit = "exit",
        /// Stopped by the hypervisor for a violation.
        Fault = "fault",
        /// Powered off: ACPI soft-off, or HLT with interrupts off and nothing to wake it (how a kernel
        /// without ACPI powers off).
        Halt = "halt",
    }
);

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

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "manifest: ")?,
            n => write!(f, "manifest line {n}: ")?,
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

fn syntax(line: usize, message: impl Into<String>) -> ManifestError {
    ManifestError { line, partition: None, field: None, message: message.into() }
}

/// Parses and validates a manifest that arrived as bytes (a boot module).
pub fn parse_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    match core::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
            Err(syntax(line, "not UTF-8 text"))
        }
    }
}

/// Parses and validates a manifest.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let mut lexer = Lexer { src: text.as_bytes(), pos: 0, line: 1 };
    let mut builder = Builder::default();
    while let Some(item) = lexer.next_item()? {
        match item {
            Item::Table(line) => builder.open_table(line)?,
            Item::Entry(entry) => builder.add(entry)?,
        }
    }
    builder.finish()
}

// ---------------------------------------------------------------------------------------------
// Lexing: the TOML subset into headers and key/value entries.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Str(String),
    Int(u64),
    Bool(bool),
    Array(Vec<String>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Self::Str(_) => "a string",
            Self::Int(_) => "an integer",
            Self::Bool(_) => "a boolean",
            Self::Array(_) => "an array",
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    key: String,
    value: Value,
    line: usize,
}

enum Item {
    /// A `[[partition]]` header on this line.
    Table(usize),
    Entry(Entry),
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
}

fn is_bare_key(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ManifestError> {
        Err(syntax(self.line, message))
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// A comment runs to the end of the line; control characters other than tab are refused.
    fn skip_comment(&mut self) -> Result<(), ManifestError> {
        while let Some(b) = self.peek() {
            match b {
                b'\n' | b'\r' => break,
                b'\t' => {}
                0..=0x1f | 0x7f => return self.err("control character in a comment"),
                _ => {}
            }
            self.pos += 1;
        }
        Ok(())
    }

    /// Consumes a line ending (LF or CRLF) if one is next; false at the end of the input.
    fn newline(&mut self) -> Result<bool, ManifestError> {
        match self.peek() {
            Some(b'\n') => {}
            Some(b'\r') if self.src.get(self.pos + 1) == Some(&b'\n') => self.pos += 1,
            Some(b'\r') => return self.err("carriage return without a line feed"),
            _ => return Ok(false),
        }
        self.pos += 1;
        self.line += 1;
        Ok(true)
    }

    /// After a header or entry: blanks, an optional comment, then the end of the line.
    fn end_of_line(&mut self) -> Result<(), ManifestError> {
        self.skip_blanks();
        if self.peek() == Some(b'#') {
            self.skip_comment()?;
        }
        if self.pos < self.src.len() && !self.newline()? {
            let what = self.describe_next();
            return self.err(format!("expected the end of the line, found {what}"));
        }
        Ok(())
    }

    fn describe_next(&self) -> String {
        let rest = &self.src[self.pos..];
        match core::str::from_utf8(rest).ok().and_then(|s| s.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => match rest.first() {
                Some(b) => format!("byte {b:#04x}"),
                None => "the end of the file".to_string(),
            },
        }
    }

    fn next_item(&mut self) -> Result<Option<Item>, ManifestError> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(None),
                Some(b'\n' | b'\r') => {
                    self.newline()?;
                }
                Some(b'#') => self.skip_comment()?,
                Some(b'[') => return self.header().map(Some),
                Some(b) if is_bare_key(b) => return self.entry().map(|e| Some(Item::Entry(e))),
                Some(b'"' | b'\'') => return self.err("quoted keys are not supported"),
                Some(_) => {
                    let what = self.describe_next();
                    return self.err(format!(
                        "expected a key, a [[partition]] header or a comment, found {what}"
                    ));
                }
            }
        }
    }

    fn bare_key(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_bare_key) {
            self.pos += 1;
        }
        // Bare-key bytes are ASCII, so the slice is UTF-8.
        core::str::from_utf8(&self.src[start..self.pos]).unwrap_or("")
    }

    fn header(&mut self) -> Result<Item, ManifestError> {
        let line = self.line;
        self.pos += 1;
        let array = self.peek() == Some(b'[');
        if array {
            self.pos += 1;
        }
        self.skip_blanks();
        let name = self.bare_key().to_string();
        self.skip_blanks();
        let close: &[u8] = if array { b"]]" } else { b"]" };
        if !self.src[self.pos..].starts_with(close) {
            return self.err("malformed table header (want [[partition]])");
        }
        self.pos += close.len();
        if !array || name != "partition" {
            let shown = if array { format!("[[{name}]]") } else { format!("[{name}]") };
            return self.err(format!("unknown table {shown}: only [[partition]] tables exist"));
        }
        self.end_of_line()?;
        Ok(Item::Table(line))
    }

    fn entry(&mut self) -> Result<Entry, ManifestError> {
        let line = self.line;
        let key = self.bare_key().to_string();
        self.skip_blanks();
        match self.peek() {
            Some(b'=') => self.pos += 1,
            Some(b'.') => {
                return self
                    .err(format!("dotted keys are not supported ({}.…)", shorten_word(&key)));
            }
            _ => return self.err(format!("expected = after the key {}", shorten_word(&key))),
        }
        self.skip_blanks();
        let value = self.value()?;
        self.end_of_line()?;
        Ok(Entry { key, value, line })
    }

    fn value(&mut self) -> Result<Value, ManifestError> {
        match self.peek() {
            Some(b'"' | b'\'') => self.string().map(Value::Str),
            Some(b'[') => self.array().map(Value::Array),
            Some(b'0'..=b'9' | b'+' | b'-') => self.integer().map(Value::Int),
            Some(b) if b.is_ascii_alphabetic() => {
                let word = self.word();
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "inf" | "nan" => self.err("floats are not supported"),
                    _ => self.err(format!(
                        "invalid value {} (strings need quotes)",
                        shorten_word(&word)
                    )),
                }
            }
            None | Some(b'\n' | b'\r' | b'#') => self.err("missing value after ="),
            Some(_) => {
                let what = self.describe_next();
                self.err(format!("expected a value, found {what}"))
            }
        }
    }

    /// A run of characters that may belong to a number or keyword.
    fn word(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.' | b':')
        }) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    fn integer(&mut self) -> Result<u64, ManifestError> {
        let word = self.word();
        let bad =
            |why: &str| syntax(self.line, format!("invalid number {}: {why}", shorten_word(&word)));
        let unsigned = match word.as_bytes().first() {
            Some(b'-') => return Err(bad("negative numbers are not allowed")),
            Some(b'+') => &word[1..],
            _ => word.as_str(),
        };
        let (digits, radix) = match unsigned.get(..2) {
            Some("0x") => (&unsigned[2..], 16),
            Some("0o") => (&unsigned[2..], 8),
            Some("0b") => (&unsigned[2..], 2),
            _ => (unsigned, 10),
        };
        if radix == 10 && digits.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            return Err(bad("floats are not supported"));
        }
        if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
            return Err(bad("leading zeros are not allowed"));
        }
        if digits.is_empty()
            || digits.starts_with('_')
            || digits.ends_with('_')
            || digits.contains("__")
        {
            return Err(bad("underscores go between digits"));
        }
        let mut n: u64 = 0;
        for c in digits.chars().filter(|&c| c != '_') {
            let d = c.to_digit(radix).ok_or_else(|| bad("not a digit"))?;
            n = n
                .checked_mul(u64::from(radix))
                .and_then(|n| n.checked_add(u64::from(d)))
                .ok_or_else(|| bad("too large"))?;
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, ManifestError> {
        let quote = self.src[self.pos];
        if self.src[self.pos..].starts_with(if quote == b'"' { b"\"\"\"" } else { b"'''" }) {
            return self.err("multi-line strings are not supported");
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return self.err("unterminated string");
            };
            self.pos += 1;
            match b {
                b'\n' | b'\r' => {
                    return self.err("unterminated string (strings end on their line)");
                }
                _ if b == quote => break,
                b'\\' if quote == b'"' => self.escape(&mut out)?,
                b'\t' => out.push(b),
                0..=0x1f | 0x7f => {
                    return self.err("control character in a string (use an escape)");
                }
                _ => out.push(b),
            }
        }
        // The input is UTF-8 and escapes add whole characters.
        String::from_utf8(out).or_else(|_| self.err("string is not UTF-8"))
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ManifestError> {
        let Some(b) = self.peek() else {
            return self.err("unterminated string");
        };
        self.pos += 1;
        let simple = match b {
            b'b' => Some(0x08),
            b't' => Some(b'\t'),
            b'n' => Some(b'\n'),
            b'f' => Some(0x0c),
            b'r' => Some(b'\r'),
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            return Ok(());
        }
        let len = match b {
            b'u' => 4,
            b'U' => 8,
            _ => {
                return self.err(format!("invalid escape \\{}", char::from(b).escape_default()));
            }
        };
        let hex = self.src.get(self.pos..self.pos + len).unwrap_or(&[]);
        let code = core::str::from_utf8(hex)
            .ok()
            .filter(|h| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32);
        let Some(c) = code else {
            return self.err("invalid unicode escape");
        };
        self.pos += len;
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// Blanks, line breaks and comments inside an array.
    fn skip_array_space(&mut self) -> Result<(), ManifestError> {
        loop {
            self.skip_blanks();
            match self.peek() {
                Some(b'#') => self.skip_comment()?,
                Some(b'\n' | b'\r') => {
                    self.newline()?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn array(&mut self) -> Result<Vec<String>, ManifestError> {
        let open_line = self.line;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_array_space()?;
            match self.peek() {
                None => return Err(syntax(open_line, "unterminated array")),
                Some(b']') => break,
                Some(b'"' | b'\'') => items.push(self.string()?),
                Some(_) => return self.err("arrays may hold only strings"),
            }
            self.skip_array_space()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => break,
                None => return Err(syntax(open_line, "unterminated array")),
                Some(_) => {
                    let what = self.describe_next();
                    return self.err(format!("expected , or ] in an array, found {what}"));
                }
            }
        }
        self.pos += 1;
        Ok(items)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: entries into a Manifest.

const TOP_KEYS: &[&str] = &["name", "timeslice_us"];
const PARTITION_KEYS: &[&str] = &[
    "name", "role", "image", "format", "initrd", "memory", "vcpus", "cmdline", "devices",
    "on_stop", "expect",
];

#[derive(Default)]
struct Builder {
    top: Vec<Entry>,
    /// The validated top-level keys, once the first table has ended that section.
    top_done: Option<(Option<String>, Option<u64>)>,
    /// The table being read: its header line and entries.
    table: Option<(usize, Vec<Entry>)>,
    partitions: Vec<PartitionSpec>,
}

impl Builder {
    fn open_table(&mut self, line: usize) -> Result<(), ManifestError> {
        if self.top_done.is_none() {
            self.top_done = Some(top_level(&self.top)?);
        }
        self.close_table()?;
        if self.partitions.len() == MAX_PARTITIONS {
            return Err(syntax(line, format!("more than {MAX_PARTITIONS} partitions")));
        }
        self.table = Some((line, Vec::new()));
        Ok(())
    }

    fn add(&mut self, entry: Entry) -> Result<(), ManifestError> {
        match &mut self.table {
            None => {
                self.top.push(entry);
                // More entries than keys means an unknown or repeated key: report it now.
                if self.top.len() > TOP_KEYS.len() {
                    top_level(&self.top)?;
                }
            }
            Some((_, entries)) => {
                entries.push(entry);
                // As above: more entries than keys cannot all be valid.
                if entries.len() > PARTITION_KEYS.len() {
                    let who = partition_label(self.partitions.len() + 1, entries);
                    let err = |line, field, message| ManifestError {
                        line,
                        partition: Some(who.clone()),
                        field,
                        message,
                    };
                    check_keys(entries, PARTITION_KEYS, err)?;
                }
            }
        }
        Ok(())
    }

    fn close_table(&mut self) -> Result<(), ManifestError> {
        let Some((line, entries)) = self.table.take() else {
            return Ok(());
        };
        let spec = partition(line, self.partitions.len() + 1, &entries, &self.partitions)?;
        self.partitions.push(spec);
        Ok(())
    }

    fn finish(mut self) -> Result<Manifest, ManifestError> {
        self.close_table()?;
        let (name, timeslice_us) = match self.top_done.take() {
            Some(top) => top,
            None => top_level(&self.top)?,
        };
        if self.partitions.is_empty() {
            return Err(syntax(0, "no partitions (add a [[partition]] table)"));
        }
        Ok(Manifest { name, timeslice_us, partitions: self.partitions })
    }
}

/// Checks that no key in `entries` is unknown or repeated.
fn check_keys(
    entries: &[Entry],
    known: &[&'static str],
    err: impl Fn(usize, Option<&'static str>, String) -> ManifestError,
) -> Result<(), ManifestError> {
    for (i, e) in entries.iter().enumerate() {
        let Some(&key) = known.iter().find(|&&k| k == e.key) else {
            return Err(err(
                e.line,
                None,
                format!("unknown field {:?} (fields: {})", e.key, known.join(", ")),
            ));
        };
        if let Some(first) = entries[..i].iter().find(|f| f.key == e.key) {
            return Err(err(
                e.line,
                Some(key),
                format!("given twice (first on line {})", first.line),
            ));
        }
    }
    Ok(())
}

fn top_level(entries: &[Entry]) -> Result<(Option<String>, Option<u64>), ManifestError> {
    let err = |line, field, message| ManifestError { line, partition: None, field, message };
    check_keys(entries, TOP_KEYS, err)?;
    let mut name = None;
    let mut timeslice = None;
    for e in entries {
        match (e.key.as_str(), &e.value) {
            ("name", Value::Str(s)) => {
                if s.is_empty() || s.len() > 63 || s.chars().any(char::is_control) {
                    return Err(err(
                        e.line,
                        Some("name"),
                        format!("{} is not 1..=63 printable characters", shorten(s)),
                    ));
                }
                name = Some(s.clone());
            }
            ("timeslice_us", Value::Int(n)) => {
                if !(TIMESLICE_MIN_US..=TIMESLICE_MAX_US).contains(n) {
                    return Err(err(
                        e.line,
                        Some("timeslice_us"),
                        format!("{n} is outside {TIMESLICE_MIN_US}..={TIMESLICE_MAX_US}"),
                    ));
                }
                timeslice = Some(*n);
            }
            (key, v) => {
                let want = if key == "name" { "a string" } else { "an integer" };
                let field = if key == "name" { "name" } else { "timeslice_us" };
                return Err(err(
                    e.line,
                    Some(field),
                    format!("expected {want}, found {}", v.kind()),
                ));
            }
        }
    }
    Ok((name, timeslice))
}

/// A value as an error message shows it: quoted, and cut after 40 characters with its length,
/// so that a 5 MB string makes a short line.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// A bare word or key as an error message shows it: cut like [`shorten`], unquoted.
fn shorten_word(s: &str) -> String {
    match s.char_indices().nth(SHOWN) {
        None => s.into(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// Characters of a value an error message shows.
const SHOWN: usize = 40;

fn valid_name(s: &str) -> bool {
    (1..=NAME_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// How messages name a partition: by its name once that is known to be sane, else by its
/// 1-based index (`#2`).
fn partition_label(index: usize, entries: &[Entry]) -> String {
    entries
        .iter()
        .find_map(|e| match (&*e.key, &e.value) {
            ("name", Value::Str(s)) if valid_name(s) => Some(format!("{s:?}")),
            _ => None,
        })
        .unwrap_or_else(|| format!("#{index}"))
}

/// Validates one `[[partition]]` table (header on `line`, `index` 1-based) against the
/// partitions before it.
fn partition(
    line: usize,
    index: usize,
    entries: &[Entry],
    before: &[PartitionSpec],
) -> Result<PartitionSpec, ManifestError> {
    let who = partition_label(index, entries);
    let err =
        |line, field, message| ManifestError { line, partition: Some(who.clone()), field, message };
    check_keys(entries, PARTITION_KEYS, err)?;

    let mut spec = PartitionSpec {
        name: String::new(),
        role: Role::Guest,
        image: String::new(),
        format: ImageFormat::Elf64,
        initrd: None,
        memory_mib: MEMORY_DEFAULT_MIB,
        vcpus: 1,
        cmdline: String::new(),
        devices: Vec::new(),
        on_stop: OnStop::Destroy,
        expect: Expect::Exit,
        line,
    };
    let mut devices_line = 0;
    let mut initrd_line = 0;
    let mut cmdline_line = 0;
    let mut memory_given = false;
    for e in entries {
        let field = PARTITION_KEYS.iter().copied().find(|&k| k == e.key).unwrap_or("?");
        let fail = |message: String| err(e.line, Some(field), message);
        let wrong_type =
            |want: &str| Err(fail(format!("expected {want}, found {}", e.value.kind())));
        let keyword =
            |all: &[&str], s: &str| format!("{} is not one of {}", shorten(s), all.join(", "));
        match (field, &e.value) {
            ("name", Value::Str(s)) => {
                if !valid_name(s) {
                    return Err(fail(format!(
                        "{} is not 1..={NAME_MAX} characters of a-z, 0-9, _ and -",
                        shorten(s)
                    )));
                }
                if let Some(other) = before.iter().find(|p| &p.name == s) {
                    return Err(fail(format!(
                        "{} is already the name of the partition on line {}",
                        shorten(s),
                        other.line
                    )));
                }
                spec.name = s.clone();
            }
            ("role", Value::Str(s)) => {
                spec.role = Role::from_text(s).ok_or_else(|| fail(keyword(Role::ALL, s)))?;
                let first = before.iter().find(|p| p.role == Role::Management);
                if let (Role::Management, Some(other)) = (spec.role, first) {
                    return Err(fail(format!(
                        "a second management partition (the first is {:?})",
                        other.name
                    )));
                }
            }
            ("image" | "initrd", Value::Str(s)) => {
                if s.is_empty() || s.len() > IMAGE_MAX || !s.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(fail(format!(
                        "{} is not 1..={IMAGE_MAX} printable characters without spaces",
                        shorten(s)
                    )));
                }
                if field == "image" {
                    spec.image = s.clone();
                } else {
                    spec.initrd = Some(s.clone());
                    initrd_line = e.line;
                }
            }
            ("format", Value::Str(s)) => {
                spec.format =
                    ImageFormat::from_text(s).ok_or_else(|| fail(keyword(ImageFormat::ALL, s)))?;
            }
            ("memory", Value::Int(n)) => {
                let n = *n;
                if n < MEMORY_MIN_MIB {
                    return Err(fail(format!(
                        "{n} MiB is below the minimum of {MEMORY_MIN_MIB} MiB"
                    )));
                }
                if n > MEMORY_MAX_MIB {
                    return Err(fail(format!(
                        "{n} MiB is above the maximum of {MEMORY_MAX_MIB} MiB"
                    )));
                }
                if n % 2 != 0 {
                    return Err(fail(format!("{n} is not a multiple of 2 MiB")));
                }
                spec.memory_mib = n;
                memory_given = true;
            }
            ("vcpus", Value::Int(n)) => {
                if *n != 1 {
                    return Err(fail(format!(
                        "{n} vCPUs asked for; a partition has exactly 1 for now"
                    )));
                }
                spec.vcpus = 1;
            }
            ("cmdline", Value::Str(s)) => {
                if s.len() > LINUX_CMDLINE_MAX {
                    return Err(fail(format!(
                        "{} bytes long; at most {LINUX_CMDLINE_MAX}",
                        s.len()
                    )));
                }
                cmdline_line = e.line;
                if s.chars().any(char::is_control) {
                    return Err(fail("control characters are not allowed".to_string()));
                }
                spec.cmdline = s.clone();
            }
            ("devices", Value::Array(list)) => {
                for (i, d) in list.iter().enumerate() {
                    if d.is_empty()
                        || d.len() > DEVICE_MAX
                        || !d.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(fail(format!(
                            "{} is not 1..={DEVICE_MAX} printable characters without spaces",
                            shorten(d)
                        )));
                    }
                    if list[..i].contains(d) {
                        return Err(fail(format!("{} is listed twice", shorten(d))));
                    }
                }
                spec.devices = list.clone();
                devices_line = e.line;
            }
            ("on_stop", Value::Str(s)) => {
                spec.on_stop = OnStop::from_text(s).ok_or_else(|| fail(keyword(OnStop::ALL, s)))?;
            }
            ("expect", Value::Str(s)) => {
                spec.expect = Expect::from_text(s).ok_or_else(|| fail(keyword(Expect::ALL, s)))?;
            }
            ("memory" | "vcpus", _) => return wrong_type("an integer"),
            ("devices", _) => return wrong_type("an array of strings"),
            _ => return wrong_type("a string"),
        }
    }
    if spec.name.is_empty() {
        return Err(err(line, Some("name"), "missing: every partition needs a name".to_string()));
    }
    if spec.image.is_empty() {
        return Err(err(
            line,
            Some("image"),
            "missing: every partition needs an image".to_string(),
        ));
    }
    if spec.initrd.is_some() && spec.format != ImageFormat::Linux {
        return Err(err(
            initrd_line,
            Some("initrd"),
            format!(
                "an initrd is for Linux images (format = \"linux\"); this one is {}",
                spec.format.as_str()
            ),
        ));
    }
    if spec.format != ImageFormat::Linux && spec.cmdline.len() > CMDLINE_MAX {
        return Err(err(
            cmdline_line,
            Some("cmdline"),
            format!(
                "{} bytes long; at most {CMDLINE_MAX} for a {} image ({LINUX_CMDLINE_MAX} for Linux)",
                spec.cmdline.len(),
                spec.format.as_str()
            ),
        ));
    }
    if spec.role == Role::Management && !memory_given {
        // All the host RAM the hypervisor and the other partitions do not use.
        spec.memory_mib = 0;
    }
    if !spec.devices.is_empty() && spec.role != Role::Management {
        return Err(err(
            devices_line,
            Some("devices"),
            "devices are handed only to the management partition (role = \"management\")"
                .to_string(),
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"# The attack scenario.
name = "attack"
timeslice_us = 2_000

[[partition]]
name = "dom0"
role = "management"
image = "mgmt"
memory = 0x40          # 64 MiB
devices = [
    "serial0",   # the real COM1
    'pci:00:1f.2',
]
on_stop = "poweroff"

[[partition]]
name = "attack-msr"
image = "attack"
memory = 4
cmdline = "mode=msr-ports-vmx \"quoted\" \u00e9"
expect = "fault"

[[partition]]
image = "probe"
name = "neighbour"
format = "elf64"
vcpus = 1
on_stop = "restart"
"#;

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn one(body: &str) -> String {
        err(&format!("[[partition]]\nname = \"p\"\nimage = \"probe\"\n{body}\n"))
    }

    #[test]
    fn good_manifest_parses_with_defaults() {
        let m = parse(GOOD).expect("good manifest");
        assert_eq!(m.name.as_deref(), Some("attack"));
        assert_eq!(m.timeslice_us, Some(2000));
        assert_eq!(m.partitions.len(), 3);
        let dom0 = &m.partitions[0];
        assert_eq!(
            (dom0.name.as_str(), dom0.role, dom0.image.as_str()),
            ("dom0", Role::Management, "mgmt")
        );
        assert_eq!(dom0.memory_mib, 64);
        assert_eq!(dom0.memory_bytes(), 64 << 20);
        assert_eq!(dom0.devices, ["serial0", "pci:00:1f.2"]);
        assert_eq!(dom0.on_stop, OnStop::PowerOff);
        assert_eq!(dom0.line, 5);
        let attack = &m.partitions[1];
        assert_eq!(attack.cmdline, "mode=msr-ports-vmx \"quoted\" é");
        assert_eq!(attack.expect, Expect::Fault);
        assert_eq!(attack.memory_mib, 4);
        let n = &m.partitions[2];
        assert_eq!(n.name, "neighbour");
        assert_eq!((n.role, n.format, n.vcpus), (Role::Guest, ImageFormat::Elf64, 1));
        assert_eq!(
            (n.memory_mib, n.cmdline.as_str(), n.on_stop, n.expect),
            (16, "", OnStop::Restart, Expect::Exit)
        );
        assert!(n.devices.is_empty());
        assert_eq!(m.management().map(|p| p.name.as_str()), Some("dom0"));
    }

    #[test]
    fn the_scenario_manifests_parse() {
        let probe = parse(include_str!("../../../scenarios/probe.toml")).expect("probe.toml");
        assert_eq!(probe.partitions.len(), 1);
        assert_eq!(probe.partitions[0].image, "probe");
        let attack = parse(include_str!("../../../scenarios/attack.toml")).expect("attack.toml");
        let fault = attack.partitions.iter().filter(|p| p.expect == Expect::Fault);
        assert!(fault.clone().count() >= 3);
        assert!(fault.clone().all(|p| p.image == "attack" && p.cmdline.starts_with("mode=")));
        assert!(attack.partitions.iter().any(|p| p.image == "probe" && p.expect == Expect::Exit));
    }

    #[test]
    fn minimal_manifest_and_line_endings() {
        let m = parse("[[partition]]\r\nname=\"a\"\r\nimage='x'").expect("CRLF, no final newline");
        assert_eq!(m.partitions[0].image, "x");
        assert_eq!(m.name, None);
        assert_eq!(m.management(), None);
        let m = parse("[[ partition ]] # c\n\tname = \"b\"\t# c\nimage = \"y\"\n# end")
            .expect("blanks");
        assert_eq!(m.partitions[0].name, "b");
    }

    #[test]
    fn the_documented_error_format() {
        let text =
            "name = \"s\"\n\n[[partition]]\nname = \"probe\"\nimage = \"probe\"\n# x\nmemory = 3\n";
        assert_eq!(
            err(text),
            "manifest line 7: partition \"probe\": field memory: 3 is not a multiple of 2 MiB"
        );
        // Before the name is known, and when it is bad, the partition is named by index.
        assert_eq!(
            err("[[partition]]\nmemory = 3\nname = \"p\"\nimage = \"i\""),
            "manifest line 2: partition \"p\": field memory: 3 is not a multiple of 2 MiB"
        );
        assert_eq!(
            err("[[partition]]\nname = \"Bad Name\"\nimage = \"i\""),
            "manifest line 2: partition #1: field name: \"Bad Name\" is not 1..=31 characters of a-z, 0-9, _ and -"
        );
    }

    #[test]
    fn empty_files_and_missing_fields() {
        assert_eq!(err(""), "manifest: no partitions (add a [[partition]] table)");
        assert_eq!(
            err("# nothing\n\nname = \"x\"\n"),
            "manifest: no partitions (add a [[partition]] table)"
        );
        assert_eq!(
            err("[[partition]]\nname = \"a\"\n"),
            "manifest line 1: partition \"a\": field image: missing: every partition needs an image"
        );
        assert_eq!(
            err("x = 1\n[[partition]]\nimage = \"a\"\n"),
            "manifest line 1: unknown field \"x\" (fields: name, timeslice_us)"
        );
        assert_eq!(
            err("[[partition]]\nname = \"a\"\nimage = \"i\"\n[[partition]]\nimage = \"a\"\n"),
            "manifest line 4: partition #2: field name: missing: every partition needs a name"
        );
    }

    #[test]
    fn names_roles_and_devices_are_checked_across_partitions() {
        let dup = "[[partition]]\nname = \"a\"\nimage = \"i\"\n[[partition]]\nimage = \"i\"\nname = \"a\"\n";
        assert_eq!(
            err(dup),
            "manifest line 6: partition \"a\": field name: \"a\" is already the name of the partition on line 1"
        );
        let two = "[[partition]]\nname = \"a\"\nimage = \"i\"\nrole = \"management\"\n\
                   [[partition]]\nname = \"b\"\nimage = \"i\"\nrole = \"management\"\n";
        assert_eq!(
            err(two),
            "manifest line 8: partition \"b\": field role: a second management partition (the first is \"a\")"
        );
        assert!(
            one("devices = [\"serial0\"]")
                .contains("line 4: partition \"p\": field devices: devices are handed only")
        );
        assert!(
            one("role = \"management\"\ndevices = [\"a\", \"a\"]")
                .contains("\"a\" is listed twice")
        );
        assert!(one("role = \"management\"\ndevices = [\"\"]").contains("field devices"));
        assert!(
            one("role = \"root\"").contains("field role: \"root\" is not one of management, guest")
        );
        assert!(
            err("[[partition]]\nname = \"abcdefghijabcdefghijabcdefghij12\"\nimage = \"i\"")
                .contains("field name")
        );
        assert!(
            parse("[[partition]]\nname = \"abcdefghijabcdefghijabcdefghij1\"\nimage = \"i\"")
                .is_ok()
        );
    }

    #[test]
    fn field_values_are_checked() {
        assert!(one("memory = 0").contains("field memory: 0 MiB is below the minimum of 2 MiB"));
        assert!(
            one("memory = 2048")
                .contains("field memory: 2048 MiB is above the maximum of 1024 MiB")
        );
        assert!(
            one("memory = \"16\"").contains("field memory: expected an integer, found a string")
        );
        assert!(one("vcpus = 2").contains("field vcpus: 2 vCPUs asked for"));
        assert!(
            one("format = \"pe\"").contains("field format: \"pe\" is not one of elf64, multiboot")
        );
        assert!(one("on_stop = \"reboot\"").contains("field on_stop"));
        assert!(one("expect = true").contains("field expect: expected a string, found a boolean"));
        assert!(one("expect = \"crash\"").contains("is not one of exit, fault"));
        assert!(
            one(&format!("cmdline = \"{}\"", "a".repeat(256)))
                .contains("field cmdline: 256 bytes long; at most 255")
        );
        assert!(one("cmdline = \"a\\nb\"").contains("control characters"));
        assert!(one("devices = \"x\"").contains("expected an array of strings, found a string"));
        assert!(one("image = \"has space\"").contains("field image"));
        assert!(one("bogus = 1").contains("line 4: partition \"p\": unknown field \"bogus\""));
        assert!(
            one("memory = 4\nmemory = 6")
                .contains("line 5: partition \"p\": field memory: given twice (first on line 4)")
        );
        assert!(
            err("timeslice_us = 5\n[[partition]]\nname=\"a\"\nimage=\"b\"")
                .contains("line 1: field timeslice_us: 5 is outside")
        );
        assert!(err("name = 3\n").contains("field name: expected a string, found an integer"));
        assert!(
            parse(&format!(
                "[[partition]]\nname=\"a\"\nimage=\"b\"\ncmdline=\"{}\"",
                "c".repeat(255)
            ))
            .is_ok()
        );
    }

    #[test]
    fn numbers() {
        let memory = |v: &str| {
            parse(&format!("[[partition]]\nname=\"a\"\nimage=\"b\"\nmemory = {v}"))
                .map(|m| m.partitions[0].memory_mib)
        };
        assert_eq!(memory("1_024"), Ok(1024));
        assert_eq!(memory("0x20"), Ok(32));
        assert_eq!(memory("0o10"), Ok(8));
        assert_eq!(memory("0b1000"), Ok(8));
        assert_eq!(memory("+4"), Ok(4));
        for bad in [
            "-4",
            "04",
            "1__0",
            "_4",
            "4_",
            "0x",
            "0xg",
            "4.0",
            "1e3",
            "18446744073709551616",
            "0x_10",
            "4a",
            "inf",
        ] {
            let e = memory(bad).expect_err(bad).to_string();
            assert!(e.starts_with("manifest line 4: "), "{bad}: {e}");
        }
        assert!(memory("18446744073709551616").unwrap_err().to_string().contains("too large"));
        assert!(memory("-4").unwrap_err().to_string().contains("negative"));
        assert!(memory("16 16").unwrap_err().to_string().contains("expected the end of the line"));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(5 << 20);
        let text = format!("[[partition]]\nname = \"{long}\"\nimage = \"probe\"\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.len() < 200, "{} bytes", e.len());
        assert!(e.contains("(5242880 bytes)"), "{e}");
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let cases = [
            ("[[partition]]\nname = \"abc\n", "line 2: unterminated string"),
            ("[[partition]]\nname = \"abc", "line 2: unterminated string"),
            ("[[partition]]\nname = \"\"\"x\"\"\"", "multi-line strings"),
            ("[[partition]]\nname = \"a\\qb\"", "line 2: invalid escape \\q"),
            ("[[partition]]\nname = \"\\u12\"", "invalid unicode escape"),
            ("[[partition]]\nname = \"\\uD800\"", "invalid unicode escape"),
            ("[[partition]]\nname = abc", "line 2: invalid value abc (strings need quotes)"),
            ("[[partition]]\nname =", "line 2: missing value after ="),
            ("[[partition]]\nname", "line 2: expected = after the key name"),
            ("[[partition]]\na.b = 1", "dotted keys"),
            ("[[partition]]\n\"name\" = 1", "quoted keys"),
            ("[partition]\n", "line 1: unknown table [partition]"),
            ("[[vm]]\n", "line 1: unknown table [[vm]]"),
            ("[[partition]\n", "line 1: malformed table header"),
            ("[[partition]] x\n", "line 1: expected the end of the line, found 'x'"),
            ("\n\n= 3", "line 3: expected a key"),
            ("[[partition]]\ndevices = [\"a\",\n\"b\"\n", "line 2: unterminated array"),
            ("[[partition]]\ndevices = [\"a\" \"b\"]", "expected , or ] in an array"),
            ("[[partition]]\ndevices = [1]", "arrays may hold only strings"),
            ("[[partition]]\ndevices = [[\"a\"]]", "arrays may hold only strings"),
            ("[[partition]]\nname = \"a\u{1}\"", "control character in a string"),
            ("# \u{7f}\n", "line 1: control character in a comment"),
            ("a = 1\rb = 2", "carriage return without a line feed"),
            ("[[partition]]\nmemory = 1979-05-27", "invalid number"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
        assert_eq!(
            parse_bytes(b"[[partition]]\nname = \"\xff\"").unwrap_err().to_string(),
            "manifest line 2: not UTF-8 text"
        );
    }

    #[test]
    fn partition_count_is_bounded() {
        let mut text = String::new();
        for i in 0..=MAX_PARTITIONS {
            text.push_str(&format!("[[partition]]\nname = \"p{i}\"\nimage = \"i\"\n"));
        }
        assert!(err(&text).contains("more than 64 partitions"));
    }

    /// A tiny xorshift generator: deterministic junk without a dependency.
    fn junk(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of a good manifest.
        for end in 0..=GOOD.len() {
            if GOOD.is_char_boundary(end) {
                let _ = parse(&GOOD[..end]);
            }
        }
        // Every single-byte change to it.
        let bytes = GOOD.as_bytes();
        for i in 0..bytes.len() {
            for b in [b'"', b'\'', b'[', b']', b'=', b'\n', b'#', b'\\', b'0', b'x', b'_', 0, 0xff]
            {
                let mut v = bytes.to_vec();
                v[i] = b;
                let _ = parse_bytes(&v);
            }
        }
        // A mebibyte of junk: raw bytes, then TOML-ish characters, then long valid-looking runs.
        let _ = parse_bytes(&junk(1, 1 << 20, &(0..=255).collect::<Vec<u8>>()));
        let toml_ish = b"[[]]partition=\"'\\#\n\r\t ,0x_1-+.abcuU\xc3\xa9";
        for seed in 1..64 {
            let _ = parse_bytes(&junk(seed, 1 << 14, toml_ish));
        }
        let _ = parse_bytes(&junk(7, 1 << 20, toml_ish));
        let _ = parse(&"[".repeat(1 << 20));
        let _ = parse(&format!("[[partition]]\ndevices = [{}", "\"a\",".repeat(1 << 18)));
        let _ = parse(&format!("[[partition]]\ncmdline = \"{}\"", "a".repeat(1 << 20)));
        let _ = parse(&"a = 1\n".repeat(1 << 17));
        let _ = parse(&"[[partition]]\nname = \"a\"\nimage = \"b\"\n".repeat(1 << 14));
        let _ = parse(&"9".repeat(1 << 20));
    }
}
