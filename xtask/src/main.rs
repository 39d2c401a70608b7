//! `cargo xtask`: builds the hypervisor and its boot images, boots it under QEMU or Bochs, tests it.
//!
//! One binary, one module per concern: `build` (cargo builds), `image` (GRUB ISO, UEFI disk),
//! `emulator` (QEMU and Bochs behind one trait, the watched run), `kvm` (nested KVM detection),
//! `deps` (installing what is missing), `linux` (the Linux guest's kernel and initramfs), `run`,
//! `test`, `bench`, `fuzz`; `step` holds progress output and the nested cargo command.

mod barepc;
mod bench;
mod build;
mod deps;
mod emulator;
mod fuzz;
mod image;
mod kvm;
mod linux;
mod run;
mod scenario;
mod step;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, boot and test the hypervisor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernels, the guest images and the boot images (GRUB ISO, UEFI disk image).
    Build,
    /// Build what is stale and boot the hypervisor with its serial console on the terminal.
    Run(run::RunArgs),
    /// Host unit tests, clippy and rustfmt, then end-to-end boots under the emulators.
    Test(test::TestArgs),
    /// Measure exit round trips and boot-to-guest time on both backends, in retired
    /// instructions (Bochs for VMX, QEMU -icount for SVM).
    Bench(bench::BenchArgs),
    /// Fetch Debian's cloud kernel and busybox-static into target/linux/ and build the
    /// initramfs (done on demand by any scenario that names them); print the versions.
    Linux(linux::LinuxArgs),
    /// Fuzz the hypervisor's parsers and device models on the host (`fuzz/`): every target
    /// or those named, for a time or a number of inputs, or replay a saved crash.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = std::env::set_current_dir(step::root()) {
        eprintln!("[xtask] error: cannot enter {}: {e}", step::root().display());
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Build => build::build_all().map(|_| ExitCode::SUCCESS),
        Command::Run(args) => run::run(&args),
        Command::Test(args) => test::test(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Linux(args) => linux::command(&args),
        Command::Fuzz(args) => fuzz::command(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            step::close_line();
            eprintln!("[xtask] error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
