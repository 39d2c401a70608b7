//! `cargo xtask run`: build what is stale and boot the hypervisor.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::build;
use crate::deps;
use crate::emulator::input::Step;
use crate::emulator::watch::{self, Ran, Watch};
use crate::emulator::{self, Choice, Emulator, Launch, Outcome};
use crate::image::{self, Boot, Module};
use crate::scenario;
use crate::step;

/// Exit status of a run killed at its timeout (as `timeout(1)` does).
pub const TIMEOUT_STATUS: u8 = 124;
/// Exit status of a run that ended without a hypervisor status.
pub const NO_STATUS: u8 = 2;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Which emulator: auto = QEMU with KVM where KVM nests, else QEMU TCG (SVM backend);
    /// bochs = the VMX backend.
    #[arg(long, value_enum, default_value_t = Choice::Auto)]
    pub emulator: Choice,
    /// Boot protocol: multiboot (QEMU -kernel, or GRUB under Bochs) or uefi (OVMF + bootloader).
    #[arg(long, value_enum, default_value_t = Boot::Multiboot)]
    pub boot: Boot,
    /// CPU model: QEMU's -cpu (default qemu64,+svm,+npt; host with KVM) or Bochs' cpu model
    /// (default tigerlake; e.g. corei7_skylake_x).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Processors of the emulated machine (QEMU -smp, Bochs cpu count).
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Guest-physical memory of the emulated machine, in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// With --headless: kill the run after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// No interaction: serial to a log file (echoed here), exit with the hypervisor's status
    /// (0 success, 1 failure, 2 no status, 124 timeout).
    #[arg(long)]
    pub headless: bool,
    /// Kernel command line, e.g. 'loglevel=debug bench=1' or 'fault=pf'.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub append: String,
    /// Start QEMU halted, waiting for gdb on :1234 (prints the command that attaches).
    #[arg(long)]
    pub gdb: bool,
    /// Which partitions boot: `scenarios/NAME.toml`, or `none` (the hypervisor alone).
    /// Default: `default` where `scenarios/default.toml` exists, else `mgmt` (the management
    /// shell) where its images are in this checkout, else `none`.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Type on COM1: `WAIT=>SEND`, e.g. 'mgmt> =>list\r': once the console shows WAIT (after
    /// the previous step's match; `*` matches within a line, `&&` joins patterns that must all
    /// appear), send SEND (escapes \r \n \t \\ \xNN). Repeat for more steps. The console
    /// then goes to the serial log (echoed here), not the terminal.
    #[arg(long = "input", value_name = "WAIT=>SEND", allow_hyphen_values = true)]
    pub input: Vec<String>,
    /// Attach the test disk (1 MiB, `MICROHV TEST DISK` in sector 0) as the primary ATA
    /// master. Default: on for a scenario with a management partition.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub test_disk: Option<bool>,
}

/// One boot, ready to go: the emulator and what it boots.
pub struct Prepared {
    pub emulator: Box<dyn Emulator>,
    pub launch: Launch,
}

/// What `prepare` needs; `run` and `test` fill it in.
pub struct Spec<'a> {
    pub choice: Choice,
    pub boot: Boot,
    pub cpu: Option<&'a str>,
    pub memory_mib: u32,
    pub append: &'a str,
    /// The boot modules (`scenario::modules`).
    pub modules: &'a [Module],
    pub headless: bool,
    pub gdb: bool,
    /// Names the run folder `target/xtask/run/<label>`.
    pub label: &'a str,
    /// What to type on COM1 (`emulator::input`).
    pub input: Vec<Step>,
    /// Attach the test disk as the primary ATA master.
    pub test_disk: bool,
}

