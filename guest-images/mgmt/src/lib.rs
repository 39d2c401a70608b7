//! The management partition's plain-data logic, apart from the kernel (`main.rs`) so that the
//! host can test it (`cargo test -p mgmt --lib`): the shell's command parser and line editor, the ACPI table walk,
//! and the formatting of what the kernel reads from its devices and the hypervisor.
//!
//! Nothing here touches a port or makes a hypercall.
#![no_std]

pub mod acpi;
pub mod command;
pub mod line;
pub mod report;
