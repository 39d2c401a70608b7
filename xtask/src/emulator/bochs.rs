//! Bochs: the VMX backend (Bochs emulates VMX with EPT faithfully; QEMU TCG has no VMX).
//!
//! Bochs has no multiboot loader (multiboot boots from a GRUB ISO) and runs UEFI with Debian's
//! one-file OVMF as its ROM. Debian's Bochs has no headless display and is built with its
//! debugger: the rfb display listens on a free TCP port from 5900 without waiting for a client,
//! and `-rc` feeds the debugger `c` and `quit`. The hypervisor ends a run with the magic
//! breakpoint (`xchg bx, bx`: the debugger stops, `quit` exits 0) or by writing `Shutdown` to
//! port 0x8900 (with `panic: action=fatal`, exit 1).
//!
//! COM1 connects to the xtask as a TCP client (`mode=socket-client`, see `com1`). The GRUB ISO
//! sits on the secondary ATA channel (`ata1-master`, the BIOS boots it as a CD-ROM), so that the
//! primary master is free for the test disk.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result};

use super::com1::{self, Endpoint};
use super::{Emulator, Launch, Outcome};
use crate::deps::{self, Need};
use crate::image::{self, Boot, Image, Kind};

/// CPU model when `--cpu` names none: VMX with EPT, VPID, unrestricted guest.
pub const DEFAULT_CPU: &str = "tigerlake";

/// Bochs' hard disk geometry: a flat image is a whole number of cylinders of this size.
const HEADS: u64 = 16;
const SECTORS_PER_TRACK: u64 = 63;
const CYLINDER_BYTES: u64 = HEADS * SECTORS_PER_TRACK * 512;
/// The test disk's geometry: Bochs wants cylinders x heads x sectors x 512 to be the size of a
/// flat image exactly, and 1 MiB is not a whole number of 63-sector tracks.
const TEST_DISK_HEADS: u64 = 16;
const TEST_DISK_SPT: u64 = 32;

pub struct Bochs;

impl Emulator for Bochs {
    fn describe(&self, cpu: Option<&str>) -> String {
        format!("Bochs (cpu model {})", cpu.unwrap_or(DEFAULT_CPU))
    }

    fn needs(&self, boot: Boot) -> Vec<Need> {
        let mut needs = deps::BOCHS.to_vec();
        needs.extend([deps::BOCHS_BIOS, deps::VGA_BIOS]);
        if boot == Boot::Uefi {
            needs.push(deps::OVMF_ROM);
        }
        needs
    }

    fn image_kind(&self, boot: Boot) -> Kind {
        match boot {
            Boot::Multiboot => Kind::Iso,
            Boot::Uefi => Kind::Disk,
        }
    }

    fn serial_on_terminal(&self, _launch: &Launch) -> bool {
        false
    }

    fn com1_kind(&self) -> com1::Kind {
        com1::Kind::Tcp
    }

    fn command(&self, launch: &Launch, com1: Option<&Endpoint>) -> Result<Command> {
        let dir = &launch.run_dir;
        let rc = dir.join("bochsrc");
        fs::write(&rc, bochsrc(launch, com1)?)
            .with_context(|| format!("writing {}", rc.display()))?;
        let cmds = dir.join("debugger.rc");
        fs::write(&cmds, "c\nquit\n")?;
        let mut cmd = Command::new(deps::path(deps::BOCHS[0]));
        cmd.arg("-q").arg("-f").arg(&rc).arg("-rc").arg(&cmds).current_dir(dir);
        Ok(cmd)
    }

    fn outcome(&self, status: ExitStatus, launch: &Launch) -> Outcome {
        match status.code() {
            Some(0) => Outcome::Success,
            Some(1) if shutdown_requested(&launch.run_dir.join("bochs.log")) => Outcome::Failure,
            Some(code) => {
                let why = [launch.run_dir.join("bochs.log"), launch.emulator_log()]
                    .iter()
                    .find_map(|log| last_panic(log))
                    .unwrap_or_else(|| "no PANIC line in bochs.log or emulator.log".into());
                Outcome::NoStatus(format!("Bochs exited with status {code}: {why}"))
            }
            None => Outcome::NoStatus("Bochs was killed by a signal".into()),
        }
    }
}

