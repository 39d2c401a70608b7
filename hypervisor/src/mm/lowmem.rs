//! Pages below 1 MiB the hypervisor borrows for a moment: the real-mode trampoline that
//! application processors start in (a start-up IPI names a page below 1 MiB, SDM vol. 3A
//! §11.6.1).
//!
//! The frame allocator never hands out memory below 1 MiB, and the management partition gets
//! the conventional memory from address 0 identity-mapped (its boot structures in
//! [`BOOT_AREA`], which it clears when it is built). So the trampoline borrows pages of that
//! boot area before any partition exists, and gives them back (cleared) once every processor
//! has left them. 0x7000-0x7fff stays untouched (a PC loader's traditional boot-sector and
//! stack area, kept for whatever a boot path left there).

use core::ops::Range;

/// The management partition's boot-structure pages (cleared when it is built): the pages
/// borrowed come from here.
pub const BOOT_AREA: Range<u64> = 0x1000..0x1_0000;
/// Never borrowed.
pub const KEEP_OUT: Range<u64> = 0x7000..0x8000;
/// The trampoline's pages: code and data, then its three temporary page tables.
pub const TRAMPOLINE_PAGES: u64 = 4;

/// The first run of `pages` 4 KiB pages in [`BOOT_AREA`] that lies wholly in `usable` RAM,
/// overlaps nothing `reserved` and stays out of [`KEEP_OUT`]; preferring 0x8000 upward.
pub fn pick(usable: &[Range<u64>], reserved: &[Range<u64>], pages: u64) -> Option<u64> {
    let len = pages * 0x1000;
    let fits = |start: u64| {
        let r = start..start + len;
        r.end <= BOOT_AREA.end
            && usable.iter().any(|u| u.start <= r.start && u.end >= r.end)
            && !reserved
                .iter()
                .chain(core::iter::once(&KEEP_OUT))
                .any(|x| x.start < r.end && x.end > r.start)
    };
    (KEEP_OUT.end..BOOT_AREA.end)
        .step_by(0x1000)
        .chain((BOOT_AREA.start..KEEP_OUT.start).step_by(0x1000))
        .find(|&s| fits(s))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::single_range_in_vec_init)]
    use super::*;

    #[test]
    fn picks_free_usable_low_pages() {
        let usable = [0..0x9_fc00, 0x10_0000..0x800_0000];
        assert_eq!(pick(&usable, &[], 4), Some(0x8000));
        // Something reserved at 0x9000: the next run that fits.
        assert_eq!(pick(&usable, &[0x9000..0x9100], 4), Some(0xa000));
        // Nothing above 0x8000 fits: below 0x7000.
        assert_eq!(pick(&usable, &[0x8000..0x1_0000], 4), Some(0x1000));
        assert_eq!(pick(&usable, &[0x8000..0x1_0000], 7), None, "would cross 0x7000");
        // Low memory not usable at all.
        assert_eq!(pick(&[0x10_0000..0x800_0000], &[], 1), None);
        // A usable range that starts late.
        assert_eq!(pick(&[0xc000..0x9_f000], &[], 4), Some(0xc000));
        assert_eq!(pick(&[0xd000..0x9_f000], &[], 4), None, "past the boot area");
    }
}
