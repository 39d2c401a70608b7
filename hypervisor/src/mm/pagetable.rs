//! One 4-level page-table builder for every table the hypervisor makes: its own (x86 PTE
//! format), a partition's EPT (Intel) and NPT (AMD, x86 PTE format with the user bit).
//!
//! The builder walks and edits tables through [`TableMemory`], so host tests run it on plain
//! buffers. It maps with the largest page the alignment, the length and the format allow,
//! splits a large page when part of it changes, and counts the table pages it owns. Flushing
//! TLBs (INVLPG, INVEPT, an NPT ASID flush) is the caller's job after a change.

use super::addr::{PAGE_SIZE, PAGE_SIZE_1G, PAGE_SIZE_2M};
use bitflags::bitflags;

bitflags! {
    /// Access rights of a mapping, vendor-neutral.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Perm: u8 {
        const READ = 1;
        const WRITE = 2;
        const EXEC = 4;
        /// Host tables: reachable from CPL3. Second-level formats ignore it.
        const USER = 8;
        const RWX = Self::READ.bits() | Self::WRITE.bits() | Self::EXEC.bits();
    }
}

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    WriteBack,
    Uncacheable,
}

/// An entry format: how a leaf and a table pointer are encoded at each level
/// (level 1 = 4 KiB pages, 2 = 2 MiB, 3 = 1 GiB, 4 = the root).
pub trait Format {
    /// Encodes a leaf mapping `pa` at `level` (1, 2 or 3).
    fn leaf(pa: u64, level: u8, perm: Perm, mem: MemType) -> u64;
    /// Encodes a pointer to the next-level table at `pa`, with every right granted (leaves
    /// restrict).
    fn table(pa: u64) -> u64;
    /// True when the entry maps something.
    fn present(e: u64) -> bool;
    /// True when a present entry at `level` (2 or 3) maps a large page rather than a table.
    fn large(e: u64) -> bool;
    /// The address an entry points to (a table or a page frame) at `level`.
    fn addr(e: u64, level: u8) -> u64;
    /// The rights of a leaf.
    fn perm(e: u64) -> Perm;
    /// The memory type of a leaf.
    fn mem(e: u64) -> MemType;
}

/// Where table pages come from and how the builder reaches them.
pub trait TableMemory {
    /// A zeroed 4 KiB page for a table; its physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Gives a table page back.
    fn free_table(&mut self, pa: u64);
    /// The 512 entries of the table at physical `pa`.
    fn table(&mut self, pa: u64) -> &mut [u64; 512];
}

/// Why a mapping change failed. Nothing is half-done on `OutOfMemory` for the page that failed,
/// but earlier pages of the same call stay mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or length is not 4 KiB aligned.
    Unaligned,
    /// A page in the range is already mapped.
    AlreadyMapped { va: u64 },
    /// A page in the range is not mapped (protect/unmap of a hole).
    NotMapped { va: u64 },
    /// No memory for a table page.
    OutOfMemory,
    /// The address does not fit in 48 bits.
    OutOfRange,
}

/// A translation: where `va` lands, with what rights, in a page of what size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub pa: u64,
    pub perm: Perm,
    pub mem: MemType,
    pub page_size: u64,
}

/// A 4-level table rooted at one page.
#[derive(Debug)]
pub struct PageTable<F: Format, M: TableMemory> {
    root: u64,
    mem: M,
    /// Largest leaf level the builder may use: 1 (4 KiB only), 2 (2 MiB) or 3 (1 GiB).
    max_leaf_level: u8,
    tables: usize,
    _format: core::marker::PhantomData<F>,
}

const fn level_size(level: u8) -> u64 {
    match level {
        1 => PAGE_SIZE,
        2 => PAGE_SIZE_2M,
        _ => PAGE_SIZE_1G,
    }
}

const fn index(va: u64, level: u8) -> usize {
    ((va >> (12 + 9 * (level as u64 - 1))) & 0x1ff) as usize
}

const ADDRESS_LIMIT: u64 = 1 << 48;

