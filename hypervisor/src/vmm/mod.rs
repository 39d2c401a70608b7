//! The vendor-neutral core: vCPUs and their exits, partitions, guest memory, hypercalls and
//! the device buses. Intel and AMD are reached only through [`vcpu::Vcpu`] and
//! [`vcpu::Backend`].
pub mod bus;
pub mod code_site;
pub mod config;
pub mod console_limit;
pub mod cpuid;
pub mod cr;
pub mod decode;
pub mod dispatch;
pub mod exit;
pub mod fetch;
pub mod firmware;
pub mod firmware_acpi;
pub mod fpu;
pub mod hypercall;
pub mod image;
pub mod interrupts;
pub mod ipi;
pub mod launch;
pub mod loader;
pub mod machine;
pub mod manifest;
pub mod memory;
pub mod msr;
pub mod partition;
pub mod passthrough;
pub mod pc;
pub mod platform;
pub mod profile;
pub mod run;
pub mod step;
pub mod vcpu;
pub mod vcpu_slot;
pub mod vioapic;
pub mod vlapic;
pub mod xcr0;
