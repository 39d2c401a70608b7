//! `cargo xtask fuzz`: builds the fuzzer (`fuzz/`, the `fuzz` profile: release with overflow
//! and debug assertions) and runs it on the host: every target, or those named, for a time or
//! a number of inputs; or one saved input again (`--replay`). `cargo xtask test` runs the same
//! for [`BOUNDED_SECS`] in all (its `fuzz` check).

use std::process::{Command, ExitCode};

use anyhow::{Result, bail};
use clap::Args;

use crate::step;

/// The bounded run in `cargo xtask test`, in seconds, shared among the targets.
pub const BOUNDED_SECS: u32 = 60;
/// Its seed (`--seed`).
pub const BOUNDED_SEED: u64 = 1;

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Fuzz only this target (repeatable; `--list` names them). Default: all.
    #[arg(long)]
    pub target: Vec<String>,
    /// Seconds in all, shared among the targets.
    #[arg(long, default_value_t = 600.0)]
    pub time: f64,
    /// Stop each target after this many inputs instead.
    #[arg(long)]
    pub runs: Option<u64>,
    /// Seed of the mutations (default: from the clock; printed, so a run replays).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run this saved input (a crash file from target/fuzz/crashes/) once on the target(s).
    #[arg(long)]
    pub replay: Option<String>,
    /// List the targets.
    #[arg(long)]
    pub list: bool,
}

/// The arguments of `cargo run` that build and start the fuzzer.
pub fn cargo_args(fuzzer: &[String]) -> Vec<String> {
    let mut a: Vec<String> =
        ["run", "--quiet", "--profile", "fuzz", "-p", "fuzz", "--"].map(String::from).to_vec();
    a.extend(fuzzer.iter().cloned());
    a
}

pub fn command(args: &FuzzArgs) -> Result<ExitCode> {
    let mut fuzzer = Vec::new();
    for t in &args.target {
        fuzzer.extend(["--target".to_string(), t.clone()]);
    }
    if args.list {
        fuzzer.push("--list".into());
    } else if let Some(file) = &args.replay {
        fuzzer.extend(["--replay".to_string(), file.clone()]);
    } else {
        match args.runs {
            Some(n) => fuzzer.extend(["--runs".to_string(), n.to_string()]),
            None => fuzzer.extend(["--time".to_string(), args.time.to_string()]),
        }
        if let Some(s) = args.seed {
            fuzzer.extend(["--seed".to_string(), s.to_string()]);
        }
    }
    let mut cmd: Command = step::cargo();
    cmd.args(cargo_args(&fuzzer));
    step::note(format!("fuzz: cargo {}", cargo_args(&fuzzer).join(" ")));
    let status = cmd.status()?;
    if !status.success() {
        bail!("the fuzzer failed ({status}): see its output above");
    }
    Ok(ExitCode::SUCCESS)
}
