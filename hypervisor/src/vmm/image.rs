//! Loading a partition's image into its RAM and the machine state it starts in, per format:
//! our own ELF64 guests (the guest contract, `docs/guest-contract.md`), multiboot kernels
//! (Multiboot Specification 0.6.96 §3.2) and Linux bzImages (the x86 boot protocol,
//! `Documentation/arch/x86/boot.rst`).

use super::config::PartitionConfig;
use super::loader::{acpi, elf, linux, mb_modules, multiboot, place::BootPlacer};
use super::manifest::ImageFormat;
use super::memory::{BadAddress, GuestRam};
use super::platform::Platform;
use super::vcpu::{
    ACCESS_CODE32, ACCESS_CODE64, ACCESS_DATA, ACCESS_TSS64, Gprs, InitialState, Segment, reg,
};
use crate::mm::addr::PAGE_SIZE_2M;
use alloc::format;
use alloc::string::String;
use hvabi::start::*;

/// Null, 64-bit code (0x08), data (0x10).
const GDT: [u64; 3] = [0, 0x0020_9a00_0000_0000, 0x0000_9200_0000_0000];

/// Loads `config`'s image into `ram` (guest-physical blocks `map`) and writes the boot
/// structures its format asks for; returns the state the vCPU starts in.
pub fn load(
    ram: &mut GuestRam,
    map: &[(u64, u64)],
    id: u64,
    config: &PartitionConfig,
    platform: &Platform,
) -> Result<InitialState, String> {
    if config.format == ImageFormat::Linux {
        return load_linux(ram, map, config, platform);
    }
    // Guests see their RAM from guest-physical 0; the management partition sees its RAM
    // where it lies in host memory (identity), so device DMA needs no IOMMU. Images in the
    // guest contract have their boot structures in their first MiB; a multiboot kernel may
    // load anywhere in its RAM, and its boot structures go where it does not.
    let span = map.last().map_or(0, |b| b.0 + b.1);
    let image = match config.format {
        ImageFormat::Multiboot => multiboot::parse(config.image, 0, span)
            .map(|m| m.image)
            .map_err(|e| format!("multiboot image: {e}")),
        _ => elf::parse_at(config.image, 0, span).map_err(|e| {
            let hint = if multiboot::has_header(config.image) {
                " (it has a multiboot header: format = \"multiboot\")"
            } else if linux::is_bzimage(config.image) {
                " (it is a Linux bzImage: format = \"linux\")"
            } else {
                ""
            };
            format!("image: {e}{hint}")
        }),
    }?;
    let contract = config.format != ImageFormat::Multiboot;
    if let Some(s) = image.segments.iter().find(|s| contract && s.gpa < IMAGE_MIN_GPA) {
        return Err(format!(
            "image: segment at {:#x} lies in the first MiB of its RAM (reserved for boot structures)",
            s.gpa
        ));
    }
    let ram_cell = core::cell::RefCell::new(&mut *ram);
    image
        .load_into(
            |gpa, data| ram_cell.borrow_mut().write(gpa, data),
            |gpa, len| ram_cell.borrow_mut().zero(gpa, len),
        )
        .map_err(|e| {
            let hint = if config.management {
                " (the management partition's RAM is the host RAM the hypervisor and the other partitions do not use: a hole is theirs)"
            } else {
                ""
            };
            format!("loading the image: {e}{hint}")
        })?;
    let modules = if config.format == ImageFormat::Multiboot {
        let taken: alloc::vec::Vec<(u64, u64)> =
            image.segments.iter().map(|s| (s.gpa, s.gpa + s.mem_size)).collect();
        load_modules(ram, map, &taken, &config.modules)?
    } else {
        alloc::vec::Vec::new()
    };
    match config.format {
        ImageFormat::Multiboot => {
            let mut taken: alloc::vec::Vec<_> = image.segments.iter().map(|s| s.range()).collect();
            taken.extend(modules.iter().map(|&(start, end)| start..end));
            let extra = memory_map_extra(map, config, platform);
            multiboot_structures(ram, map, &taken, &extra, config, &modules, image.entry)
        }
        _ => {
            boot_structures(ram, map, id, config, image.entry, platform).map_err(|e| format!("{e}"))
        }
    }
}

