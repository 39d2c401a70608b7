//! A Type-1 microhypervisor for x86_64.
//!
//! Layers, top to bottom: [`start`] (boot to the partitions), `vmm` (the vendor-neutral core:
//! partitions, exits, hypercalls, devices), `arch` (the shared x86 layer and the VMX/SVM
//! backends), `mm` (frames and page tables). Everything but the thin hardware layers is plain
//! Rust that `cargo test` runs on the host.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod arch;
pub mod bootinfo;
pub mod cmdline;
pub mod console;
pub mod devices;
pub mod mm;
pub mod start;
pub mod vmm;

pub use start::start;

/// The name printed in the banner.
pub const NAME: &str = "microhv";
/// The version printed in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
