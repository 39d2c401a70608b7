//! The firmware as the management partition sees it: what the machine's firmware left in memory
//! (the BIOS data area and EBDA, the legacy window 0xA0000-0xFFFFF with the VGA memory, option
//! ROMs and the BIOS, the ACPI tables and ACPI NVS, SMBIOS) identity-mapped into the management
//! partition as on the bare machine, and listed in its memory map with the firmware's own types.
//!
//! Sources: the firmware's memory map as the boot path found it (multiboot `mmap_*`, types as
//! e820's: ACPI 6.5 §15 "System Address Map Interfaces", Table 15.1: 1 memory, 2 reserved,
//! 3 ACPI reclaim, 4 ACPI NVS, 5 unusable, 7 persistent; UEFI's map converted to those types
//! by the boot path, ACPI 6.5 §15.4 Table 15.6). SMBIOS 3.7 §5.2: the entry point lies in
//! 0xF0000-0xFFFFF on a BIOS machine, which the legacy window covers.
//!
//! Access (second-level permissions):
//! - ranges the firmware marks reserved (type 2 and anything not ACPI), and the ROM area
//!   0xC0000-0xFFFFF: read and execute only; a write is dropped, as ROM drops it
//!   ([`RomWrites`] on the partition's MMIO bus);
//! - ACPI reclaim (3) and ACPI NVS (4): read/write (AML may write NVS; the OS owns reclaim
//!   memory once it has read the tables);
//! - the VGA memory 0xA0000-0xBFFFF: device memory, read/write, uncached.
//!
//! Reserved ranges above the RAM below 4 GiB (the local and I/O APICs, PCI MMCONFIG, the BIOS
//! flash) are device space, not firmware memory: `devices` hands those over (or not).

use alloc::vec::Vec;

use crate::mm::addr::{PAGE_SIZE, align_down, align_up};

/// e820 / multiboot memory types (ACPI 6.5 Table 15.1).
pub const TYPE_RAM: u32 = 1;
pub const TYPE_RESERVED: u32 = 2;
pub const TYPE_ACPI: u32 = 3;
pub const TYPE_NVS: u32 = 4;
pub const TYPE_UNUSABLE: u32 = 5;

/// Most firmware ranges kept.
pub const MAX_REGIONS: usize = 64;

/// VGA memory (device space on a PC).
pub const VGA: core::ops::Range<u64> = 0xa_0000..0xc_0000;
/// Option ROMs and the BIOS.
pub const ROM: core::ops::Range<u64> = 0xc_0000..0x10_0000;

/// One range of the firmware's memory map that is not usable RAM, `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// Its type, as e820's ([`TYPE_RESERVED`], [`TYPE_ACPI`], ...).
    pub kind: u32,
}

/// The firmware's non-RAM ranges, a fixed-size list (it travels in `Platform`, a `Copy` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl Default for FirmwareMap {
    fn default() -> Self {
        Self { regions: [Region::default(); MAX_REGIONS], len: 0 }
    }
}

impl FirmwareMap {
    /// Adds a range (RAM and empty ranges are not kept); false when the list is full.
    pub fn push(&mut self, start: u64, end: u64, kind: u32) -> bool {
        if kind == TYPE_RAM || end <= start {
            return true;
        }
        if self.len == MAX_REGIONS {
            return false;
        }
        self.regions[self.len] = Region { start, end, kind };
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[Region] {
        &self.regions[..self.len]
    }
}

/// The e820 type of a UEFI memory type (UEFI 2.10 §7.2 Table 7.10; ACPI 6.5 §15.4 Table 15.6):
/// `None` for memory the OS may use after boot (loader and boot-services memory, conventional).
pub fn e820_type_of_uefi(uefi: u32) -> Option<u32> {
    match uefi {
        1..=4 | 7 => None,
        8 => Some(TYPE_UNUSABLE),
        9 => Some(TYPE_ACPI),
        10 => Some(TYPE_NVS),
        14 => Some(7),            // persistent memory
        _ => Some(TYPE_RESERVED), // reserved, runtime services, MMIO, PAL code, unknown
    }
}

/// How a window is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and execute; writes dropped.
    ReadOnly,
    /// RAM-like, read/write/execute.
    ReadWrite,
    /// Device memory, read/write, uncached.
    Device,
}

/// A page-aligned range `[start, end)` to identity-map into the management partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub access: Access,
}

