//! Nested page tables (APM Vol. 2 §15.25): the host's own long-mode format, so the x86 entry
//! format serves, with one rule added. Nested walks are user accesses (§15.25.5), so every
//! leaf carries U/S (table entries already do).

use crate::arch::x86::paging::{HostPages, X86Format};
use crate::mm::pagetable::{Format, MapError, MemType, PageTable, Perm};
use crate::vmm::vcpu::SecondLevel;

/// [`X86Format`] with U/S forced on in leaves.
#[derive(Debug)]
pub struct NptFormat;

impl Format for NptFormat {
    fn leaf(pa: u64, level: u8, perm: Perm, mem: MemType) -> u64 {
        X86Format::leaf(pa, level, perm | Perm::USER, mem)
    }
    fn table(pa: u64) -> u64 {
        X86Format::table(pa)
    }
    fn present(e: u64) -> bool {
        X86Format::present(e)
    }
    fn large(e: u64) -> bool {
        X86Format::large(e)
    }
    fn addr(e: u64, level: u8) -> u64 {
        X86Format::addr(e, level)
    }
    /// The neutral rights (U/S is the format's, not the caller's).
    fn perm(e: u64) -> Perm {
        X86Format::perm(e) - Perm::USER
    }
    fn mem(e: u64) -> MemType {
        X86Format::mem(e)
    }
}

/// A partition's nested page table, in host frames. The table is taken out only by `drop`.
pub(super) struct Npt(Option<PageTable<NptFormat, HostPages>>);

impl Npt {
    /// An empty table using pages up to `max_leaf_level` (2: 2 MiB, 3: 1 GiB).
    pub(super) fn new(max_leaf_level: u8) -> Result<Self, MapError> {
        PageTable::new(HostPages, max_leaf_level).map(|t| Self(Some(t)))
    }

    fn table(&mut self) -> &mut PageTable<NptFormat, HostPages> {
        self.0.as_mut().expect("an NPT is only emptied by drop")
    }
}

impl SecondLevel for Npt {
    fn map(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), MapError> {
        self.table().map(gpa, hpa, len, Perm::RWX, MemType::WriteBack)
    }
    fn map_mmio(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), MapError> {
        self.table().map(gpa, hpa, len, Perm::READ | Perm::WRITE, MemType::Uncacheable)
    }
    fn map_readonly(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), MapError> {
        // Present, R/W clear (APM Vol. 2 §15.25.5: nested tables use the long-mode format).
        self.table().map(gpa, hpa, len, Perm::READ | Perm::EXEC, MemType::WriteBack)
    }
    fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), MapError> {
        self.table().unmap(gpa, len)
    }
    fn translate(&mut self, gpa: u64) -> Option<u64> {
        self.table().translate(gpa).map(|t| t.pa)
    }
    fn root(&self) -> u64 {
        self.0.as_ref().map_or(0, PageTable::root)
    }
    fn tables_used(&self) -> usize {
        self.0.as_ref().map_or(0, PageTable::tables_used)
    }
}

impl Drop for Npt {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.destroy();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::pagetable::TableMemory;
    use crate::mm::pagetable::tests::FakeMemory;

    const P: u64 = 1;
    const RW: u64 = 1 << 1;
    const US: u64 = 1 << 2;
    const PS: u64 = 1 << 7;
    const NX: u64 = 1 << 63;

    #[test]
    fn leaves_are_user_accessible() {
        let e = NptFormat::leaf(0x4020_0000, 2, Perm::RWX, MemType::WriteBack);
        assert_eq!(e, 0x4020_0000 | P | RW | US | PS);
        assert_eq!(NptFormat::perm(e), Perm::RWX);
        let r = NptFormat::leaf(0x5000, 1, Perm::READ, MemType::Uncacheable);
        assert_eq!(r & (P | RW | US | NX), P | US | NX);
        assert_eq!(NptFormat::mem(r), MemType::Uncacheable);
        assert_eq!(NptFormat::table(0x7000) & (P | RW | US), P | RW | US);
    }

    #[test]
    fn partition_map_through_the_shared_builder() {
        let mut t = PageTable::<NptFormat, _>::new(FakeMemory::default(), 2).unwrap();
        // 16 MiB of guest RAM at host 0x4000_0000: eight 2 MiB leaves under one PD.
        t.map(0, 0x4000_0000, 16 << 20, Perm::RWX, MemType::WriteBack).unwrap();
        assert_eq!(t.tables_used(), 3);
        let x = t.translate(0xff_fff8).unwrap();
        assert_eq!((x.pa, x.perm, x.page_size), (0x40ff_fff8, Perm::RWX, 2 << 20));
        assert_eq!(t.translate(16 << 20), None, "nothing past the partition's RAM");
        assert_eq!(t.translate(0xfeb0_0000), None, "MMIO faults to the hypervisor");
        // Splitting a leaf keeps U/S on the new small leaves.
        t.unmap(0x1000, 0x1000).unwrap();
        let root = t.root();
        let mut entry = |table: u64, i: usize| t.memory().table(table & !0xfff)[i];
        let pdpt = entry(root, 0);
        let pd = entry(pdpt, 0);
        let pt = entry(pd, 0);
        assert_eq!(entry(pt, 0) & (P | US | PS), P | US);
        assert_eq!(entry(pt, 1), 0);
    }
}
