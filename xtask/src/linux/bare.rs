//! The bare reference: the Linux guest's kernel, initramfs and command line booted on bare QEMU
//! TCG, no hypervisor, deterministic (`-icount shift=0`: the guest's TSC and clocks count
//! retired instructions). It validates the artefacts and `/init`, and gives the bench the
//! figure that the same boot under the hypervisor is compared with.
//!
//! With `microhv.poweroff=1` and `acpi=off` the kernel ends in its halt path (HLT with
//! interrupts off), where QEMU waits forever: the run is over once the serial log shows the
//! checks' summary and the kernel's `reboot: System halted` (or QEMU exits, e.g. after a panic
//! with `panic=-1` and `-no-reboot`).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use super::Artefacts;
use crate::deps;
use crate::step;

/// In a Linux partition's `cmdline`, this word's `@now` becomes the host's Unix time.
pub const DATE_KEY: &str = "microhv.date=";
pub const NOW: &str = "@now";
/// The key that makes `/init` power off after its checks.
pub const POWEROFF: &str = "microhv.poweroff=1";

/// One `/init` check's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    /// `None` for `PASS name`, the reason for `FAIL name: why`.
    pub why: Option<String>,
}

/// What a bare boot measured.
#[derive(Clone, Debug)]
pub struct BareFigures {
    /// The first field of `/proc/uptime` when `/init` started (its `INIT-MARKER`): guest time
    /// from the kernel's start, in instruction-counted seconds.
    pub uptime_s: f64,
    /// The kernel's printk time stamp (its sched_clock, from the TSC) of `Run /init as init
    /// process`: the same moment on the TSC's clock. Under a hypervisor that loses timer ticks
    /// early in the boot the two differ (the uptime runs on jiffies until the TSC clocksource
    /// takes over); `None` with `quiet` or `printk.time=0`.
    pub run_init_s: Option<f64>,
    /// Wall time from starting QEMU to the marker on the serial log.
    pub wall_s: f64,
    /// Wall time from starting QEMU to `ALL-CHECKS-DONE`.
    pub done_wall_s: f64,
    /// Every `PASS`/`FAIL` line, in order.
    pub checks: Vec<Check>,
    /// The whole serial log.
    pub serial: String,
}

/// What a serial log says about `/init`.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub uptime_s: Option<f64>,
    /// The time stamp of the kernel's `Run /init as init process` line.
    pub run_init_s: Option<f64>,
    pub checks: Vec<Check>,
    /// (passed, failed) of `ALL-CHECKS-DONE`.
    pub done: Option<(u32, u32)>,
    /// The kernel reached its halt or power-off path.
    pub halted: bool,
}

/// Reads `/init`'s lines (and the kernel's last words) from a serial log. Lines may carry a
/// partition prefix (`[linux] `) or CRs.
pub fn parse(serial: &str) -> Parsed {
    let mut p = Parsed::default();
    for line in serial.lines() {
        let line = line.trim_end_matches('\r');
        let body = line.strip_prefix('[').and_then(|l| l.split_once("] ")).map_or(line, |x| x.1);
        if let Some(v) = body.strip_prefix("INIT-MARKER uptime=") {
            p.uptime_s = v.trim().parse().ok();
        } else if let Some(name) = body.strip_prefix("PASS ") {
            p.checks.push(Check { name: name.trim().into(), why: None });
        } else if let Some(rest) = body.strip_prefix("FAIL ") {
            let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
            p.checks.push(Check { name: name.trim().into(), why: Some(why.into()) });
        } else if let Some(rest) = body.strip_prefix("ALL-CHECKS-DONE ") {
            let num = |key: &str| {
                rest.split_whitespace().find_map(|w| w.strip_prefix(key)?.parse::<u32>().ok())
            };
            p.done = num("passed=").zip(num("failed="));
        } else if body.contains("reboot: System halted") || body.contains("reboot: Power down") {
            p.halted = true;
        } else if let Some(before) = line.strip_suffix("] Run /init as init process") {
            // `[    0.420153] Run /init ...`, perhaps after a partition prefix.
            p.run_init_s = before.rsplit('[').next().and_then(|t| t.trim().parse().ok());
        }
    }
    p
}

/// `cmdline` with `microhv.date=@now` made `microhv.date=<now>` (Unix seconds).
pub fn expand(cmdline: &str, now: u64) -> String {
    cmdline.replace(&format!("{DATE_KEY}{NOW}"), &format!("{DATE_KEY}{now}"))
}

/// The host's Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `cmdline` of partition `partition` in `scenarios/SCENARIO.toml`, as written there.
pub fn scenario_cmdline(scenario: &str, partition: &str) -> Result<String> {
    let file = crate::scenario::dir().join(format!("{scenario}.toml"));
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    cmdline_in(&text, partition)
        .with_context(|| format!("{}: no partition {partition:?} with a cmdline", file.display()))
}

fn cmdline_in(manifest: &str, partition: &str) -> Option<String> {
    let doc: toml::Table = toml::from_str(manifest).ok()?;
    doc.get("partition")?.as_array()?.iter().find_map(|p| {
        (p.get("name")?.as_str()? == partition)
            .then(|| p.get("cmdline")?.as_str().map(Into::into))?
    })
}

