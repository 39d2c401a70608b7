//! QEMU: TCG with SVM and nested paging (the SVM backend), or KVM where it nests.
//!
//! Multiboot boots with QEMU's own loader (`-kernel`, `-append`, `-initrd`); UEFI with OVMF split
//! into code and a per-run copy of the variables. The hypervisor's exit goes through
//! `isa-debug-exit`: the process status is `(v << 1) | 1` for a value `v` written to its port.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};
use hvabi::exit::{QEMU_EXIT_PORT, QEMU_STATUS_FAILURE, QEMU_STATUS_SUCCESS};

use super::com1::{self, Endpoint};
use super::{Emulator, Launch, Outcome};
use crate::deps::{self, Need};
use crate::image::{Boot, Image, Kind};

/// The CPU for TCG: SVM with nested paging, which TCG emulates (it has no VMX).
pub const TCG_CPU: &str = "qemu64,+svm,+npt";

pub struct Qemu {
    pub kvm: bool,
}

impl Qemu {
    fn cpu<'a>(&self, launch_cpu: Option<&'a str>) -> &'a str {
        launch_cpu.unwrap_or(if self.kvm { "host" } else { TCG_CPU })
    }
}

impl Emulator for Qemu {
    fn describe(&self, cpu: Option<&str>) -> String {
        let accel = if self.kvm { "KVM" } else { "TCG" };
        format!("QEMU ({accel}, -cpu {})", self.cpu(cpu))
    }

    fn needs(&self, boot: Boot) -> Vec<Need> {
        match boot {
            Boot::Multiboot => vec![deps::QEMU],
            Boot::Uefi => vec![deps::QEMU, deps::OVMF_CODE, deps::OVMF_VARS],
        }
    }

    fn image_kind(&self, boot: Boot) -> Kind {
        match boot {
            Boot::Multiboot => Kind::Elf,
            Boot::Uefi => Kind::Disk,
        }
    }

    fn serial_on_terminal(&self, launch: &Launch) -> bool {
        // An input script needs COM1 on a socket; the log is echoed to the terminal instead.
        !launch.headless && launch.input.is_empty()
    }

    fn com1_kind(&self) -> com1::Kind {
        com1::Kind::Unix
    }

    fn command(&self, launch: &Launch, com1: Option<&Endpoint>) -> Result<Command> {
        let mut cmd = Command::new(deps::path(deps::QEMU));
        cmd.args(["-m", &launch.memory_mib.to_string()])
            .args(["-cpu", self.cpu(launch.cpu.as_deref())])
            .args(["-smp", &launch.cpus.max(1).to_string()])
            .args(["-no-reboot", "-display", "none", "-nic", "none"])
            .arg("-device")
            .arg(format!("isa-debug-exit,iobase={QEMU_EXIT_PORT:#x},iosize=0x04"));
        if self.kvm {
            cmd.arg("-enable-kvm");
        } else if launch.icount {
            cmd.args(["-icount", "shift=0"]);
        }
        match com1 {
            // Ctrl-A X quits, Ctrl-A C switches to the QEMU monitor.
            None => {
                cmd.args(["-serial", "mon:stdio"]);
            }
            Some(Endpoint::Unix(path)) => {
                let path = path.display().to_string();
                if path.contains(',') {
                    bail!("QEMU cannot take a socket path with a comma: {path}");
                }
                // A client: the xtask listens before QEMU starts.
                cmd.arg("-chardev").arg(format!("socket,id=com1,path={path}"));
                cmd.args(["-serial", "chardev:com1", "-monitor", "none"]);
            }
            Some(other) => bail!("QEMU's COM1 goes to a Unix socket, not {other:?}"),
        }
        if launch.test_disk {
            // The primary master: where the management partition looks for a disk. A multiboot
            // `-kernel` boot reads no disk; a UEFI disk image moves to the primary slave.
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=ide,index=0",
                comma_free(&launch.test_disk_path())?
            ));
        }
        if launch.gdb {
            cmd.args(["-s", "-S"]);
        }
        match &launch.image {
            Image::Elf { kernel, cmdline, modules } => {
                cmd.arg("-kernel").arg(kernel).arg("-append").arg(cmdline);
                if !modules.is_empty() {
                    let list: Vec<String> =
                        modules.iter().map(|m| m.display().to_string()).collect();
                    if list.iter().any(|m| m.contains([',', ' '])) {
                        bail!(
                            "QEMU -initrd cannot take module paths with commas or spaces: {list:?}"
                        );
                    }
                    cmd.arg("-initrd").arg(list.join(","));
                }
            }
            Image::Disk { path } => {
                let vars = launch.run_dir.join("OVMF_VARS.fd");
                let from = deps::path(deps::OVMF_VARS);
                fs::copy(from, &vars).with_context(|| format!("copying {from}"))?;
                cmd.arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,readonly=on,file={}",
                        deps::path(deps::OVMF_CODE)
                    ))
                    .arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", vars.display()))
                    .arg("-drive")
                    .arg(format!(
                        "format=raw,snapshot=on,file={}{}",
                        path.display(),
                        if launch.test_disk { ",if=ide,index=1" } else { "" }
                    ));
            }
            Image::Iso { path } => {
                cmd.arg("-cdrom").arg(path).args(["-boot", "d"]);
            }
        }
        Ok(cmd)
    }

    fn outcome(&self, status: ExitStatus, _launch: &Launch) -> Outcome {
        match status.code() {
            Some(QEMU_STATUS_SUCCESS) => Outcome::Success,
            Some(QEMU_STATUS_FAILURE) => Outcome::Failure,
            Some(0) => Outcome::NoStatus(
                "QEMU exited with status 0 without a hypervisor status \
                 (a triple fault or reset under -no-reboot, or quit by hand)"
                    .into(),
            ),
            Some(code) => Outcome::NoStatus(format!("QEMU exited with status {code}")),
            None => Outcome::NoStatus(format!(
                "QEMU was killed by signal {}",
                status.signal().unwrap_or_default()
            )),
        }
    }
}

/// A path for a `-drive` option, where a comma would end the file name.
fn comma_free(path: &std::path::Path) -> Result<String> {
    let s = path.display().to_string();
    if s.contains(',') {
        bail!("QEMU -drive cannot take a path with a comma: {s}");
    }
    Ok(s)
}
