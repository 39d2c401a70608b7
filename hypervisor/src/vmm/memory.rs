//! A partition's RAM as the hypervisor reaches it: bounds-checked reads and writes by
//! guest-physical address, and a walker for the guest's own page tables (to fetch the
//! instruction at a guest RIP).
//!
//! RAM is a list of host-contiguous blocks (one for a guest), so a guest-physical address is
//! found by its block. Every access is checked against the block first; a guest can name any
//! address in a hypercall or a page table, and none of them reaches outside its RAM (an access
//! may not straddle two blocks, as the hole between them is not RAM).

/// The guest address was not inside the partition's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAddress {
    pub gpa: u64,
    pub len: u64,
}

impl core::fmt::Display for BadAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "guest range [{:#x}, +{:#x}) is outside the partition's RAM", self.gpa, self.len)
    }
}

/// One block of a partition's RAM: guest-physical `[gpa, gpa + size)` at host `host`.
#[derive(Clone, Copy, Debug)]
struct Region {
    gpa: u64,
    host: *mut u8,
    size: u64,
}

/// A partition's RAM: one or more blocks of guest-physical memory, each host-contiguous. A
/// guest has one block from guest-physical 0; the management partition has every block of
/// host RAM the others do not use, at its host address (identity), with holes between.
#[derive(Debug)]
pub struct GuestRam {
    /// Sorted by `gpa`, not overlapping.
    regions: alloc::vec::Vec<Region>,
}

impl GuestRam {
    /// Wraps `size` bytes at host virtual address `host`.
    ///
    /// # Safety
    /// `[host, host+size)` must be mapped, writable, and used by nothing else for as long as
    /// this value lives.
    pub unsafe fn new(host: *mut u8, size: u64) -> Self {
        // SAFETY: the caller's promise.
        unsafe { Self::new_at(host, 0, size) }
    }

    /// Like [`Self::new`], for RAM that starts at guest-physical `base`.
    ///
    /// # Safety
    /// As [`Self::new`].
    pub unsafe fn new_at(host: *mut u8, base: u64, size: u64) -> Self {
        Self { regions: alloc::vec![Region { gpa: base, host, size }] }
    }

    /// RAM of several blocks: `(guest-physical, host virtual, size)` each, sorted by address
    /// and not overlapping (checked: `None` otherwise).
    ///
    /// # Safety
    /// As [`Self::new`], for every block.
    pub unsafe fn from_blocks(blocks: &[(u64, *mut u8, u64)]) -> Option<Self> {
        let ordered =
            blocks.windows(2).all(|w| w[0].0.checked_add(w[0].2).is_some_and(|e| e <= w[1].0));
        (ordered && !blocks.is_empty()).then(|| Self {
            regions: blocks.iter().map(|&(gpa, host, size)| Region { gpa, host, size }).collect(),
        })
    }

    /// Size in bytes (all blocks).
    pub fn size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Guest-physical address of the first byte.
    pub fn base(&self) -> u64 {
        self.regions[0].gpa
    }

    /// The guest-physical blocks, `(start, size)`, in order.
    pub fn blocks(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.regions.iter().map(|r| (r.gpa, r.size))
    }

    /// The host address of guest-physical `[gpa, gpa + len)`, when all of it is RAM.
    pub fn host_addr(&self, gpa: u64, len: u64) -> Option<u64> {
        self.slice(gpa, len).ok().map(|s| s.as_ptr() as u64)
    }

    /// The host address of `[gpa, gpa + len)` when it lies inside one block.
    fn check(&self, gpa: u64, len: u64) -> Result<*mut u8, BadAddress> {
        let bad = BadAddress { gpa, len };
        let i = self.regions.partition_point(|r| r.gpa <= gpa).checked_sub(1).ok_or(bad)?;
        let r = &self.regions[i];
        let off = gpa - r.gpa;
        match off.checked_add(len) {
            Some(end) if end <= r.size => {
                // SAFETY: `off <= size`: the pointer stays inside the block `new` was given.
                Ok(unsafe { r.host.add(off as usize) })
            }
            _ => Err(bad),
        }
    }

    /// The guest bytes `[gpa, gpa+len)`.
    pub fn slice(&self, gpa: u64, len: u64) -> Result<&[u8], BadAddress> {
        let at = self.check(gpa, len)?;
        // SAFETY: the range is inside one block `new` was given (checked above).
        Ok(unsafe { core::slice::from_raw_parts(at, len as usize) })
    }

