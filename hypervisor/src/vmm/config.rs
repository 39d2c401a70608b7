//! What a partition is made from: the manifest's entry (or the management partition's create
//! call), resolved to the image bytes it names. Below the partition and the image loaders, which
//! both read it.

use alloc::string::String;
use alloc::vec::Vec;

/// What a partition is made from (the manifest's entry, resolved).
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    pub name: String,
    pub image: &'static [u8],
    /// How the image is loaded and entered.
    pub format: super::manifest::ImageFormat,
    /// The initial RAM disk (Linux images).
    pub initrd: Option<&'static [u8]>,
    /// Multiboot boot modules, in order (multiboot images).
    pub modules: Vec<BootModule>,
    pub memory: u64,
    /// vCPUs, 1..=[`super::ipi::MAX_VCPUS`]: vCPU 0 starts at the image's entry, the others
    /// wait for a start-up IPI.
    pub vcpus: u32,
    pub cmdline: String,
    /// How the partition must end for the run to count as a success (test scenarios).
    pub expect: super::manifest::Expect,
    /// What happens when it stops.
    pub on_stop: super::manifest::OnStop,
    /// The management partition: identity-mapped RAM (all the host RAM the others do not
    /// use), privileged hypercalls, the devices in `devices`.
    pub management: bool,
    /// Management partition: host RAM bytes it leaves free for the other partitions (those in
    /// the manifest and those it creates later).
    pub keep_free: u64,
    /// Devices handed to a management partition (manifest syntax, see `vmm::passthrough`).
    pub devices: Vec<String>,
    /// Host CPUs of its own (the manifest's `cpus`, the create call's CPU mask); `None`:
    /// time-sliced on the boot CPU.
    pub cpus: Option<crate::arch::x86::pins::Request>,
}

/// A multiboot boot module a partition gets: the bytes and the string the information
/// structure gives with them (Multiboot Specification §3.3, `mods_addr`).
#[derive(Debug, Clone)]
pub struct BootModule {
    pub data: &'static [u8],
    pub string: String,
}
