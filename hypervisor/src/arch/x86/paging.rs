//! The x86 page-table entry format (SDM Vol. 3A §4.5, APM Vol. 2 §5.3), used for the
//! hypervisor's own tables and, with the user bit forced, for AMD nested paging, and the
//! hypervisor's own address space: every physical address identity-mapped, plus (on the UEFI
//! path) the high half the bootloader set up for the kernel image and its stack.

use crate::mm::addr::{HostPhys, PAGE_SIZE, PAGE_SIZE_1G, align_up};
use crate::mm::frames::FrameAllocator;
use crate::mm::pagetable::{Format, MapError, MemType, PageTable, Perm, TableMemory};

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDR_4K: u64 = 0x000f_ffff_ffff_f000;

/// The x86 (IA-32e) paging entry format.
#[derive(Debug)]
pub struct X86Format;

impl Format for X86Format {
    fn leaf(pa: u64, level: u8, perm: Perm, mem: MemType) -> u64 {
        let mut e = pa | if perm.contains(Perm::READ) { P } else { 0 };
        if perm.contains(Perm::WRITE) {
            e |= RW;
        }
        if perm.contains(Perm::USER) {
            e |= US;
        }
        if !perm.contains(Perm::EXEC) {
            e |= NX;
        }
        if mem == MemType::Uncacheable {
            e |= PCD | PWT;
        }
        if level > 1 {
            e |= PS;
        }
        e
    }
    fn table(pa: u64) -> u64 {
        pa | P | RW | US
    }
    fn present(e: u64) -> bool {
        e & P != 0
    }
    fn large(e: u64) -> bool {
        e & PS != 0
    }
    fn addr(e: u64, _level: u8) -> u64 {
        // Large leaves keep their PAT bit at bit 12; it is never set by this builder.
        e & ADDR_4K
    }
    fn perm(e: u64) -> Perm {
        let mut p = Perm::READ;
        if e & RW != 0 {
            p |= Perm::WRITE;
        }
        if e & US != 0 {
            p |= Perm::USER;
        }
        if e & NX == 0 {
            p |= Perm::EXEC;
        }
        p
    }
    fn mem(e: u64) -> MemType {
        if e & PCD != 0 { MemType::Uncacheable } else { MemType::WriteBack }
    }
}

/// Table pages from the frame allocator, reached through a linear offset (0 once the
/// hypervisor's identity map is live; the bootloader's physical-memory offset before).
#[derive(Debug)]
pub struct PhysTables<'a> {
    pub frames: &'a mut FrameAllocator,
    pub offset: u64,
    /// Table pages must end at or below this to be reachable at `offset + pa` (the multiboot
    /// boot tables map the low 4 GiB only).
    pub reach: u64,
}

impl TableMemory for PhysTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let pa = self.frames.alloc_below(1, PAGE_SIZE, self.reach)?.0;
        self.table(pa).fill(0);
        Some(pa)
    }
    fn free_table(&mut self, pa: u64) {
        self.frames.free(HostPhys(pa), 1);
    }
    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `pa` is a table page this builder allocated from the frame allocator (so no
        // one else uses it), reachable at `offset + pa` in the current address space.
        unsafe { &mut *((self.offset + pa) as *mut [u64; 512]) }
    }
}

/// Table pages (and other hardware-visible pages) from the global frame allocator, reached
/// through the identity map (valid once [`install`] ran).
#[derive(Debug, Default)]
pub struct HostPages;

impl HostPages {
    /// `pages` zeroed contiguous frames, 4 KiB aligned.
    pub fn alloc_zeroed(pages: u64) -> Option<HostPhys> {
        let pa = crate::mm::frames::FRAMES.lock().as_mut()?.alloc(pages, PAGE_SIZE)?;
        // SAFETY: freshly allocated frames belong to the caller alone and are identity-mapped.
        unsafe { core::ptr::write_bytes(pa.0 as *mut u8, 0, (pages * PAGE_SIZE) as usize) };
        Some(pa)
    }

    /// Gives frames back.
    pub fn free(pa: HostPhys, pages: u64) {
        if let Some(f) = crate::mm::frames::FRAMES.lock().as_mut() {
            f.free(pa, pages);
        }
    }

    /// The page at `pa` as bytes.
    ///
    /// # Safety
    /// The caller owns the frame (it came from [`Self::alloc_zeroed`]) and holds no other
    /// reference to it.
    pub unsafe fn page_mut<'a>(pa: HostPhys) -> &'a mut [u8; 4096] {
        // SAFETY: identity-mapped frame owned by the caller.
        unsafe { &mut *(pa.0 as *mut [u8; 4096]) }
    }
}