/// The end of the firmware memory that is RAM-like: reserved ranges below it are the
/// firmware's (tables, NVS), above it device space. The same bound as the device space
/// `devices = ["all"]` hands over (`passthrough::hand_over`).
pub fn ram_like_end(ram_top_below_4g: u64) -> u64 {
    align_up(ram_top_below_4g, 2 << 20).max(0x1000_0000)
}

/// The windows to map for a management partition whose RAM is `ram` (`(start, size)` blocks),
/// from the firmware's `regions`: page-aligned (outward: a page the firmware shares with
/// usable RAM is never handed out, the frame allocator takes whole usable pages), never over
/// RAM or the `keep_out` ranges (`[start, end)`: the hypervisor's own device windows), never
/// overlapping each other, sorted.
pub fn windows(
    regions: &[Region],
    ram: &[(u64, u64)],
    keep_out: &[(u64, u64)],
    ram_top_below_4g: u64,
) -> Vec<Window> {
    let limit = ram_like_end(ram_top_below_4g);
    // Claims in priority order: the first to claim a page keeps it.
    let mut claims: Vec<(u64, u64, Access)> = Vec::new();
    claims.push((VGA.start, VGA.end, Access::Device));
    for r in regions {
        let (start, end) = (align_down(r.start, PAGE_SIZE), align_up(r.end, PAGE_SIZE));
        match r.kind {
            // Below 4 GiB, above the RAM-like end is device space that `devices` hands over.
            TYPE_ACPI | TYPE_NVS if start >= limit && start < 1 << 32 => {}
            TYPE_ACPI | TYPE_NVS => {
                let end = if start < limit { end.min(limit) } else { end };
                claims.push((start, end, Access::ReadWrite));
            }
            _ if start < limit => claims.push((start, end.min(limit), Access::ReadOnly)),
            _ => {}
        }
    }
    claims.push((ROM.start, ROM.end, Access::ReadOnly));
    // Conventional memory the partition does not get as RAM (the EBDA): the firmware's.
    claims.push((0, VGA.start, Access::ReadOnly));
    let mut taken: Vec<(u64, u64)> = ram
        .iter()
        .map(|&(s, n)| (align_down(s, PAGE_SIZE), align_up(s.saturating_add(n), PAGE_SIZE)))
        .chain(keep_out.iter().map(|&(s, e)| (align_down(s, PAGE_SIZE), align_up(e, PAGE_SIZE))))
        .collect();
    let mut out = Vec::new();
    for (start, end, access) in claims {
        for (a, b) in subtract((start, end), &taken) {
            out.push(Window { start: a, end: b, access });
        }
        taken.push((start, end));
    }
    out.sort_unstable_by_key(|w| w.start);
    // Neighbours with the same access become one window (one mapping, one ROM device).
    let mut merged: Vec<Window> = Vec::with_capacity(out.len());
    for w in out {
        match merged.last_mut() {
            Some(last) if last.end == w.start && last.access == w.access => last.end = w.end,
            _ => merged.push(w),
        }
    }
    merged
}

/// Maps the firmware's windows into a management partition whose RAM is `ram` (after its RAM
/// is mapped, before its devices are: `devices = ["all"]` hands over the device space above
/// [`ram_like_end`]); returns them, for the read-only ones' [`RomWrites`].
pub fn map_into(
    slat: &mut dyn super::vcpu::SecondLevel,
    ram: &[(u64, u64)],
    platform: &super::platform::Platform,
) -> Result<Vec<Window>, alloc::string::String> {
    use hvabi::{channel, start};
    let block = |at: u64| (at & !0x1f_ffff, (at & !0x1f_ffff) + (2 << 20));
    let keep_out = [
        block(channel::BASE_GPA),
        block(start::SYSINFO_GPA),
        (super::passthrough::LAPIC_PAGE, super::passthrough::LAPIC_PAGE + PAGE_SIZE),
    ];
    let windows = windows(platform.firmware.as_slice(), ram, &keep_out, platform.ram_top_below_4g);
    for w in &windows {
        let (at, len) = (w.start, w.end - w.start);
        match w.access {
            Access::ReadOnly => slat.map_readonly(at, at, len),
            Access::ReadWrite => slat.map(at, at, len),
            Access::Device => slat.map_mmio(at, at, len),
        }
        .map_err(|e| alloc::format!("mapping the firmware's memory at {at:#x}: {e:?}"))?;
    }
    Ok(windows)
}

