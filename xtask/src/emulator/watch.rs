//! Runs an emulator and watches it: follows the serial log (echoing it if asked), plays the
//! launch's input script against it, notes when the banner appears, and kills a run that
//! outlives its timeout. Unless the console is the terminal (interactive QEMU), COM1 is a socket
//! (`com1`) whose output a thread writes to the serial log.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::com1::{Connection, Listener};
use super::input::Script;
use super::{Emulator, Launch, Outcome};
use crate::image;
use crate::step;

/// The start of the hypervisor's first line: its appearance is "banner" in the timings.
pub const BANNER: &str = "microhv ";
/// How long an emulator may take to connect its COM1 socket (both do it as they start).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a run is watched.
pub struct Watch {
    /// Kill the run after this long.
    pub timeout: Option<Duration>,
    /// Copy the serial console to stdout as it arrives.
    pub echo: bool,
    /// Measure the emulator's host CPU time over this long from the end of the input script
    /// ([`Ran::cpu_share`]), then kill the run.
    pub cpu_window: Option<Duration>,
}

/// What a watched run came to.
#[derive(Debug)]
pub struct Ran {
    /// `None` when the run was killed at its timeout.
    pub outcome: Option<Outcome>,
    /// The serial console (empty when it went straight to the terminal).
    pub serial: String,
    /// From launch to the banner on the serial console.
    pub banner_after: Option<Duration>,
    pub elapsed: Duration,
    /// The input step still waiting when the run ended (`None`: the script ran to its end).
    pub input_left: Option<String>,
    /// With [`Watch::cpu_window`]: the emulator's host CPU time (all its threads) over the wall time
    /// from the end of the input script to the end of the run, and that wall time.
    pub cpu_share: Option<(f64, Duration)>,
}

/// The host CPU time a process has used so far (user + system, all threads; proc(5),
/// `/proc/PID/stat` fields 14 and 15, in clock ticks of `getconf CLK_TCK`).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64))
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Boots `launch` under `emu` and waits for it to end.
pub fn run(emu: &dyn Emulator, launch: &Launch, watch: &Watch) -> Result<Ran> {
    let _lock = step::lock(&launch.run_dir)?;
    // A fresh run folder: nothing from an earlier run (log, lock, disk copy) can mislead this one.
    let _ = fs::remove_dir_all(&launch.run_dir);
    fs::create_dir_all(&launch.run_dir)
        .with_context(|| format!("creating {}", launch.run_dir.display()))?;
    let serial_path = launch.serial_log();
    if launch.test_disk {
        image::write_test_disk(&launch.test_disk_path())?;
    }
    let listener = if emu.serial_on_terminal(launch) {
        None
    } else {
        Some(Listener::bind(emu.com1_kind(), &launch.run_dir)?)
    };
    let mut cmd = emu.command(launch, listener.as_ref().map(Listener::endpoint))?;
    if launch.headless {
        cmd.stdin(Stdio::null());
    }
    if !emu.serial_on_terminal(launch) {
        // The terminal shows the serial console only; the emulator's own chatter goes to a log.
        let log = File::create(launch.emulator_log())?;
        cmd.stdout(log.try_clone()?).stderr(log);
    }
    // Created before the emulator starts, so that `tail -f` finds it at once.
    let log = match &listener {
        Some(_) => Some(
            File::create(&serial_path)
                .with_context(|| format!("creating {}", serial_path.display()))?,
        ),
        None => None,
    };
    step::close_line();
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{}`", step::show(&cmd)))?;
    let connection = match (&listener, log) {
        (Some(l), Some(log)) => {
            let within = watch.timeout.unwrap_or(CONNECT_TIMEOUT).min(CONNECT_TIMEOUT);
            match l.accept(&mut child, within) {
                Ok(Some(stream)) => {
                    let typed = File::create(launch.typed_log())?;
                    Some(Connection::start(stream, log, typed)?)
                }
                Ok(None) => None,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let mut script = Script::new(launch.input.clone());
    // (wall, CPU) when the input script ended, and at the last look before the run ended.
    let mut cpu_mark: Option<(Instant, Duration)> = None;
    let mut cpu_last: Option<(Instant, Duration)> = None;
    let mut serial = Vec::new();
    let mut file = None;
    let mut banner_after = None;
    let mut follow = |serial: &mut Vec<u8>, banner_after: &mut Option<Duration>| {
        if file.is_none() {
            file = File::open(&serial_path).ok();
        }
        let Some(f) = file.as_mut() else { return };
        let from = serial.len();
        if f.read_to_end(serial).is_ok() && serial.len() > from {
            if watch.echo {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&serial[from..]);
                let _ = out.flush();
            }
            if banner_after.is_none() && contains(serial, BANNER.as_bytes()) {
                *banner_after = Some(start.elapsed());
            }
        }
    };
    let outcome = loop {
        follow(&mut serial, &mut banner_after);
        if let Some(c) = &connection {
            let typed = script.poll(&serial);
            if !typed.is_empty() {
                c.send(typed);
            }
        }
        if let Some(window) = watch.cpu_window.filter(|_| script.waiting().is_none()) {
            let now = cpu_time(child.id()).map(|t| (Instant::now(), t));
            match cpu_mark {
                None => cpu_mark = now,
                Some((w0, _)) => {
                    cpu_last = now;
                    if w0.elapsed() >= window {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            }
        }
        if let Some(status) = child.try_wait()? {
            break Some(emu.outcome(status, launch));
        }
        if watch.timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    if let Some(c) = connection {
        c.finish();
    }
    drop(listener);
    follow(&mut serial, &mut banner_after);
    if watch.echo && serial.last().is_some_and(|&b| b != b'\n') {
        println!();
    }
    Ok(Ran {
        outcome,
        serial: String::from_utf8_lossy(&serial).into_owned(),
        banner_after,
        elapsed,
        input_left: script.waiting(),
        cpu_share: cpu_mark.zip(cpu_last).map(|((w0, c0), (w1, c1))| {
            let wall = w1.duration_since(w0);
            (c1.saturating_sub(c0).as_secs_f64() / wall.as_secs_f64().max(1e-9), wall)
        }),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The last `n` lines of a serial log, indented for a report.
pub fn tail(serial: &str, n: usize) -> String {
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    if lines.iter().all(|l| l.trim().is_empty()) {
        return "    (nothing on the serial console)\n".into();
    }
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| format!("    | {l}\n")).collect()
}
