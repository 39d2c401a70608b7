//! The zero page (`struct boot_params`, boot.rst "32-bit Boot Protocol" and zero-page.rst) with
//! its e820 memory map, and [`load`], which writes everything [`plan`](super::plan) placed.

use super::{
    BzImage, CAN_USE_HEAP, CMDLINE_GPA, CODE32_START, E820_MAX, LOADER_UNDEFINED, LOADFLAGS,
    LOW_RAM_END, Layout, LinuxError, SETUP_SECTS, VID_MODE_NORMAL, ZERO_PAGE_SIZE,
};
use crate::vmm::loader::multiboot;
use alloc::vec::Vec;

// Setup header fields the loader writes (boot.rst), offsets in the zero page.
const VID_MODE: usize = 0x1fa;
const TYPE_OF_LOADER: usize = 0x210;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const HEAP_END_PTR: usize = 0x224;
const CMD_LINE_PTR: usize = 0x228;
const SETUP_DATA: usize = 0x250;
// zero-page.rst: fields outside the setup header.
const EXT_RAMDISK_IMAGE: usize = 0x0c0;
const EXT_RAMDISK_SIZE: usize = 0x0c4;
const EXT_CMD_LINE_PTR: usize = 0x0c8;
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
const E820_ENTRY_SIZE: usize = 20;

/// One e820 entry: start, length, type ([`E820_RAM`](super::E820_RAM), [`E820_RESERVED`]).
pub type E820Entry = (u64, u64, u32);

/// The memory map for the zero page: RAM from `ram` laid out as a PC's (the legacy hole and
/// BIOS areas below 1 MiB, as [`multiboot::memory_map`] lists them) and the `reserved` entries
/// (`(start, length, type)`: the firmware's ranges with their own types, ranges the hypervisor
/// keeps as type 2) over it, sorted, non-overlapping, neighbours of one type merged
/// ([`multiboot::memory_map_with`]).
pub fn e820_map(ram: &[(u64, u64)], reserved: &[E820Entry]) -> Result<Vec<E820Entry>, LinuxError> {
    let map = e820_entries(ram, reserved);
    if map.len() > E820_MAX {
        return Err(LinuxError::TooManyE820Entries { count: map.len() });
    }
    Ok(map)
}

fn e820_entries(ram: &[(u64, u64)], reserved: &[E820Entry]) -> Vec<E820Entry> {
    multiboot::memory_map_with(ram, reserved)
}

fn put(page: &mut [u8], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The zero page (boot.rst "32-bit Boot Protocol"): zeros, the image's setup header at 0x1F1,
/// then the fields a loader writes: `vid_mode` normal, `type_of_loader` 0xFF (no assigned id),
/// CAN_USE_HEAP clear and `heap_end_ptr` 0 (no real-mode setup code runs, so there is no heap),
/// `code32_start` = the load address, the ramdisk and command line pointers with their high
/// halves (zero-page.rst 0x0C0-0x0CB), no `setup_data` list, and the memory map (at most
/// [`E820_MAX`] entries; the rest is dropped: [`e820_map`] reports it beforehand).
pub fn boot_params(
    img: &BzImage,
    layout: &Layout,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
) -> [u8; ZERO_PAGE_SIZE] {
    let mut zp = [0u8; ZERO_PAGE_SIZE];
    // The header's hole in boot_params ends at 0x290 (edd_mbr_sig_buffer); parse() never
    // returns a longer header, a hand-made BzImage might.
    put(&mut zp, SETUP_SECTS, &img.header[..img.header.len().min(0x290 - SETUP_SECTS)]);
    put(&mut zp, VID_MODE, &VID_MODE_NORMAL.to_le_bytes());
    zp[TYPE_OF_LOADER] = LOADER_UNDEFINED;
    zp[LOADFLAGS] = img.loadflags & !CAN_USE_HEAP;
    put(&mut zp, HEAP_END_PTR, &0u16.to_le_bytes());
    put(&mut zp, CODE32_START, &(layout.kernel as u32).to_le_bytes());
    let (image, size) = initrd.unwrap_or((0, 0));
    let halves = |v: u64| ((v as u32).to_le_bytes(), ((v >> 32) as u32).to_le_bytes());
    for (v, low, high) in [
        (image, RAMDISK_IMAGE, EXT_RAMDISK_IMAGE),
        (size, RAMDISK_SIZE, EXT_RAMDISK_SIZE),
        (layout.cmdline, CMD_LINE_PTR, EXT_CMD_LINE_PTR),
    ] {
        put(&mut zp, low, &halves(v).0);
        put(&mut zp, high, &halves(v).1);
    }
    put(&mut zp, SETUP_DATA, &0u64.to_le_bytes());
    let e820 = &e820[..e820.len().min(E820_MAX)];
    zp[E820_ENTRIES] = e820.len() as u8;
    for (i, &(start, len, kind)) in e820.iter().enumerate() {
        let at = E820_TABLE + i * E820_ENTRY_SIZE;
        put(&mut zp, at, &start.to_le_bytes());
        put(&mut zp, at + 8, &len.to_le_bytes());
        put(&mut zp, at + 16, &kind.to_le_bytes());
    }
    zp
}

/// Writes the kernel, the initrd, the command line (NUL-terminated) and the zero page through
/// `write(gpa, bytes)` where `layout` ([`plan`](super::plan)) put them. `initrd` and `cmdline`
/// are the ones planned for: an initrd longer than planned is cut to the planned length, a
/// command line to what `plan` accepts. `reserved`: guest-physical ranges the e820 map lists
/// as reserved (type 2) besides the RAM blocks `ram` (type 1); see [`e820_map`].
pub fn load<E>(
    img: &BzImage,
    layout: &Layout,
    initrd: Option<&[u8]>,
    cmdline: &str,
    ram: &[(u64, u64)],
    reserved: &[E820Entry],
    mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    write(layout.kernel, img.kernel)?;
    let initrd = match (layout.initrd, initrd) {
        (Some((at, len)), Some(data)) => {
            let data = &data[..data.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
            write(at, data)?;
            Some((at, data.len() as u64))
        }
        _ => None,
    };
    let max = u64::from(img.cmdline_size).min(LOW_RAM_END - CMDLINE_GPA - 1) as usize;
    let text = &cmdline.as_bytes()[..cmdline.len().min(max)];
    let mut text_z = Vec::with_capacity(text.len() + 1);
    text_z.extend_from_slice(text);
    text_z.push(0);
    write(layout.cmdline, &text_z)?;
    let e820 = e820_entries(ram, reserved);
    write(layout.boot_params, &boot_params(img, layout, initrd, &e820))
}