/// `range` less every range in `taken`, as the pieces left, in order.
fn subtract(range: (u64, u64), taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut pieces = alloc::vec![range];
    for &(t0, t1) in taken {
        pieces = pieces
            .into_iter()
            .flat_map(|(a, b)| [(a, b.min(t0)), (a.max(t1), b)])
            .filter(|(a, b)| a < b)
            .collect();
    }
    pieces
}

/// The firmware's ranges as memory-map entries `(start, length, type)` for a partition whose
/// RAM is `ram`: each range less the partition's RAM, with its own type.
/// Conventional memory below 0xA0000 that is neither the partition's RAM nor a firmware range
/// (the hypervisor's tables for it, the firmware's usable bytes below the EBDA the partition
/// does not get) is listed reserved: it is mapped, read-only, as the firmware's.
pub fn map_entries(regions: &[Region], ram: &[(u64, u64)]) -> Vec<(u64, u64, u32)> {
    let ram: Vec<(u64, u64)> = ram.iter().map(|&(s, n)| (s, s.saturating_add(n))).collect();
    let mut out = Vec::new();
    for r in regions {
        for (a, b) in subtract((r.start, r.end), &ram) {
            out.push((a, b - a, r.kind));
        }
    }
    let mut taken = ram.clone();
    taken.extend(regions.iter().map(|r| (r.start, r.end)));
    for (a, b) in subtract((0, VGA.start), &taken) {
        out.push((a, b - a, TYPE_RESERVED));
    }
    out
}

/// The MMIO-bus device behind read-only firmware windows: a write to one faults (the page is
/// read-only), is decoded like any MMIO access and lands here, where it is dropped, as a write
/// to ROM is on the bare machine. Reads never fault (the pages are readable); should one come
/// here it reads as all-ones, as absent memory does.
#[derive(Debug, Default)]
pub struct RomWrites {
    /// Writes dropped.
    pub dropped: u64,
}

