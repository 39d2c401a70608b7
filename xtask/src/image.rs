//! Boot images: the multiboot ELF as is, a GRUB ISO (multiboot for Bochs and real machines), a
//! UEFI disk image (the `bootloader` crate). The kernel command line and the boot modules (guest
//! images, a manifest) go along on every path: as `-append`/`-initrd` or GRUB `multiboot`/`module`
//! lines, or as entries of the boot pack that is the UEFI ramdisk.
//!
//! Each image is remade only when what it is made from changed: a stamp file next to it records
//! the inputs (paths, sizes, modification times, command line).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use clap::ValueEnum;

use crate::build::{self, MULTIBOOT_BIN, UEFI_BIN};
use crate::deps;
use crate::step;

/// The boot protocol the hypervisor is started through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Boot {
    /// Multiboot1: QEMU `-kernel`, or GRUB from an ISO.
    Multiboot,
    /// UEFI firmware (OVMF) loading the `bootloader` crate from a GPT disk image.
    Uefi,
}

/// What is written to disk for a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The multiboot ELF as is, for QEMU's own multiboot loader.
    Elf,
    /// A GRUB rescue ISO that multiboots the ELF.
    Iso,
    /// A GPT disk image with the UEFI bootloader, the UEFI kernel and the boot pack.
    Disk,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Elf => "multiboot ELF",
            Kind::Iso => "GRUB ISO",
            Kind::Disk => "UEFI disk image",
        }
    }

    fn dir_prefix(self) -> &'static str {
        match self {
            Kind::Elf => "elf",
            Kind::Iso => "iso",
            Kind::Disk => "uefi",
        }
    }
}

/// The test disk: 1 MiB, raw. Sector 0 starts with [`TEST_DISK_MAGIC`] and ends with the
/// boot signature 0x55 0xAA (bytes 510-511); every other sector `N` starts with
/// `MICROHV SECTOR N` (decimal), the rest zeros. Attached as the primary ATA master where a
/// case or run asks for it; the management partition reads sector 0.
pub const TEST_DISK_BYTES: u64 = 1 << 20;
pub const TEST_DISK_MAGIC: &[u8] = b"MICROHV TEST DISK";

/// The test disk's bytes (see [`TEST_DISK_BYTES`]).
pub fn test_disk() -> Vec<u8> {
    let mut disk = vec![0u8; TEST_DISK_BYTES as usize];
    for (n, sector) in disk.chunks_mut(512).enumerate() {
        if n == 0 {
            sector[..TEST_DISK_MAGIC.len()].copy_from_slice(TEST_DISK_MAGIC);
            sector[510] = 0x55;
            sector[511] = 0xaa;
        } else {
            let label = format!("MICROHV SECTOR {n}");
            sector[..label.len()].copy_from_slice(label.as_bytes());
        }
    }
    disk
}

/// Writes a fresh test disk to `path` (each run gets its own: the guest may write it).
pub fn write_test_disk(path: &Path) -> Result<()> {
    fs::write(path, test_disk()).with_context(|| format!("writing {}", path.display()))
}

/// A boot module: a file that reaches the hypervisor under `name`.
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
}

/// A boot image, ready for an emulator.
#[derive(Clone, Debug)]
pub enum Image {
    /// The multiboot kernel and its modules, each staged as a file called by its module name
    /// (the hypervisor names a module by the last path component of its module string).
    Elf {
        kernel: PathBuf,
        cmdline: String,
        modules: Vec<PathBuf>,
    },
    Iso {
        path: PathBuf,
    },
    Disk {
        path: PathBuf,
    },
}

impl Image {
    pub fn describe(&self) -> String {
        let path = match self {
            Image::Elf { kernel, .. } => kernel,
            Image::Iso { path } | Image::Disk { path } => path,
        };
        let rel = path.strip_prefix(step::root()).unwrap_or(path);
        rel.display().to_string()
    }
}

/// The kernel ELF with the symbols of the kernel a boot path starts (for gdb).
pub fn kernel_for(boot: Boot) -> PathBuf {
    build::kernel_artifact(match boot {
        Boot::Multiboot => MULTIBOOT_BIN,
        Boot::Uefi => UEFI_BIN,
    })
}