impl<F: Format, M: TableMemory> PageTable<F, M> {
    /// An empty table. `max_leaf_level` is what the CPU supports (2 for 2 MiB pages, 3 for 1 GiB).
    pub fn new(mut mem: M, max_leaf_level: u8) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        Ok(Self {
            root,
            mem,
            max_leaf_level: max_leaf_level.clamp(1, 3),
            tables: 1,
            _format: core::marker::PhantomData,
        })
    }

    /// Physical address of the root (CR3, EPTP or nCR3 take it).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Table pages in use, the root included.
    pub fn tables_used(&self) -> usize {
        self.tables
    }

    /// The table memory, for callers that share it.
    pub fn memory(&mut self) -> &mut M {
        &mut self.mem
    }

    fn check(va: u64, pa: u64, len: u64) -> Result<(), MapError> {
        if !va.is_multiple_of(PAGE_SIZE)
            || !pa.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
        {
            return Err(MapError::Unaligned);
        }
        if va.checked_add(len).is_none_or(|end| end > ADDRESS_LIMIT) {
            return Err(MapError::OutOfRange);
        }
        Ok(())
    }

    /// The table at `level` - 1 below entry `idx` of the table at `table`, created (or split
    /// from a large page) when missing.
    fn descend(&mut self, table: u64, idx: usize, level: u8) -> Result<u64, MapError> {
        let e = self.mem.table(table)[idx];
        if F::present(e) && !F::large(e) {
            return Ok(F::addr(e, level));
        }
        let new = self.mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        self.tables += 1;
        if F::present(e) {
            // Split a large page into 512 of the next size, same rights and type.
            let (base, perm, mem) = (F::addr(e, level), F::perm(e), F::mem(e));
            let sub = level_size(level - 1);
            let t = self.mem.table(new);
            for (i, slot) in t.iter_mut().enumerate() {
                *slot = F::leaf(base + i as u64 * sub, level - 1, perm, mem);
            }
        }
        self.mem.table(table)[idx] = F::table(new);
        Ok(new)
    }

    /// Maps `len` bytes at `va` to `pa`, using the largest pages that fit.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        len: u64,
        perm: Perm,
        mem: MemType,
    ) -> Result<(), MapError> {
        Self::check(va, pa, len)?;
        let mut off = 0;
        while off < len {
            let (v, p, left) = (va + off, pa + off, len - off);
            let level = (1..=self.max_leaf_level)
                .rev()
                .find(|&l| {
                    let s = level_size(l);
                    v.is_multiple_of(s) && p.is_multiple_of(s) && left >= s
                })
                .unwrap_or(1);
            let mut table = self.root;
            for l in ((level + 1)..=4).rev() {
                let idx = index(v, l);
                let e = self.mem.table(table)[idx];
                if F::present(e) && (l <= 3 && F::large(e)) {
                    return Err(MapError::AlreadyMapped { va: v });
                }
                table = self.descend(table, idx, l)?;
            }
            let slot = &mut self.mem.table(table)[index(v, level)];
            if F::present(*slot) {
                return Err(MapError::AlreadyMapped { va: v });
            }
            *slot = F::leaf(p, level, perm, mem);
            off += level_size(level);
        }
        Ok(())
    }

    /// Walks to the leaf covering `va`, splitting large pages until the leaf is no larger than
    /// what `[va, va+left)` covers whole. Returns (table, index, level).
    fn leaf_for_edit(&mut self, va: u64, left: u64) -> Result<(u64, usize, u8), MapError> {
        let mut table = self.root;
        let mut level = 4;
        loop {
            let idx = index(va, level);
            let e = self.mem.table(table)[idx];
            if !F::present(e) {
                return Err(MapError::NotMapped { va });
            }
            if level == 1 || F::large(e) {
                let s = level_size(level);
                if va.is_multiple_of(s) && left >= s {
                    return Ok((table, idx, level));
                }
                table = self.descend(table, idx, level)?;
            } else {
                table = F::addr(e, level);
            }
            level -= 1;
        }
    }

    /// Removes the mappings of `[va, va+len)`; large pages partly inside are split first.
    pub fn unmap(&mut self, va: u64, len: u64) -> Result<(), MapError> {
        Self::check(va, 0, len)?;
        let mut off = 0;
        while off < len {
            let (table, idx, level) = self.leaf_for_edit(va + off, len - off)?;
            self.mem.table(table)[idx] = 0;
            off += level_size(level);
        }
        Ok(())
    }

    /// Changes the rights of `[va, va+len)`.
    pub fn protect(&mut self, va: u64, len: u64, perm: Perm) -> Result<(), MapError> {
        Self::check(va, 0, len)?;
        let mut off = 0;
        while off < len {
            let (table, idx, level) = self.leaf_for_edit(va + off, len - off)?;
            let e = self.mem.table(table)[idx];
            self.mem.table(table)[idx] = F::leaf(F::addr(e, level), level, perm, F::mem(e));
            off += level_size(level);
        }
        Ok(())
    }

    /// Where `va` maps to, if anywhere.
    pub fn translate(&mut self, va: u64) -> Option<Translation> {
        if va >= ADDRESS_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4).rev() {
            let e = self.mem.table(table)[index(va, level)];
            if !F::present(e) {
                return None;
            }
            if level == 1 || (level <= 3 && F::large(e)) {
                let s = level_size(level);
                return Some(Translation {
                    pa: F::addr(e, level) + (va & (s - 1)),
                    perm: F::perm(e),
                    mem: F::mem(e),
                    page_size: s,
                });
            }
            table = F::addr(e, level);
        }
        None
    }

    /// Frees every table page (not the mapped memory) and returns the table memory.
    pub fn destroy(mut self) -> M {
        self.free_level(self.root, 4);
        self.mem
    }

    fn free_level(&mut self, table: u64, level: u8) {
        if level > 1 {
            for i in 0..512 {
                let e = self.mem.table(table)[i];
                if F::present(e) && !F::large(e) {
                    self.free_level(F::addr(e, level), level - 1);
                }
            }
        }
        self.mem.free_table(table);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    /// Table pages on the host heap; "physical" address = 0x1000_0000 + index * 4 KiB.
    #[derive(Default)]
    pub struct FakeMemory {
        pages: Vec<Box<[u64; 512]>>,
        pub freed: Vec<u64>,
    }

    const BASE: u64 = 0x1000_0000;

    impl TableMemory for FakeMemory {
        fn alloc_table(&mut self) -> Option<u64> {
            self.pages.push(Box::new([0; 512]));
            Some(BASE + (self.pages.len() as u64 - 1) * PAGE_SIZE)
        }
        fn free_table(&mut self, pa: u64) {
            self.freed.push(pa);
        }
        fn table(&mut self, pa: u64) -> &mut [u64; 512] {
            &mut self.pages[((pa - BASE) / PAGE_SIZE) as usize]
        }
    }

    /// A minimal test format: bit 0 present, bit 7 large, bits 1..3 rights, bit 4 UC.
    pub struct TestFormat;
    impl Format for TestFormat {
        fn leaf(pa: u64, level: u8, perm: Perm, mem: MemType) -> u64 {
            let uc = if mem == MemType::Uncacheable { 1 << 4 } else { 0 };
            pa | 1 | (u64::from(perm.bits() & 7) << 1) | uc | if level > 1 { 1 << 7 } else { 0 }
        }
        fn table(pa: u64) -> u64 {
            pa | 1 | (7 << 1)
        }
        fn present(e: u64) -> bool {
            e & 1 != 0
        }
        fn large(e: u64) -> bool {
            e & (1 << 7) != 0
        }
        fn addr(e: u64, _level: u8) -> u64 {
            e & 0x000f_ffff_ffff_f000
        }
        fn perm(e: u64) -> Perm {
            Perm::from_bits_truncate(((e >> 1) & 7) as u8)
        }
        fn mem(e: u64) -> MemType {
            if e & (1 << 4) != 0 { MemType::Uncacheable } else { MemType::WriteBack }
        }
    }

    type Table = PageTable<TestFormat, FakeMemory>;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;

    #[test]
    fn maps_with_largest_pages() {
        let mut t = Table::new(FakeMemory::default(), 3).unwrap();
        // 1 GiB + 2 MiB + 4 KiB, all aligned: one 1G leaf, one 2M leaf, one 4K leaf.
        t.map(G, 4 * G, G + 2 * M + 4096, Perm::RWX, MemType::WriteBack).unwrap();
        assert_eq!(t.translate(G + 123).unwrap().page_size, G);
        assert_eq!(
            t.translate(2 * G + 5).unwrap(),
            Translation {
                pa: 5 * G + 5,
                perm: Perm::RWX,
                mem: MemType::WriteBack,
                page_size: 2 * M
            }
        );
        assert_eq!(t.translate(2 * G + 2 * M).unwrap().page_size, PAGE_SIZE);
        assert_eq!(t.translate(2 * G + 2 * M + 4096), None);
        // root, one PDPT, one PD (for the 2M and 4K parts), one PT.
        assert_eq!(t.tables_used(), 4);
    }

    #[test]
    fn no_large_pages_when_the_cpu_lacks_them() {
        let mut t = Table::new(FakeMemory::default(), 1).unwrap();
        t.map(0, 0, 4 * M, Perm::READ, MemType::WriteBack).unwrap();
        assert_eq!(t.translate(3 * M).unwrap().page_size, PAGE_SIZE);
        assert_eq!(t.tables_used(), 1 + 1 + 1 + 2);
    }

    #[test]
    fn misaligned_physical_address_forces_small_pages() {
        let mut t = Table::new(FakeMemory::default(), 3).unwrap();
        t.map(0, 4096, 2 * M, Perm::RWX, MemType::WriteBack).unwrap();
        assert_eq!(t.translate(0).unwrap().page_size, PAGE_SIZE);
        assert_eq!(t.translate(2 * M - 1).unwrap().pa, 2 * M + 4095);
    }

    #[test]
    fn unmap_splits_a_large_page() {
        let mut t = Table::new(FakeMemory::default(), 2).unwrap();
        t.map(0, 0, 2 * M, Perm::RWX, MemType::WriteBack).unwrap();
        assert_eq!(t.tables_used(), 3);
        t.unmap(8192, 4096).unwrap();
        assert_eq!(t.tables_used(), 4, "one page table from the split");
        assert_eq!(t.translate(8192), None);
        let rest = t.translate(4096).unwrap();
        assert_eq!((rest.pa, rest.page_size, rest.perm), (4096, PAGE_SIZE, Perm::RWX));
        assert_eq!(t.translate(2 * M - 4096).unwrap().pa, 2 * M - 4096);
        assert_eq!(t.unmap(8192, 4096), Err(MapError::NotMapped { va: 8192 }));
    }

    #[test]
    fn protect_changes_rights_and_splits_partially_covered_pages() {
        let mut t = Table::new(FakeMemory::default(), 3).unwrap();
        t.map(0, 0, G, Perm::RWX, MemType::WriteBack).unwrap();
        t.protect(0, 2 * M, Perm::READ).unwrap();
        assert_eq!(t.translate(4096).unwrap().perm, Perm::READ);
        assert_eq!(t.translate(4096).unwrap().page_size, 2 * M);
        assert_eq!(t.translate(2 * M).unwrap().perm, Perm::RWX);
    }

    #[test]
    fn double_map_and_bad_arguments_are_refused() {
        let mut t = Table::new(FakeMemory::default(), 3).unwrap();
        t.map(0, 0, 2 * M, Perm::RWX, MemType::WriteBack).unwrap();
        assert_eq!(
            t.map(4096, 0, 4096, Perm::RWX, MemType::WriteBack),
            Err(MapError::AlreadyMapped { va: 4096 })
        );
        assert_eq!(t.map(1, 0, 4096, Perm::RWX, MemType::WriteBack), Err(MapError::Unaligned));
        assert_eq!(
            t.map(ADDRESS_LIMIT - 4096, 0, 8192, Perm::RWX, MemType::WriteBack),
            Err(MapError::OutOfRange)
        );
        assert_eq!(t.translate(ADDRESS_LIMIT), None);
    }

    #[test]
    fn destroy_frees_every_table() {
        let mut t = Table::new(FakeMemory::default(), 2).unwrap();
        t.map(0, 0, 2 * M + 4096, Perm::RWX, MemType::Uncacheable).unwrap();
        assert_eq!(t.translate(0).unwrap().mem, MemType::Uncacheable);
        let used = t.tables_used();
        let mem = t.destroy();
        assert_eq!(mem.freed.len(), used);
    }
}
