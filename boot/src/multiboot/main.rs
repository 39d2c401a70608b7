//! Multiboot1 entry (QEMU `-kernel`, GRUB): turns the multiboot information structure into the
//! hypervisor's [`BootInfo`] and starts it.
//!
//! Multiboot Specification 0.6.96, §3.3 (boot information format).
#![no_std]
#![no_main]

use hypervisor::bootinfo::{BootInfo, BootPath, Module, PhysRange};

mod entry;
mod reloc;

/// EAX value a multiboot1 loader passes.
const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;

/// Reads a little-endian u32 at physical `addr` (identity-mapped below 4 GiB by the entry code).
///
/// # Safety
/// `addr` must lie in the loader's information structures, below 4 GiB.
unsafe fn rd32(addr: u64) -> u32 {
    // SAFETY: the caller guarantees the address is mapped and holds loader data.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

/// # Safety
/// As [`rd32`].
unsafe fn rd64(addr: u64) -> u64 {
    // SAFETY: as rd32.
    unsafe { core::ptr::read_unaligned(addr as *const u64) }
}

/// A NUL-terminated string at physical `addr`, at most `max` bytes.
///
/// # Safety
/// As [`rd32`].
unsafe fn c_str(addr: u64, max: usize) -> &'static str {
    // SAFETY: loader strings are NUL-terminated within the mapped low 4 GiB.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, max) };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(max);
    core::str::from_utf8(&bytes[..len]).unwrap_or("")
}

/// Called by the entry code in long mode.
extern "C" fn multiboot_main(magic: u32, mbi: u32) -> ! {
    let mut info = BootInfo::new(BootPath::Multiboot);
    // The image runs in the top 2 GiB (`link.ld`): the hypervisor's own tables keep that half.
    info.keep_high_half = true;
    let mbi = u64::from(mbi);
    info.image = reloc::loaded_at();
    info.reserved.push(info.image);
    if magic == BOOTLOADER_MAGIC {
        // SAFETY: a multiboot loader put its information structure (and everything it points
        // to) below 4 GiB, which the entry code identity-mapped.
        unsafe { parse(&mut info, mbi) };
        // Everything needed from the loader's structures is in `info` now (the modules stay
        // reserved where they are until the hypervisor moves them): the image goes high.
        if let Some(to) = reloc::relocate(&info) {
            let old = info.image;
            for r in info.reserved.as_mut_slice().iter_mut().filter(|r| **r == old) {
                *r = to;
            }
            info.image = to;
            info.relocated_from = Some(old);
        }
    } else {
        info.set_cmdline("");
    }
    // SAFETY: the heap hand-over is the boot crate's allocator.
    let init: hypervisor::start::HeapInit = boot::init_heap;
    if magic != BOOTLOADER_MAGIC {
        // Still start (the console works), but with no memory map the hypervisor stops cleanly.
        hypervisor::console::init();
        hypervisor::println!("hypervisor: not started by a multiboot loader (EAX = {magic:#x})");
        hypervisor::start::finish(false);
    }
    hypervisor::start(&mut info, 0, init)
}

/// Copies what the hypervisor needs out of the loader's structures into `info`: the command
/// line, the memory map, and the modules (their names; their bytes stay where they are,
/// reserved). The structures themselves are not reserved: nothing reads them after this.
///
/// # Safety
/// `mbi` is a valid multiboot information structure below 4 GiB.
unsafe fn parse(info: &mut BootInfo, mbi: u64) {
    // SAFETY: (whole function) the caller guarantees the structure and its pointers are valid.
    unsafe {
        let flags = rd32(mbi);
        if flags & FLAG_CMDLINE != 0 {
            let p = u64::from(rd32(mbi + 16));
            let s = c_str(p, 4096);
            info.set_cmdline(hypervisor::cmdline::strip_image_path(s));
        }
        if flags & FLAG_MMAP != 0 {
            let len = u64::from(rd32(mbi + 44));
            let base = u64::from(rd32(mbi + 48));
            let mut at = base;
            while at < base + len {
                let size = u64::from(rd32(at));
                let start = rd64(at + 4);
                let length = rd64(at + 12);
                let kind = rd32(at + 20);
                info.max_phys = info.max_phys.max(start.saturating_add(length));
                if kind == 1 {
                    info.usable.push(PhysRange::new(start, start.saturating_add(length)));
                } else {
                    // The firmware's own: the management partition sees it with its type.
                    info.push_firmware(start, start.saturating_add(length), kind);
                }
                at += size + 4;
            }
        }
        if flags & FLAG_MODS != 0 {
            let count = rd32(mbi + 20);
            let table = u64::from(rd32(mbi + 24));
            for i in 0..u64::from(count) {
                let e = table + i * 16;
                let (start, end) = (u64::from(rd32(e)), u64::from(rd32(e + 4)));
                let s = u64::from(rd32(e + 8));
                let string = if s != 0 { c_str(s, 256) } else { "" };
                // The module's name: the last path component of the first word.
                let first = string.split_ascii_whitespace().next().unwrap_or("");
                let name = first.rsplit('/').next().unwrap_or(first);
                info.reserved.push(PhysRange::new(start & !0xfff, (end + 0xfff) & !0xfff));
                info.modules.push(Module::new(name, start, end.saturating_sub(start)));
            }
        }
    }
}