/// Makes (or finds up to date) the image of `kind` for this command line and these modules.
/// The kernels must be built.
pub fn make(kind: Kind, cmdline: &str, modules: &[Module]) -> Result<Image> {
    check_inputs(cmdline, modules)?;
    let dir = step::work_dir().join("images").join(format!(
        "{}-{:016x}",
        kind.dir_prefix(),
        key(cmdline, modules)
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = step::lock(&dir)?;
    match kind {
        Kind::Elf => elf(&dir, cmdline, modules),
        Kind::Iso => iso(&dir, cmdline, modules),
        Kind::Disk => disk(&dir, cmdline, modules),
    }
}

fn check_inputs(cmdline: &str, modules: &[Module]) -> Result<()> {
    ensure!(!cmdline.contains(['\n', '\r', '\0']), "the kernel command line must be one line");
    for m in modules {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        ensure!(
            !m.name.is_empty()
                && m.name.len() <= hvabi::pack::NAME_LEN
                && m.name.chars().all(ok_char)
                && m.name != hvabi::pack::CMDLINE_ENTRY,
            "bad module name {:?}: use 1 to {} of [A-Za-z0-9._-], not {:?}",
            m.name,
            hvabi::pack::NAME_LEN,
            hvabi::pack::CMDLINE_ENTRY
        );
        ensure!(m.path.is_file(), "module {}: no file {}", m.name, m.path.display());
    }
    Ok(())
}

/// A stable name for one configuration (FNV-1a over command line and modules), so that images
/// for different command lines sit side by side and each stays fresh.
fn key(cmdline: &str, modules: &[Module]) -> u64 {
    let mut text = format!("{cmdline}\n");
    for m in modules {
        let _ = writeln!(text, "{}={}", m.name, m.path.display());
    }
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// What an image was made from: one line per input file (path, size, mtime) and the settings.
fn stamp(files: &[&Path], settings: &str) -> Result<String> {
    let mut s = format!("format 1\n{settings}\n");
    for f in files {
        let meta = fs::metadata(f).with_context(|| format!("reading {}", f.display()))?;
        let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let _ = writeln!(s, "{} {} {mtime}", f.display(), meta.len());
    }
    Ok(s)
}

fn stamp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".stamp");
    out.with_file_name(name)
}

/// Runs `make` unless `out` exists and was made from exactly `stamp`.
fn remake(kind: Kind, out: &Path, stamp: &str, make: impl FnOnce() -> Result<()>) -> Result<()> {
    let stamp_file = stamp_path(out);
    if out.exists() && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    let _ = fs::remove_file(&stamp_file);
    step::step(&format!("making {}", kind.label()), make)?;
    fs::write(&stamp_file, stamp).with_context(|| format!("writing {}", stamp_file.display()))
}

fn module_paths(modules: &[Module]) -> Vec<&Path> {
    modules.iter().map(|m| m.path.as_path()).collect()
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn elf(dir: &Path, cmdline: &str, modules: &[Module]) -> Result<Image> {
    let kernel = build::kernel_artifact(MULTIBOOT_BIN);
    let staged = dir.join("modules");
    let staged_paths: Vec<PathBuf> = modules.iter().map(|m| staged.join(&m.name)).collect();
    if !modules.is_empty() {
        let stamp = stamp(&module_paths(modules), cmdline)?;
        remake(Kind::Elf, &staged, &stamp, || {
            let _ = fs::remove_dir_all(&staged);
            fs::create_dir_all(&staged)?;
            for (m, to) in modules.iter().zip(&staged_paths) {
                copy(&m.path, to)?;
            }
            Ok(())
        })?;
    }
    ensure!(kernel.is_file(), "no kernel at {}: build it first", kernel.display());
    Ok(Image::Elf { kernel, cmdline: cmdline.to_string(), modules: staged_paths })
}

/// Quotes a word for grub.cfg (GRUB's shell-like syntax) where it needs it.
fn grub_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "._-=,/:+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn grub_cfg(cmdline: &str, modules: &[Module]) -> String {
    let args: Vec<String> = cmdline.split_whitespace().map(grub_word).collect();
    let mut cfg = String::from("set timeout=0\nset default=0\n\nmenuentry \"microhv\" {\n");
    let _ = writeln!(cfg, "    multiboot /boot/hv.elf {}", args.join(" "));
    for m in modules {
        // --nounzip: GRUB would otherwise decompress a gzip module (an initrd) on the way.
        let _ = writeln!(cfg, "    module --nounzip /boot/{0} {0}", m.name);
    }
    cfg.push_str("    boot\n}\n");
    cfg
}

fn iso(dir: &Path, cmdline: &str, modules: &[Module]) -> Result<Image> {
    deps::ensure(&deps::GRUB_ISO)?;
    let kernel = build::kernel_artifact(MULTIBOOT_BIN);
    let out = dir.join("hv.iso");
    let mut inputs = vec![kernel.as_path()];
    inputs.extend(module_paths(modules));
    let stamp = stamp(&inputs, &grub_cfg(cmdline, modules))?;
    remake(Kind::Iso, &out, &stamp, || {
        let tree = dir.join("tree");
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(tree.join("boot").join("grub"))?;
        copy(&kernel, &tree.join("boot").join("hv.elf"))?;
        for m in modules {
            copy(&m.path, &tree.join("boot").join(&m.name))?;
        }
        fs::write(tree.join("boot").join("grub").join("grub.cfg"), grub_cfg(cmdline, modules))?;
        let _ = fs::remove_file(&out);
        step::run_quiet(Command::new("grub-mkrescue").arg("-o").arg(&out).arg(&tree))
    })?;
    Ok(Image::Iso { path: out })
}

fn disk(dir: &Path, cmdline: &str, modules: &[Module]) -> Result<Image> {
    let tool = build::uefi_tool()?;
    let kernel = build::kernel_artifact(UEFI_BIN);
    let out = dir.join("hv-uefi.img");
    let mut inputs = vec![kernel.as_path(), tool.as_path()];
    inputs.extend(module_paths(modules));
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    let stamp = stamp(&inputs, &format!("cmdline {cmdline}\nmodules {}", names.join(" ")))?;
    remake(Kind::Disk, &out, &stamp, || {
        let pack_path = dir.join("ramdisk.pack");
        write_pack(&pack_path, cmdline, modules)?;
        let _ = fs::remove_file(&out);
        step::run_quiet(Command::new(&tool).arg(&kernel).arg(&pack_path).arg(&out))
    })?;
    Ok(Image::Disk { path: out })
}

/// The UEFI ramdisk: a boot pack with the command line (entry `cmdline`) and the modules.
fn write_pack(path: &Path, cmdline: &str, modules: &[Module]) -> Result<()> {
    let mut files: Vec<(String, Vec<u8>)> =
        vec![(hvabi::pack::CMDLINE_ENTRY.to_string(), cmdline.as_bytes().to_vec())];
    for m in modules {
        let data = fs::read(&m.path).with_context(|| format!("reading {}", m.path.display()))?;
        files.push((m.name.clone(), data));
    }
    let entries: Vec<(&str, &[u8])> =
        files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let lens: Vec<usize> = entries.iter().map(|(_, d)| d.len()).collect();
    let mut blob = vec![0u8; hvabi::pack::packed_len(&lens)];
    hvabi::pack::write(&entries, &mut blob);
    if hvabi::pack::Pack::parse(&blob).is_err() {
        bail!("the boot pack written for {} does not parse back", path.display());
    }
    fs::write(path, blob).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_disk_layout() {
        let d = test_disk();
        assert_eq!(d.len(), 1 << 20);
        assert!(d.starts_with(b"MICROHV TEST DISK"));
        assert_eq!(d[17..510], [0u8; 493]);
        assert_eq!(u16::from_le_bytes([d[510], d[511]]), 0xaa55);
        assert!(d[512..].starts_with(b"MICROHV SECTOR 1\0"));
        assert!(d[2047 * 512..].starts_with(b"MICROHV SECTOR 2047\0"));
        assert_eq!(d[2047 * 512 + 19..], [0u8; 512 - 19]);
    }

    #[test]
    fn grub_cfg_quotes_only_what_needs_it() {
        let modules = [Module { name: "probe".into(), path: "/x/probe".into() }];
        let cfg = grub_cfg("loglevel=debug  x;y it's", &modules);
        assert!(cfg.contains(r"multiboot /boot/hv.elf loglevel=debug 'x;y' 'it'\''s'"));
        assert!(cfg.contains("module --nounzip /boot/probe probe\n"));
        assert!(cfg.starts_with("set timeout=0\n"));
    }

    #[test]
    fn key_differs_by_cmdline_and_modules() {
        let m = [Module { name: "a".into(), path: "/a".into() }];
        assert_ne!(key("", &[]), key("fault=pf", &[]));
        assert_ne!(key("", &[]), key("", &m));
        assert_eq!(key("x", &m), key("x", &m));
    }

    #[test]
    fn bad_module_names_are_refused() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let bad =
            |name: &str| check_inputs("", &[Module { name: name.into(), path: path.clone() }]);
        assert!(bad("probe-1.elf").is_ok());
        assert!(bad("cmdline").is_err());
        assert!(bad("a b").is_err());
        assert!(bad("").is_err());
        assert!(check_inputs("a\nb", &[]).is_err());
    }
}