/// The host RAM below 4 GiB the management partition does not get (the hypervisor's image,
/// heap and tables, the boot modules, the other partitions' RAM), as guest-physical
/// `(start, len, 2)` entries for its memory map (type 2, reserved), as Xen's dom0 map and a
/// PC's firmware list RAM the OS must not use. Guests: none (their RAM is all they see).
fn hypervisor_ranges(
    config: &PartitionConfig,
    map: &[(u64, u64)],
    platform: &Platform,
) -> alloc::vec::Vec<(u64, u64, u32)> {
    if !config.management {
        return alloc::vec::Vec::new();
    }
    gaps_above_1m(map, platform.ram_top_below_4g).into_iter().map(|(s, l)| (s, l, 2)).collect()
}

/// The pieces of `[1 MiB, top)` that no block of `map` (sorted `(start, len)`) covers.
fn gaps_above_1m(map: &[(u64, u64)], top: u64) -> alloc::vec::Vec<(u64, u64)> {
    let mut out = alloc::vec::Vec::new();
    let mut at = 0x10_0000;
    for &(start, len) in map {
        if start > at && at < top {
            out.push((at, start.min(top) - at));
        }
        at = at.max(start.saturating_add(len));
    }
    if at < top {
        out.push((at, top - at));
    }
    out
}

/// Places a multiboot kernel's boot modules beside it (`mb_modules::place`), copies them in
/// and returns where each lies, `(start, end)`.
fn load_modules(
    ram: &mut GuestRam,
    map: &[(u64, u64)],
    taken: &[(u64, u64)],
    modules: &[super::config::BootModule],
) -> Result<alloc::vec::Vec<(u64, u64)>, String> {
    if modules.len() > multiboot::MODULES_MAX {
        return Err(format!(
            "field modules: {} boot modules; at most {}",
            modules.len(),
            multiboot::MODULES_MAX
        ));
    }
    if let Some(m) = modules.iter().find(|m| m.string.len() > multiboot::MODULE_STRING_MAX) {
        return Err(format!(
            "field modules: a module string of {} bytes; at most {}",
            m.string.len(),
            multiboot::MODULE_STRING_MAX
        ));
    }
    let sizes: alloc::vec::Vec<u64> = modules.iter().map(|m| m.data.len() as u64).collect();
    let starts =
        mb_modules::place(map, taken, &sizes).map_err(|e| format!("field modules: {e}"))?;
    let mut placed = alloc::vec::Vec::with_capacity(modules.len());
    for (m, start) in modules.iter().zip(starts) {
        ram.write(start, m.data)
            .map_err(|e| format!("field modules: loading `{}`: {e}", m.string))?;
        placed.push((start, start + m.data.len() as u64));
    }
    Ok(placed)
}

