//! `cargo xtask bench --profile`: where a slow-path exit's ticks go. Builds the hypervisor with
//! its `exit-profile` feature (`hypervisor/src/vmm/profile.rs`: the run loop reads the TSC at
//! each stage boundary), boots the bench guest on each backend, prints the averaged ticks per
//! stage and exit kind from the `EXIT-PROFILE` lines, then builds the kernels again without
//! the feature, so that what later runs and measures is the unmarked kernel.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{BACKENDS, Backend, boot_guest};
use crate::build::{self, guest_crates};
use crate::deps::KERNEL_TARGET;
use crate::step;

const FEATURE: &str = "hypervisor/exit-profile";
const PREFIX: &str = "EXIT-PROFILE ";
const SPLIT_PREFIX: &str = "EXIT-PROFILE-SPLIT ";

/// One exit kind's averages.
#[derive(Debug, PartialEq, Eq)]
struct Kind {
    name: String,
    exits: u64,
    /// (stage, ticks per round trip), in the kernel's stage order, `total` last.
    stages: Vec<(String, u64)>,
}

/// `Vcpu::run` of one site split by the guest's TSC stamps: (site, round trips, entry, guest,
/// exit).
type Split = (String, u64, [u64; 3]);

/// What one run printed: the cost of one mark, each site's averages, the splits.
#[derive(Debug, PartialEq, Eq)]
struct Profile {
    mark_cost: u64,
    kinds: Vec<Kind>,
    splits: Vec<Split>,
}

/// The kernel build of `build::kernels`, with or without [`FEATURE`]. `build::kernels` runs
/// once per xtask run (`run::prepare` calls it too), so the profile runs it first and then
/// rebuilds around it.
fn build(with_feature: bool) -> Result<()> {
    let what = if with_feature { format!("with {FEATURE}") } else { "without it".to_string() };
    step::step(&format!("building the kernel {what}"), || {
        let mut cmd = step::cargo();
        cmd.args(["build", "--quiet", "--release", "--target", KERNEL_TARGET, "-p", "boot"]);
        for krate in guest_crates() {
            cmd.args(["-p", krate]);
        }
        if with_feature {
            cmd.args(["--features", FEATURE]);
        }
        step::run(&mut cmd)
    })
}