    /// The guest bytes `[gpa, gpa+len)`, writable.
    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Result<&mut [u8], BadAddress> {
        let at = self.check(gpa, len)?;
        // SAFETY: as `slice`; `&mut self` makes this the only reference.
        Ok(unsafe { core::slice::from_raw_parts_mut(at, len as usize) })
    }

    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), BadAddress> {
        out.copy_from_slice(self.slice(gpa, out.len() as u64)?);
        Ok(())
    }

    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), BadAddress> {
        self.slice_mut(gpa, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    pub fn read_u64(&self, gpa: u64) -> Result<u64, BadAddress> {
        let mut b = [0; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn write_u64(&mut self, gpa: u64, v: u64) -> Result<(), BadAddress> {
        self.write(gpa, &v.to_le_bytes())
    }

    /// Zeroes `[gpa, gpa+len)`.
    pub fn zero(&mut self, gpa: u64, len: u64) -> Result<(), BadAddress> {
        self.slice_mut(gpa, len)?.fill(0);
        Ok(())
    }

    /// Translates a guest linear address through the guest's 4-level page tables at `cr3`
    /// (SDM Vol. 3A §4.5). `None` when a level is not present or a table lies outside RAM.
    pub fn translate_4level(&self, cr3: u64, la: u64) -> Option<u64> {
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        let mut table = cr3 & ADDR;
        for level in (1..=4u32).rev() {
            let idx = (la >> (12 + 9 * (level - 1))) & 0x1ff;
            let e = self.read_u64(table + idx * 8).ok()?;
            if e & 1 == 0 {
                return None;
            }
            let page_bits = 12 + 9 * (level - 1);
            if level == 1 || (level <= 3 && e & (1 << 7) != 0) {
                let mask = (1u64 << page_bits) - 1;
                return Some((e & ADDR & !mask) | (la & mask));
            }
            table = e & ADDR;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn ram(buf: &mut [u8]) -> GuestRam {
        // SAFETY: the buffer outlives the GuestRam in each test and nothing else touches it.
        unsafe { GuestRam::new(buf.as_mut_ptr(), buf.len() as u64) }
    }

    #[test]
    fn bounds_are_checked() {
        let mut buf = vec![0u8; 8192];
        let mut r = ram(&mut buf);
        r.write(8190, &[1, 2]).unwrap();
        assert_eq!(r.write(8191, &[1, 2]), Err(BadAddress { gpa: 8191, len: 2 }));
        assert!(r.slice(u64::MAX, 2).is_err(), "overflow is caught");
        assert!(r.read_u64(8185).is_err());
        assert_eq!(r.slice(8190, 2).unwrap(), &[1, 2]);
    }

    #[test]
    fn ram_at_a_base() {
        let mut buf = vec![0u8; 4096];
        // SAFETY: the buffer outlives `r` and nothing else touches it.
        let mut r = unsafe { GuestRam::new_at(buf.as_mut_ptr(), 0x400_0000, 4096) };
        r.write_u64(0x400_0ff8, 7).unwrap();
        assert_eq!(r.read_u64(0x400_0ff8), Ok(7));
        assert!(r.read_u64(0x3ff_fff8).is_err(), "below the base");
        assert!(r.read_u64(0x400_0ffc).is_err(), "past the end");
        assert!(r.slice(0, 1).is_err());
    }

    #[test]
    fn ram_in_blocks_with_holes() {
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 8192]);
        let blocks = [(0x1000, a.as_mut_ptr(), 4096), (0x10_0000, b.as_mut_ptr(), 8192)];
        // SAFETY: both buffers outlive `r` and nothing else touches them.
        let mut r = unsafe { GuestRam::from_blocks(&blocks) }.unwrap();
        assert_eq!((r.base(), r.size()), (0x1000, 12288));
        r.write_u64(0x1ff8, 1).unwrap();
        r.write_u64(0x10_1ff8, 2).unwrap();
        assert_eq!((r.read_u64(0x1ff8), r.read_u64(0x10_1ff8)), (Ok(1), Ok(2)));
        assert!(r.read_u64(0x1ffc).is_err(), "across the end of a block");
        assert!(r.read_u64(0x2000).is_err(), "in the hole");
        assert!(r.read_u64(0xff8).is_err(), "below the first block");
        assert!(r.read_u64(0x10_2000).is_err(), "past the last block");
        assert_eq!(r.blocks().collect::<alloc::vec::Vec<_>>(), [(0x1000, 4096), (0x10_0000, 8192)]);
        let overlapping = [(0x1000, a.as_mut_ptr(), 8192), (0x2000, b.as_mut_ptr(), 8192)];
        // SAFETY: refused before anything is touched.
        assert!(unsafe { GuestRam::from_blocks(&overlapping) }.is_none());
    }

    #[test]
    fn walks_guest_page_tables() {
        let mut buf = vec![0u8; 0x10000];
        let mut r = ram(&mut buf);
        // PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000: entry 1 is a 2 MiB page at 0x40_0000,
        // entry 0 points to PT 0x4000 whose entry 5 maps 0x8000.
        r.write_u64(0x1000, 0x2003).unwrap();
        r.write_u64(0x2000, 0x3003).unwrap();
        r.write_u64(0x3000, 0x4003).unwrap();
        r.write_u64(0x3008, 0x40_0083).unwrap();
        r.write_u64(0x4000 + 5 * 8, 0x8003).unwrap();
        assert_eq!(r.translate_4level(0x1000, 0x5123), Some(0x8123));
        assert_eq!(r.translate_4level(0x1000, 0x20_0000 + 0x1234), Some(0x40_1234));
        assert_eq!(r.translate_4level(0x1000, 0x6000), None, "not present");
        r.write_u64(0x2008, 0xdead_0003).unwrap();
        assert_eq!(r.translate_4level(0x1000, 1 << 30), None, "table outside RAM");
    }
}
