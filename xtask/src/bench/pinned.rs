//! The pinned-CPU figures (issue 10, item 7): the CPUID round trip of the bench guest on a CPU
//! of its own (`cpus = [1]`), on a machine of 2 CPUs, once with CPU 0 idle
//! (`scenarios/bench-pinned.toml`, `cpuid-pinned`) and once while a partition on CPU 0 takes
//! an exit storm (`scenarios/bench-pinned-storm.toml`, `cpuid-pinned-storm`). The goal: the
//! second equals the first (a pinned CPU shares nothing per exit with the others). The storm
//! run must also show that the storm ran while the figure was taken: the hypervisor's report
//! of the pinned partition names the exits the other CPUs handled while it ran.

use anyhow::{Result, bail};

use super::{Backend, Row, boot};
use crate::image::Boot;
use crate::run::{self, Spec};
use crate::scenario;

/// (scenario, figure) of each run.
pub const RUNS: &[(&str, &str)] =
    &[("bench-pinned", "cpuid-pinned"), ("bench-pinned-storm", "cpuid-pinned-storm")];
/// Processors of the machine: the boot CPU and the pinned one.
const CPUS: u32 = 2;
/// The least exits CPU 0 must have handled while the storm run's figure was taken.
const STORM_EXITS_MIN: u64 = 1000;

/// Both figures of one backend.
pub fn measure(b: &Backend) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &(scenario_name, figure) in RUNS {
        let modules = scenario::modules(scenario_name)?;
        let label = format!("bench-{}-{scenario_name}", b.backend);
        let mut p = run::prepare(&Spec {
            choice: b.choice,
            boot: Boot::Multiboot,
            cpu: Some(b.cpu),
            memory_mib: 256,
            append: "",
            modules: &modules,
            headless: true,
            gdb: false,
            label: &label,
            input: Vec::new(),
            test_disk: false,
        })?;
        p.launch.cpus = CPUS;
        let storm = figure.ends_with("-storm");
        let ticks = boot(b, p, |ran| parse(&ran.serial, figure, storm))?;
        rows.push(Row {
            bench: figure.to_string(),
            backend: b.backend,
            emulator: b.emulator,
            ticks_per_op: ticks,
            native_ticks_per_op: None,
            message_bytes: None,
        });
    }
    Ok(rows)
}

/// Reads `[bench] BENCH <figure> TICKS`, and with `storm`, the report line that says how many
/// exits the other CPUs handled while the pinned partition ran (at least [`STORM_EXITS_MIN`]).
fn parse(serial: &str, figure: &str, storm: bool) -> Result<u64> {
    let prefix = format!("[bench] BENCH {figure} ");
    let lines = || serial.lines().map(|l| l.trim_end_matches('\r').trim());
    let Some(ticks) = lines().find_map(|l| l.strip_prefix(&prefix)) else {
        bail!("the run printed no line {prefix:?}");
    };
    let Ok(ticks) = ticks.parse::<u64>() else {
        bail!("malformed bench line {prefix}{ticks:?}");
    };
    if !lines().any(|l| l.starts_with("pinned to cpu 1: ")) {
        bail!("the bench partition did not run on CPU 1 (no `pinned to cpu 1` report line)");
    }
    if storm {
        let alongside = lines()
            .find_map(|l| {
                l.strip_prefix("pinned to cpu 1: ran alongside the other CPUs: they handled ")
            })
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if alongside < STORM_EXITS_MIN {
            bail!(
                "the storm did not run beside the pinned CPU: {alongside} exits on the other CPUs (want at least {STORM_EXITS_MIN})"
            );
        }
    }
    Ok(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figure_and_checks_the_storm() {
        let quiet = "[bench] BENCH cpuid-pinned 99\r\n\
                     hypervisor: partition bench (id 0): shut down with status 0 [as expected]\n\
                     \x20   pinned to cpu 1: ran alone: no other CPU handled an exit while it ran\n";
        assert_eq!(parse(quiet, "cpuid-pinned", false).unwrap(), 99);
        let e = parse(quiet, "cpuid-pinned-storm", true).unwrap_err().to_string();
        assert!(e.contains("printed no line"), "{e}");
        let calm = quiet.replace("cpuid-pinned 99", "cpuid-pinned-storm 99");
        let e = parse(&calm, "cpuid-pinned-storm", true).unwrap_err().to_string();
        assert!(e.contains("the storm did not run"), "{e}");
        let stormy = calm.replace(
            "ran alone: no other CPU handled an exit while it ran",
            "ran alongside the other CPUs: they handled 5000 exits while it ran",
        );
        assert_eq!(parse(&stormy, "cpuid-pinned-storm", true).unwrap(), 99);
        let elsewhere = stormy.replace("pinned to cpu 1", "pinned to cpu 2");
        assert!(parse(&elsewhere, "cpuid-pinned-storm", true).is_err());
    }
}
