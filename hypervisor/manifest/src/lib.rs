//! The partition manifest's schema: what runs, written by a person in TOML, parsed with the
//! `toml` crate and checked here, once, for both sides that read it: the hypervisor at boot
//! (`hypervisor::vmm::manifest`) and the xtask before it packs a boot image
//! (`xtask/src/scenario.rs`). Format and examples: `docs/guests.md`.
//!
//! ```toml
//! name = "attack"            # optional: the scenario's name
//! [[partition]]
//! name = "probe"             # required, unique, 1..=31 of [a-z0-9_-]
//! image = "probe"            # required: the boot module holding the image
//! memory = 16                # MiB
//! ```
//!
//! An error names the line, the partition and the field
//! (`manifest line 9: partition "probe": field memory: ...`), and quotes a bad value cut to
//! [`SHOWN`] bytes, so that a 5 MB string makes a short line. No input makes the parser panic.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod check;
mod depth;
mod error;
mod read;
#[cfg(test)]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use serde::{Deserialize, Serialize};

pub use depth::MAX_NESTING;
pub use error::{Located, ManifestError, SHOWN, shorten};

/// Longest partition name (the start-info page holds 32 bytes).
pub const NAME_MAX: usize = 31;
/// Longest scenario name (top-level `name`).
pub const SCENARIO_NAME_MAX: usize = 63;
/// Longest boot-module name (a boot-pack entry name holds 47 bytes and a NUL).
pub const IMAGE_MAX: usize = hvabi::pack::NAME_LEN - 1;
/// Longest image reference as written (a module name, or for the xtask a file path whose last
/// component is the module name).
pub const IMAGE_PATH_MAX: usize = 255;
/// Module names an image may not take: the manifest's own and the boot pack's command line.
pub const RESERVED_MODULES: &[&str] = &[MANIFEST_MODULE, hvabi::pack::CMDLINE_ENTRY];
/// The boot module the manifest itself travels as.
pub const MANIFEST_MODULE: &str = "manifest";
/// Longest command line (the start-info page holds 256 bytes).
pub const CMDLINE_MAX: usize = 255;
/// Longest `cmdline` for a Linux partition (the kernel's own limit, `cmdline_size` in its
/// setup header, is checked when the image is loaded; x86 kernels take 2047).
pub const LINUX_CMDLINE_MAX: usize = 2047;
/// Most `modules` of one partition (the multiboot information page holds their list and
/// strings: `MODULES_MAX` strings of up to [`MODULE_STRING_MAX`] bytes and a NUL each).
pub const MODULES_MAX: usize = 8;
/// Longest `modules` entry (the module's reference and its arguments).
pub const MODULE_STRING_MAX: usize = 255;
/// Longest device name.
pub const DEVICE_MAX: usize = 63;
/// Guest RAM bounds and default, in MiB.
pub const MEMORY_MIN_MIB: u64 = 2;
pub const MEMORY_MAX_MIB: u64 = 1024;
pub const MEMORY_DEFAULT_MIB: u64 = 16;
/// Most vCPUs of one partition (`vcpus`): time-sliced on the partition's host CPU; eight keep
/// the xAPIC's flat logical destinations (one bit each) usable for all.
pub const MAX_VCPUS: u32 = 8;
/// Most partitions in one manifest.
pub const MAX_PARTITIONS: usize = 64;
/// Bounds of `timeslice_us`.
pub const TIMESLICE_MIN_US: u64 = 10;
pub const TIMESLICE_MAX_US: u64 = 1_000_000;

/// The top-level keys.
pub const TOP_KEYS: &[&str] = &["name", "timeslice_us", "images", "partition"];
/// The keys of a `[[partition]]` table.
pub const PARTITION_KEYS: &[&str] = &[
    "name", "role", "image", "format", "initrd", "modules", "memory", "vcpus", "cpus", "cmdline",
    "devices", "on_stop", "expect",
];
/// Most host CPUs the hypervisor starts (the boot CPU included): `cpus` indices are below it.
pub const MAX_HOST_CPUS: u32 = 64;

/// A whole manifest, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// The scenario's name (top-level `name`).
    pub name: Option<String>,
    /// The scheduler's time slice (top-level `timeslice_us`).
    pub timeslice_us: Option<u64>,
    /// More boot modules than the partitions name (top-level `images`): images the management
    /// partition may create partitions from.
    pub images: Vec<String>,
    /// Where `images` is written.
    #[serde(skip)]
    pub images_at: Option<At>,
    /// At least one, in the order written.
    pub partitions: Vec<PartitionSpec>,
}

impl Manifest {
    /// The management partition, if the manifest has one.
    pub fn management(&self) -> Option<&PartitionSpec> {
        self.partitions.iter().find(|p| p.role == Role::Management)
    }
}

/// Where a value is written: its 1-based line and its bytes in the text (a string's quotes
/// included), for tools that rewrite a manifest in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct At {
    pub line: usize,
    pub span: Range<usize>,
}

