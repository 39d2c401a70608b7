//! Cargo builds: the two kernels, the guest images and the UEFI image tool.
//!
//! Cargo makes each of these incremental; the boot images made from them are `image`'s business.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use crate::deps::{self, KERNEL_TARGET};
use crate::image::{self, Kind};
use crate::scenario;
use crate::step;

/// The crates of the bare-metal guest images (under `guest-images/`), built with the kernels.
/// A scenario's `image = "NAME"` names one of these (or a file in the repository). Only those
/// present in the checkout are built ([`guest_crates`]).
pub const GUEST_CRATES: &[&str] =
    &["probe", "attack", "bench", "mgmt", "chan", "mb32", "mblow", "bare", "barepc", "chaos"];

/// The guest crates of [`GUEST_CRATES`] this checkout has: `guest-images/NAME/Cargo.toml`
/// exists and the workspace lists `guest-images/NAME` among its members.
pub fn guest_crates() -> Vec<&'static str> {
    let root = step::root();
    let members = std::fs::read_to_string(root.join("Cargo.toml"))
        .ok()
        .and_then(|t| workspace_members(&t))
        .unwrap_or_default();
    GUEST_CRATES
        .iter()
        .copied()
        .filter(|c| {
            let dir = format!("guest-images/{c}");
            root.join(&dir).join("Cargo.toml").is_file() && members.contains(&dir)
        })
        .collect()
}

/// `workspace.members` of a workspace manifest.
fn workspace_members(manifest: &str) -> Option<Vec<String>> {
    let doc: toml::Table = toml::from_str(manifest).ok()?;
    let members = doc.get("workspace")?.get("members")?.as_array()?;
    Some(
        members
            .iter()
            .filter_map(|m| m.as_str().map(|s| s.trim_end_matches('/').to_string()))
            .collect(),
    )
}

/// The bare-metal crates besides the guests: clippy checks them for the kernel target.
pub const KERNEL_CRATES: &[&str] = &["boot", "hypervisor", "hvabi", "hvmanifest"];

/// Multiboot1 kernel (ELF with the a.out kludge), booted directly by QEMU and by GRUB.
pub const MULTIBOOT_BIN: &str = "hv-multiboot";
/// `bootloader_api` kernel for the UEFI disk image.
pub const UEFI_BIN: &str = "hv-uefi";

/// Where cargo puts release builds for the kernel target.
pub fn kernel_dir() -> PathBuf {
    step::root().join("target").join(KERNEL_TARGET).join("release")
}

/// Path of a built kernel or guest binary.
pub fn kernel_artifact(bin: &str) -> PathBuf {
    kernel_dir().join(bin)
}

/// Builds both kernels and every guest image (release, bare-metal target), once per xtask run.
pub fn kernels() -> Result<()> {
    static BUILT: AtomicBool = AtomicBool::new(false);
    if BUILT.load(Ordering::Relaxed) {
        return Ok(());
    }
    deps::ensure_rust(&[], true)?;
    let guests = guest_crates();
    let what = if guests.is_empty() {
        "building kernels".to_string()
    } else {
        format!("building kernels and guests ({})", guests.join(", "))
    };
    step::step(&what, || {
        let mut cmd = step::cargo();
        cmd.args(["build", "--quiet", "--release", "--target", KERNEL_TARGET, "-p", "boot"]);
        for krate in &guests {
            cmd.args(["-p", krate]);
        }
        step::run(&mut cmd)
    })?;
    if guests.contains(&crate::barepc::CRATE) {
        crate::barepc::convert()?;
    }
    BUILT.store(true, Ordering::Relaxed);
    Ok(())
}

/// The file a scenario's `image = "NAME"` of a guest crate boots: the crate's artifact, or
/// for `barepc` the ELF32 image made from it (`barepc::convert`).
pub fn guest_image(name: &str) -> PathBuf {
    if name == crate::barepc::CRATE { crate::barepc::image() } else { kernel_artifact(name) }
}

/// The UEFI image tool's own folder (a crate outside the workspace) and its target folder.
fn uefi_tool_dirs() -> (PathBuf, PathBuf) {
    let root = step::root();
    (root.join("xtask").join("uefi-image"), root.join("target").join("uefi-image"))
}

/// Builds the UEFI image tool (`xtask/uefi-image`) and returns its path. Its first build compiles
/// the bootloader's UEFI stage in a nested `cargo install -Zbuild-std` (about a minute); later
/// builds are no-ops, and it is built at most once per xtask run.
pub fn uefi_tool() -> Result<PathBuf> {
    static BUILT: AtomicBool = AtomicBool::new(false);
    let (dir, target) = uefi_tool_dirs();
    let exe = target.join("release").join("uefi-image");
    if BUILT.load(Ordering::Relaxed) {
        return Ok(exe);
    }
    deps::ensure_rust(&["rust-src", "llvm-tools"], false)?;
    let what = if exe.is_file() {
        "building UEFI image tool".to_string()
    } else {
        "building UEFI image tool (first build compiles the bootloader: about a minute)".to_string()
    };
    step::step(&what, || {
        let mut cmd = step::cargo();
        // `--target-dir`, not CARGO_TARGET_DIR: the build script's nested `cargo install` would
        // inherit the variable and wait forever for the lock this build holds on that folder.
        cmd.current_dir(&dir)
            .args(["build", "--quiet", "--release", "--locked", "--target-dir"])
            .arg(&target)
            // The bootloader's build script runs `cargo install -Zbuild-std` on stable.
            .env("RUSTC_BOOTSTRAP", "1");
        step::run(&mut cmd)
    })?;
    BUILT.store(true, Ordering::Relaxed);
    Ok(exe)
}

/// `cargo xtask build`: kernels, guests, and every boot image with the default command line.
pub fn build_all() -> Result<()> {
    kernels()?;
    let modules = scenario::modules(scenario::default_name())?;
    for kind in [Kind::Elf, Kind::Iso, Kind::Disk] {
        let made = image::make(kind, "", &modules)
            .with_context(|| format!("making the {}", kind.label()))?;
        step::note(format!("{}: {}", kind.label(), made.describe()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_from_the_workspace_manifest() {
        let m = "[workspace]\nresolver = \"2\"\nmembers = [\"xtask\", \"guest-images/mgmt/\"]\n";
        assert_eq!(workspace_members(m).unwrap(), ["xtask", "guest-images/mgmt"]);
        assert_eq!(workspace_members("[package]\nname = \"x\"\n"), None);
        let here = guest_crates();
        assert!(here.contains(&"probe") && here.contains(&"attack"), "{here:?}");
    }
}