/// A Linux kernel's machine state for the 32-bit boot protocol (boot.rst, "32-bit boot
/// protocol"): protected mode with paging off, a GDT with flat 4 GiB `__BOOT_CS` (0x10,
/// execute/read) and `__BOOT_DS` (0x18, read/write), CS and DS/ES/SS loaded from them,
/// ESI = the zero page (`boot_params`), EBP, EDI and EBX zero, interrupts off. The e820 map
/// lists the partition's RAM as a PC's firmware would (the EBDA and BIOS areas reserved).
fn load_linux(
    ram: &mut GuestRam,
    map: &[(u64, u64)],
    config: &PartitionConfig,
    platform: &Platform,
) -> Result<InitialState, String> {
    let image = linux::parse(config.image).map_err(|e| linux_error(&e))?;
    let cmdline = linux_cmdline(&config.cmdline, platform.tsc_hz);
    let initrd_len = config.initrd.map(|i| i.len() as u64);
    let layout =
        linux::plan(&image, map, initrd_len, cmdline.len()).map_err(|e| linux_error(&e))?;
    // The e820 map is the PC's: the loader reserves the EBDA and BIOS areas of low memory;
    // the management partition's lists the firmware's ranges with their types and the host
    // RAM the hypervisor keeps as reserved.
    let extra = memory_map_extra(map, config, platform);
    linux::e820_map(map, &extra).map_err(|e| format!("memory map: {e}"))?;
    linux::load(&image, &layout, config.initrd, &cmdline, map, &extra, |gpa, b| ram.write(gpa, b))
        .map_err(|e| format!("loading the image: {e}"))?;
    // The ACPI tables, in the BIOS area the e820 map reserves, where the kernel's RSDP search
    // finds them.
    ram.write(acpi::TABLES_GPA, &acpi::tables(config.vcpus))
        .map_err(|e| format!("ACPI tables: {e}"))?;
    /// Null, unused, `__BOOT_CS` (0x10), `__BOOT_DS` (0x18): base 0, limit 4 GiB, 4 KiB pages.
    const GDT32: [u64; 4] = [0, 0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    for (i, d) in GDT32.iter().enumerate() {
        ram.write_u64(GDT_GPA + 8 * i as u64, *d).map_err(|e| format!("{e}"))?;
    }
    let mut gprs = Gprs::default();
    gprs.0[reg::RSI] = layout.boot_params;
    let flat = |selector, access| Segment { selector, base: 0, limit: 0xffff_ffff, access };
    Ok(InitialState {
        gprs,
        rip: layout.entry32,
        rflags: 2,
        cr0: 0x11, // ET | PE
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs: flat(0x10, ACCESS_CODE32),
        data: flat(0x18, ACCESS_DATA),
        tr: Segment { selector: 0, base: 0, limit: 0x67, access: ACCESS_TSS64 },
        gdt_base: GDT_GPA,
        gdt_limit: (GDT32.len() * 8 - 1) as u16,
        idt_base: 0,
        idt_limit: 0,
    })
}

/// The firmware's ranges a management partition's memory map lists with their own types
/// (`vmm::firmware`); none for a guest, whose firmware is the hypervisor's.
/// What a partition's memory map lists besides its RAM: for the management partition, the
/// firmware's ranges with their types ([`firmware_entries`]) and the host RAM the hypervisor
/// keeps, reserved ([`hypervisor_ranges`]); nothing for a guest.
fn memory_map_extra(
    map: &[(u64, u64)],
    config: &PartitionConfig,
    platform: &Platform,
) -> alloc::vec::Vec<(u64, u64, u32)> {
    let mut extra = firmware_entries(map, config, platform);
    extra.extend(hypervisor_ranges(config, map, platform));
    extra
}

fn firmware_entries(
    map: &[(u64, u64)],
    config: &PartitionConfig,
    platform: &Platform,
) -> alloc::vec::Vec<(u64, u64, u32)> {
    if config.management {
        super::firmware::map_entries(platform.firmware.as_slice(), map)
    } else {
        alloc::vec::Vec::new()
    }
}

/// A Linux loader's refusal, naming the manifest field it is about.
fn linux_error(e: &linux::LinuxError) -> String {
    use linux::LinuxError as E;
    let field = match e {
        E::CmdlineTooLong { .. } => "cmdline",
        E::InitrdTooLarge { .. } => "initrd",
        E::RamTooSmall { .. } | E::LowRamMissing { .. } | E::FixedAddressNotInRam { .. } => {
            "memory"
        }
        _ => "image",
    };
    format!("field {field}: {e}")
}

/// The command line a Linux partition gets: the manifest's, and the TSC's rate
/// (`tsc_early_khz=`, Linux's `Documentation/admin-guide/kernel-parameters.txt`) unless it
/// names one. A kernel calibrates its TSC against the PIT in loops that must run a few hundred
/// nanoseconds an iteration; each PIT read is an exit, which takes longer, so the calibration
/// fails and the kernel marks its TSC unstable. The hypervisor measured the rate at boot.
fn linux_cmdline(given: &str, tsc_hz: u64) -> String {
    let mut cmdline = String::from(given.trim());
    if tsc_hz != 0 && !cmdline.split(' ').any(|w| w.starts_with("tsc_early_khz=")) {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&format!("tsc_early_khz={}", tsc_hz / 1000));
    }
    cmdline
}