/// One `[[partition]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionSpec {
    pub name: String,
    pub role: Role,
    /// The image reference: the boot module holding the image (for the xtask, also a file
    /// path whose last component becomes the module's name: [`module_name`]).
    pub image: String,
    pub format: ImageFormat,
    /// The boot module holding the initial RAM disk (`format = "linux"` only).
    pub initrd: Option<String>,
    /// Multiboot boot modules (`format = "multiboot"` only), in the order written: each
    /// entry's first word is a boot module (an image reference, like `image`), and the whole
    /// entry becomes the module's string (as GRUB's `module FILE ARGS` and QEMU's
    /// `-initrd "FILE ARGS"` pass it).
    pub modules: Vec<ModuleSpec>,
    /// Guest RAM in MiB (even, `MEMORY_MIN_MIB..=MEMORY_MAX_MIB`). 0 for a management
    /// partition without `memory`: all the host RAM the others do not use.
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Host CPUs of its own (`cpus = N` or `cpus = [indices]`); `None`: time-sliced on CPU 0.
    pub cpus: Option<CpuRequest>,
    pub cmdline: String,
    /// Physical devices handed over (management partition only).
    pub devices: Vec<String>,
    pub on_stop: OnStop,
    pub expect: Expect,
    /// Line of the `[[partition]]` header, for later messages.
    pub line: usize,
    /// Where `image`, `initrd` and `cmdline` are written (default when absent).
    #[serde(skip)]
    pub image_at: At,
    #[serde(skip)]
    pub initrd_at: At,
    #[serde(skip)]
    pub cmdline_at: At,
    /// Where `modules` is written (the whole array).
    #[serde(skip)]
    pub modules_at: At,
}

/// One `modules` entry: `"FILE ARGS"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleSpec {
    /// The image reference (the entry's first word).
    pub image: String,
    /// The entry as written: the reference, then its arguments (the multiboot module string).
    pub string: String,
}

impl ModuleSpec {
    /// Splits an entry at its first space (the reference, then its arguments, if any).
    pub fn parse(entry: &str) -> Self {
        let entry = entry.trim();
        let image = entry.split(' ').next().unwrap_or_default();
        Self { image: image.into(), string: entry.into() }
    }

    /// The arguments after the reference (empty when none).
    pub fn args(&self) -> &str {
        self.string.split_once(' ').map_or("", |(_, rest)| rest.trim_start())
    }
}

impl PartitionSpec {
    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    /// The longest `cmdline` this partition's format takes.
    pub fn cmdline_max(&self) -> usize {
        match self.format {
            ImageFormat::Linux => LINUX_CMDLINE_MAX,
            _ => CMDLINE_MAX,
        }
    }
}

/// A partition's `cpus`: host CPUs that run only its vCPU. Which CPUs exist is known only at
/// boot: the hypervisor checks a request against the machine (`pins::Pins`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CpuRequest {
    /// `cpus = N`: any N free CPUs (1..[`MAX_HOST_CPUS`]).
    Count(u32),
    /// `cpus = [i, ...]`: exactly these host CPU indices (1..[`MAX_HOST_CPUS`], CPU 0 runs
    /// the management partition), each once and in no other partition's list.
    List(Vec<u32>),
}

impl CpuRequest {
    /// How many CPUs it asks for.
    pub fn count(&self) -> u32 {
        match self {
            Self::Count(n) => *n,
            Self::List(l) => l.len() as u32,
        }
    }
}

/// Defines a field's enum with its manifest spellings.
macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] $variant,)+ }

        impl $name {
            /// The spellings, for messages.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The manifest spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }

            /// The variant spelt `s` in a manifest.
            pub fn from_text(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

keyword_enum!(
    /// `role`: at most one management partition.
    Role { Management = "management", Guest = "guest", }
);
keyword_enum!(
    /// `format`: how the image is loaded.
    ImageFormat {
        Elf64 = "elf64",
        Multiboot = "multiboot",
        /// A Linux bzImage, entered by the x86 boot protocol.
        Linux = "linux",
    }
);
keyword_enum!(
    /// `on_stop`: what happens when the partition stops.
    OnStop { Destroy = "destroy", Restart = "restart", PowerOff = "poweroff", }
);
keyword_enum!(
    /// `expect`: how the partition must end for the run to count as a success.
    Expect {
        /// Shutdown hypercall with status 0.
        Exit = "exit",
        /// Stopped by the hypervisor for a violation.
        Fault = "fault",
        /// Powered off: ACPI soft-off, or HLT with interrupts off and nothing to wake it (how a kernel
        /// without ACPI powers off).
        Halt = "halt",
    }
);

/// Parses and checks a manifest that arrived as bytes (a boot module).
pub fn parse_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    match core::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let line = line_of_bytes(bytes, e.valid_up_to());
            Err(ManifestError::syntax(line, "not UTF-8 text"))
        }
    }
}

/// Parses and checks a manifest.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    check::manifest(text)
}

/// 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    line_of_bytes(text.as_bytes(), offset)
}

fn line_of_bytes(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count()
}

/// The boot module an image reference travels as: its last path component (multiboot names a
/// module by its string's last path component), which must be 1..=[`IMAGE_MAX`] of `A-Z a-z
/// 0-9 . _ -`, and not one of [`RESERVED_MODULES`].
pub fn module_name(image: &str) -> Result<&str, String> {
    let module = image.rsplit('/').next().unwrap_or(image);
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if module.is_empty()
        || module.len() > IMAGE_MAX
        || !module.bytes().all(ok_char)
        || module == "."
        || module == ".."
        || RESERVED_MODULES.contains(&module)
    {
        return Err(alloc::format!(
            "module name {}: want 1..={IMAGE_MAX} of A-Z, a-z, 0-9, '.', '_', '-', and not {}",
            shorten(module),
            RESERVED_MODULES
                .iter()
                .map(|m| alloc::format!("{m:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    Ok(module)
}

/// True for a valid partition name: 1..=[`NAME_MAX`] of `a-z 0-9 _ -`.
pub fn valid_name(s: &str) -> bool {
    (1..=NAME_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
