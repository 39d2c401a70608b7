//! The regression gate: `bench/baseline.json` holds every gated figure (one entry per bench,
//! backend and emulator); `cargo xtask bench --check` compares a fresh run against it and fails
//! when a figure grew by more than [`TOLERANCE_PCT`], or when a figure is in one and not the
//! other (a new bench joins the baseline explicitly, with `--update-baseline`, in a commit that
//! says why). Every figure is a cost: lower is better.
//!
//! The comparison ([`compare`]) is a pure function over two maps; reading and writing the file
//! are kept apart from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::step;

/// How far above its baseline a figure may be before the gate fails, in percent.
pub const TOLERANCE_PCT: f64 = 2.0;
/// The baseline, relative to the workspace root.
pub const BASELINE: &str = "bench/baseline.json";

/// What identifies a figure: bench name, backend, emulator.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub bench: String,
    pub backend: String,
    pub emulator: String,
}

impl Key {
    pub fn new(bench: &str, backend: &str, emulator: &str) -> Self {
        Key { bench: bench.into(), backend: backend.into(), emulator: emulator.into() }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.bench, self.backend, self.emulator)
    }
}

/// Figures by key.
pub type Figures = BTreeMap<Key, f64>;

/// One figure in both maps.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub key: Key,
    pub baseline: f64,
    pub now: f64,
}

impl Change {
    /// Change relative to the baseline, in percent (infinite when a zero baseline grew).
    pub fn pct(&self) -> f64 {
        if self.baseline == 0.0 {
            if self.now == 0.0 { 0.0 } else { f64::INFINITY.copysign(self.now) }
        } else {
            (self.now - self.baseline) / self.baseline * 100.0
        }
    }

    pub fn regressed(&self) -> bool {
        self.pct() > TOLERANCE_PCT
    }

    pub fn improved(&self) -> bool {
        self.pct() < -TOLERANCE_PCT
    }
}

/// The outcome of comparing a run with the baseline.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Every figure in both, in key order.
    pub changes: Vec<Change>,
    /// In the baseline, not measured by this run.
    pub missing_in_run: Vec<Key>,
    /// Measured, not in the baseline.
    pub missing_in_baseline: Vec<Key>,
}

impl Verdict {
    pub fn regressions(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.regressed())
    }

    pub fn improvements(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.improved())
    }

    /// True when nothing regressed and both sides hold the same figures.
    pub fn passed(&self) -> bool {
        self.regressions().next().is_none()
            && self.missing_in_run.is_empty()
            && self.missing_in_baseline.is_empty()
    }

    /// The table (figure, baseline, now, change) and a line for each failure and improvement.
    pub fn report(&self) -> String {
        let head = ["figure", "baseline", "now", "change", ""];
        let cells: Vec<[String; 5]> = self
            .changes
            .iter()
            .map(|c| {
                let mark = if c.regressed() {
                    "REGRESSED"
                } else if c.improved() {
                    "improved"
                } else {
                    ""
                };
                [
                    c.key.to_string(),
                    number(c.baseline),
                    number(c.now),
                    format!("{:+.2}%", c.pct()),
                    mark.to_string(),
                ]
            })
            .collect();
        let width = |i: usize| cells.iter().map(|c| c[i].len()).chain([head[i].len()]).max();
        let w: Vec<usize> = (0..head.len()).map(|i| width(i).unwrap_or(0)).collect();
        let mut out = String::new();
        let mut line = |c: [&str; 5]| {
            let l = format!(
                "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            );
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(head);
        for c in &cells {
            line([&c[0], &c[1], &c[2], &c[3], &c[4]]);
        }
        for c in self.regressions() {
            let _ = writeln!(
                out,
                "FAIL: {} is {:+.2}% against its baseline (more than {TOLERANCE_PCT}% above)",
                c.key,
                c.pct()
            );
        }
        for k in &self.missing_in_run {
            let _ = writeln!(out, "FAIL: {k} is in {BASELINE} but this run did not measure it");
        }
        for k in &self.missing_in_baseline {
            let _ = writeln!(
                out,
                "FAIL: {k} was measured but is not in {BASELINE}: add it with `cargo xtask bench \
                 --update-baseline` in a commit that says why"
            );
        }
        let improved: Vec<String> = self.improvements().map(|c| c.key.to_string()).collect();
        if !improved.is_empty() {
            let _ = writeln!(
                out,
                "improved by more than {TOLERANCE_PCT}%: {}; consider `cargo xtask bench \
                 --update-baseline` in a commit that says why",
                improved.join(", ")
            );
        }
        out
    }
}

/// Compares a run's figures with the baseline's.
pub fn compare(baseline: &Figures, now: &Figures) -> Verdict {
    let mut v = Verdict::default();
    for (key, &base) in baseline {
        match now.get(key) {
            Some(&n) => v.changes.push(Change { key: key.clone(), baseline: base, now: n }),
            None => v.missing_in_run.push(key.clone()),
        }
    }
    v.missing_in_baseline = now.keys().filter(|k| !baseline.contains_key(k)).cloned().collect();
    v
}

/// Each figure's lower reading of two runs (a figure only one run has is taken as it is).
pub fn lower(a: &Figures, b: &Figures) -> Figures {
    let mut out = a.clone();
    for (k, &v) in b {
        out.entry(k.clone()).and_modify(|x| *x = x.min(v)).or_insert(v);
    }
    out
}

/// A figure as written: whole numbers without a fraction, ratios to four places.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") }
}