/// Installs what the emulator needs, builds kernels and guests, and makes the boot image.
pub fn prepare(spec: &Spec) -> Result<Prepared> {
    let emulator = emulator::select(spec.choice)?;
    deps::ensure(&emulator.needs(spec.boot))?;
    build::kernels()?;
    let image = image::make(emulator.image_kind(spec.boot), spec.append, spec.modules)?;
    let run_dir = step::work_dir().join("run").join(spec.label);
    let launch = Launch {
        image,
        cpu: spec.cpu.map(str::to_string),
        memory_mib: spec.memory_mib,
        cpus: 1,
        headless: spec.headless,
        gdb: spec.gdb,
        icount: false,
        run_dir,
        input: spec.input.clone(),
        test_disk: spec.test_disk,
    };
    Ok(Prepared { emulator, launch })
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    if args.gdb && args.emulator == Choice::Bochs {
        bail!("--gdb needs QEMU; Bochs has its own debugger (drop --headless and press Ctrl-C)");
    }
    if args.gdb && args.headless {
        bail!("--gdb waits for a debugger: drop --headless");
    }
    let label = format!("{:?}-{:?}", args.emulator, args.boot).to_lowercase();
    let name = args.scenario.as_deref().unwrap_or_else(|| scenario::default_name());
    let modules = scenario::modules(name)?;
    let input = args.input.iter().map(|a| Step::parse(a)).collect::<Result<Vec<_>>>()?;
    let bochs_uefi = args.emulator == Choice::Bochs && args.boot == Boot::Uefi;
    let test_disk = match args.test_disk {
        Some(true) if bochs_uefi => {
            bail!("under Bochs the UEFI boot disk takes the test disk's place (ata0-master)")
        }
        Some(on) => on,
        // Under Bochs UEFI the boot disk is the primary master: no test disk.
        None => !bochs_uefi && scenario::has_management(name)?,
    };
    let mut p = prepare(&Spec {
        choice: args.emulator,
        boot: args.boot,
        cpu: args.cpu.as_deref(),
        memory_mib: args.memory,
        append: &args.append,
        modules: &modules,
        headless: args.headless,
        gdb: args.gdb,
        label: &label,
        input,
        test_disk,
    })?;
    p.launch.cpus = args.cpus;
    let what = p.emulator.describe(args.cpu.as_deref());
    if args.gdb {
        let kernel = image::kernel_for(args.boot);
        let kernel = kernel.strip_prefix(step::root()).unwrap_or(&kernel);
        step::note("QEMU waits for gdb; attach with:");
        println!("gdb {} -ex 'target remote :1234'", kernel.display());
    }
    let how = if p.emulator.serial_on_terminal(&p.launch) {
        "serial console below; Ctrl-A X quits".to_string()
    } else if args.headless {
        format!("serial log {}, timeout {} s", rel(&p.launch.serial_log()), args.timeout)
    } else {
        format!("serial log {} follows; Ctrl-C stops", rel(&p.launch.serial_log()))
    };
    step::note(format!("booting {} with {what} ({how})", p.launch.image.describe()));
    let watch = Watch {
        timeout: args.headless.then(|| Duration::from_secs(args.timeout)),
        echo: true,
        cpu_window: None,
    };
    let ran = watch::run(p.emulator.as_ref(), &p.launch, &watch)?;
    if let Some(left) = &ran.input_left {
        step::note(left);
    }
    Ok(report(&ran, args.timeout))
}

fn rel(path: &std::path::Path) -> String {
    path.strip_prefix(step::root()).unwrap_or(path).display().to_string()
}

/// Prints how the run ended and returns the exit status that says it.
fn report(ran: &Ran, timeout: u64) -> ExitCode {
    let banner =
        ran.banner_after.map(|b| format!(", banner after {}", step::secs(b))).unwrap_or_default();
    let took = format!("{}{banner}", step::secs(ran.elapsed));
    match &ran.outcome {
        Some(Outcome::Success) => {
            step::note(format!("the hypervisor reported success ({took})"));
            ExitCode::SUCCESS
        }
        Some(Outcome::Failure) => {
            step::note(format!("the hypervisor reported FAILURE ({took})"));
            ExitCode::FAILURE
        }
        Some(Outcome::NoStatus(why)) => {
            step::note(format!("no hypervisor status: {why} ({took})"));
            ExitCode::from(NO_STATUS)
        }
        None => {
            step::note(format!("timed out after {timeout} s: the run was killed ({took})"));
            ExitCode::from(TIMEOUT_STATUS)
        }
    }
}
