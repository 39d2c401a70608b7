//! The Linux guest's artefacts, fetched and made under `target/linux/` (never committed):
//! Debian's stock cloud kernel and `busybox-static`, from the machine's apt sources without
//! installing anything (`apt-get download` of the exact versioned package, `dpkg-deb -x` into
//! `target/linux/root`), and the initramfs the xtask builds itself ([`initramfs`]) around
//! `guest-images/linux/init`.
//!
//! Made:
//! - `target/linux/vmlinuz`: the kernel's bzImage (`/boot/vmlinuz-RELEASE` of its package);
//! - `target/linux/initrd.gz`: the initramfs.
//!
//! A scenario that names a file under `target/linux/` has them made before it is packed
//! (`scenario::resolve_image` calls [`provision`]). `cargo xtask linux` makes them and prints
//! the versions; `--bare` also boots them on bare QEMU ([`bare`]).

pub mod bare;
pub mod initramfs;

pub use bare::{BareFigures, Check, DATE_KEY, NOW, bare_reference, now};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::step;

/// Where the artefacts live, relative to the repository root.
pub const DIR: &str = "target/linux";
/// The metapackage that names the current cloud kernel.
pub const KERNEL_META: &str = "linux-image-cloud-amd64";
/// The static busybox the initramfs is made of.
pub const BUSYBOX: &str = "busybox-static";
/// The initramfs' `/init`, kept in the repository for people to read.
pub const INIT_SCRIPT: &str = "guest-images/linux/init";
/// The scenario with a Linux partition, and that partition's name.
pub const SCENARIO: &str = "linux";
pub const PARTITION: &str = "linux";

/// A Debian package at one exact version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// What [`provision`] made.
#[derive(Clone, Debug)]
pub struct Artefacts {
    /// `target/linux/vmlinuz` (absolute).
    pub kernel: PathBuf,
    /// `target/linux/initrd.gz` (absolute).
    pub initrd: PathBuf,
    /// The versioned kernel package, e.g. `linux-image-6.1.0-57-cloud-amd64` 6.1.192-3.
    pub kernel_package: Package,
    /// What `uname -r` prints, e.g. `6.1.0-57-cloud-amd64`.
    pub kernel_release: String,
    pub busybox_package: Package,
}

