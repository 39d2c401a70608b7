//! Where a multiboot partition's boot modules go (Multiboot Specification 0.6.96 §3.3,
//! `mods_addr`): in the partition's RAM, where the kernel does not load, each on a page
//! boundary (flag 0 of the header asks for that; giving it always costs a few bytes), below
//! 4 GiB (the structure's addresses are 32 bits), from 1 MiB up (below it lie the boot
//! structures and the PC's holes).
//!
//! Like GRUB, modules go after the kernel's last byte when they fit there, so that a kernel
//! finds them above itself; else in the lowest free range that holds them.

use alloc::vec::Vec;
use core::fmt;

use crate::mm::addr::PAGE_SIZE;

use super::Size;

/// Modules start at or above this.
pub const MODULES_MIN_GPA: u64 = 0x10_0000;
/// And end at or below this (32-bit addresses).
pub const MODULES_END_GPA: u64 = 1 << 32;

/// Why the modules could not be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom {
    /// The module that did not fit (0-based, in order).
    pub index: usize,
    pub size: u64,
    /// The largest free range left when it was tried.
    pub largest: u64,
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "boot module {} ({}) does not fit in the partition's RAM between 1 MiB and 4 GiB \
             beside the kernel and the modules before it (largest free range: {})",
            self.index + 1,
            Size(self.size),
            Size(self.largest)
        )
    }
}

/// The guest-physical start of each module of `sizes` bytes, in RAM blocks `ram`
/// (`(start, size)`) outside the `taken` ranges (`(start, end)`, the kernel's segments).
pub fn place(ram: &[(u64, u64)], taken: &[(u64, u64)], sizes: &[u64]) -> Result<Vec<u64>, NoRoom> {
    let mut free = free_ranges(ram, taken);
    // After the kernel first: no free range straddles the end of the last taken range.
    let after = taken.iter().map(|t| t.1).max().unwrap_or(0);
    free.sort_by_key(|&(start, _)| (start < after, start));
    let mut starts = Vec::with_capacity(sizes.len());
    for (index, &size) in sizes.iter().enumerate() {
        let fit = free.iter_mut().find_map(|range| {
            let start = range.0.checked_next_multiple_of(PAGE_SIZE)?;
            let end = start.checked_add(size)?;
            (end <= range.1).then(|| {
                range.0 = end;
                start
            })
        });
        match fit {
            Some(start) => starts.push(start),
            None => {
                let largest = free
                    .iter()
                    .map(|r| r.1.saturating_sub(r.0.next_multiple_of(PAGE_SIZE)))
                    .max()
                    .unwrap_or(0);
                return Err(NoRoom { index, size, largest });
            }
        }
    }
    Ok(starts)
}

/// `ram` clipped to `[MODULES_MIN_GPA, MODULES_END_GPA)`, less `taken`, as `(start, end)`.
fn free_ranges(ram: &[(u64, u64)], taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut free: Vec<(u64, u64)> = ram
        .iter()
        .map(|&(start, size)| {
            (start.max(MODULES_MIN_GPA), start.saturating_add(size).min(MODULES_END_GPA))
        })
        .filter(|(a, b)| a < b)
        .collect();
    for &(t0, t1) in taken {
        free = free
            .into_iter()
            .flat_map(|(a, b)| [(a, b.min(t0)), (a.max(t1), b)])
            .filter(|(a, b)| a < b)
            .collect();
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn modules_go_after_the_kernel_on_page_boundaries() {
        let ram = [(0, 16 * MIB)];
        let kernel = [(MIB, MIB + 0x1234)];
        let starts = place(&ram, &kernel, &[100, 0x1000, 0]).unwrap();
        assert_eq!(starts, [MIB + 0x2000, MIB + 0x3000, MIB + 0x4000]);
        // A kernel at 8 MiB: after it, not in the free space below it.
        let starts = place(&ram, &[(8 * MIB, 9 * MIB)], &[MIB]).unwrap();
        assert_eq!(starts, [9 * MIB]);
    }

    #[test]
    fn modules_fall_back_below_the_kernel_and_across_blocks() {
        // Kernel near the top: the module goes to the lowest range that holds it.
        let ram = [(0, 0x9f000), (MIB, 3 * MIB), (8 * MIB, 8 * MIB)];
        let kernel = [(15 * MIB, 16 * MIB - 0x1000)];
        let starts = place(&ram, &kernel, &[0x2000, 3 * MIB, 0x1000]).unwrap();
        // Above the kernel: one page left (16 MiB - 4 KiB .. 16 MiB) holds only the last.
        assert_eq!(starts, [MIB, 8 * MIB, 16 * MIB - 0x1000]);
        // Nothing below 1 MiB, nothing in the kernel, nothing above 4 GiB.
        let e = place(&[(0, MIB), (4 << 30, MIB)], &[], &[1]).unwrap_err();
        assert_eq!(e, NoRoom { index: 0, size: 1, largest: 0 });
        let e = place(&[(0, 4 * MIB)], &[(MIB, 4 * MIB)], &[1]).unwrap_err();
        assert_eq!(e.index, 0);
    }

    #[test]
    fn no_room_names_the_module_and_the_largest_range() {
        let ram = [(0, 4 * MIB)];
        let kernel = [(MIB, 2 * MIB)];
        let e = place(&ram, &kernel, &[MIB, MIB, 1]).unwrap_err();
        assert_eq!(e, NoRoom { index: 2, size: 1, largest: 0 });
        let e = place(&ram, &kernel, &[3 * MIB]).unwrap_err();
        assert_eq!(e, NoRoom { index: 0, size: 3 * MIB, largest: 2 * MIB });
        let text = alloc::format!("{e}");
        assert!(text.starts_with("boot module 1 (3 MiB) does not fit"), "{text}");
        assert!(text.ends_with("(largest free range: 2 MiB)"), "{text}");
        // Sizes that overflow are refused, not wrapped.
        assert!(place(&ram, &[], &[u64::MAX]).is_err());
    }

    #[test]
    fn placed_modules_never_overlap_each_other_or_the_kernel() {
        let ram = [(0, 0x9f000), (MIB, 5 * MIB), (7 * MIB, 9 * MIB + 0x800)];
        let kernel = [(2 * MIB + 0x10, 3 * MIB + 5), (4 * MIB, 4 * MIB + 1)];
        for seed in 0..200u64 {
            let sizes: Vec<u64> = (0..4).map(|i| (seed * 7919 + i * 104_729) % (3 * MIB)).collect();
            let Ok(starts) = place(&ram, &kernel, &sizes) else { continue };
            let mut all: Vec<(u64, u64)> =
                starts.iter().zip(&sizes).map(|(&s, &n)| (s, s + n)).collect();
            for &(s, e) in &all {
                assert_eq!(s % PAGE_SIZE, 0);
                assert!(ram.iter().any(|&(b, n)| s >= b.max(MIB) && e <= b + n), "{s:#x} in RAM");
            }
            all.extend_from_slice(&kernel);
            all.sort_unstable();
            for w in all.windows(2) {
                assert!(w[0].1 <= w[1].0 || w[0].0 == w[0].1, "{w:x?} overlap");
            }
        }
    }
}
