//! Reading a bench run's figures from its serial log: the guest's and the hypervisor's native
//! lines (`[bench] BENCH NAME TICKS`, `BENCH-NATIVE NAME TICKS`) and the channel's
//! (`[chan] BENCH chan-SIZE TICKS`); a figure missing or malformed is an error.

use anyhow::{Result, bail};

use super::{Backend, CHANNEL_GUEST, CHANNEL_SIZES, GUEST, GUEST_BENCHES, NATIVE_BENCHES, Row};

/// Reads the figures from a serial log; every guest and native figure must be there.
pub(super) fn parse(serial: &str, b: &Backend) -> Result<Vec<Row>> {
    let guest_prefix = format!("[{GUEST}] BENCH ");
    let mut guest: Vec<(String, u64)> = Vec::new();
    let mut native: Vec<(String, u64)> = Vec::new();
    for line in serial.lines().map(|l| l.trim_end_matches('\r').trim()) {
        let (into, rest) = if let Some(rest) = line.strip_prefix("BENCH-NATIVE ") {
            (&mut native, rest)
        } else if let Some(rest) = line.strip_prefix(&guest_prefix) {
            (&mut guest, rest)
        } else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(ticks), None) = (words.next(), words.next(), words.next()) else {
            bail!("malformed bench line {line:?}");
        };
        let Ok(ticks) = ticks.parse::<u64>() else {
            bail!("malformed bench line {line:?}: {ticks:?} is not a number of ticks");
        };
        into.push((name.to_string(), ticks));
    }
    let find =
        |list: &[(String, u64)], name: &str| list.iter().find(|(n, _)| n == name).map(|&(_, t)| t);
    let missing: Vec<String> = GUEST_BENCHES
        .iter()
        .filter(|n| find(&guest, n).is_none())
        .map(|n| format!("{guest_prefix}{n}"))
        .chain(
            NATIVE_BENCHES
                .iter()
                .filter(|n| find(&native, n).is_none())
                .map(|n| format!("BENCH-NATIVE {n}")),
        )
        .collect();
    if !missing.is_empty() {
        bail!("the run printed no line for: {}", missing.join(", "));
    }
    // The guest's figures in its order, then any it measures that this list does not know yet.
    let mut names: Vec<&str> = GUEST_BENCHES.to_vec();
    names.extend(guest.iter().map(|(n, _)| n.as_str()).filter(|n| !GUEST_BENCHES.contains(n)));
    Ok(names
        .into_iter()
        .map(|name| Row {
            bench: name.to_string(),
            backend: b.backend,
            emulator: b.emulator,
            ticks_per_op: find(&guest, name).expect("checked above or taken from the list"),
            native_ticks_per_op: find(&native, name),
            message_bytes: None,
        })
        .collect())
}

