//! The emulators behind one trait: each turns a [`Launch`] into a command line and its exit
//! status into an [`Outcome`]. [`watch`] runs one, with the serial log, a timeout and timings.

mod bochs;
pub mod com1;
pub mod input;
mod qemu;
pub mod watch;

pub use bochs::DEFAULT_CPU as BOCHS_DEFAULT_CPU;
pub use qemu::TCG_CPU as QEMU_TCG_CPU;

use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use anyhow::{Result, bail};
use clap::ValueEnum;

use crate::deps::Need;
use crate::image::{Boot, Image, Kind};
use crate::kvm;
use crate::step;

/// `--emulator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Choice {
    /// QEMU with KVM where KVM can run a nested hypervisor, else QEMU TCG.
    Auto,
    /// QEMU `-enable-kvm -cpu host` (needs nested KVM).
    Kvm,
    /// QEMU TCG with `-cpu qemu64,+svm,+npt`: the SVM backend.
    Qemu,
    /// Bochs (`tigerlake` by default): the VMX backend.
    Bochs,
}

/// One boot of the hypervisor, as every emulator understands it.
#[derive(Debug)]
pub struct Launch {
    pub image: Image,
    /// The emulator's CPU model; `None` for its default.
    pub cpu: Option<String>,
    pub memory_mib: u32,
    /// Processors of the emulated machine (QEMU `-smp`, Bochs `cpu: count=`).
    pub cpus: u32,
    /// No terminal: serial to a file, nothing read from stdin.
    pub headless: bool,
    /// Wait for gdb on :1234 before the first instruction (QEMU only).
    pub gdb: bool,
    /// Make QEMU's TSC count retired instructions (`-icount shift=0`), as Bochs' always does:
    /// deterministic timings for `bench`. Bochs ignores it.
    pub icount: bool,
    /// Scratch folder of this run: serial log, emulator config and log, writable image copies.
    pub run_dir: PathBuf,
    /// What to type on COM1, and when (`input`); empty for none.
    pub input: Vec<input::Step>,
    /// Attach the test disk (`image::write_test_disk`, made in the run folder) as the primary
    /// ATA master.
    pub test_disk: bool,
}

impl Launch {
    /// Where the serial console is written (unless the emulator puts it on the terminal).
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }

    /// What the xtask typed on COM1: one line per byte, with the time since the connection.
    pub fn typed_log(&self) -> PathBuf {
        self.run_dir.join("typed.log")
    }

    /// Where the emulator's own output goes in headless runs.
    pub fn emulator_log(&self) -> PathBuf {
        self.run_dir.join("emulator.log")
    }

    /// The test disk of this run (when [`Launch::test_disk`]).
    pub fn test_disk_path(&self) -> PathBuf {
        self.run_dir.join("test-disk.img")
    }
}

/// How a run ended, as the hypervisor reported it through the emulator's exit device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// The emulator ended without a hypervisor status (a reset, a triple fault, a crash, quit by
    /// hand): what it was.
    NoStatus(String),
}

pub trait Emulator {
    /// For messages: `QEMU (TCG, qemu64,+svm,+npt)`.
    fn describe(&self, launch_cpu: Option<&str>) -> String;
    /// Packages and files a boot through `boot` needs.
    fn needs(&self, boot: Boot) -> Vec<Need>;
    /// The boot image this emulator boots for `boot`.
    fn image_kind(&self, boot: Boot) -> Kind;
    /// True when the serial console goes straight to the terminal (not to [`Launch::serial_log`]).
    fn serial_on_terminal(&self, launch: &Launch) -> bool;
    /// The socket this emulator's COM1 connects to when it is not on the terminal.
    fn com1_kind(&self) -> com1::Kind;
    /// Prepares the run folder (configs, image copies) and returns the command that boots.
    /// `com1` is where COM1 connects (`None`: the terminal).
    fn command(&self, launch: &Launch, com1: Option<&com1::Endpoint>) -> Result<Command>;
    /// What the exit status means; may read the emulator's log in the run folder.
    fn outcome(&self, status: ExitStatus, launch: &Launch) -> Outcome;
}

/// Picks the emulator for `--emulator`.
pub fn select(choice: Choice) -> Result<Box<dyn Emulator>> {
    Ok(match choice {
        Choice::Auto => match kvm::nested() {
            Ok(()) => {
                step::note("nested KVM is available: using QEMU with KVM");
                Box::new(qemu::Qemu { kvm: true })
            }
            Err(why) => {
                step::note(format!("no nested KVM ({why}): using QEMU TCG"));
                Box::new(qemu::Qemu { kvm: false })
            }
        },
        Choice::Kvm => match kvm::nested() {
            Ok(()) => Box::new(qemu::Qemu { kvm: true }),
            Err(why) => bail!(
                "--emulator kvm: KVM cannot run a nested hypervisor here: {why}; \
                 use --emulator qemu (TCG, SVM) or bochs (VMX)"
            ),
        },
        Choice::Qemu => Box::new(qemu::Qemu { kvm: false }),
        Choice::Bochs => Box::new(bochs::Bochs),
    })
}
