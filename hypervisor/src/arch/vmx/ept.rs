//! The EPT entry format (SDM Vol. 3C §29.3.2, Tables 29-1 to 29-6) and the EPT pointer.

use crate::mm::pagetable::{Format, MemType, Perm};

const R: u64 = 1;
const W: u64 = 1 << 1;
const X: u64 = 1 << 2;
const MT_SHIFT: u64 = 3;
const MT_UC: u64 = 0;
const MT_WB: u64 = 6;
const LARGE: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Extended page-table entries.
#[derive(Debug)]
pub struct EptFormat;

impl Format for EptFormat {
    fn leaf(pa: u64, level: u8, perm: Perm, mem: MemType) -> u64 {
        let mut e = pa;
        if perm.contains(Perm::READ) {
            e |= R;
        }
        if perm.contains(Perm::WRITE) {
            e |= W;
        }
        if perm.contains(Perm::EXEC) {
            e |= X;
        }
        e |= (if mem == MemType::WriteBack { MT_WB } else { MT_UC }) << MT_SHIFT;
        if level > 1 {
            e |= LARGE;
        }
        e
    }
    fn table(pa: u64) -> u64 {
        pa | R | W | X
    }
    fn present(e: u64) -> bool {
        e & (R | W | X) != 0
    }
    fn large(e: u64) -> bool {
        e & LARGE != 0
    }
    fn addr(e: u64, _level: u8) -> u64 {
        e & ADDR
    }
    fn perm(e: u64) -> Perm {
        let mut p = Perm::empty();
        if e & R != 0 {
            p |= Perm::READ;
        }
        if e & W != 0 {
            p |= Perm::WRITE;
        }
        if e & X != 0 {
            p |= Perm::EXEC;
        }
        p
    }
    fn mem(e: u64) -> MemType {
        if (e >> MT_SHIFT) & 7 == MT_WB { MemType::WriteBack } else { MemType::Uncacheable }
    }
}

/// The EPT pointer for a 4-level table at `root` (SDM §25.6.11): write-back paging-structure
/// memory type (6) and page-walk length 4 (encoded as 3).
pub const fn eptp(root: u64) -> u64 {
    root | MT_WB | (3 << 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::pagetable::PageTable;
    use crate::mm::pagetable::tests::FakeMemory;

    #[test]
    fn ept_leaf_bits() {
        let e = EptFormat::leaf(0x4000_0000, 3, Perm::RWX, MemType::WriteBack);
        assert_eq!(e, 0x4000_0000 | 7 | (6 << 3) | (1 << 7));
        assert_eq!(EptFormat::perm(e), Perm::RWX);
        assert!(EptFormat::large(e));
        let r = EptFormat::leaf(0x1000, 1, Perm::READ, MemType::Uncacheable);
        assert_eq!(r, 0x1000 | 1);
        assert!(!EptFormat::large(r));
        assert!(!EptFormat::present(0));
        assert_eq!(eptp(0x12_3000), 0x12_3000 | 0x1e);
    }

    #[test]
    fn partition_map_uses_large_pages_and_isolates() {
        let mut t = PageTable::<EptFormat, _>::new(FakeMemory::default(), 3).unwrap();
        // 16 MiB of guest RAM at host 0x4000_0000: eight 2 MiB pages.
        t.map(0, 0x4000_0000, 16 << 20, Perm::RWX, MemType::WriteBack).unwrap();
        assert_eq!(t.tables_used(), 3);
        assert_eq!(t.translate(0xff_ffff).unwrap().pa, 0x40ff_ffff);
        assert_eq!(t.translate(16 << 20), None, "nothing past the partition's RAM");
        assert_eq!(t.translate(0xfee0_0000), None, "no host MMIO");
    }
}