/// Writes the GDT, identity page tables and start-info page (at the same offsets from the
/// start of RAM for every partition, `docs/guest-contract.md`); returns the entry state.
fn boot_structures(
    ram: &mut GuestRam,
    map: &[(u64, u64)],
    id: u64,
    config: &PartitionConfig,
    entry: u64,
    platform: &Platform,
) -> Result<InitialState, BadAddress> {
    let (base, size) = (0, ram.size());
    for (i, d) in GDT.iter().enumerate() {
        ram.write_u64(base + GDT_GPA + 8 * i as u64, *d)?;
    }
    // Guests: RAM from 0 in one page directory. Management: the first 4 GiB identity in
    // four, so it can reach its RAM and the devices it owns (EPT decides what is there).
    let (pml4, pdpt, pd) = (base + PML4_GPA, base + PML4_GPA + 0x1000, base + PML4_GPA + 0x2000);
    let (directories, mapped) = if config.management { (4, 4 << 30) } else { (1, size) };
    ram.write_u64(pml4, pdpt | 3)?;
    for d in 0..directories {
        ram.write_u64(pdpt + 8 * d, (pd + 0x1000 * d) | 3)?;
    }
    for i in 0..mapped / PAGE_SIZE_2M {
        ram.write_u64(pd + 8 * i, (i * PAGE_SIZE_2M) | 0x83)?;
    }
    let start_info = if config.management { MGMT_START_INFO_GPA } else { START_INFO_GPA };
    let mut info = StartInfo {
        magic: START_MAGIC,
        partition_id: id,
        ram_size: size,
        name_len: 0,
        name: [0; 32],
        cmdline_len: 0,
        cmdline: [0; 256],
        hv_start_tsc: platform.start_tsc,
    };
    let n = config.name.len().min(32);
    info.name[..n].copy_from_slice(&config.name.as_bytes()[..n]);
    info.name_len = n as u64;
    let c = config.cmdline.len().min(256);
    info.cmdline[..c].copy_from_slice(&config.cmdline.as_bytes()[..c]);
    info.cmdline_len = c as u64;
    // SAFETY: StartInfo is repr(C) plain data; viewing it as bytes is sound.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            core::ptr::from_ref(&info).cast::<u8>(),
            core::mem::size_of::<StartInfo>(),
        )
    };
    ram.write(start_info, bytes)?;

    // The stack at the top of RAM (the management partition: of its highest block below
    // 4 GiB, which its page tables reach).
    let top = map.iter().map(|&(gpa, len)| gpa + len).filter(|&end| end <= 1 << 32).max();
    let mut gprs = Gprs::default();
    gprs.0[reg::RSP] = top.unwrap_or(size) - STACK_GAP;
    gprs.0[reg::RDI] = start_info;
    let flat = |selector, access| Segment { selector, base: 0, limit: 0xffff_ffff, access };
    Ok(InitialState {
        gprs,
        rip: entry,
        rflags: 2,
        cr0: 0x8001_0033, // PG | WP | NE | ET | MP | PE
        cr3: pml4,
        cr4: 0x20,   // PAE
        efer: 0xd00, // NXE | LMA | LME
        cs: flat(CODE_SELECTOR, ACCESS_CODE64),
        data: flat(DATA_SELECTOR, ACCESS_DATA),
        tr: Segment { selector: 0, base: 0, limit: 0x67, access: ACCESS_TSS64 },
        gdt_base: base + GDT_GPA,
        gdt_limit: (GDT.len() * 8 - 1) as u16,
        idt_base: 0,
        idt_limit: 0,
    })
}