/// Reads `[chan] BENCH chan-SIZE TICKS` for every size of [`CHANNEL_SIZES`].
pub(super) fn parse_channel(serial: &str, b: &Backend) -> Result<Vec<Row>> {
    let prefix = format!("[{CHANNEL_GUEST}] BENCH chan-");
    let mut found: Vec<(u64, u64)> = Vec::new();
    for line in serial.lines().map(|l| l.trim_end_matches('\r').trim()) {
        let Some(rest) = line.strip_prefix(&prefix) else { continue };
        let mut words = rest.split_whitespace();
        let (Some(size), Some(ticks), None) = (words.next(), words.next(), words.next()) else {
            bail!("malformed bench line {line:?}");
        };
        let (Ok(size), Ok(ticks)) = (size.parse::<u64>(), ticks.parse::<u64>()) else {
            bail!("malformed bench line {line:?}: want a size and a number of ticks");
        };
        if ticks == 0 {
            bail!("bench line {line:?}: zero ticks per message");
        }
        found.push((size, ticks));
    }
    let missing: Vec<String> = CHANNEL_SIZES
        .iter()
        .filter(|s| !found.iter().any(|(f, _)| f == *s))
        .map(|s| format!("{prefix}{s}"))
        .collect();
    if !missing.is_empty() {
        bail!("the run printed no line for: {}", missing.join(", "));
    }
    Ok(CHANNEL_SIZES
        .iter()
        .map(|&size| Row {
            bench: format!("chan-{size}"),
            backend: b.backend,
            emulator: b.emulator,
            ticks_per_op: found.iter().find(|(f, _)| *f == size).expect("checked").1,
            native_ticks_per_op: None,
            message_bytes: Some(size),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::output::{channel_table, json, table};
    use super::super::{BACKENDS, figures, gate};
    use super::*;

    const LOG: &str = "microhv 0.1.0: booted via multiboot\r\nBENCH-NATIVE cpuid 80\nBENCH-NATIVE out 3\n\
                       BENCH-NATIVE mmio 2\nBENCH-NATIVE loop 4000000\n\
                       hypervisor: starting 1 partition(s)\n\
                       [bench] BENCH boot-to-guest 123456\n[bench] BENCH cpuid 300\n\
                       [bench] BENCH hypercall 250\n[bench] BENCH out 400\n[bench] BENCH mmio 900\n\
                       [bench] BENCH loop 4002001\nhypervisor: power off: ok\n";

    #[test]
    fn parses_every_figure() {
        let rows = parse(LOG, &BACKENDS[0]).unwrap();
        let got: Vec<(&str, u64, Option<u64>)> = rows
            .iter()
            .map(|r| (r.bench.as_str(), r.ticks_per_op, r.native_ticks_per_op))
            .collect();
        assert_eq!(
            got,
            [
                ("boot-to-guest", 123456, None),
                ("cpuid", 300, Some(80)),
                ("hypercall", 250, None),
                ("out", 400, Some(3)),
                ("mmio", 900, Some(2)),
                ("loop", 4002001, Some(4000000)),
            ]
        );
        assert_eq!(rows[5].loop_ratio(), Some(1.0005));
        assert_eq!(rows[1].loop_ratio(), None, "only the loop has a ratio");
        assert!(json(&rows[5]).ends_with(r#""native_ticks_per_op": 4000000, "ratio": 1.0005}"#));
        let figs = figures(&rows);
        assert_eq!(figs.len(), 7);
        assert_eq!(figs[&gate::Key::new("loop-ratio", "vmx", "bochs")], 1.0005);
        assert_eq!(figs[&gate::Key::new("cpuid", "vmx", "bochs")], 300.0);
        assert_eq!(
            json(&rows[1]),
            r#"{"bench": "cpuid", "backend": "vmx", "emulator": "bochs", "ticks_per_op": 300, "native_ticks_per_op": 80}"#
        );
        assert!(
            json(&rows[0]).ends_with(r#""ticks_per_op": 123456, "native_ticks_per_op": null}"#)
        );
        let t = table(&rows.iter().collect::<Vec<_>>());
        assert!(t.contains("\nloop vmx: guest/native 1.0005 (goal at most 1.01"), "{t}");
        assert!(
            t.starts_with("bench          backend  emulator  ticks/op  native ticks/op\n"),
            "{t}"
        );
        assert!(
            t.contains("\ncpuid          vmx      bochs          300               80\n"),
            "{t}"
        );
        assert!(
            t.contains("\nhypercall      vmx      bochs          250                -\n"),
            "{t}"
        );
    }

    #[test]
    fn channel_figures_and_rates() {
        let log = "[mgmt] mgmt> chan chan\n[chan] BENCH chan-64 2000\r\n\
                   [chan] BENCH chan-1024 4000\nhypervisor: power off: ok\n";
        let rows = parse_channel(log, &BACKENDS[1]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].bench.as_str(), rows[0].ticks_per_op), ("chan-64", 2000));
        assert_eq!(rows[0].rates(), Some((500_000, 32_000_000)));
        assert_eq!(rows[1].rates(), Some((250_000, 256_000_000)));
        assert_eq!(
            json(&rows[1]),
            r#"{"bench": "chan-1024", "backend": "svm", "emulator": "qemu-icount", "ticks_per_op": 4000, "native_ticks_per_op": null, "message_bytes": 1024, "messages_per_1e9_ticks": 250000, "bytes_per_1e9_ticks": 256000000}"#
        );
        let t = channel_table(&rows.iter().collect::<Vec<_>>());
        assert!(t.starts_with("channel    backend  emulator     ticks/round trip"), "{t}");
        assert!(t.contains("\nchan-1024  svm      qemu-icount              4000"), "{t}");
        assert!(t.contains("per 10^9 ticks") && t.contains("nominal 1 GHz"), "{t}");
        let short = log.replace("[chan] BENCH chan-1024 4000\n", "");
        let e = parse_channel(&short, &BACKENDS[1]).unwrap_err().to_string();
        assert!(e.contains("[chan] BENCH chan-1024"), "{e}");
        assert!(parse_channel("[chan] BENCH chan-64 0\n", &BACKENDS[1]).is_err());
        assert!(parse_channel("[chan] BENCH chan-x 5\n", &BACKENDS[1]).is_err());
    }

    #[test]
    fn missing_or_malformed_figures_are_errors() {
        let short = LOG.replace("[bench] BENCH hypercall 250\n", "");
        let e = parse(&short, &BACKENDS[0]).unwrap_err().to_string();
        assert!(e.contains("[bench] BENCH hypercall"), "{e}");
        let no_native = LOG.replace("BENCH-NATIVE out 3\n", "");
        assert!(
            parse(&no_native, &BACKENDS[0]).unwrap_err().to_string().contains("BENCH-NATIVE out")
        );
        let bad = LOG.replace("cpuid 300", "cpuid many");
        assert!(parse(&bad, &BACKENDS[0]).unwrap_err().to_string().contains("malformed"));
    }
}
