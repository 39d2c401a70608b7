//! UEFI entry through the `bootloader` crate (`bootloader_api`): turns its boot information
//! into the hypervisor's [`BootInfo`] and starts it. The ramdisk is a boot pack (see
//! `hvabi::pack`) with the guest images and the command line.
#![no_std]
#![no_main]

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::info::MemoryRegionKind;
use hypervisor::bootinfo::{BootInfo, BootPath, Module, PhysRange};

/// Where the bootloader maps all physical memory (the hypervisor then builds its own identity
/// map and keeps this high half, where the heap lives).
const PHYS_OFFSET: u64 = 0xffff_c000_0000_0000;

static CONFIG: BootloaderConfig = {
    let mut c = BootloaderConfig::new_default();
    c.mappings.physical_memory = Some(Mapping::FixedAddress(PHYS_OFFSET));
    // Everything the bootloader places by itself goes into the high half, so the low half is
    // free for the hypervisor's identity map.
    c.mappings.dynamic_range_start = Some(0xffff_8000_0000_0000);
    c.kernel_stack_size = 256 * 1024;
    c
};

bootloader_api::entry_point!(uefi_main, config = &CONFIG);

fn uefi_main(bi: &'static mut bootloader_api::BootInfo) -> ! {
    let mut info = BootInfo::new(BootPath::Uefi);
    info.keep_high_half = true;
    for r in bi.memory_regions.iter() {
        info.max_phys = info.max_phys.max(r.end);
        match r.kind {
            MemoryRegionKind::Usable => info.usable.push(PhysRange::new(r.start, r.end)),
            MemoryRegionKind::UnknownUefi(t) => {
                if let Some(kind) = hypervisor::vmm::firmware::e820_type_of_uefi(t) {
                    info.push_firmware(r.start, r.end, kind);
                }
            }
            MemoryRegionKind::UnknownBios(t) => info.push_firmware(r.start, r.end, t),
            _ => {}
        }
    }
    info.rsdp = bi.rsdp_addr.into_option();
    // The ramdisk (kind `Bootloader` in the memory map, so never handed out) stays mapped in
    // the high half.
    if let Some(addr) = bi.ramdisk_addr.into_option() {
        info.modules.push(Module::new("ramdisk", addr, bi.ramdisk_len));
    }
    let offset = bi.physical_memory_offset.into_option().unwrap_or(PHYS_OFFSET);
    hypervisor::start(&mut info, offset, boot::init_heap)
}
