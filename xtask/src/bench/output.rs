//! `cargo xtask bench`'s output: the tables and the JSON lines.

use std::fmt::Write as _;

use super::{LOOP, LOOP_RATIO_GOAL, Row};

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(super) fn json(r: &Row) -> String {
    let native = r.native_ticks_per_op.map_or("null".to_string(), |n| n.to_string());
    let channel = match (r.message_bytes, r.rates()) {
        (Some(bytes), Some((messages, payload))) => format!(
            ", \"message_bytes\": {bytes}, \"messages_per_1e9_ticks\": {messages}, \"bytes_per_1e9_ticks\": {payload}"
        ),
        _ => r.loop_ratio().map(|x| format!(", \"ratio\": {x:.4}")).unwrap_or_default(),
    };
    format!(
        "{{\"bench\": {}, \"backend\": {}, \"emulator\": {}, \"ticks_per_op\": {}, \"native_ticks_per_op\": {native}{channel}}}",
        json_string(&r.bench),
        json_string(r.backend),
        json_string(r.emulator),
        r.ticks_per_op,
    )
}

pub(super) fn table(rows: &[&Row]) -> String {
    let head = ["bench", "backend", "emulator", "ticks/op", "native ticks/op"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.bench.clone(),
                r.backend.to_string(),
                r.emulator.to_string(),
                r.ticks_per_op.to_string(),
                r.native_ticks_per_op.map_or("-".to_string(), |n| n.to_string()),
            ]
        })
        .collect();
    let mut out = layout(&head, &cells);
    for r in rows {
        if let Some(ratio) = r.loop_ratio() {
            let _ = writeln!(
                out,
                "{LOOP} {}: guest/native {ratio:.4} (goal at most {LOOP_RATIO_GOAL}; ticks per walk \
                 of 4 MiB)",
                r.backend
            );
        }
    }
    out
}

/// The channel figures: ticks per round trip, and what that makes per 10^9 ticks.
pub(super) fn channel_table(rows: &[&Row]) -> String {
    let head = [
        "channel",
        "backend",
        "emulator",
        "ticks/round trip",
        "msgs per 10^9 ticks",
        "payload bytes per 10^9 ticks",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (messages, bytes) = r.rates().unwrap_or_default();
            vec![
                r.bench.clone(),
                r.backend.to_string(),
                r.emulator.to_string(),
                r.ticks_per_op.to_string(),
                messages.to_string(),
                bytes.to_string(),
            ]
        })
        .collect();
    let mut out = layout(&head, &cells);
    out.push_str(
        "(10^9 ticks: one second at a nominal 1 GHz, one tick per instruction; payload counted \
         one way, the echo carries as much back)\n",
    );
    out
}

/// Columns padded to their widest cell: text (the first three) to the left, figures right.
fn layout(head: &[&str], cells: &[Vec<String>]) -> String {
    let width =
        |i: usize| cells.iter().map(|c| c[i].len()).chain([head[i].len()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        for (i, c) in cols.iter().enumerate() {
            if i < 3 {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            } else {
                let _ = write!(out, "{c:>w$}  ", w = widths[i]);
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(head);
    for c in cells {
        let cols: Vec<&str> = c.iter().map(String::as_str).collect();
        line(&cols);
    }
    out
}
