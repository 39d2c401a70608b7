//! What the xtask needs from the machine, and installing it where it may.
//!
//! Host tools and firmware come from Debian packages: as root on a machine with `apt-get`, the
//! missing ones are installed (`apt-get update` first, once); otherwise the error names the exact
//! command. Rust targets and components come from rustup, which needs no root.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Once;

use anyhow::{Result, bail};

use crate::step;

/// Something the machine must provide, and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// A program on `PATH`.
    Tool { bin: &'static str, package: &'static str },
    /// A file at a fixed path (firmware, BIOS images).
    File { path: &'static str, package: &'static str },
}

impl Need {
    fn present(&self) -> bool {
        match self {
            Need::Tool { bin, .. } => on_path(bin),
            Need::File { path, .. } => Path::new(path).is_file(),
        }
    }

    fn package(&self) -> &'static str {
        match self {
            Need::Tool { package, .. } | Need::File { package, .. } => package,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Need::Tool { bin, .. } => bin,
            Need::File { path, .. } => path,
        }
    }
}

pub const QEMU: Need = Need::Tool { bin: "qemu-system-x86_64", package: "qemu-system-x86" };
/// Bochs, with the rfb display the runs use (shipped in `bochs` itself).
pub const BOCHS: [Need; 2] = [
    Need::Tool { bin: "bochs", package: "bochs" },
    Need::File {
        path: "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_rfb_gui.so",
        package: "bochs",
    },
];
pub const BOCHS_BIOS: Need =
    Need::File { path: "/usr/share/bochs/BIOS-bochs-latest", package: "bochsbios" };
pub const VGA_BIOS: Need =
    Need::File { path: "/usr/share/vgabios/vgabios.bin", package: "vgabios" };
/// OVMF split into code and variables, for QEMU's two pflash drives.
pub const OVMF_CODE: Need = Need::File { path: "/usr/share/OVMF/OVMF_CODE_4M.fd", package: "ovmf" };
pub const OVMF_VARS: Need = Need::File { path: "/usr/share/OVMF/OVMF_VARS_4M.fd", package: "ovmf" };
/// OVMF in one 2 MiB file, which Bochs loads as its ROM image.
pub const OVMF_ROM: Need = Need::File { path: "/usr/share/ovmf/OVMF.fd", package: "ovmf" };
/// `grub-mkrescue` and what it needs to make a BIOS-bootable ISO.
pub const GRUB_ISO: [Need; 4] = [
    Need::Tool { bin: "grub-mkrescue", package: "grub-common" },
    Need::File { path: "/usr/lib/grub/i386-pc/multiboot.mod", package: "grub-pc-bin" },
    Need::Tool { bin: "xorriso", package: "xorriso" },
    Need::Tool { bin: "mformat", package: "mtools" },
];

/// The file a [`Need::File`] names (or the program a [`Need::Tool`] names), for command lines.
pub fn path(need: Need) -> &'static str {
    need.what()
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(bin).is_file()))
}

fn is_root() -> bool {
    // The effective uid, without a libc dependency: the second field of `Uid:` is the euid.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Makes sure every need is met, installing missing packages where possible.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let missing: Vec<Need> = needs.iter().copied().filter(|n| !n.present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: BTreeSet<&str> = missing.iter().map(Need::package).collect();
    if packages.contains("bochs") {
        // `bochs` needs some GUI package; apt's first choice is wxWidgets. The terminal GUI is
        // small and satisfies it.
        packages.insert("bochs-term");
    }
    let packages: Vec<&str> = packages.into_iter().collect();
    let what: Vec<&str> = missing.iter().map(Need::what).collect();
    let install = format!("apt-get install -y {}", packages.join(" "));
    if !is_root() || !on_path("apt-get") {
        bail!(
            "missing {} (Debian packages: {}); install them with: sudo apt-get update && sudo {install}",
            what.join(", "),
            packages.join(" ")
        );
    }
    step::note(format!("missing {}: installing {}", what.join(", "), packages.join(" ")));
    // One line per step with its time; apt-get's own output goes to a log, shown on failure.
    static UPDATE: Once = Once::new();
    let mut update = Ok(());
    UPDATE.call_once(|| {
        let log = step::log_file("apt-get-update");
        let label = format!("apt-get update (output: {})", step::shown(&log));
        update = step::step(&label, || step::run_logged(apt().args(["update", "-q"]), &log));
    });
    update?;
    let log = step::log_file("apt-get-install");
    step::step(&format!("{install} (output: {})", step::shown(&log)), || {
        let args = ["install", "-y", "-q", "--no-install-recommends"];
        step::run_logged(apt().args(args).args(&packages), &log)
    })?;
    let still: Vec<&str> = needs.iter().filter(|n| !n.present()).map(Need::what).collect();
    if !still.is_empty() {
        bail!("still missing after `{install}`: {}", still.join(", "));
    }
    Ok(())
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// The bare-metal target the kernels and guests build for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Adds missing rustup components (`rust-src`, `llvm-tools`, `clippy`, `rustfmt`) and, with
/// `target`, the bare-metal target. `RUSTUP_AUTO_INSTALL=0` machines will not do it on their own.
pub fn ensure_rust(components: &[&str], target: bool) -> Result<()> {
    if !on_path("rustup") {
        return Ok(()); // A toolchain without rustup: let cargo report what is missing.
    }
    if target {
        let installed =
            step::capture(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if !installed.lines().any(|l| l.trim() == KERNEL_TARGET) {
            step::step(&format!("rustup target add {KERNEL_TARGET}"), || {
                let log = step::log_file("rustup-target");
                step::run_logged(
                    Command::new("rustup").args(["target", "add", KERNEL_TARGET]),
                    &log,
                )
            })?;
        }
    }
    let installed =
        step::capture(Command::new("rustup").args(["component", "list", "--installed"]))?;
    // Installed components are listed with their host triple (`clippy-x86_64-unknown-linux-gnu`),
    // `rust-src` without one.
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .map(str::trim)
                .any(|l| l == *c || l.strip_prefix(c).is_some_and(|rest| rest.starts_with('-')))
        })
        .collect();
    if !missing.is_empty() {
        step::step(&format!("rustup component add {}", missing.join(" ")), || {
            let log = step::log_file("rustup-component");
            step::run_logged(Command::new("rustup").args(["component", "add"]).args(&missing), &log)
        })?;
    }
    Ok(())
}