impl super::bus::Device for RomWrites {
    fn name(&self) -> &'static str {
        "firmware (read-only)"
    }
    fn read(&mut self, _offset: u64, size: u8) -> u64 {
        if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
    }
    fn write(&mut self, _offset: u64, _size: u8, _value: u64) {
        self.dropped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU/SeaBIOS with 256 MiB (its e820 less the RAM).
    fn seabios() -> Vec<Region> {
        let mut m = FirmwareMap::default();
        for (s, e, k) in [
            (0x9_fc00, 0xa_0000, 2),
            (0xf_0000, 0x10_0000, 2),
            (0xffe_0000, 0x1000_0000, 2),
            (0xfeff_c000, 0xff00_0000, 2),
            (0xfffc_0000, 0x1_0000_0000, 2),
        ] {
            assert!(m.push(s, e, k));
        }
        m.as_slice().to_vec()
    }

    #[test]
    fn the_firmware_windows_of_a_seabios_machine() {
        let ram = [(0, 0x9_f000), (0x10_0000, 0x800_0000)];
        let w = windows(&seabios(), &ram, &[], 0xffe_0000);
        let ro = Access::ReadOnly;
        assert_eq!(
            w,
            [
                Window { start: 0x9_f000, end: 0xa_0000, access: ro },
                Window { start: 0xa_0000, end: 0xc_0000, access: Access::Device },
                Window { start: 0xc_0000, end: 0x10_0000, access: ro },
                // The ACPI tables SeaBIOS keeps at the top of RAM; not the APIC or the flash.
                Window { start: 0xffe_0000, end: 0x1000_0000, access: ro },
            ]
        );
    }

    #[test]
    fn acpi_memory_is_writable_and_reserved_device_space_is_left_out() {
        let regions = [
            Region { start: 0x7ff_0000, end: 0x7ff_8000, kind: TYPE_ACPI },
            Region { start: 0x7ff_8000, end: 0x7ff_9000, kind: TYPE_NVS },
            Region { start: 0x7ff_9123, end: 0x7ff_a001, kind: TYPE_RESERVED },
            Region { start: 0xe000_0000, end: 0xf000_0000, kind: TYPE_RESERVED },
            Region { start: 0x1_2000_0000, end: 0x1_2000_1000, kind: TYPE_NVS },
        ];
        let ram = [(0, 0x9_f000), (0x10_0000, 0x7ef_0000)];
        let w = windows(&regions, &ram, &[(0x7ff_4000, 0x7ff_4800)], 0x7ff_0000);
        let find = |a: u64| w.iter().find(|w| w.start <= a && a < w.end).map(|w| w.access);
        assert_eq!(find(0x7ff_0000), Some(Access::ReadWrite));
        assert_eq!(find(0x7ff_8fff), Some(Access::ReadWrite));
        assert_eq!(find(0x7ff_4000), None, "a hypervisor window is kept out");
        assert_eq!(find(0x7ff_5000), Some(Access::ReadWrite));
        // Rounded outward to whole pages.
        assert_eq!(find(0x7ff_9000), Some(Access::ReadOnly));
        assert_eq!(find(0x7ff_a000), Some(Access::ReadOnly));
        assert_eq!(find(0x7ff_b000), None);
        assert_eq!(find(0xe000_0000), None, "MMCONFIG is device space");
        assert_eq!(find(0x1_2000_0000), Some(Access::ReadWrite), "NVS anywhere");
        assert_eq!(find(0x50_0000), None, "RAM is not a window");
    }

    #[test]
    fn windows_never_overlap_ram_or_each_other() {
        // Overlapping and RAM-crossing firmware ranges, as a buggy firmware may give them.
        let regions = [
            Region { start: 0x8_0000, end: 0xb_0000, kind: TYPE_RESERVED },
            Region { start: 0x9_0000, end: 0x30_0000, kind: TYPE_ACPI },
            Region { start: 0x2f_f000, end: 0x40_0000, kind: TYPE_UNUSABLE },
        ];
        let ram = [(0, 0x8_8000), (0x20_0000, 0x10_0000)];
        let w = windows(&regions, &ram, &[], 0x40_0000);
        let mut all: Vec<(u64, u64)> = w.iter().map(|w| (w.start, w.end)).collect();
        all.extend(ram.iter().map(|&(s, n)| (s, s + n)));
        all.sort_unstable();
        assert!(all.windows(2).all(|p| p[0].1 <= p[1].0), "{all:x?}");
        assert!(w.iter().all(|w| w.start % PAGE_SIZE == 0 && w.end % PAGE_SIZE == 0));
        // The VGA window stays device memory even where a firmware range covers it.
        assert!(w.contains(&Window { start: 0xa_0000, end: 0xc_0000, access: Access::Device }));
    }

    #[test]
    fn map_entries_keep_the_firmware_types_outside_ram() {
        let regions = [
            Region { start: 0x9_fc00, end: 0xa_0000, kind: TYPE_RESERVED },
            Region { start: 0x7ff_0000, end: 0x800_0000, kind: TYPE_ACPI },
            Region { start: 0x7ff_f000, end: 0x801_0000, kind: TYPE_NVS },
        ];
        let ram = [(0, 0x9_e000), (0x800_0000, 0x8000)];
        assert_eq!(
            map_entries(&regions, &ram),
            [
                (0x9_fc00, 0x400, TYPE_RESERVED),
                (0x7ff_0000, 0x1_0000, TYPE_ACPI),
                (0x7ff_f000, 0x1000, TYPE_NVS),
                (0x800_8000, 0x8000, TYPE_NVS),
                // Below the EBDA, not RAM: the hypervisor's tables page and the rest.
                (0x9_e000, 0x1c00, TYPE_RESERVED),
            ]
        );
    }

    #[test]
    fn uefi_types_become_e820_types() {
        let got: Vec<Option<u32>> = (0..=15).map(e820_type_of_uefi).collect();
        let (r, n) = (Some(TYPE_RESERVED), None);
        assert_eq!(got, [r, n, n, n, n, r, r, n, Some(5), Some(3), Some(4), r, r, r, Some(7), r]);
    }

    #[test]
    fn the_map_keeps_what_fits_and_rom_drops_writes() {
        let mut m = FirmwareMap::default();
        assert!(m.push(0, 10, TYPE_RAM), "RAM is not kept, and not refused");
        assert!(m.push(5, 5, TYPE_RESERVED), "empty");
        assert!(m.as_slice().is_empty());
        for i in 0..MAX_REGIONS as u64 {
            assert!(m.push(i * 0x1000, i * 0x1000 + 1, TYPE_RESERVED));
        }
        assert!(!m.push(1 << 40, (1 << 40) + 1, TYPE_NVS));
        assert_eq!(m.as_slice().len(), MAX_REGIONS);
        use super::super::bus::Device;
        let mut rom = RomWrites::default();
        rom.write(0, 4, 0x1234);
        assert_eq!(rom.dropped, 1);
        assert_eq!(rom.read(0, 2), 0xffff);
        assert_eq!(rom.read(0, 8), u64::MAX);
    }
}
