//! `idle-cpu`: the host CPU the emulator uses while every partition waits (the default
//! scenario, `cargo xtask run`'s, with the management partition at its prompt), as a share of
//! one host core over [`WINDOW`], next to bare QEMU whose firmware found nothing to boot (a
//! halted CPU: the floor of the emulator itself).
//!
//! Printed by `cargo xtask bench`, not gated: it is host time, which depends on the machine and
//! on what else runs there. Only under QEMU TCG (SVM): Bochs with `clock: sync=none` runs as
//! fast as it can through a halted CPU by design, so its host time says nothing about ours.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::deps;
use crate::emulator::input::Step;
use crate::emulator::watch::{self, Watch};
use crate::emulator::{Choice, QEMU_TCG_CPU};
use crate::image::Boot;
use crate::run::{self, Spec};
use crate::scenario;
use crate::step;

/// How long the partitions are left idle while the emulator's CPU time is counted.
pub const WINDOW: Duration = Duration::from_secs(30);
/// The share of a host core the issue asks for at most.
pub const GOAL: f64 = 0.05;
/// From launch to the management partition's prompt, at most.
const BOOT: Duration = Duration::from_secs(60);

/// One idle-cpu measurement: shares of one host core.
#[derive(Debug)]
pub struct IdleCpu {
    pub hypervisor: f64,
    pub bare: f64,
    /// The wall time the hypervisor's share was counted over.
    pub window: Duration,
}

/// Boots the default scenario, waits for the prompt, then counts the emulator's CPU time until
/// the run is killed; then the same for bare QEMU.
pub fn measure() -> Result<IdleCpu> {
    let modules = scenario::modules(scenario::MGMT)?;
    let p = run::prepare(&Spec {
        choice: Choice::Qemu,
        boot: Boot::Multiboot,
        cpu: Some(QEMU_TCG_CPU),
        memory_mib: 256,
        append: "",
        modules: &modules,
        headless: true,
        gdb: false,
        label: "bench-svm-idle",
        input: vec![Step::new(&["[mgmt] mgmt> "], "")],
        test_disk: true,
    })?;
    step::note(format!(
        "bench idle-cpu: booting the `{}` scenario and leaving it idle for {} s",
        scenario::MGMT,
        WINDOW.as_secs()
    ));
    // The prompt comes within BOOT; the run is killed WINDOW after it.
    let watch = Watch { timeout: Some(BOOT + WINDOW), echo: false, cpu_window: Some(WINDOW) };
    let ran = watch::run(p.emulator.as_ref(), &p.launch, &watch)?;
    if ran.outcome.is_some() {
        anyhow::bail!(
            "the idle run ended by itself instead of idling:\n{}",
            watch::tail(&ran.serial, 10)
        );
    }
    let (hypervisor, window) = ran
        .cpu_share
        .filter(|(_, w)| *w >= WINDOW)
        .with_context(|| format!("no management prompt within {} s", BOOT.as_secs()))?;
    Ok(IdleCpu { hypervisor, bare: bare_share()?, window })
}

/// Bare QEMU TCG with no boot device: SeaBIOS reports that and halts until its retry.
fn bare_share() -> Result<f64> {
    let mut child = std::process::Command::new(deps::path(deps::QEMU))
        .args(["-machine", "pc", "-cpu", "qemu64", "-m", "256", "-nodefaults"])
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bare QEMU")?;
    // Past the firmware's boot attempts.
    std::thread::sleep(Duration::from_secs(5));
    let t0 = watch::cpu_time(child.id());
    let start = std::time::Instant::now();
    std::thread::sleep(WINDOW);
    let t1 = watch::cpu_time(child.id());
    let wall = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let (t0, t1) = t0.zip(t1).context("cannot read bare QEMU's CPU time from /proc")?;
    Ok(t1.saturating_sub(t0).as_secs_f64() / wall.as_secs_f64())
}

/// The report's line.
pub fn report(m: &IdleCpu) -> String {
    format!(
        "idle-cpu svm qemu-tcg: the emulator used {:.1}% of a host core over {:.0} s with every partition idle, bare QEMU with nothing to boot {:.1}% (goal at most {:.0}%): {}\n",
        m.hypervisor * 100.0,
        m.window.as_secs_f64(),
        m.bare * 100.0,
        GOAL * 100.0,
        if m.hypervisor <= GOAL { "met" } else { "not met" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_time_and_reports() {
        // Spin until this process has used at least one clock tick of CPU time (a few ms).
        let start = std::time::Instant::now();
        let mut t = Duration::ZERO;
        while t == Duration::ZERO && start.elapsed() < Duration::from_secs(5) {
            t = watch::cpu_time(std::process::id()).expect("/proc/self/stat is readable");
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(t > Duration::ZERO, "CPU time never grew: /proc/PID/stat misread");
        assert_eq!(watch::cpu_time(u32::MAX), None);
        let m = IdleCpu { hypervisor: 0.021, bare: 0.007, window: Duration::from_secs(31) };
        let r = report(&m);
        assert!(r.contains("2.1% of a host core over 31 s"), "{r}");
        assert!(r.contains("met"));
        assert!(report(&IdleCpu { hypervisor: 0.5, ..m }).contains("not met"));
    }
}
