//! `hvfuzz`: runs the fuzz targets (`targets.rs`) on the host for a time or a number of
//! inputs, starting from the corpus in `fuzz/corpus/<target>/` and the built-in seeds, with
//! libFuzzer-style mutations (`mutate.rs`). Inputs that give a target an outcome it has not
//! given before join the pool it mutates (behavioural feedback; stable Rust has no coverage
//! instrumentation to steer by). A panic saves the input to `target/fuzz/crashes/` and
//! ends the run with a failure; `--replay FILE` runs one saved input again.
//!
//! ```text
//! hvfuzz [--target NAME]... [--time SECONDS] [--runs N] [--seed N] [--replay FILE]
//!        [--write-seeds] [--list]
//! ```
//! `cargo xtask fuzz` builds and runs it (`--time` 60 s by default); `cargo xtask test` runs
//! it for about a minute in all (the `fuzz` check).

mod mutate;
mod rng;
mod seeds;
mod targets;

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rng::Rng;
use targets::{TARGETS, Target};

/// Most inputs kept per target besides the corpus.
const POOL_MAX: usize = 4096;

thread_local! {
    /// The target and input now running, for the panic hook.
    static CURRENT: RefCell<(&'static str, Vec<u8>)> = const { RefCell::new(("", Vec::new())) };
}

struct Args {
    targets: Vec<&'static Target>,
    time: Option<Duration>,
    runs: Option<u64>,
    seed: u64,
    replay: Option<PathBuf>,
    write_seeds: bool,
    list: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        targets: Vec::new(),
        time: None,
        runs: None,
        seed: 0,
        replay: None,
        write_seeds: false,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    let mut seeded = false;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--target" => {
                let v = value("--target")?;
                let t = TARGETS.iter().find(|t| t.name == v).ok_or_else(|| {
                    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                    format!("unknown target {v:?}; targets: {}", names.join(", "))
                })?;
                a.targets.push(t);
            }
            "--time" => {
                let s: f64 = value("--time")?.parse().map_err(|e| format!("--time: {e}"))?;
                a.time = Some(Duration::from_secs_f64(s));
            }
            "--runs" => {
                a.runs = Some(value("--runs")?.parse().map_err(|e| format!("--runs: {e}"))?)
            }
            "--seed" => {
                a.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?;
                seeded = true;
            }
            "--replay" => a.replay = Some(value("--replay")?.into()),
            "--write-seeds" => a.write_seeds = true,
            "--list" => a.list = true,
            other => return Err(format!("unknown argument {other:?} (see the source's header)")),
        }
    }
    if a.targets.is_empty() {
        a.targets = TARGETS.iter().collect();
    }
    if !seeded {
        a.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    if a.time.is_none() && a.runs.is_none() {
        a.time = Some(Duration::from_secs(60));
    }
    Ok(a)
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("fuzz").join("crashes")
}

/// The corpus files of `target` and its built-in seeds.
fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let mut inputs = seeds::seeds(target);
    if let Ok(dir) = std::fs::read_dir(corpus_dir(target)) {
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        inputs.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    inputs
}

/// Saves the running input and says how to replay it; the default hook then prints the panic.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        CURRENT.with(|c| {
            let (target, input) = &*c.borrow();
            let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            let path = crash_dir().join(format!("{target}-{hash:016x}"));
            let saved = std::fs::create_dir_all(crash_dir()).and_then(|()| std::fs::write(&path, input));
            let head: Vec<String> = input.iter().take(48).map(|b| format!("{b:02x}")).collect();
            eprintln!("fuzz: CRASH in target {target}, input of {} bytes: {}", input.len(), head.join(" "));
            match saved {
                Ok(()) => eprintln!(
                    "fuzz: input saved to {}; replay: cargo xtask fuzz --target {target} --replay {}",
                    path.display(),
                    path.display()
                ),
                Err(e) => eprintln!("fuzz: could not save the input: {e}"),
            }
        });
        default(info);
    }));
}

