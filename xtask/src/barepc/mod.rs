//! The bare-PC conformance kernel (`guest-images/barepc`): its multiboot image, its reference
//! run on bare QEMU (no hypervisor) and the comparison of a run under the hypervisor with it.
//!
//! The kernel has a segment at 0x8000 and the rest at 16 MiB. QEMU's own multiboot loader
//! (`-kernel`) copies a kernel as one block from its lowest to its highest address, over the
//! BIOS area and its own option ROM, so the reference boots the same ELF32 image through GRUB
//! from an ISO (`grub-mkrescue`), with the module and the test disk the hypervisor's run gets.
//! Its lines must all be `PASS`; a run under the hypervisor must give every check the same
//! verdict ([`compare`]).

pub mod elf32;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::build;
use crate::deps;
use crate::image;
use crate::step;

/// The guest crate.
pub const CRATE: &str = "barepc";
/// The module the kernel reads (its string must name `barepc-mod`), relative to the repository.
pub const MODULE: &str = "guest-images/barepc/barepc-mod";
/// How long the reference may take (it takes about 1.5 s).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The ELF32 image the scenarios name as `barepc` (made by [`convert`] after each build).
pub fn image() -> PathBuf {
    build::kernel_dir().join("barepc.elf32")
}

/// Writes [`image`] from the linker's ELF64 (when that is newer).
pub fn convert() -> Result<()> {
    let from = build::kernel_artifact(CRATE);
    let to = image();
    let stale = match (fs::metadata(&from), fs::metadata(&to)) {
        (Ok(f), Ok(t)) => f.modified()? > t.modified()?,
        _ => true,
    };
    if stale {
        let elf = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        let out =
            elf32::from_elf64(&elf).with_context(|| format!("converting {}", from.display()))?;
        fs::write(&to, out).with_context(|| format!("writing {}", to.display()))?;
    }
    Ok(())
}

/// One check's line: `PASS name` or `FAIL name: why`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    /// `None` for PASS, the reason for FAIL.
    pub why: Option<String>,
}

/// The checks of a serial log, in order; lines may carry a partition prefix (`[barepc] `).
pub fn parse(serial: &str) -> Vec<Verdict> {
    serial
        .lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            let body = line
                .strip_prefix("[barepc] ")
                .or_else(|| line.strip_prefix("[bare-pc] "))
                .unwrap_or(line);
            if let Some(name) = body.strip_prefix("PASS ") {
                Some(Verdict { name: name.trim().into(), why: None })
            } else {
                let rest = body.strip_prefix("FAIL ")?;
                let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
                Some(Verdict { name: name.trim().into(), why: Some(why.into()) })
            }
        })
        .collect()
}

/// Every check of `reference` (run on bare `bare`) with the same verdict in `run`; the error
/// lists each that differs (its verdict under the hypervisor, or that it is missing) and any
/// extra.
pub fn compare(reference: &[Verdict], run: &[Verdict], bare: Bare) -> Result<(), String> {
    let mut differ = Vec::new();
    for want in reference {
        match run.iter().find(|v| v.name == want.name) {
            None => differ.push(format!("{} (missing)", want.name)),
            Some(got) if got.why.is_some() != want.why.is_some() => {
                let side = |v: &Verdict| match &v.why {
                    None => "PASS".to_string(),
                    Some(w) => format!("FAIL: {w}"),
                };
                differ.push(format!("{} (bare {}, here {})", want.name, side(want), side(got)));
            }
            Some(_) => {}
        }
    }
    for extra in run.iter().filter(|v| !reference.iter().any(|r| r.name == v.name)) {
        differ.push(format!("{} (not in the reference)", extra.name));
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} checks disagree with bare {bare}: {}",
            differ.len(),
            reference.len(),
            differ.join("; ")
        ))
    }
}

/// The GRUB menu: the kernel and the module, whose string is its name.
fn grub_cfg() -> String {
    "set timeout=0\nset default=0\n\nmenuentry \"barepc\" {\n    multiboot /boot/barepc\n    \
     module --nounzip /boot/barepc-mod barepc-mod\n    boot\n}\n"
        .to_string()
}

