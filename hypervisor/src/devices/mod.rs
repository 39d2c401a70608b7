//! Virtual devices as pure state machines: guest register reads and writes in, output and
//! interrupt state out. The buses in `vmm` route port and MMIO accesses to them; nothing here
//! touches hardware (time comes from a [`clock::Clock`]), so all of it is tested on the host.
pub mod acpi_pm;
pub mod civil;
pub mod clock;
pub mod ioapic;
pub mod lapic;
pub mod pcmisc;
pub mod pic8259;
pub mod pit8254;
pub mod pit_counter;
pub mod rtc;
pub mod shared;
pub mod uart16550;
