//! The IPI figures (issue 10, item 7): round trips between the two vCPUs of one partition,
//! measured by the probe in its `vcpus=2 bench=1` mode (`guest-images/probe/src/ipi_bench.rs`),
//! in ticks per round trip: `ipi-roundtrip-spin` (the sender spins for the answer),
//! `ipi-roundtrip-hlt` (it halts) and `ipi-self` (a self-IPI, next to the hypervisor's native
//! self-IPI, `BENCH-NATIVE ipi-self`: the bare machine's figure for the same workload; a bare
//! two-CPU ping-pong is not measured).
//!
//! Each run is a scenario and a machine: [`RUNS`] has the vCPUs sharing one CPU
//! (`scenarios/bench-ipi.toml`, where the directed yield of `docs/cpus.md` matters), and
//! `scenarios/bench-ipi-cpus2.toml`, the same partition with `cpus = 2` on a machine of 3 CPUs:
//! each vCPU on a CPU of its own (`vmm/machine/spread.rs`), figures suffixed `-cpus2`.

use anyhow::{Result, bail};

use super::{Backend, Row, boot, spec};
use crate::run;
use crate::scenario;

/// One run: its scenario, the machine's processors, and the suffix of its figures' names.
pub struct Run {
    pub scenario: &'static str,
    pub cpus: u32,
    pub suffix: &'static str,
}

/// The runs of `cargo xtask bench`.
pub const RUNS: &[Run] = &[
    Run { scenario: "bench-ipi", cpus: 1, suffix: "" },
    Run { scenario: "bench-ipi-cpus2", cpus: 3, suffix: "-cpus2" },
];
/// The figures the probe prints, in its order.
pub const FIGURES: &[&str] = &["ipi-roundtrip-spin", "ipi-roundtrip-hlt", "ipi-self"];
/// The partition that measures (`[NAME] BENCH ...`).
const PARTITION: &str = "probe-ipi";

/// Every run's figures on one backend.
pub fn measure(b: &Backend) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for r in RUNS {
        let modules = scenario::modules(r.scenario)?;
        let label = format!("bench-{}-{}", b.backend, r.scenario);
        let mut p = run::prepare(&spec(b, &label, &modules))?;
        p.launch.cpus = r.cpus;
        let found = boot(b, p, |ran| parse(&ran.serial))?;
        rows.extend(found.into_iter().map(|(name, ticks, native)| Row {
            bench: format!("{name}{}", r.suffix),
            backend: b.backend,
            emulator: b.emulator,
            ticks_per_op: ticks,
            native_ticks_per_op: native,
            message_bytes: None,
        }));
    }
    Ok(rows)
}

/// Reads each figure of [`FIGURES`] (`[probe-ipi] BENCH NAME TICKS`) and its native twin where
/// the hypervisor printed one (`BENCH-NATIVE NAME TICKS`); a missing or zero figure, or a
/// failed check of the probe, is an error.
fn parse(serial: &str) -> Result<Vec<(&'static str, u64, Option<u64>)>> {
    let lines = || serial.lines().map(|l| l.trim_end_matches('\r').trim());
    let number = |prefix: &str| -> Result<Option<u64>> {
        let Some(rest) = lines().find_map(|l| l.strip_prefix(prefix)) else { return Ok(None) };
        match rest.parse::<u64>() {
            Ok(t) if t > 0 => Ok(Some(t)),
            _ => bail!("malformed bench line {prefix}{rest:?}"),
        }
    };
    if let Some(fail) = lines().find(|l| l.starts_with(&format!("[{PARTITION}] FAIL "))) {
        bail!("the probe failed: {fail}");
    }
    let mut out = Vec::new();
    for &name in FIGURES {
        let prefix = format!("[{PARTITION}] BENCH {name} ");
        let Some(ticks) = number(&prefix)? else { bail!("the run printed no line {prefix:?}") };
        out.push((name, ticks, number(&format!("BENCH-NATIVE {name} "))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "BENCH-NATIVE cpuid 80\r\nBENCH-NATIVE ipi-self 150\n\
                       [probe-ipi] PASS vcpus2-ap-started\n\
                       [probe-ipi] BENCH ipi-roundtrip-spin 9000\r\n\
                       [probe-ipi] BENCH ipi-roundtrip-hlt 8000\n\
                       [probe-ipi] BENCH ipi-self 2500\nhypervisor: power off: ok\n";

    #[test]
    fn reads_every_figure_and_the_native_twin() {
        let got = parse(LOG).unwrap();
        assert_eq!(
            got,
            [
                ("ipi-roundtrip-spin", 9000, None),
                ("ipi-roundtrip-hlt", 8000, None),
                ("ipi-self", 2500, Some(150)),
            ]
        );
    }

    #[test]
    fn missing_zero_or_failed_is_an_error() {
        let short = LOG.replace("[probe-ipi] BENCH ipi-roundtrip-hlt 8000\n", "");
        assert!(parse(&short).unwrap_err().to_string().contains("ipi-roundtrip-hlt"));
        let zero = LOG.replace("ipi-self 2500", "ipi-self 0");
        assert!(parse(&zero).unwrap_err().to_string().contains("malformed"));
        let failed = format!("[probe-ipi] FAIL ipi-self: an answer did not come\n{LOG}");
        assert!(parse(&failed).unwrap_err().to_string().contains("the probe failed"));
    }
}
