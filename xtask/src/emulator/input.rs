//! Input scripts: what a run types on the guest's COM1, and when.
//!
//! A script is a list of [`Step`]s. A step waits until the serial output that came after the
//! previous step's match holds each of its patterns, then sends its bytes (the watcher writes
//! them one at a time with a small pause: emulated UARTs have 16-byte FIFOs, and the
//! hypervisor forwards typed bytes only as fast as the focused partition takes them).
//!
//! A pattern is literal text in which `*` matches any run of characters within one line (`\*`
//! is a literal star): `[g2] probe: * checks, 0 failed` matches the probe's summary line of
//! partition g2 whatever its count. A leading `^` searches the whole output so far instead of
//! only what came after the previous step's match (for a line that may come before the previous
//! step's, such as another partition's; `\^` is a literal caret at the start). On the command line (`cargo xtask run --input`) a step is
//! `WAIT=>SEND`; WAIT may hold several patterns joined by `&&` (all must appear, in any order);
//! both sides take the escapes `\r \n \t \\ \xNN` (and WAIT `\*`, `\&`).

use anyhow::{Result, bail};

/// One step: wait for every pattern (in any order), then send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub wait: Vec<Pattern>,
    pub send: Vec<u8>,
}

impl Step {
    /// A step from a static table: `wait` are patterns (`*` a wildcard within a line), `send`
    /// is sent as it is (write `\r` with Rust's own escapes).
    pub fn new(wait: &[&str], send: &str) -> Self {
        let wait = wait
            .iter()
            .map(|w| Pattern::parse(w).expect("patterns in tables have no bad escapes"))
            .collect();
        Step { wait, send: send.as_bytes().to_vec() }
    }

    /// Parses `WAIT=>SEND` (see the module documentation).
    pub fn parse(arg: &str) -> Result<Self> {
        let Some((wait, send)) = arg.split_once("=>") else {
            bail!("input step {arg:?}: expected WAIT=>SEND (e.g. 'mgmt> =>list\\r')");
        };
        let wait = if wait.is_empty() {
            Vec::new()
        } else {
            split_unescaped(wait, "&&")
                .iter()
                .map(|w| Pattern::parse(w))
                .collect::<Result<Vec<_>>>()
                .map_err(|e| anyhow::anyhow!("input step {arg:?}: {e}"))?
        };
        let send = unescape(send).map_err(|e| anyhow::anyhow!("input step {arg:?}: {e}"))?;
        Ok(Step { wait, send })
    }

    /// For messages: `"mgmt> " && "PASS x"`.
    pub fn describe_wait(&self) -> String {
        if self.wait.is_empty() {
            return "nothing".into();
        }
        let shown: Vec<String> = self.wait.iter().map(|p| format!("{:?}", p.text)).collect();
        shown.join(" && ")
    }
}

/// Literal text with `*` wildcards that do not cross a line end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// As written, for messages.
    text: String,
    /// Searched in the whole output, not only after the previous step's match (leading `^`).
    anywhere: bool,
    /// The literal pieces between the wildcards.
    parts: Vec<Vec<u8>>,
}