/// The bare machine a reference runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bare {
    /// QEMU TCG (`-machine pc`, SeaBIOS): the reference of the default suite and of svm-barepc.
    Qemu,
    /// Bochs (its BIOS, `tigerlake`): the reference of vmx-barepc.
    Bochs,
}

impl std::fmt::Display for Bare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bare::Qemu => "QEMU",
            Bare::Bochs => "Bochs",
        })
    }
}

/// What a reference run printed: its verdicts and its whole serial log.
#[derive(Clone, Debug)]
pub struct Reference {
    pub checks: Vec<Verdict>,
    pub serial: String,
    pub wall: Duration,
}

/// Boots the kernel on the bare machine `on` once per xtask run (the kernels must be built)
/// and returns its lines. An error when it does not end with its summary line (and, on QEMU,
/// through its exit port with its count of FAIL lines as the status).
pub fn reference(on: Bare) -> Result<&'static Reference> {
    static QEMU: OnceLock<Reference> = OnceLock::new();
    static BOCHS: OnceLock<Reference> = OnceLock::new();
    let done = if on == Bare::Qemu { &QEMU } else { &BOCHS };
    if let Some(r) = done.get() {
        return Ok(r);
    }
    let iso = make_iso()?;
    let r = match on {
        Bare::Qemu => run_qemu(&iso)?,
        Bare::Bochs => run_bochs(&iso)?,
    };
    let failed = r.checks.iter().filter(|c| c.why.is_some()).count();
    if !r.serial.contains(&format!("barepc: {} checks, {failed} failed", r.checks.len())) {
        bail!(
            "bare {on}: no summary line for its {} checks; the serial log:\n{}",
            r.checks.len(),
            crate::emulator::watch::tail(&r.serial, 40)
        );
    }
    Ok(done.get_or_init(|| r))
}

/// The GRUB ISO with the ELF32 image and the module (made once per xtask run).
fn make_iso() -> Result<PathBuf> {
    deps::ensure(&deps::GRUB_ISO)?;
    let dir = step::work_dir().join("images").join("barepc-iso");
    let _lock = step::lock(&dir)?;
    let _ = fs::remove_dir_all(&dir);
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("boot").join("grub"))?;
    fs::copy(image(), tree.join("boot").join("barepc"))
        .with_context(|| format!("copying {}", image().display()))?;
    fs::copy(step::root().join(MODULE), tree.join("boot").join("barepc-mod"))?;
    fs::write(tree.join("boot").join("grub").join("grub.cfg"), grub_cfg())?;
    let iso = dir.join("barepc.iso");
    step::run_quiet(Command::new("grub-mkrescue").arg("-o").arg(&iso).arg(&tree))?;
    Ok(iso)
}