/// The QEMU command line of the bare reference.
fn qemu(a: &Artefacts, cmdline: &str, log: &Path) -> Command {
    let mut cmd = Command::new(deps::path(deps::QEMU));
    cmd.args(["-machine", "pc", "-cpu", "qemu64", "-m", "256", "-nodefaults", "-display", "none"])
        .args(["-no-reboot", "-icount", "shift=0"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(&a.kernel)
        .arg("-initrd")
        .arg(&a.initrd)
        .args(["-append", cmdline]);
    cmd
}

/// Boots `a` on bare QEMU TCG with `cmdline` (`@now` expanded, `microhv.poweroff=1` added) and
/// reads `/init`'s marker and checks. An error when the marker or the summary does not come
/// within `timeout`; failed checks are in the figures, not an error.
pub fn bare_reference(a: &Artefacts, cmdline: &str, timeout: Duration) -> Result<BareFigures> {
    deps::ensure(&[deps::QEMU])?;
    let mut cmdline = expand(cmdline, now());
    if !cmdline.split_whitespace().any(|w| w == POWEROFF) {
        cmdline = format!("{cmdline} {POWEROFF}");
    }
    let run_dir = step::work_dir().join("run").join("linux-bare");
    fs::create_dir_all(&run_dir)?;
    let log = run_dir.join("serial.log");
    fs::write(&log, "")?;
    let mut cmd = qemu(a, &cmdline, &log);
    let (serial, marker, done) =
        step::step(&format!("booting {} on bare QEMU TCG", super::DIR), || {
            let start = Instant::now();
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot start `{}`", step::show(&cmd)))?;
            let mut marker = None;
            let result = loop {
                let serial = fs::read_to_string(&log).unwrap_or_default();
                let p = parse(&serial);
                if marker.is_none() && p.uptime_s.is_some() {
                    marker = Some(start.elapsed());
                }
                let exited = child.try_wait()?.is_some();
                if (p.done.is_some() && p.halted) || exited {
                    let done = p.done.map(|_| start.elapsed());
                    break Ok((serial, marker, done));
                }
                if start.elapsed() > timeout {
                    break Err(anyhow::anyhow!(
                        "no end after {} s (serial log {})",
                        timeout.as_secs(),
                        log.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            // The halted kernel keeps QEMU alive: stop it (it is our own child).
            let _ = child.kill();
            let _ = child.wait();
            result
        })?;
    let p = parse(&serial);
    let (Some(uptime_s), Some(marker)) = (p.uptime_s, marker) else {
        bail!("no INIT-MARKER on the serial log {}:\n{}", log.display(), tail(&serial, 30));
    };
    let Some(done) = done else {
        bail!("no ALL-CHECKS-DONE on the serial log {}:\n{}", log.display(), tail(&serial, 30));
    };
    Ok(BareFigures {
        uptime_s,
        run_init_s: p.run_init_s,
        wall_s: marker.as_secs_f64(),
        done_wall_s: done.as_secs_f64(),
        checks: p.checks,
        serial,
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_logs_give_marker_checks_and_summary() {
        let log = "[    0.000000] Linux version 6.1.0-57-cloud-amd64\r\n\
                   [linux] [    1.300602] Run /init as init process\n\
                   INIT-MARKER uptime=1.71\r\n\
                   PASS uname-r\n\
                   FAIL date: guest time 0 is 1796000000 s from the host's (more than a day)\n\
                   [linux] PASS tmpfs\n\
                   ALL-CHECKS-DONE passed=2 failed=1\n\
                   [    3.1] reboot: System halted\n";
        let p = parse(log);
        assert_eq!(p.uptime_s, Some(1.71));
        assert_eq!(p.run_init_s, Some(1.300602));
        let bare = parse("[    0.420153] Run /init as init process\r\n");
        assert_eq!(bare.run_init_s, Some(0.420153));
        assert_eq!(p.done, Some((2, 1)));
        assert!(p.halted);
        let names: Vec<&str> = p.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["uname-r", "date", "tmpfs"]);
        assert_eq!(p.checks[0].why, None);
        assert_eq!(
            p.checks[1].why.as_deref(),
            Some("guest time 0 is 1796000000 s from the host's (more than a day)")
        );
        let empty = parse("INIT-MARKER uptime=x\nALL-CHECKS-DONE passed=1\n");
        assert_eq!(empty, Parsed::default());
    }

    #[test]
    fn now_is_expanded_only_in_the_date_key() {
        assert_eq!(
            expand("console=ttyS0 microhv.date=@now x=@now", 1_796_000_000),
            "console=ttyS0 microhv.date=1796000000 x=@now"
        );
        assert_eq!(expand("console=ttyS0", 5), "console=ttyS0");
    }

    #[test]
    fn the_cmdline_is_read_from_the_manifest() {
        let m = "name = \"x\"\n[[partition]]\nname = \"probe\"\nimage = \"probe\"\n\
                 [[partition]]\nname = \"linux\"\ncmdline = \"console=ttyS0 acpi=off\"\n";
        assert_eq!(cmdline_in(m, "linux").as_deref(), Some("console=ttyS0 acpi=off"));
        assert_eq!(cmdline_in(m, "probe"), None);
        assert_eq!(cmdline_in(m, "nope"), None);
        let ours = scenario_cmdline(super::super::SCENARIO, super::super::PARTITION).unwrap();
        assert!(ours.contains("console=ttyS0") && ours.contains(&format!("{DATE_KEY}{NOW}")));
    }
}