impl Pattern {
    /// Parses a pattern: `*` is the wildcard; `\*` a literal star; `\r \n \t \\ \xNN \&` as in
    /// [`unescape`].
    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = vec![Vec::new()];
        let anywhere = text.starts_with('^');
        let mut chars = text.strip_prefix('^').unwrap_or(text).chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => parts.push(Vec::new()),
                '\\' => {
                    let byte = escape(&mut chars)?;
                    parts.last_mut().expect("never empty").push(byte);
                }
                c => {
                    let mut buf = [0; 4];
                    parts.last_mut().expect("never empty").extend(c.encode_utf8(&mut buf).bytes());
                }
            }
        }
        Ok(Pattern { text: text.to_string(), anywhere, parts })
    }

    /// The end (exclusive byte offset) of the first match in `hay`, if any.
    pub fn find(&self, hay: &[u8]) -> Option<usize> {
        let first = &self.parts[0];
        let mut from = 0;
        while let Some(at) = find_bytes(&hay[from..], first).map(|i| i + from) {
            if let Some(end) = self.rest_in_line(hay, at + first.len()) {
                return Some(end);
            }
            from = at + 1;
            if from > hay.len() {
                break;
            }
        }
        None
    }

    /// Matches the pieces after the first from `pos`, each at its earliest place, with no line
    /// end in what a wildcard covers (a piece itself may start with one); the end of the last.
    fn rest_in_line(&self, hay: &[u8], mut pos: usize) -> Option<usize> {
        for part in &self.parts[1..] {
            let line_end = hay[pos..].iter().position(|&b| b == b'\n').unwrap_or(hay.len() - pos);
            // Only as far as a match starting at the line end reaches.
            let limit = (pos + line_end + part.len()).min(hay.len());
            let at = find_bytes(&hay[pos..limit], part)?;
            pos += at + part.len();
        }
        Some(pos)
    }
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits at each `sep` that is not escaped by a backslash.
fn split_unescaped<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
        } else if s[i..].starts_with(sep) {
            out.push(&s[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// One escape after a backslash: `r n t 0 \ * & e` or `xNN`.
fn escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<u8> {
    Ok(match chars.next() {
        Some('r') => b'\r',
        Some('n') => b'\n',
        Some('t') => b'\t',
        Some('0') => 0,
        Some('e') => 0x1b,
        Some(c @ ('\\' | '*' | '&' | '=' | '>' | '^')) => c as u8,
        Some('x') => {
            let hex: String = chars.by_ref().take(2).collect();
            match u8::from_str_radix(&hex, 16) {
                Ok(b) if hex.len() == 2 => b,
                _ => bail!("bad escape \\x{hex}: want two hex digits"),
            }
        }
        Some(c) => {
            bail!("unknown escape \\{c} (known: \\r \\n \\t \\0 \\e \\\\ \\* \\& \\^ \\xNN)")
        }
        None => bail!("a backslash at the end"),
    })
}

/// Bytes to send: the text with `\r \n \t \0 \e \\ \xNN` (and `\* \& \= \>`) replaced.
pub fn unescape(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(escape(&mut chars)?);
        } else {
            let mut buf = [0; 4];
            out.extend(c.encode_utf8(&mut buf).bytes());
        }
    }
    Ok(out)
}

/// A script being played against a growing serial log.
#[derive(Debug)]
pub struct Script {
    steps: Vec<Step>,
    next: usize,
    /// Where the search for the next step starts: the end of the previous step's match.
    cursor: usize,
    /// How much output the last poll saw (nothing new: nothing to search).
    seen: usize,
}

impl Script {
    pub fn new(steps: Vec<Step>) -> Self {
        Script { steps, next: 0, cursor: 0, seen: usize::MAX }
    }

    /// The bytes to send now, given the whole serial output so far: those of every step whose
    /// patterns have all appeared (each step searching after the previous one's match).
    pub fn poll(&mut self, serial: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if serial.len() == self.seen {
            return out;
        }
        self.seen = serial.len();
        while let Some(step) = self.steps.get(self.next) {
            let from = self.cursor.min(serial.len());
            let ends: Option<Vec<usize>> = step
                .wait
                .iter()
                .map(|p| {
                    if p.anywhere {
                        p.find(serial)
                    } else {
                        p.find(&serial[from..]).map(|e| e + from)
                    }
                })
                .collect();
            let Some(ends) = ends else { break };
            self.cursor = ends.into_iter().fold(from, usize::max);
            out.extend_from_slice(&step.send);
            self.next += 1;
        }
        out
    }

    /// For a report: which step is still waiting, and for what.
    pub fn waiting(&self) -> Option<String> {
        let step = self.steps.get(self.next)?;
        Some(format!(
            "input step {} of {} still waiting for {} (to send {:?})",
            self.next + 1,
            self.steps.len(),
            step.describe_wait(),
            String::from_utf8_lossy(&step.send)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_with_escapes() {
        let s = Step::parse("mgmt> =>list\\r").unwrap();
        assert_eq!(s.send, b"list\r");
        assert_eq!(s.wait, vec![Pattern::parse("mgmt> ").unwrap()]);
        let s = Step::parse("=>\\x01\\x01\\x01").unwrap();
        assert!(s.wait.is_empty());
        assert_eq!(s.send, [1, 1, 1]);
        let s = Step::parse("a && b\\&&c&&[g2] * done=>x=>y").unwrap();
        let texts: Vec<&str> = s.wait.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["a ", " b\\&&c", "[g2] * done"]);
        assert_eq!(s.send, b"x=>y");
        assert_eq!(s.describe_wait(), r#""a " && " b\\&&c" && "[g2] * done""#);
        assert!(Step::parse("no arrow").is_err());
        assert!(Step::parse("a=>\\q").unwrap_err().to_string().contains("unknown escape \\q"));
        assert!(Step::parse("a=>\\x4").is_err());
        assert!(Step::parse("a=>x\\").is_err());
        assert_eq!(unescape("\\e[0m\\t\\\\").unwrap(), b"\x1b[0m\t\\");
        assert_eq!(Step::new(&["mgmt> "], "list\r"), Step::parse("mgmt> =>list\\r").unwrap());
    }

    #[test]
    fn wildcards_stay_within_a_line() {
        let p = Pattern::parse("[g2] probe: * checks, 0 failed").unwrap();
        let log = b"[g2] probe: partition 2\n[g1] probe: 66 checks, 0 failed\n\
                    [g2] probe: 66 checks, 0 failed\nrest";
        let end = p.find(log).unwrap();
        assert!(log[..end].ends_with(b"[g2] probe: 66 checks, 0 failed"));
        assert_eq!(p.find(b"[g2] probe: x\n66 checks, 0 failed"), None);
        let star = Pattern::parse("a\\*b").unwrap();
        assert_eq!(star.find(b"xa*b"), Some(4));
        assert_eq!(star.find(b"xaab"), None);
        assert_eq!(Pattern::parse("").unwrap().find(b""), Some(0));
        assert_eq!(Pattern::parse("*").unwrap().find(b"abc"), Some(0));
        assert_eq!(Pattern::parse("ab*").unwrap().find(b"xxab"), Some(4));
        // What follows a wildcard may start with the line end itself.
        let eol = Pattern::parse("BENCH x *\\n").unwrap();
        assert_eq!(eol.find(b"BENCH x 12"), None);
        assert_eq!(eol.find(b"BENCH x 12\r\nnext"), Some(12));
        assert_eq!(eol.find(b"BENCH x\nBENCH x 5\n"), Some(18));
        // A later start can succeed where the first one fails.
        assert_eq!(Pattern::parse("a*c").unwrap().find(b"ab\nac"), Some(5));
    }

    #[test]
    fn script_searches_after_the_previous_match() {
        let mut s = Script::new(vec![
            Step::new(&["mgmt> "], "list\r"),
            Step::new(&["mgmt> "], "create g1 probe\r"),
            Step::new(&["[g2] probe: * checks, 0 failed", "PASS chan-echo"], "stats g2\r"),
        ]);
        assert!(s.poll(b"booting").is_empty());
        assert_eq!(s.poll(b"booting\nmgmt> "), b"list\r");
        // The prompt already matched does not count again.
        assert!(s.poll(b"booting\nmgmt> list").is_empty());
        assert!(s.waiting().unwrap().starts_with("input step 2 of 3 still waiting for \"mgmt> \""));
        let mut log = b"booting\nmgmt> list\n  0 mgmt\nmgmt> ".to_vec();
        assert_eq!(s.poll(&log), b"create g1 probe\r");
        log.extend_from_slice(b"[chan] PASS chan-echo\n");
        assert!(s.poll(&log).is_empty());
        log.extend_from_slice(b"[g2] probe: 66 checks, 0 failed\n");
        assert_eq!(s.poll(&log), b"stats g2\r");
        assert_eq!(s.waiting(), None);
        // `^` looks before the previous match too; the cursor never moves back.
        let mut s = Script::new(vec![
            Step::new(&["b"], "1"),
            Step::new(&["^a", "c"], "2"),
            Step::new(&["^a"], "3"),
            Step::new(&["a"], "4"),
        ]);
        assert_eq!(s.poll(b"a b c"), b"123");
        assert_eq!(s.poll(b"a b c a"), b"4");
        assert_eq!(Pattern::parse("\\^a").unwrap().find(b"^a"), Some(2));
        assert!(!Step::parse("\\^x=>y").unwrap().wait[0].anywhere);
        // Steps whose waits are all there already go out together, in order.
        let mut s = Script::new(vec![Step::new(&["a"], "1"), Step::new(&["a"], "2")]);
        assert_eq!(s.poll(b"a a"), b"12");
        let mut s = Script::new(vec![Step::new(&["a"], "1"), Step::new(&["a"], "2")]);
        assert_eq!(s.poll(b"a"), b"1");
    }
}