/// One entry of the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    bench: String,
    backend: String,
    emulator: String,
    value: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    #[allow(dead_code)] // documentation for whoever reads the file
    about: String,
    figures: Vec<Entry>,
}

const ABOUT: &str = "Gated bench figures (ticks = retired instructions; loop-ratio = guest/native). \
                     `cargo xtask bench --check` fails when one is more than 2% above this. Change \
                     only with `cargo xtask bench --update-baseline`, in a commit that says why.";

/// Reads a baseline file's text; a figure listed twice is an error.
pub fn parse(text: &str) -> Result<Figures> {
    let file: File = serde_json::from_str(text)?;
    let mut out = Figures::new();
    for e in file.figures {
        let key = Key { bench: e.bench, backend: e.backend, emulator: e.emulator };
        if !e.value.is_finite() || e.value < 0.0 {
            bail!("{key}: {} is not a figure", e.value);
        }
        if out.insert(key.clone(), e.value).is_some() {
            bail!("{key} is listed twice");
        }
    }
    Ok(out)
}

/// A baseline file's text: one figure per line, in key order, so a change reads as a diff.
pub fn render(figures: &Figures) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"about\": {},", json_str(ABOUT));
    out.push_str("  \"figures\": [\n");
    let lines: Vec<String> = figures
        .iter()
        .map(|(k, v)| {
            format!(
                "    {{\"bench\": {}, \"backend\": {}, \"emulator\": {}, \"value\": {}}}",
                json_str(&k.bench),
                json_str(&k.backend),
                json_str(&k.emulator),
                number(*v)
            )
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

pub fn path() -> PathBuf {
    step::root().join(BASELINE)
}

pub fn load(path: &Path) -> Result<Figures> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read {} (make one with `cargo xtask bench --update-baseline`)", BASELINE)
    })?;
    parse(&text).with_context(|| format!("{BASELINE} is malformed"))
}