#[derive(Args, Debug)]
pub struct LinuxArgs {
    /// Also boot the kernel and initramfs on bare QEMU TCG (no hypervisor) with the `linux`
    /// scenario's command line and print the figures (the bench's reference).
    #[arg(long)]
    pub bare: bool,
    /// With --bare: give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `cargo xtask linux`: provision, print the versions; with `--bare`, the bare reference.
pub fn command(args: &LinuxArgs) -> Result<std::process::ExitCode> {
    let a = provision()?;
    if !args.bare {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let cmdline = bare::scenario_cmdline(SCENARIO, PARTITION)?;
    let f: BareFigures =
        bare_reference(&a, &cmdline, std::time::Duration::from_secs(args.timeout))?;
    let failed: Vec<&Check> = f.checks.iter().filter(|c| c.why.is_some()).collect();
    if !failed.is_empty() {
        eprintln!("{}", f.serial.trim_end());
    }
    for c in &f.checks {
        match &c.why {
            None => println!("PASS {}", c.name),
            Some(why) => println!("FAIL {}: {why}", c.name),
        }
    }
    let printk = f.run_init_s.map(|t| format!(" (printk clock {t:.3} s)")).unwrap_or_default();
    println!(
        "bare QEMU TCG (icount), {} {}, busybox {}: /init marker at uptime {:.2} s guest \
         time{printk}, {:.1} s wall; all checks done after {:.1} s wall",
        a.kernel_release,
        a.kernel_package.version,
        a.busybox_package.version,
        f.uptime_s,
        f.wall_s,
        f.done_wall_s
    );
    Ok(if failed.is_empty() && !f.checks.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Makes sure the kernel, busybox and the initramfs are under `target/linux/`, fetching and
/// building what is missing or stale, and prints the versions (once per xtask run). Fast when
/// everything is there: one `apt-cache` query per package, then stamps.
pub fn provision() -> Result<Artefacts> {
    static DONE: Mutex<Option<Artefacts>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = done.as_ref() {
        return Ok(a.clone());
    }
    let dir = step::root().join(DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = step::lock(&dir)?;
    if let Some(missing) = APT_TOOLS.iter().find(|t| !on_path(t))
        && stamp(&dir, &format!("resolved-{KERNEL_META}")).is_empty()
    {
        let a = as_found(&dir, missing)?;
        *done = Some(a.clone());
        return Ok(a);
    }
    // One log per xtask run.
    let apt = Apt { log: dir.join("apt.log") };
    fs::write(&apt.log, "").with_context(|| format!("writing {}", apt.log.display()))?;

    let kernel_package = resolve(&apt, &dir, KERNEL_META, kernel_of_meta)?;
    let Some(kernel_release) = kernel_package.name.strip_prefix("linux-image-") else {
        bail!("{KERNEL_META} depends on {:?}, not a linux-image-* package", kernel_package.name);
    };
    let kernel_release = kernel_release.to_string();
    let vmlinuz = Path::new("boot").join(format!("vmlinuz-{kernel_release}"));
    fetch(&apt, &dir, &kernel_package, &vmlinuz)?;
    let kernel = dir.join("vmlinuz");
    let extracted = dir.join("root").join(&vmlinuz);
    if file_len(&kernel) != file_len(&extracted) || stamp(&dir, "vmlinuz") != kernel_release {
        fs::copy(&extracted, &kernel)
            .with_context(|| format!("copying {}", extracted.display()))?;
        write_stamp(&dir, "vmlinuz", &kernel_release)?;
    }

    let busybox_package = resolve(&apt, &dir, BUSYBOX, version_of)?;
    let busybox = Path::new("bin").join("busybox");
    fetch(&apt, &dir, &busybox_package, &busybox)?;

    let initrd = dir.join("initrd.gz");
    let init_path = step::root().join(INIT_SCRIPT);
    let init = fs::read_to_string(&init_path)
        .with_context(|| format!("reading {}", init_path.display()))?;
    // The disk driver's modules, from the kernel package (`initramfs::DISK_MODULES`).
    let modules_dir = dir.join("root").join("lib").join("modules").join(&kernel_release);
    let mut modules = Vec::new();
    for m in initramfs::DISK_MODULES {
        let path = modules_dir.join(m);
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        modules.push((initramfs::module_entry_path(m), data));
    }
    // What the initramfs is made of: rebuilt when any of it changes.
    let sizes: Vec<String> = modules.iter().map(|(p, d)| format!("{p} {}", d.len())).collect();
    let key = format!(
        "{} {}\n{kernel_release}\n{}\n{init}",
        busybox_package.name,
        busybox_package.version,
        sizes.join(" ")
    );
    if !initrd.is_file() || stamp(&dir, "initrd") != key {
        step::step("building the initramfs (target/linux/initrd.gz)", || {
            let bb = dir.join("root").join(&busybox);
            let bytes = fs::read(&bb).with_context(|| format!("reading {}", bb.display()))?;
            let gz = initramfs::build(&init, &bytes, &kernel_release, &modules)?;
            let tmp = dir.join("initrd.gz.new");
            fs::write(&tmp, gz).with_context(|| format!("writing {}", tmp.display()))?;
            fs::rename(&tmp, &initrd)?;
            write_stamp(&dir, "initrd", &key)
        })?;
    }

    step::note(format!(
        "linux: {} {} (vmlinuz {})",
        kernel_package.name,
        kernel_package.version,
        megabytes(file_len(&kernel))
    ));
    step::note(format!("busybox: {} {}", busybox_package.name, busybox_package.version));
    step::note(format!("initrd: {DIR}/initrd.gz ({})", megabytes(file_len(&initrd))));
    let a = Artefacts { kernel, initrd, kernel_package, kernel_release, busybox_package };
    *done = Some(a.clone());
    Ok(a)
}

/// The programs provisioning needs.
const APT_TOOLS: [&str; 3] = ["apt-cache", "apt-get", "dpkg-deb"];

/// Without apt and without an earlier provisioning: the files a person put in place, if any.
fn as_found(dir: &Path, missing: &str) -> Result<Artefacts> {
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.gz"));
    if !kernel.is_file() || !initrd.is_file() {
        bail!(
            "{missing} not found: the Linux guest's kernel and busybox are Debian packages \
             ({KERNEL_META}, {BUSYBOX}) fetched with apt-cache, apt-get and dpkg-deb. Without \
             apt, put a bzImage at {DIR}/vmlinuz and an initramfs at {DIR}/initrd.gz (e.g. made \
             by `cargo xtask linux` on a Debian machine), or name your own files in the \
             scenario (docs/guests.md, \"Linux guests\")"
        );
    }
    step::note(format!("linux: no {missing}: using {DIR}/vmlinuz and {DIR}/initrd.gz as they are"));
    let unknown = |name: &str| Package { name: name.into(), version: "unknown".into() };
    Ok(Artefacts {
        kernel,
        initrd,
        kernel_package: unknown(KERNEL_META),
        kernel_release: String::new(),
        busybox_package: unknown(BUSYBOX),
    })
}

/// True when a manifest's image path names one of the artefacts, which [`provision`] makes.
pub fn provides(image: &str) -> bool {
    image.strip_prefix(DIR).is_some_and(|rest| rest.starts_with('/'))
}

fn megabytes(bytes: Option<u64>) -> String {
    format!("{:.1} MB", bytes.unwrap_or(0) as f64 / 1e6)
}

fn file_len(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

/// The stamp `target/linux/NAME.stamp` (empty when absent).
fn stamp(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(format!("{name}.stamp"))).unwrap_or_default()
}

fn write_stamp(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(format!("{name}.stamp"));
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// apt's commands, their output to one log file that is shown only on failure.
struct Apt {
    log: PathBuf,
}

impl Apt {
    /// Runs `cmd`, appending its output to the log; stdout, or an error with the log's tail.
    fn run(&self, cmd: &mut Command) -> Result<String> {
        let shown = step::show(cmd);
        let out = cmd
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let mut log = format!("$ {shown}\n");
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        let old = fs::read_to_string(&self.log).unwrap_or_default();
        fs::write(&self.log, format!("{old}{log}"))
            .with_context(|| format!("writing {}", self.log.display()))?;
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("`{shown}` failed ({}); its output:\n{}", out.status, tail.join("\n"));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The exact package behind `name` (`pick` reads it from `apt-cache show` of the candidate).
/// Runs `apt-get update` once if the lookup fails and we are root; without apt, falls back to
/// what an earlier run fetched (its stamp).
fn resolve(
    apt: &Apt,
    dir: &Path,
    name: &str,
    pick: fn(&str, &str) -> Option<Package>,
) -> Result<Package> {
    let remembered = || {
        let s = stamp(dir, &format!("resolved-{name}"));
        let (n, v) = s.trim().split_once(' ')?;
        Some(Package { name: n.into(), version: v.into() })
    };
    if let Some(missing) = APT_TOOLS.iter().find(|t| !on_path(t)) {
        // An earlier run fetched it (`provision` handles the case where none did).
        return remembered()
            .with_context(|| format!("{missing} not found and {name} never fetched"));
    }
    let query = || {
        apt.run(Command::new("apt-cache").args(["show", "--no-all-versions", name]))
            .ok()
            .and_then(|text| pick(name, &text))
    };
    let found = match query() {
        Some(p) => p,
        None => {
            if !is_root() {
                bail!(
                    "apt does not know {name} (see {}); update the package lists with \
                     `sudo apt-get update` and run this again",
                    apt.log.display()
                );
            }
            step::step(&format!("apt-cache knows no {name}: apt-get update"), || {
                apt.run(Command::new("apt-get").args(["update", "-q"])).map(drop)
            })?;
            query().with_context(|| {
                format!(
                    "apt does not know {name} even after apt-get update (see {})",
                    apt.log.display()
                )
            })?
        }
    };
    write_stamp(dir, &format!("resolved-{name}"), &format!("{} {}", found.name, found.version))?;
    Ok(found)
}

/// Downloads `p` into `target/linux/debs` and extracts it into `target/linux/root`, unless the
/// stamp says this version is there and `check` (a path inside the package) exists.
fn fetch(apt: &Apt, dir: &Path, p: &Package, check: &Path) -> Result<()> {
    let root = dir.join("root");
    let stamp_name = format!("extracted-{}", p.name);
    if stamp(dir, &stamp_name) == p.version && root.join(check).is_file() {
        return Ok(());
    }
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    let exact = format!("{}={}", p.name, p.version);
    let deb = step::step(&format!("apt-get download {exact}"), || {
        // apt-get download writes into the current folder; `:` of an epoch becomes `%3a`.
        let prefix = format!("{}_{}_", p.name, p.version.replace(':', "%3a"));
        let find = || {
            fs::read_dir(&debs).ok()?.flatten().map(|e| e.path()).find(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
        };
        if let Some(deb) = find() {
            return Ok(deb);
        }
        apt.run(Command::new("apt-get").current_dir(&debs).args(["download", "-q", &exact]))?;
        find().with_context(|| {
            format!("apt-get download left no {prefix}*.deb in {}", debs.display())
        })
    })?;
    step::step(&format!("dpkg-deb -x {} {DIR}/root", rel(&deb)), || {
        apt.run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root)).map(drop)
    })?;
    if !root.join(check).is_file() {
        bail!("{} holds no {}", deb.display(), check.display());
    }
    // Older versions of this package's .deb are of no more use.
    for old in fs::read_dir(&debs)?.flatten().map(|e| e.path()) {
        let n = old.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if old != deb && n.starts_with(&format!("{}_", p.name)) {
            let _ = fs::remove_file(&old);
        }
    }
    write_stamp(dir, &stamp_name, &p.version)
}

fn rel(path: &Path) -> String {
    path.strip_prefix(step::root()).unwrap_or(path).display().to_string()
}

/// The `Version:` of `apt-cache show --no-all-versions NAME`.
fn version_of(name: &str, show: &str) -> Option<Package> {
    let version = field(show, "Version")?;
    Some(Package { name: name.into(), version: version.into() })
}

/// The `linux-image-*` package (with its exact `(= VERSION)`) that the metapackage depends on.
fn kernel_of_meta(_: &str, show: &str) -> Option<Package> {
    field(show, "Depends")?.split(',').find_map(|dep| {
        let dep = dep.split('|').next()?.trim();
        let (name, rest) = dep.split_once(' ')?;
        let version = rest.trim().strip_prefix("(=")?.strip_suffix(')')?.trim();
        (name.starts_with("linux-image-") && !version.is_empty())
            .then(|| Package { name: name.into(), version: version.into() })
    })
}

/// The value of `Key: value` in the first stanza of an apt record.
fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(bin).is_file()))
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+3)\n\
        Version: 6.1.192-3\nInstalled-Size: 13\n\
        Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)\n\
        Description-en: Linux for x86-64 cloud (meta-package)\n\n\
        Package: linux-image-cloud-amd64\nVersion: 6.1.176-1\n\
        Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)\n";

    #[test]
    fn the_metapackage_names_the_exact_kernel_package() {
        let p = kernel_of_meta(KERNEL_META, META).unwrap();
        assert_eq!(p.name, "linux-image-6.1.0-57-cloud-amd64");
        assert_eq!(p.version, "6.1.192-3");
        let other = "Package: x\nDepends: kmod, linux-base (>= 4.3~), linux-image-6.1.0-9-amd64 (= 6.1.27-1) | y\n";
        assert_eq!(kernel_of_meta("x", other).unwrap().name, "linux-image-6.1.0-9-amd64");
        assert!(kernel_of_meta("x", "Package: x\nDepends: kmod\n").is_none());
        assert!(kernel_of_meta("x", "Package: x\nDepends: linux-image-6 (>= 1)\n").is_none());
        assert!(kernel_of_meta("x", "").is_none());
    }

    #[test]
    fn versions_come_from_the_candidate_stanza() {
        let bb = "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nSize: 928188\n";
        let p = version_of(BUSYBOX, bb).unwrap();
        assert_eq!(p, Package { name: BUSYBOX.into(), version: "1:1.35.0-4+deb12u1+b1".into() });
        assert_eq!(version_of(BUSYBOX, "Package: busybox-static\n"), None);
        assert_eq!(field(META, "Version"), Some("6.1.192-3"));
    }

    #[test]
    fn only_target_linux_paths_are_provided() {
        assert!(provides("target/linux/vmlinuz"));
        assert!(provides("target/linux/initrd.gz"));
        assert!(!provides("target/linuxish/vmlinuz"));
        assert!(!provides("probe"));
    }
}
