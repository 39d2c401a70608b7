//! A bound on nesting, checked before the TOML parser runs: the parser recurses once per
//! nested table or array (up to 80 levels, several hundred bytes of stack each), and the
//! hypervisor parses on its 64 KiB boot stack. A manifest needs two levels (a `[[partition]]`
//! table, an array of strings); [`MAX_NESTING`] allows a few more.
//!
//! Tables nest through brackets and braces, and through dotted keys (`a.b.c = 1`, `[a.b]`).
//! The scan counts both, over-estimating rather than under (a dot in a float counts), and
//! follows TOML's lexical rules for what is not structure (TOML 1.0, "Comment" and "String"):
//! a comment runs from `#` to the end of the line; a basic string from `"` to the next
//! unescaped `"` or the end of the line; a literal string from `'` to the next `'` or the end
//! of the line; multi-line strings from `"""` or `'''` to the same three quotes.

use alloc::vec::Vec;

/// Deepest nesting of tables and arrays allowed.
pub const MAX_NESTING: usize = 8;

/// The byte offset where nesting first goes deeper than [`MAX_NESTING`], if it does.
pub(crate) fn too_deep(text: &[u8]) -> Option<usize> {
    // Levels of the current table header (`[a.b]` is 2; it holds until the next header).
    let mut header = 0usize;
    // Open brackets and braces, each with the dots counted before it opened.
    let mut open: Vec<usize> = Vec::new();
    // Dots of the key-value being read, and of its enclosing open brackets.
    let (mut dots, mut outer_dots) = (0usize, 0usize);
    let mut line_start = true;
    let mut in_header = false;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b'#' => i = skip_until(text, i + 1, |b| b == b'\n'),
            b'"' if text[i..].starts_with(b"\"\"\"") => {
                i = multi_line(text, i + 3, b"\"\"\"", true)
            }
            b'\'' if text[i..].starts_with(b"'''") => i = multi_line(text, i + 3, b"'''", false),
            b'"' => i = one_line(text, i + 1, b'"', true),
            b'\'' => i = one_line(text, i + 1, b'\'', false),
            b'[' | b'{' => {
                if open.is_empty() && line_start && b == b'[' {
                    // A table header: it replaces the one before.
                    header = 0;
                    in_header = true;
                }
                if header + open.len() + outer_dots + dots + 1 > MAX_NESTING {
                    return Some(i);
                }
                open.push(outer_dots);
                outer_dots += dots;
                dots = 0;
                i += 1;
            }
            b']' | b'}' => {
                if let Some(before) = open.pop() {
                    if in_header && open.is_empty() {
                        // `[a.b]` is two levels; `[[a.b]]` an array element of one: also two.
                        header = (dots + outer_dots - before + 1).min(MAX_NESTING);
                        in_header = false;
                    }
                    outer_dots = before;
                }
                dots = 0;
                i += 1;
            }
            b'.' => {
                dots += 1;
                if header + open.len() + outer_dots + dots > MAX_NESTING {
                    return Some(i);
                }
                i += 1;
            }
            b',' | b'\n' => {
                dots = 0;
                i += 1;
            }
            _ => i += 1,
        }
        line_start = match b {
            b'\n' => true,
            b' ' | b'\t' | b'\r' => line_start,
            _ => false,
        };
    }
    None
}

/// The index of the first byte at or after `i` that `stop` accepts (or the end).
fn skip_until(text: &[u8], mut i: usize, stop: impl Fn(u8) -> bool) -> usize {
    while i < text.len() && !stop(text[i]) {
        i += 1;
    }
    i
}

/// After a one-line string that began before `i`: past its closing quote, or at the line end.
fn one_line(text: &[u8], mut i: usize, quote: u8, escapes: bool) -> usize {
    while i < text.len() {
        match text[i] {
            b'\n' => return i,
            b if b == quote => return i + 1,
            b'\\' if escapes => i += 2,
            _ => i += 1,
        }
    }
    text.len()
}

/// After a multi-line string that began before `i`: past its closing quotes (or the end).
fn multi_line(text: &[u8], mut i: usize, close: &[u8], escapes: bool) -> usize {
    while i < text.len() {
        if text[i..].starts_with(close) {
            return i + close.len();
        }
        i += if escapes && text[i] == b'\\' { 2 } else { 1 };
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_outside_strings_and_comments_counts() {
        let deep = |n: usize| alloc::format!("x = {}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(too_deep(deep(MAX_NESTING).as_bytes()), None);
        assert_eq!(too_deep(deep(MAX_NESTING + 1).as_bytes()), Some(4 + MAX_NESTING));
        assert_eq!(too_deep(b"x = [{a=[{b=[{c=[{d=[1]}]}]}]}]"), Some(20));
        for quoted in [
            "x = \"[[[[[[[[[[[[\"",
            "x = '[[[[[[[[[[[[\\'",
            "x = \"\"\"\n[[[[[[[[[[[[\n\"\"\"",
            "x = '''[[[[[[[[[\n[[[['''",
            "x = \"\\\"[[[[[[[[[[[[\"",
            "# [[[[[[[[[[[[[[[",
        ] {
            assert_eq!(too_deep(quoted.as_bytes()), None, "{quoted}");
        }
        // A string ends at its line: what follows on the next line is structure again.
        assert!(too_deep(b"x = \"abc\ny = [[[[[[[[[1]]]]]]]]]").is_some());
        assert!(too_deep(b"x = '''a''' [[[[[[[[[").is_some());
        assert_eq!(too_deep(b"]]]]]]]]]]]]"), None);
        // Dotted keys and headers nest too; a float's dot is counted, harmlessly.
        assert_eq!(too_deep(b"a.b.c.d.e.f.g.h = 1"), None);
        assert_eq!(too_deep(b"a.b.c.d.e.f.g.h.i = 1"), None);
        assert_eq!(too_deep(b"a.b.c.d.e.f.g.h.i.j = 1"), Some(17));
        assert!(too_deep(b"[a.b.c.d]\ne.f.g.h.i.j = 1").is_some());
        assert_eq!(too_deep(b"[a.b.c.d]\ne.f.g = 1\n[x]\ne.f.g.h.i.j = 1"), None);
        assert_eq!(too_deep(b"x = {a.b.c = {d.e.f = [[1]]}}"), None);
        assert!(too_deep(b"x = {a.b.c = {d.e.f.g = [[1]]}}").is_some());
        assert_eq!(
            too_deep(b"[[partition]]\ndevices = [\"a.b.c.d.e.f.g.h.i\", 'x']\nmemory = 1.5"),
            None
        );
    }
}