pub fn store(path: &Path, figures: &Figures) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(figures)).with_context(|| format!("cannot write {BASELINE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(list: &[(&str, f64)]) -> Figures {
        list.iter().map(|&(b, v)| (Key::new(b, "vmx", "bochs"), v)).collect()
    }

    #[test]
    fn within_tolerance_passes() {
        let base = figs(&[("cpuid", 100.0), ("out", 500.0)]);
        let now = figs(&[("cpuid", 102.0), ("out", 490.0)]);
        let v = compare(&base, &now);
        assert!(v.passed(), "{}", v.report());
        assert_eq!(v.changes.len(), 2);
        assert!(v.improvements().next().is_none());
        assert!(!v.report().contains("FAIL"));
    }

    #[test]
    fn more_than_two_percent_up_fails_with_a_table() {
        let base = figs(&[("cpuid", 100.0), ("out", 500.0)]);
        let now = figs(&[("cpuid", 103.0), ("out", 500.0)]);
        let v = compare(&base, &now);
        assert!(!v.passed());
        let bad: Vec<&str> = v.regressions().map(|c| c.key.bench.as_str()).collect();
        assert_eq!(bad, ["cpuid"]);
        let r = v.report();
        assert!(r.starts_with("figure"), "{r}");
        assert!(r.contains("cpuid vmx (bochs)       100  103  +3.00%  REGRESSED"), "{r}");
        assert!(r.contains("FAIL: cpuid vmx (bochs) is +3.00%"), "{r}");
    }

    #[test]
    fn improvement_suggests_an_update_and_passes() {
        let base = figs(&[("mmio", 1000.0)]);
        let now = figs(&[("mmio", 900.0)]);
        let v = compare(&base, &now);
        assert!(v.passed());
        let r = v.report();
        assert!(r.contains("-10.00%  improved"), "{r}");
        assert!(r.contains("consider `cargo xtask bench --update-baseline`"), "{r}");
    }

    #[test]
    fn missing_figures_fail_either_way() {
        let base = figs(&[("cpuid", 100.0), ("out", 500.0)]);
        let now = figs(&[("cpuid", 100.0), ("loop", 7.0)]);
        let v = compare(&base, &now);
        assert!(!v.passed());
        assert_eq!(v.missing_in_run, [Key::new("out", "vmx", "bochs")]);
        assert_eq!(v.missing_in_baseline, [Key::new("loop", "vmx", "bochs")]);
        let r = v.report();
        assert!(r.contains("out vmx (bochs) is in bench/baseline.json but this run"), "{r}");
        assert!(r.contains("loop vmx (bochs) was measured but is not in"), "{r}");
        // The same bench on another backend is another figure.
        let other: Figures = [(Key::new("cpuid", "svm", "qemu-icount"), 100.0)].into();
        assert!(!compare(&figs(&[("cpuid", 100.0)]), &other).passed());
    }

    #[test]
    fn zero_baseline_and_ratios() {
        let v = compare(&figs(&[("z", 0.0)]), &figs(&[("z", 1.0)]));
        assert!(!v.passed());
        assert!(compare(&figs(&[("z", 0.0)]), &figs(&[("z", 0.0)])).passed());
        // A ratio just within and just beyond 2%.
        assert!(compare(&figs(&[("r", 1.0)]), &figs(&[("r", 1.0199)])).passed());
        assert!(!compare(&figs(&[("r", 1.0)]), &figs(&[("r", 1.0201)])).passed());
    }

    #[test]
    fn a_second_run_counts_with_its_lower_readings() {
        let base = figs(&[("boot", 100.0), ("out", 500.0)]);
        let first = figs(&[("boot", 103.0), ("out", 500.0)]);
        assert!(!compare(&base, &first).passed());
        let second = figs(&[("boot", 100.0), ("out", 520.0), ("new", 1.0)]);
        let both = lower(&first, &second);
        assert_eq!(both, figs(&[("boot", 100.0), ("out", 500.0), ("new", 1.0)]));
        // A real regression stays one: both readings are above.
        let again = lower(&first, &figs(&[("boot", 104.0), ("out", 500.0)]));
        assert!(!compare(&base, &again).passed());
        assert_eq!(again[&Key::new("boot", "vmx", "bochs")], 103.0);
    }

    #[test]
    fn file_round_trip() {
        let mut f = figs(&[("cpuid", 94.0), ("loop-ratio", 1.0012)]);
        f.insert(Key::new("cpuid", "svm", "qemu-icount"), 137.0);
        let text = render(&f);
        assert!(text.contains(
            "{\"bench\": \"cpuid\", \"backend\": \"vmx\", \"emulator\": \"bochs\", \"value\": 94}"
        ));
        assert!(text.contains("\"value\": 1.0012}"));
        assert_eq!(parse(&text).unwrap(), f);
        let twice = text.replace("\"value\": 137}", "\"value\": 137},\n    {\"bench\": \"cpuid\", \"backend\": \"svm\", \"emulator\": \"qemu-icount\", \"value\": 1}");
        assert!(parse(&twice).unwrap_err().to_string().contains("listed twice"));
        assert!(parse("{\"figures\": [{\"bench\": \"x\"}]}").is_err());
        assert!(parse(&text.replace("137", "-1")).is_err());
    }
}
