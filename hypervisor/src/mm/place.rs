//! Placing the hypervisor's own memory at boot, before the frame allocator exists: the image
//! (multiboot path, `boot/src/multiboot/reloc.rs`) and the heap go to the highest free RAM, so
//! that the low memory kernels load in stays one free range for the management partition
//! (`docs/design.md`, "Where the hypervisor lives").

use super::addr::{align_down, align_up};
use crate::bootinfo::PhysRange;

/// The highest `len` bytes, `align`-aligned (a power of two), inside one `usable` range and
/// inside `[low, high)`, that overlap nothing `reserved`.
pub fn highest_free(
    usable: &[PhysRange],
    reserved: &[PhysRange],
    len: u64,
    align: u64,
    low: u64,
    high: u64,
) -> Option<u64> {
    let mut best: Option<u64> = None;
    for r in usable {
        let floor = align_up(r.start.max(low), align);
        let mut end = r.end.min(high);
        while let Some(start) = end.checked_sub(len).map(|s| align_down(s, align)) {
            if start < floor {
                break;
            }
            match reserved.iter().find(|x| x.start < start + len && x.end > start) {
                // Below the lowest start of what is in the way, and try again.
                Some(x) => end = x.start,
                None => {
                    best = best.max(Some(start));
                    break;
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end)
    }

    #[test]
    fn highest_fit_below_the_limit() {
        let usable = [r(0, 0x9_fc00), r(MIB, 512 * MIB)];
        assert_eq!(highest_free(&usable, &[], 4 * MIB, 2 * MIB, MIB, 4 * GIB), Some(508 * MIB));
        // Unaligned end of RAM: rounded down to the alignment.
        let odd = [r(MIB, 511 * MIB + 4096)];
        assert_eq!(highest_free(&odd, &[], 3 * MIB, 2 * MIB, MIB, 4 * GIB), Some(508 * MIB));
        // The limit cuts a range that runs past 4 GiB.
        let big = [r(MIB, 3 * GIB), r(4 * GIB, 8 * GIB)];
        assert_eq!(
            highest_free(&big, &[], 2 * MIB, 2 * MIB, MIB, 4 * GIB),
            Some(3 * GIB - 2 * MIB)
        );
        assert_eq!(
            highest_free(&big, &[], 2 * MIB, 2 * MIB, MIB, u64::MAX),
            Some(8 * GIB - 2 * MIB)
        );
    }

    #[test]
    fn steps_below_what_is_reserved() {
        let usable = [r(MIB, 64 * MIB)];
        let reserved = [r(60 * MIB, 61 * MIB), r(55 * MIB + 4096, 58 * MIB)];
        assert_eq!(
            highest_free(&usable, &reserved, 4 * MIB, 2 * MIB, MIB, 4 * GIB),
            Some(50 * MIB),
            "61..64 is too small, 58..60 too, below 55 MiB + 4 KiB aligned down"
        );
        assert_eq!(highest_free(&usable, &reserved, 2 * MIB, 4096, MIB, 4 * GIB), Some(62 * MIB));
    }

    #[test]
    fn nothing_fits() {
        let usable = [r(0, 0x9_fc00), r(MIB, 8 * MIB)];
        assert_eq!(highest_free(&usable, &[], 8 * MIB, 2 * MIB, MIB, 4 * GIB), None);
        assert_eq!(highest_free(&usable, &[r(MIB, 8 * MIB)], 4096, 4096, MIB, 4 * GIB), None);
        assert_eq!(highest_free(&usable, &[], u64::MAX, 4096, 0, u64::MAX), None);
        assert_eq!(highest_free(&usable, &[], 4096, 4096, 0, MIB), Some(0x9_e000), "below 1 MiB");
    }
}
