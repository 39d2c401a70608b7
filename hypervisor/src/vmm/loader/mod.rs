//! Guest-image loaders: check an image against the partition it is meant for, then copy it in
//! through the caller's guest-memory accessor: [`elf`] (ELF64, our own guests' format, entered
//! in 64-bit mode) and [`multiboot`] (multiboot 1 kernels, entered in 32-bit protected mode).
pub mod acpi;
pub mod elf;
pub mod linux;
pub mod mb_modules;
pub mod multiboot;
pub mod place;

use core::fmt;

/// A byte count printed in the largest binary unit that divides it ("16 MiB", "0x1234 bytes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, unit) in UNITS {
            if self.0 != 0 && self.0.trailing_zeros() >= shift {
                return write!(f, "{} {unit}", self.0 >> shift);
            }
        }
        write!(f, "{:#x} bytes", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Size;
    use alloc::string::ToString;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(Size(16 << 20).to_string(), "16 MiB");
        assert_eq!(Size(3 << 30).to_string(), "3 GiB");
        assert_eq!(Size(1536 << 20).to_string(), "1536 MiB");
        assert_eq!(Size(4096).to_string(), "4 KiB");
        assert_eq!(Size(0x1234).to_string(), "0x1234 bytes");
        assert_eq!(Size(0).to_string(), "0x0 bytes");
    }
}