/// A multiboot kernel's machine state (Multiboot Specification §3.2): 32-bit protected
/// mode with paging off, flat 4 GiB segments from a GDT of our own (the kernel loads its
/// own before it reloads a selector), EAX = the boot magic, EBX = the information
/// structure, interrupts off. The GDT, the information structure and a first stack go in
/// free pages of its RAM that its segments (`taken`) do not cover, lowest first (§3.3 lets the
/// loader put the structure anywhere; the kernel keeps clear of it until it has read it).
fn multiboot_structures(
    ram: &mut GuestRam,
    map: &[(u64, u64)],
    taken: &[core::ops::Range<u64>],
    extra: &[(u64, u64, u32)],
    config: &PartitionConfig,
    modules: &[(u64, u64)],
    entry: u64,
) -> Result<InitialState, String> {
    /// Null, 32-bit code (0x08), data (0x10): base 0, limit 4 GiB, granularity 4 KiB.
    const GDT32: [u64; 3] = [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    /// The stack given (the specification leaves ESP undefined; a usable one anyway).
    const STACK: u64 = 0x4000;
    const BELOW_4G: u64 = 1 << 32;
    let mut free = BootPlacer::new(map, taken);
    let mut take = |what: &str, len: u64| {
        free.take(len, BELOW_4G).ok_or_else(|| {
            format!("no free page below 4 GiB outside the image's segments for the {what}")
        })
    };
    let gdt = take("GDT", 0x1000)?;
    let info_at = take("multiboot information", multiboot::INFO_BYTES)?;
    let stack_top = match take("stack", STACK) {
        Ok(at) => at + STACK,
        Err(_) => take("stack", 0x1000)? + 0x1000,
    };
    let bad = |e: BadAddress| format!("{e}");
    ram.zero(gdt, 0x1000).map_err(bad)?;
    ram.zero(info_at, multiboot::INFO_BYTES).map_err(bad)?;
    for (i, d) in GDT32.iter().enumerate() {
        ram.write_u64(gdt + 8 * i as u64, *d).map_err(bad)?;
    }
    let entries: alloc::vec::Vec<multiboot::ModuleEntry<'_>> = config
        .modules
        .iter()
        .zip(modules)
        .map(|(m, &(start, end))| multiboot::ModuleEntry { start, end, string: &m.string })
        .collect();
    let info = multiboot::write_info(
        |gpa, b| ram.write(gpa, b),
        info_at,
        map,
        &config.cmdline,
        &entries,
        extra,
    )
    .map_err(bad)?;
    let mut gprs = Gprs::default();
    gprs.0[reg::RAX] = u64::from(multiboot::BOOT_MAGIC);
    gprs.0[reg::RBX] = info;
    gprs.0[reg::RSP] = stack_top - 16;
    let flat = |selector, access| Segment { selector, base: 0, limit: 0xffff_ffff, access };
    Ok(InitialState {
        gprs,
        rip: entry,
        rflags: 2,
        cr0: 0x11, // ET | PE
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs: flat(CODE_SELECTOR, ACCESS_CODE32),
        data: flat(DATA_SELECTOR, ACCESS_DATA),
        tr: Segment { selector: 0, base: 0, limit: 0x67, access: ACCESS_TSS64 },
        gdt_base: gdt,
        gdt_limit: (GDT32.len() * 8 - 1) as u16,
        idt_base: 0,
        idt_limit: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hypervisor_keeps_the_gaps_above_1_mib() {
        const M: u64 = 1 << 20;
        let map = [(0, 0x9f000), (M, 99 * M), (120 * M, 8 * M)];
        assert_eq!(gaps_above_1m(&map, 256 * M), [(100 * M, 20 * M), (128 * M, 128 * M)]);
        assert_eq!(gaps_above_1m(&map, 110 * M), [(100 * M, 10 * M)], "cut at the top");
        assert_eq!(gaps_above_1m(&[(0, 0x9f000), (2 * M, M)], 3 * M), [(M, M)]);
        assert_eq!(gaps_above_1m(&[(0, 0x9f000), (M, 255 * M)], 256 * M), []);
    }

    #[test]
    fn linux_gets_the_tsc_rate_unless_it_names_one() {
        assert_eq!(
            linux_cmdline("console=ttyS0", 2_604_413_000),
            "console=ttyS0 tsc_early_khz=2604413"
        );
        assert_eq!(linux_cmdline("", 4_016_000), "tsc_early_khz=4016");
        assert_eq!(
            linux_cmdline("tsc_early_khz=1000 quiet", 4_016_000),
            "tsc_early_khz=1000 quiet"
        );
        assert_eq!(linux_cmdline("quiet", 0), "quiet", "not measured: nothing added");
    }
}