fn bochsrc(launch: &Launch, com1: Option<&Endpoint>) -> Result<String> {
    let dir = &launch.run_dir;
    let cpu = launch.cpu.as_deref().unwrap_or(DEFAULT_CPU);
    let mem = launch.memory_mib;
    let mut rc = String::new();
    let count = launch.cpus.max(1);
    let _ = writeln!(rc, "cpu: model={cpu}, count={count}, reset_on_triple_fault=0");
    let _ = writeln!(rc, "memory: guest={mem}, host={mem}");
    rc.push_str("clock: sync=none\n");
    rc.push_str("display_library: rfb, options=\"timeout=0\"\n");
    let _ = writeln!(rc, "vgaromimage: file={}", deps::path(deps::VGA_BIOS));
    rc.push_str("magic_break: enabled=1\nport_e9_hack: enabled=1\n");
    rc.push_str("panic: action=fatal\nerror: action=report\n");
    let _ = writeln!(rc, "log: {}", dir.join("bochs.log").display());
    match com1 {
        Some(Endpoint::Tcp(port)) => {
            let _ = writeln!(rc, "com1: enabled=1, mode=socket-client, dev=127.0.0.1:{port}");
        }
        other => anyhow::bail!("Bochs' COM1 connects to a TCP port, not {other:?}"),
    }
    if launch.test_disk {
        let bytes = image::TEST_DISK_BYTES;
        let cylinders = bytes / (TEST_DISK_HEADS * TEST_DISK_SPT * 512);
        anyhow::ensure!(
            cylinders * TEST_DISK_HEADS * TEST_DISK_SPT * 512 == bytes,
            "the test disk is not a whole number of cylinders"
        );
        if matches!(launch.image, Image::Disk { .. }) {
            anyhow::bail!("Bochs: the test disk and the UEFI boot disk both want ata0-master");
        }
        let _ = writeln!(
            rc,
            "ata0-master: type=disk, mode=flat, path={}, cylinders={cylinders}, heads={TEST_DISK_HEADS}, spt={TEST_DISK_SPT}",
            launch.test_disk_path().display()
        );
    }
    match &launch.image {
        Image::Iso { path } => {
            let _ = writeln!(rc, "romimage: file={}", deps::path(deps::BOCHS_BIOS));
            rc.push_str("ata1: enabled=1, ioaddr1=0x170, ioaddr2=0x370, irq=15\n");
            let _ =
                writeln!(rc, "ata1-master: type=cdrom, path={}, status=inserted", path.display());
            rc.push_str("boot: cdrom\n");
        }
        Image::Disk { path } => {
            let _ =
                writeln!(rc, "romimage: file={}, address=0xffe00000", deps::path(deps::OVMF_ROM));
            let (copy, cylinders) = disk_copy(path, dir)?;
            let _ = writeln!(
                rc,
                "ata0-master: type=disk, mode=flat, path={}, cylinders={cylinders}, heads={HEADS}, spt={SECTORS_PER_TRACK}",
                copy.display()
            );
            rc.push_str("boot: disk\n");
        }
        Image::Elf { .. } => {
            anyhow::bail!("Bochs cannot boot a multiboot ELF directly (use the GRUB ISO)")
        }
    }
    Ok(rc)
}

/// This run's own copy of the disk image, padded to whole cylinders (Bochs locks and may write
/// the image, and refuses a size that is not a whole geometry). Returns it and its cylinders.
fn disk_copy(image: &Path, dir: &Path) -> Result<(std::path::PathBuf, u64)> {
    let copy = dir.join("disk.img");
    // A killed Bochs leaves `disk.img.lock` behind, and the next run would refuse the image;
    // the run folder starts empty (see `watch::run`), which removes it.
    fs::copy(image, &copy).with_context(|| format!("copying {}", image.display()))?;
    let cylinders = fs::metadata(&copy)?.len().div_ceil(CYLINDER_BYTES);
    let file = fs::OpenOptions::new().write(true).open(&copy)?;
    file.set_len(cylinders * CYLINDER_BYTES)?;
    Ok((copy, cylinders))
}

fn shutdown_requested(log: &Path) -> bool {
    fs::read_to_string(log).is_ok_and(|s| s.contains("Shutdown port: shutdown requested"))
}

fn last_panic(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines().rev().find(|l| l.contains("PANIC")).map(|l| l.trim().to_string())
}
