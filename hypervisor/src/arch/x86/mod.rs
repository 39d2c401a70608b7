//! The shared x86 layer: instructions, descriptor tables, exceptions, CPU identification.
//!
//! Every `unsafe` block that touches the machine lives below this folder (and in the vendor
//! backends' entry stubs), each with the reason it is sound.
pub mod acpi;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod instr;
pub mod lapic;
pub mod paging;
pub mod pic;
pub mod pins;
pub mod power;
pub mod smp;
pub mod time;
pub mod trampoline;
