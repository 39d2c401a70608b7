//! `linux-boot`: guest time from the kernel's start to its `/init` (the first field of
//! `/proc/uptime` that `/init` prints in its marker) for Debian's kernel as a partition
//! (`scenarios/linux-bench.toml`) on SVM under QEMU `-icount shift=0`, next to the same kernel,
//! initramfs and command line on bare QEMU TCG with `-icount shift=0`, and the exits the
//! partition took by reason.
//!
//! Printed by `cargo xtask bench`, not gated: the figure follows the kernel Debian currently
//! ships (`cargo xtask linux` fetches the newest), so a kernel update would move it without any
//! change here. Only SVM: bare Bochs cannot run this kernel with the `tigerlake` model the VMX
//! figures use (docs/guests.md), so there is no reference to set a VMX figure beside.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{BACKENDS, boot};
use crate::emulator::Choice;
use crate::image::Boot;
use crate::run::{self, Spec};
use crate::{linux, scenario};

/// The scenario the hypervisor boots.
const SCENARIO: &str = "linux-bench";
/// The ratio the issue asks for.
pub const GOAL: f64 = 1.10;

/// One linux-boot measurement.
#[derive(Debug)]
pub struct LinuxBoot {
    /// `/init`'s uptime under the hypervisor and on bare QEMU, seconds of guest time.
    pub hypervisor_s: f64,
    pub bare_s: f64,
    /// The partition's exit statistics line (`exits: N total, ...`).
    pub exits: String,
    /// The kernel package measured.
    pub kernel: String,
}

impl LinuxBoot {
    pub fn ratio(&self) -> f64 {
        self.hypervisor_s / self.bare_s
    }
}

/// Boots both and returns the figures.
pub fn measure() -> Result<LinuxBoot> {
    let artefacts = linux::provision()?;
    let svm = BACKENDS.iter().find(|b| b.choice == Choice::Qemu).context("no SVM backend")?;
    let modules = scenario::modules(SCENARIO)?;
    let p = run::prepare(&Spec {
        choice: svm.choice,
        boot: Boot::Multiboot,
        cpu: Some(svm.cpu),
        memory_mib: 256,
        append: "",
        modules: &modules,
        headless: true,
        gdb: false,
        label: "bench-svm-linux",
        input: Vec::new(),
        test_disk: false,
    })?;
    let (hypervisor_s, exits) = boot(svm, p, |ran| {
        let parsed = linux::bare::parse(&ran.serial);
        let uptime = parsed.uptime_s.context("no INIT-MARKER from the Linux partition")?;
        Ok((uptime, exit_line(&ran.serial).context("no exit statistics for the partition")?))
    })?;
    let cmdline = linux::bare::scenario_cmdline(SCENARIO, linux::PARTITION)?;
    let bare = linux::bare_reference(&artefacts, &cmdline, Duration::from_secs(120))?;
    Ok(LinuxBoot {
        hypervisor_s,
        bare_s: bare.uptime_s,
        exits,
        kernel: format!("{} {}", artefacts.kernel_package.name, artefacts.kernel_package.version),
    })
}

/// The `exits:` line that follows the Linux partition's end in the final report.
fn exit_line(serial: &str) -> Option<String> {
    let mut lines = serial.lines().skip_while(|l| !l.starts_with("hypervisor: partition linux "));
    lines.next()?;
    let line = lines.next()?.trim();
    line.starts_with("exits:").then(|| line.to_string())
}

/// The report's lines.
pub fn report(b: &LinuxBoot) -> String {
    format!(
        "linux-boot svm qemu-icount: /init at {:.2} s under the hypervisor, {:.2} s on bare QEMU: ratio {:.3} (goal at most {GOAL:.2}); {}\n  kernel {}\n  {}\n",
        b.hypervisor_s,
        b.bare_s,
        b.ratio(),
        if b.ratio() <= GOAL { "met" } else { "not met" },
        b.kernel,
        b.exits
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_partitions_exit_line() {
        let serial = "[linux] INIT-MARKER uptime=3.40\n\
                      hypervisor: partition linux (id 0): powered off (HLT with interrupts off) [as expected]\n    \
                      exits: 45449 total, cpuid 1247, io 38110\n\
                      hypervisor: power off: ok\n";
        assert_eq!(exit_line(serial).as_deref(), Some("exits: 45449 total, cpuid 1247, io 38110"));
        assert_eq!(exit_line("hypervisor: power off: ok\n"), None);
        let b = LinuxBoot {
            hypervisor_s: 0.5,
            bare_s: 0.42,
            exits: String::new(),
            kernel: String::new(),
        };
        assert!((b.ratio() - 1.190).abs() < 0.001);
        assert!(report(&b).contains("not met"));
    }
}
