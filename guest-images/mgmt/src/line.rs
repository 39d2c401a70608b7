//! The shell's line editor: typed bytes in, what to echo and when a line is complete out.
//!
//! Printable ASCII is kept (a tab as a space), backspace (0x08) and DEL (0x7f) erase the last
//! character, CR or LF ends the line (CR LF counts once), Ctrl-C drops the line. A line longer
//! than [`MAX_LINE`] is refused whole when it ends, never cut or overflowed.

/// Longest line the shell takes.
pub const MAX_LINE: usize = 200;

const BACKSPACE: u8 = 0x08;
const DEL: u8 = 0x7f;
const CTRL_C: u8 = 0x03;

/// What the shell does after a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Nothing to show (an ignored byte, the LF of a CR LF, an erase on an empty line).
    Nothing,
    /// Echo this character.
    Echo(u8),
    /// Erase the last character on screen (`"\x08 \x08"`).
    Erase,
    /// The line is complete: [`LineEditor::line`] holds it until the next byte.
    Line,
    /// The line ended but was longer than [`MAX_LINE`]: it is dropped.
    Overlong,
    /// Ctrl-C: the line is dropped.
    Cancel,
}

/// The line being typed.
#[derive(Clone, Debug)]
pub struct LineEditor {
    buf: [u8; MAX_LINE],
    len: usize,
    /// More was typed than fits: the line is refused when it ends.
    overlong: bool,
    /// The last byte was a CR (an LF right after it ends nothing).
    after_cr: bool,
    /// The last call returned [`Edit::Line`]: the next byte starts a new line.
    done: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    pub const fn new() -> Self {
        Self { buf: [0; MAX_LINE], len: 0, overlong: false, after_cr: false, done: false }
    }

    /// Takes one typed byte.
    pub fn feed(&mut self, b: u8) -> Edit {
        if self.done {
            self.done = false;
            self.len = 0;
        }
        let after_cr = core::mem::replace(&mut self.after_cr, b == b'\r');
        match b {
            b'\n' if after_cr => Edit::Nothing,
            b'\r' | b'\n' => {
                if core::mem::take(&mut self.overlong) {
                    self.len = 0;
                    Edit::Overlong
                } else {
                    self.done = true;
                    Edit::Line
                }
            }
            BACKSPACE | DEL => {
                if self.len > 0 {
                    self.len -= 1;
                    Edit::Erase
                } else {
                    Edit::Nothing
                }
            }
            CTRL_C => {
                self.len = 0;
                self.overlong = false;
                Edit::Cancel
            }
            b'\t' | 0x20..=0x7e => {
                let c = if b == b'\t' { b' ' } else { b };
                match self.buf.get_mut(self.len) {
                    Some(slot) if !self.overlong => {
                        *slot = c;
                        self.len += 1;
                        Edit::Echo(c)
                    }
                    _ => {
                        self.overlong = true;
                        Edit::Nothing
                    }
                }
            }
            _ => Edit::Nothing,
        }
    }

    /// The line typed so far (or the complete one right after [`Edit::Line`]).
    pub fn line(&self) -> &str {
        // Only printable ASCII is ever stored, so this never fails.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_in(ed: &mut LineEditor, bytes: &[u8]) -> Edit {
        bytes.iter().map(|&b| ed.feed(b)).last().unwrap_or(Edit::Nothing)
    }

    #[test]
    fn lines_end_at_cr_lf_or_crlf_once() {
        let mut ed = LineEditor::new();
        assert_eq!(ed.feed(b'l'), Edit::Echo(b'l'));
        assert_eq!(type_in(&mut ed, b"ist\r"), Edit::Line);
        assert_eq!(ed.line(), "list");
        assert_eq!(ed.feed(b'\n'), Edit::Nothing, "the LF of CR LF");
        assert_eq!(ed.line(), "", "a new line began");
        assert_eq!(type_in(&mut ed, b"help\n"), Edit::Line);
        assert_eq!(ed.line(), "help");
        assert_eq!(ed.feed(b'\n'), Edit::Line, "a lone LF is an empty line");
        assert_eq!(ed.line(), "");
        assert_eq!(ed.feed(b'\r'), Edit::Line);
        assert_eq!(ed.feed(b'\r'), Edit::Line, "CR CR is two lines");
    }

    #[test]
    fn backspace_and_del_erase() {
        let mut ed = LineEditor::new();
        assert_eq!(ed.feed(0x7f), Edit::Nothing);
        type_in(&mut ed, b"lsx");
        assert_eq!(ed.feed(0x08), Edit::Erase);
        assert_eq!(ed.feed(0x7f), Edit::Erase);
        assert_eq!(ed.line(), "l");
        type_in(&mut ed, b"ist\tx");
        assert_eq!(ed.line(), "list x");
    }

    #[test]
    fn control_bytes_are_ignored_and_ctrl_c_cancels() {
        let mut ed = LineEditor::new();
        assert_eq!(type_in(&mut ed, b"a\x1b[A\x00\xffb"), Edit::Echo(b'b'));
        assert_eq!(ed.line(), "a[Ab");
        assert_eq!(ed.feed(0x03), Edit::Cancel);
        assert_eq!(ed.line(), "");
    }

    #[test]
    fn overlong_lines_are_refused_whole() {
        let mut ed = LineEditor::new();
        for _ in 0..MAX_LINE {
            assert!(matches!(ed.feed(b'x'), Edit::Echo(b'x')));
        }
        assert_eq!(ed.feed(b'y'), Edit::Nothing);
        for _ in 0..10_000 {
            ed.feed(b'z');
        }
        assert_eq!(ed.line().len(), MAX_LINE);
        assert_eq!(ed.feed(b'\r'), Edit::Overlong);
        assert_eq!(ed.line(), "");
        assert_eq!(type_in(&mut ed, b"list\r"), Edit::Line);
        assert_eq!(ed.line(), "list", "the editor recovers");
        // A line of exactly MAX_LINE characters is fine.
        for _ in 0..MAX_LINE {
            ed.feed(b'a');
        }
        assert_eq!(ed.feed(b'\n'), Edit::Line);
        assert_eq!(ed.line().len(), MAX_LINE);
    }
}
