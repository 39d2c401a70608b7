//! Address kinds that must never be mixed up: host-physical and guest-physical.

use core::fmt;

/// Size of a 4 KiB page.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a 2 MiB page.
pub const PAGE_SIZE_2M: u64 = 2 << 20;
/// Size of a 1 GiB page.
pub const PAGE_SIZE_1G: u64 = 1 << 30;

macro_rules! address {
    ($name:ident, $what:literal) => {
        #[doc = $what]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            pub const fn add(self, n: u64) -> Self {
                Self(self.0 + n)
            }
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 % align == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address!(HostPhys, "A host-physical address (what the CPU puts on the bus).");
address!(GuestPhys, "A guest-physical address (translated by EPT/NPT).");

/// Rounds `x` up to a multiple of `align` (a power of two).
pub const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

/// Rounds `x` down to a multiple of `align` (a power of two).
pub const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}