pub fn profile() -> Result<ExitCode> {
    build::kernels()?;
    build(true)?;
    let mut failed = false;
    for b in BACKENDS {
        match boot_guest(b, "profile", |ran| parse(&ran.serial)) {
            Ok(p) => print!("{}", table(b, &p)),
            Err(e) => {
                step::note(format!("profile {} ({}): FAILED: {e:#}", b.backend, b.emulator));
                failed = true;
            }
        }
    }
    // Leave the unmarked kernel behind for whatever runs next.
    build(false)?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Reads the `EXIT-PROFILE` lines of a serial log.
fn parse(serial: &str) -> Result<Profile> {
    let mut mark_cost = None;
    let mut kinds = Vec::new();
    let mut splits = Vec::new();
    for line in serial.lines().map(|l| l.trim_end_matches('\r').trim()) {
        if let Some(rest) = line.strip_prefix(SPLIT_PREFIX) {
            splits.push(parse_split(line, rest)?);
            continue;
        }
        let Some(rest) = line.strip_prefix(PREFIX) else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let number = |w: &str| {
            w.parse::<u64>().map_err(|_| anyhow::anyhow!("malformed profile line {line:?}"))
        };
        match words.as_slice() {
            ["mark-cost", n] => mark_cost = Some(number(n)?),
            [name, exits, stages @ ..] if !stages.is_empty() => {
                let stages = stages
                    .iter()
                    .map(|s| {
                        let (k, v) = s.split_once('=').ok_or_else(|| {
                            anyhow::anyhow!("malformed profile line {line:?}: {s:?}")
                        })?;
                        Ok((k.to_string(), number(v)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                kinds.push(Kind { name: name.to_string(), exits: number(exits)?, stages });
            }
            _ => bail!("malformed profile line {line:?}"),
        }
    }
    let Some(mark_cost) = mark_cost else {
        bail!("no `{PREFIX}` lines: was the kernel built with {FEATURE}?");
    };
    Ok(Profile { mark_cost, kinds, splits })
}

/// `SITE N entry=E guest=G exit=X`.
fn parse_split(line: &str, rest: &str) -> Result<Split> {
    let bad = || anyhow::anyhow!("malformed profile line {line:?}");
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [site, n, parts @ ..] = words.as_slice() else { return Err(bad()) };
    let mut ticks = [0u64; 3];
    if parts.len() != 3 {
        return Err(bad());
    }
    for ((part, want), t) in parts.iter().zip(["entry", "guest", "exit"]).zip(&mut ticks) {
        let (k, v) = part.split_once('=').ok_or_else(bad)?;
        if k != want {
            return Err(bad());
        }
        *t = v.parse().map_err(|_| bad())?;
    }
    Ok((site.to_string(), n.parse().map_err(|_| bad())?, ticks))
}

/// One table per backend: a row per exit kind, a column per stage.
fn table(b: &Backend, p: &Profile) -> String {
    let mut out = format!(
        "exit profile, {} ({}): ticks per round trip by stage, averaged; one mark costs {} \
         ticks, counted in the stage after it\n",
        b.backend, b.emulator, p.mark_cost
    );
    let Some(first) = p.kinds.first() else {
        out.push_str("(no slow-path exits)\n");
        return out;
    };
    let mut head = vec!["kind".to_string(), "exits".to_string()];
    head.extend(first.stages.iter().map(|(s, _)| s.clone()));
    let rows: Vec<Vec<String>> = p
        .kinds
        .iter()
        .map(|k| {
            let mut r = vec![k.name.clone(), k.exits.to_string()];
            r.extend(k.stages.iter().map(|(_, v)| v.to_string()));
            r
        })
        .collect();
    let width = |i: usize| {
        rows.iter().filter_map(|r| r.get(i)).map(String::len).chain([head[i].len()]).max()
    };
    let widths: Vec<usize> = (0..head.len()).map(|i| width(i).unwrap_or(0)).collect();
    for r in std::iter::once(&head).chain(&rows) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = if i == 0 { write!(line, "{c:<w$}  ") } else { write!(line, "{c:>w$}  ") };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for (site, n, [entry, guest, exit]) in &p.splits {
        let _ = writeln!(
            out,
            "{site}: run = entry {entry} + guest {guest} + exit {exit} ({n} round trips with the \
             guest's TSC stamps: entry from the run loop's mark to the guest's first \
             instruction, guest up to five instructions before the exiting one, exit from \
             there back to the run loop)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "BENCH-NATIVE cpuid 2\r\n[bench] BENCH out 700\nEXIT-PROFILE mark-cost 6\n\
                       EXIT-PROFILE io 2000 stats=10 last-exits=20 handler=300 events=40 run=330 total=700\n\
                       EXIT-PROFILE hypercall 2000 stats=10 last-exits=20 handler=100 events=40 run=300 total=470\n\
                       EXIT-PROFILE io@0x2001 255 stats=10 last-exits=20 handler=300 events=40 run=330 total=700\n\
                       EXIT-PROFILE-SPLIT io@0x2001 254 entry=100 guest=6 exit=224\n";

    #[test]
    fn parses_and_tabulates() {
        let p = parse(LOG).unwrap();
        assert_eq!(p.mark_cost, 6);
        assert_eq!(p.kinds.len(), 3);
        assert_eq!(p.splits, [("io@0x2001".to_string(), 254, [100, 6, 224])]);
        assert_eq!(p.kinds[0].name, "io");
        assert_eq!(p.kinds[0].exits, 2000);
        assert_eq!(p.kinds[0].stages[2], ("handler".to_string(), 300));
        let t = table(&BACKENDS[0], &p);
        assert!(t.contains("one mark costs 6 ticks"), "{t}");
        assert!(
            t.contains("kind       exits  stats  last-exits  handler  events  run  total\n"),
            "{t}"
        );
        assert!(
            t.contains("\nio          2000     10          20      300      40  330    700"),
            "{t}"
        );
    }

    #[test]
    fn a_kernel_without_the_feature_or_a_bad_line_is_an_error() {
        let e = parse("[bench] BENCH out 700\n").unwrap_err().to_string();
        assert!(e.contains(FEATURE), "{e}");
        assert!(parse("EXIT-PROFILE mark-cost x\n").is_err());
        assert!(parse("EXIT-PROFILE mark-cost 1\nEXIT-PROFILE io 5 stats\n").is_err());
        assert!(parse("EXIT-PROFILE mark-cost 1\nEXIT-PROFILE io\n").is_err());
        let split = "EXIT-PROFILE mark-cost 1\nEXIT-PROFILE-SPLIT io@0x1 5 entry=1 guest=2\n";
        assert!(parse(split).is_err());
        assert!(parse(&split.replace("guest=2", "guest=2 exit=x")).is_err());
        assert!(parse(&split.replace("guest=2", "exit=2 guest=3")).is_err());
    }
}