impl TableMemory for HostPages {
    fn alloc_table(&mut self) -> Option<u64> {
        Self::alloc_zeroed(1).map(|p| p.0)
    }
    fn free_table(&mut self, pa: u64) {
        Self::free(HostPhys(pa), 1);
    }
    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `pa` is a table page the builder allocated through this type, identity-mapped.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }
}

/// Builds the hypervisor's page tables and switches CR3 to them.
///
/// Low half: identity map of `[0, max(4 GiB, end of RAM))` (1 GiB pages where the CPU has them),
/// with page 0 left unmapped to catch null pointers. High half: the boot tables' entries, kept
/// when `keep_high_half` (the UEFI kernel image and stack live there).
pub fn install(
    frames: &mut FrameAllocator,
    phys_offset: u64,
    ram_end: u64,
    gib_pages: bool,
    keep_high_half: bool,
) -> Result<usize, MapError> {
    let end = align_up(ram_end.max(4 * PAGE_SIZE_1G), PAGE_SIZE_1G);
    let mut pt = PageTable::<X86Format, _>::new(
        // Identity boots (multiboot) reach the low 4 GiB until these tables are live.
        PhysTables {
            frames,
            offset: phys_offset,
            reach: if phys_offset == 0 { 4 * PAGE_SIZE_1G } else { u64::MAX },
        },
        if gib_pages { 3 } else { 2 },
    )?;
    pt.map(0, 0, end, Perm::READ | Perm::WRITE | Perm::EXEC, MemType::WriteBack)?;
    pt.unmap(0, PAGE_SIZE)?;
    let root = pt.root();
    let used = pt.tables_used();
    let (old_root, _) = x86_64::registers::control::Cr3::read_raw();
    let mem = pt.memory();
    if keep_high_half {
        let old: [u64; 512] = *mem.table(old_root.start_address().as_u64());
        mem.table(root)[256..].copy_from_slice(&old[256..]);
    }
    // SAFETY: EFER.NXE makes the NX bit legal in the new tables (SDM Vol. 3A §4.1.1); the new
    // tables identity-map all physical memory (the low-half kernel and stack of the multiboot
    // path, the heap and every frame) and keep the high half of the boot tables (the UEFI
    // kernel and stack), so every address in use stays valid across the switch.
    unsafe {
        x86_64::registers::model_specific::Efer::update(|e| {
            e.insert(x86_64::registers::model_specific::EferFlags::NO_EXECUTE_ENABLE)
        });
        x86_64::registers::control::Cr3::write_raw(
            x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(root)),
            0,
        );
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::pagetable::tests::FakeMemory;

    #[test]
    fn x86_entries_round_trip() {
        let e = X86Format::leaf(0x20_0000, 2, Perm::READ | Perm::WRITE, MemType::Uncacheable);
        assert_eq!(e & (P | RW | PS | PCD | PWT | NX), P | RW | PS | PCD | PWT | NX);
        assert_eq!(X86Format::addr(e, 2), 0x20_0000);
        assert_eq!(X86Format::perm(e), Perm::READ | Perm::WRITE);
        assert_eq!(X86Format::mem(e), MemType::Uncacheable);
        assert!(X86Format::large(e));
        let t = X86Format::table(0x5000);
        assert!(X86Format::present(t) && !X86Format::large(t));
    }

    #[test]
    fn identity_map_shape() {
        let mut pt = PageTable::<X86Format, _>::new(FakeMemory::default(), 3).unwrap();
        pt.map(0, 0, 4 * PAGE_SIZE_1G, Perm::RWX, MemType::WriteBack).unwrap();
        pt.unmap(0, PAGE_SIZE).unwrap();
        assert_eq!(pt.translate(0), None);
        assert_eq!(pt.translate(0x1000).unwrap().pa, 0x1000);
        assert_eq!(pt.translate(0xfee0_0000).unwrap().pa, 0xfee0_0000);
        // root + PDPT + PD and PT from splitting the first 1 GiB.
        assert_eq!(pt.tables_used(), 4);
    }

    #[test]
    fn identity_map_without_1g_pages() {
        let mut pt = PageTable::<X86Format, _>::new(FakeMemory::default(), 2).unwrap();
        pt.map(0, 0, 4 * PAGE_SIZE_1G, Perm::RWX, MemType::WriteBack).unwrap();
        // root + PDPT + 4 PDs of 2 MiB pages.
        assert_eq!(pt.tables_used(), 6);
    }
}