fn run_qemu(iso: &std::path::Path) -> Result<Reference> {
    deps::ensure(&[deps::QEMU])?;
    let dir = step::work_dir().join("run").join("barepc-bare");
    let _lock = step::lock(&dir)?;
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let disk = dir.join("test-disk.img");
    image::write_test_disk(&disk)?;
    let log = dir.join("serial.log");
    let mut cmd = Command::new(deps::path(deps::QEMU));
    cmd.args(["-machine", "pc", "-cpu", "qemu64", "-m", "256", "-nodefaults"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-device")
        .arg(format!("isa-debug-exit,iobase={:#x},iosize=0x04", hvabi::exit::QEMU_EXIT_PORT))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide,index=0", disk.display()))
        .arg("-cdrom")
        .arg(iso)
        .args(["-boot", "d"]);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", step::show(&cmd)))?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let serial = fs::read_to_string(&log).unwrap_or_default();
    let checks = parse(&serial);
    let failed = checks.iter().filter(|c| c.why.is_some()).count() as i32;
    match status.and_then(|s| s.code()) {
        None => bail!(
            "bare QEMU did not end within {} s (serial log {})",
            TIMEOUT.as_secs(),
            log.display()
        ),
        Some(code) if code & 1 == 1 && code >> 1 == failed => {}
        Some(code) => bail!(
            "bare QEMU exited with status {code}, not (failures << 1) | 1 for {failed} FAIL \
             lines (serial log {})",
            log.display()
        ),
    }
    Ok(Reference { checks, serial, wall: start.elapsed() })
}

/// Bochs boots the ISO from its BIOS (the emulator module's ISO set-up, COM1 on a socket);
/// barepc ends it through the shutdown port 0x8900 (a fatal panic: Bochs' "failure" exit).
fn run_bochs(iso: &std::path::Path) -> Result<Reference> {
    let emulator = crate::emulator::select(crate::emulator::Choice::Bochs)?;
    deps::ensure(&emulator.needs(image::Boot::Multiboot))?;
    let launch = crate::emulator::Launch {
        image: image::Image::Iso { path: iso.to_path_buf() },
        cpu: None,
        memory_mib: 256,
        cpus: 1,
        headless: true,
        gdb: false,
        icount: false,
        run_dir: step::work_dir().join("run").join("barepc-bare-bochs"),
        input: Vec::new(),
        test_disk: true,
    };
    let watch =
        crate::emulator::watch::Watch { timeout: Some(TIMEOUT * 3), echo: false, cpu_window: None };
    let ran = crate::emulator::watch::run(emulator.as_ref(), &launch, &watch)?;
    if ran.outcome.is_none() {
        bail!("bare Bochs did not end within {} s", (TIMEOUT * 3).as_secs());
    }
    Ok(Reference { checks: parse(&ran.serial), serial: ran.serial, wall: ran.elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_with_or_without_a_prefix() {
        let log = "barepc: hello\nPASS multiboot\r\n[barepc] FAIL module: mods_count is 0\n\
                   [barepc] PASS rsdp\nFAIL odd\n";
        let v = parse(log);
        let names: Vec<&str> = v.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["multiboot", "module", "rsdp", "odd"]);
        assert_eq!(v[1].why.as_deref(), Some("mods_count is 0"));
        assert_eq!(v[0].why, None);
        assert_eq!(v[3].why.as_deref(), Some(""));
    }

    #[test]
    fn a_different_missing_or_extra_verdict_is_a_disagreement() {
        let reference = parse("PASS a\nPASS b\nFAIL c: no disk\n");
        assert_eq!(compare(&reference, &reference, Bare::Qemu), Ok(()));
        // The reasons of two failures may differ; the verdicts may not.
        assert_eq!(
            compare(&reference, &parse("PASS a\nPASS b\nFAIL c: other\n"), Bare::Qemu),
            Ok(())
        );
        let e = compare(&reference, &parse("PASS a\nFAIL b: #GP\nPASS c\nPASS d\n"), Bare::Qemu)
            .unwrap_err();
        assert!(e.starts_with("3 of 3 checks disagree with bare QEMU: "), "{e}");
        assert!(e.contains("b (bare PASS, here FAIL: #GP)"), "{e}");
        assert!(e.contains("c (bare FAIL: no disk, here PASS)"), "{e}");
        assert!(e.contains("d (not in the reference)"), "{e}");
        let e = compare(&reference, &parse("PASS a\n"), Bare::Bochs).unwrap_err();
        assert!(e.starts_with("2 of 3 checks disagree with bare Bochs: "), "{e}");
        assert!(e.contains("b (missing); c (missing)"), "{e}");
    }

    #[test]
    fn the_module_sums_to_its_sum_line() {
        let text = fs::read(step::root().join(MODULE)).unwrap();
        assert!(text.starts_with(b"barepc module"));
        let (body, last) = text.split_at(text.len() - 13);
        let sum = body.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
        assert_eq!(last, format!("sum {sum:08x}\n").as_bytes());
        assert!(grub_cfg().contains("module --nounzip /boot/barepc-mod barepc-mod\n"));
    }
}