fn run_one(t: &'static Target, input: &[u8]) -> u64 {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        c.0 = t.name;
        c.1.clear();
        c.1.extend_from_slice(input);
    });
    (t.run)(input)
}

/// Fuzzes `t` until `deadline` or `runs` inputs; returns (inputs run, distinct outcomes).
fn fuzz(
    t: &'static Target,
    rng: &mut Rng,
    deadline: Option<Instant>,
    runs: Option<u64>,
) -> (u64, usize) {
    let mut pool = load_corpus(t.name);
    let mut outcomes = HashSet::new();
    let mut n = 0u64;
    for input in pool.clone() {
        outcomes.insert(run_one(t, &input));
        n += 1;
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let corpus_len = pool.len();
    loop {
        if runs.is_some_and(|r| n >= r)
            || (n.is_multiple_of(64) && deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        let mut input = if rng.below(16) == 0 {
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            pool[rng.below(pool.len())].clone()
        };
        let other = &pool[rng.below(pool.len())];
        mutate::mutate(rng, &mut input, other);
        let outcome = run_one(t, &input);
        n += 1;
        if outcomes.insert(outcome) {
            if pool.len() < POOL_MAX {
                pool.push(input);
            } else {
                let at = corpus_len + rng.below(POOL_MAX - corpus_len);
                pool[at] = input;
            }
        }
    }
    (n, outcomes.len())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hvfuzz: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.list {
        for t in TARGETS {
            println!("{}", t.name);
        }
        return ExitCode::SUCCESS;
    }
    if args.write_seeds {
        for t in &args.targets {
            let dir = corpus_dir(t.name);
            for (i, s) in seeds::seeds(t.name).iter().enumerate() {
                let path = dir.join(format!("seed-{i}"));
                if let Err(e) =
                    std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, s))
                {
                    eprintln!("hvfuzz: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    install_panic_hook();
    if let Some(file) = &args.replay {
        let input = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("hvfuzz: reading {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        };
        for t in &args.targets {
            let outcome = run_one(t, &input);
            println!("fuzz: {}: replayed {} bytes, outcome {outcome:#018x}", t.name, input.len());
        }
        return ExitCode::SUCCESS;
    }
    println!("fuzz: seed {} (--seed replays the run), {} target(s)", args.seed, args.targets.len());
    let mut rng = Rng::new(args.seed);
    let share = args.time.map(|t| t / args.targets.len() as u32);
    let mut total = 0;
    for t in &args.targets {
        let start = Instant::now();
        let (n, outcomes) = fuzz(t, &mut rng, share.map(|s| start + s), args.runs);
        total += n;
        println!(
            "fuzz: {}: {n} inputs, {outcomes} distinct outcomes, {:.1} s",
            t.name,
            start.elapsed().as_secs_f64()
        );
    }
    println!("fuzz: {total} inputs in all, no crash");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target runs over its corpus and seeds without a finding (the corpus replays in
    /// `cargo test`), and a few hundred mutations of them with a fixed seed.
    #[test]
    fn corpus_and_a_short_run_pass() {
        let mut rng = Rng::new(1);
        for t in TARGETS {
            let (n, outcomes) = fuzz(t, &mut rng, None, Some(300));
            assert!(n >= 300 && outcomes >= 1, "{}: {n} inputs, {outcomes} outcomes", t.name);
        }
    }

    /// The mutator changes inputs and keeps them under the size limit.
    #[test]
    fn mutations_change_inputs_within_bounds() {
        let mut rng = Rng::new(7);
        let mut changed = 0;
        for _ in 0..1000 {
            let mut v = vec![0u8; 32];
            mutate::mutate(&mut rng, &mut v, &[1, 2, 3]);
            assert!(v.len() <= mutate::MAX_LEN);
            changed += usize::from(v != [0u8; 32]);
        }
        assert!(changed > 900, "{changed} of 1000 mutated inputs differ");
    }
}
