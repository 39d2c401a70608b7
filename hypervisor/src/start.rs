//! From the boot path's [`BootInfo`] to running partitions: the hypervisor's `main`.

use crate::arch::vmx::VmxBackend;
use crate::arch::x86::{cpu, gdt, idt, paging, power, smp};
use crate::bootinfo::{BootInfo, PhysRange};
use crate::cmdline::{self, FAULT_ADDRESS, Fault};
use crate::mm::addr::{PAGE_SIZE, align_down, align_up};
use crate::mm::frames::{FRAMES, FrameAllocator, LOW_MEMORY_END};
use crate::vmm::partition::PartitionConfig;
use crate::vmm::platform::Platform;
use crate::vmm::vcpu::Backend;
use crate::{console, println};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use hvabi::pack::{self, Pack};
use log::{error, info, warn};

/// The boot module that holds the partition manifest.
pub const MANIFEST_MODULE: &str = "manifest";

/// Size of the hypervisor's heap.
pub const HEAP_SIZE: u64 = 16 << 20;

/// How the boot crate sets up its global allocator over `[start, start+len)`.
pub type HeapInit = unsafe fn(start: *mut u8, len: usize);

/// Finds `len` bytes of usable RAM (page-aligned, above 1 MiB, below `reach`) that overlap
/// nothing reserved, as high as possible: low memory stays for the management partition.
fn find_free(info: &BootInfo, len: u64, reach: u64) -> Option<u64> {
    crate::mm::place::highest_free(
        info.usable.as_slice(),
        info.reserved.as_slice(),
        len,
        PAGE_SIZE,
        LOW_MEMORY_END,
        reach,
    )
}

/// The hypervisor's entry point after either boot path.
///
/// `phys_offset` is where all physical memory is mapped in the boot page tables (0 for an
/// identity map); `init_heap` sets up the boot crate's global allocator.
pub fn start(info: &mut BootInfo, phys_offset: u64, init_heap: HeapInit) -> ! {
    let start_tsc = crate::arch::x86::instr::rdtsc();
    let calibration = crate::arch::x86::time::TscCalibration::start();
    let uart_ok = console::init();
    console::init_log(log::LevelFilter::Info);
    gdt::init();
    idt::init();
    platform_quiet();

    println!();
    println!(
        "{} {}: a Type-1 microhypervisor for x86_64, booted via {}",
        crate::NAME,
        crate::VERSION,
        info.path
    );
    if !uart_ok {
        warn!("COM1 failed its loopback self-test");
    }
    if console::stray_bytes() > 0 {
        info!("COM1: {} stray byte(s) after the UART self-test dropped", console::stray_bytes());
    }
    if info.cmdline_truncated {
        warn!("kernel command line longer than {} bytes: cut", crate::bootinfo::MAX_CMDLINE);
    }
    if info.cmdline().is_empty()
        && let Some(c) = pack_cmdline(info)
    {
        info.set_cmdline(c);
    }
    info!("command line: `{}`", info.cmdline());
    let mut problems = 0;
    let opts = cmdline::parse(info.cmdline(), |p| {
        problems += 1;
        warn!("{p}");
    });
    log::set_max_level(opts.log_level);
    if problems > 0 {
        warn!("{problems} command-line problem(s): see above");
    }

    // The BIOS data area (page 0) is unmapped once the hypervisor's own tables are live.
    let ebda_segment = (phys_offset == 0).then(smp::bda_ebda_segment);
    let cpu = cpu::detect();
    println!(
        "hypervisor: cpu: {} family {:#x} model {:#x} stepping {} \"{}\"",
        cpu.vendor(),
        cpu.family,
        cpu.model,
        cpu.stepping,
        cpu.brand()
    );
    println!("hypervisor: virtualization: {}", cpu.virt);

    // Memory: heap first (the frame allocator's lists live on it), then frames, then our own
    // page tables.
    // Written before the hypervisor's own tables exist: where the boot tables reach.
    let reach = if phys_offset == 0 { 1 << 32 } else { u64::MAX };
    let Some(heap) = find_free(info, HEAP_SIZE, reach) else {
        error!("no {} MiB of free RAM for the heap", HEAP_SIZE >> 20);
        fail();
    };
    // SAFETY: `heap` is usable RAM that overlaps no reservation, mapped at `phys_offset + heap`
    // in the boot tables and in ours (identity for offset 0, the kept high half otherwise); it is
    // reserved from the frame allocator below, so nothing else ever uses it.
    unsafe { init_heap((phys_offset + heap) as *mut u8, HEAP_SIZE as usize) };
    info.reserved.push(PhysRange::new(heap, heap + HEAP_SIZE));
    let usable: Vec<_> = info.usable.as_slice().iter().map(PhysRange::as_range).collect();
    let reserved: Vec<_> = info.reserved.as_slice().iter().map(PhysRange::as_range).collect();
    let mut frames = FrameAllocator::new(&usable, &reserved);
    if info.usable.dropped > 0 || info.reserved.dropped > 0 {
        warn!(
            "memory map too long: {} usable and {} reserved ranges ignored",
            info.usable.dropped, info.reserved.dropped
        );
    }
    let ram_end = info.usable.as_slice().iter().map(|r| r.end).max().unwrap_or(0);
    match paging::install(&mut frames, phys_offset, ram_end, cpu.gib_pages, info.keep_high_half) {
        Ok(tables) => {
            info!(
                "own page tables live: {tables} table pages, all physical memory identity-mapped"
            );
            // The APIC's page is reachable now: its timer counts beside the PIT calibration.
            crate::arch::x86::lapic::init();
        }
        Err(e) => {
            error!("building the hypervisor's page tables failed: {e:?}");
            fail();
        }
    }
    println!(
        "hypervisor: memory: {} MiB usable in {} ranges, {} MiB free for partitions, heap {} MiB at {:#x}",
        info.usable_bytes() >> 20,
        info.usable.as_slice().len(),
        frames.free_bytes() >> 20,
        HEAP_SIZE >> 20,
        heap
    );
    if let Some(from) = info.relocated_from {
        // Debug level: a serial line costs the boot-to-guest figure ~5% under Bochs.
        log::debug!(
            "hypervisor image moved from {:#x}..{:#x} to {:#x}..{:#x} (top of RAM below 4 GiB)",
            from.start,
            from.end,
            info.image.start,
            info.image.end
        );
    }
    if phys_offset == 0 {
        relocate_low_modules(info, &mut frames);
    }
    *FRAMES.lock() = Some(frames);
    let ram_top_below_4g =
        info.usable.as_slice().iter().map(|r| r.end.min(1 << 32)).max().unwrap_or(0);
    // Conventional memory from address 0 (below the EBDA), which the hypervisor never uses:
    // the management partition's boot structures go there, as a PC loader's do.
    // Firmware maps may split it into adjacent ranges: follow the chain from 0.
    let mut low = 0;
    while let Some(r) = info.usable.as_slice().iter().find(|r| r.start <= low && r.end > low) {
        low = r.end;
    }
    let low_ram_end = align_down(low.min(0xa_0000), PAGE_SIZE);
    let mut platform = measure_platform(start_tsc, calibration, low_ram_end, ram_top_below_4g);
    platform.firmware = info.firmware;
    platform.firmware_rsdp = crate::vmm::firmware_acpi::host_rsdp(info.rsdp, ebda_segment);
    if info.firmware_dropped != 0 {
        warn!(
            "firmware memory map: {} ranges past the first {} not kept (the management partition does not see them)",
            info.firmware_dropped,
            crate::vmm::firmware::MAX_REGIONS
        );
    }
    let mapped_end = align_up(ram_end.max(4 << 30), 1 << 30);
    let cpus =
        smp::start_aps(info.rsdp, ebda_segment, &usable, &reserved, mapped_end, platform.tsc_hz);
    let ids: Vec<String> = cpus.up.iter().map(|id| alloc::format!("{id}")).collect();
    println!(
        "hypervisor: cpus: {} of {} up (APIC IDs {}), VMX/SVM on {} of {} APs, {} woken by IPI, {} ran a guest",
        cpus.up.len(),
        cpus.listed.max(1),
        ids.join(" "),
        cpus.virt_on,
        cpus.up.len() - 1,
        cpus.woken,
        cpus.ran_guest
    );

    match opts.fault {
        Some(Fault::PageFault) => {
            println!("hypervisor: fault=pf: reading unmapped address {FAULT_ADDRESS:#x}");
            // SAFETY: deliberately unsound: the read faults, and the exception path reports it
            // and powers off. It never returns.
            let v = unsafe { core::ptr::read_volatile(FAULT_ADDRESS as *const u64) };
            println!("hypervisor: read {v:#x} from an unmapped address?!");
            fail();
        }
        Some(Fault::InvalidOpcode) => {
            println!("hypervisor: fault=ud: executing ud2");
            // SAFETY: raises #UD, which the exception path reports; it never returns.
            unsafe { core::arch::asm!("ud2") };
            fail();
        }
        None => {}
    }

    if opts.bench {
        let t0 = crate::arch::x86::instr::rdtsc();
        native_bench();
        let spent = crate::arch::x86::instr::rdtsc().wrapping_sub(t0);
        // Boot-to-guest (the guests' start-info TSC) leaves the native loops out.
        platform.start_tsc = platform.start_tsc.wrapping_add(spent);
    }
    let modules = boot_modules(info);
    if modules.is_empty() {
        println!("hypervisor: no partitions to run");
        finish(true);
    }
    let Some(mut backend) = enable_backend(&cpu) else {
        fail();
    };
    let configs = match partition_configs(&modules) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            println!("hypervisor: refusing to start any partition");
            fail();
        }
    };
    println!(
        "hypervisor: starting {} partition(s) on the {} backend",
        configs.len(),
        backend.name()
    );
    let ok = crate::vmm::launch::run_partitions(configs, backend.as_mut(), &modules, platform);
    drop(backend);
    finish(ok)
}

/// Measures the clocks and gathers what the core needs from boot into one value.
fn measure_platform(
    start_tsc: u64,
    calibration: crate::arch::x86::time::TscCalibration,
    low_ram_end: u64,
    ram_top_below_4g: u64,
) -> Platform {
    let tsc_hz = calibration.finish().unwrap_or(0);
    let wall_clock =
        crate::arch::x86::time::read_rtc().map(|unix| (crate::arch::x86::instr::rdtsc(), unix));
    if tsc_hz == 0 {
        warn!("the TSC rate could not be measured against the PIT: virtual clocks run at 1 GHz");
    }
    match wall_clock {
        Some((_, unix)) => println!(
            "hypervisor: clocks: TSC {}.{:03} MHz, RTC {} (Unix time {unix})",
            tsc_hz / 1_000_000,
            tsc_hz / 1000 % 1000,
            crate::arch::x86::time::format_utc(unix)
        ),
        None => warn!("the RTC holds no valid date: partitions' clocks start at 1970-01-01"),
    }
    // CPUID leaf 0x4000_0010 tells guests the rate (the fast paths answer CPUID too, so the
    // policy keeps it beside its other constants).
    crate::vmm::cpuid::set_tsc_khz(u32::try_from(tsc_hz / 1000).unwrap_or(u32::MAX));
    if crate::arch::x86::lapic::timer_usable() {
        info!(
            "host APIC timer calibrated: it ends time slices where the CPU has no preemption timer"
        );
    }
    Platform {
        start_tsc,
        tsc_hz,
        wall_clock,
        low_ram_end,
        ram_top_below_4g,
        firmware: crate::vmm::firmware::FirmwareMap::default(),
        firmware_rsdp: None,
    }
}

/// Moves the boot modules that lie below the hypervisor's image (QEMU puts them right after
/// the image where the loader put it, GRUB at 1 MiB or there) up into frames from the top of
/// memory and frees where they were, so that the management partition's identity-mapped RAM
/// is one range from 1 MiB up to the hypervisor's. Identity-mapped boots that know where
/// their image is (the multiboot path).
fn relocate_low_modules(info: &mut BootInfo, frames: &mut FrameAllocator) {
    let below = info.image.start;
    if info.image.is_empty() {
        return;
    }
    let pages_of =
        |r: &core::ops::Range<u64>| align_down(r.start, PAGE_SIZE)..align_up(r.end, PAGE_SIZE);
    let mut moved = Vec::new();
    for m in info.modules.as_mut_slice() {
        if m.addr >= below || m.len == 0 {
            continue;
        }
        let Some(to) = frames.alloc(m.len.div_ceil(PAGE_SIZE), PAGE_SIZE) else {
            warn!("boot module `{}`: no free RAM to move it from {:#x}", m.name(), m.addr);
            continue;
        };
        // SAFETY: the source is the module (mapped, reserved); the destination frames were
        // just allocated, are identity-mapped, and were free, so they do not overlap it.
        unsafe {
            core::ptr::copy_nonoverlapping(m.addr as *const u8, to.0 as *mut u8, m.len as usize)
        };
        moved.push(pages_of(&(m.addr..m.addr + m.len)));
        m.addr = to.0;
    }
    for r in &moved {
        frames.free(crate::mm::addr::HostPhys(r.start), (r.end - r.start) / PAGE_SIZE);
    }
    // Whatever else was reserved in those pages (another module sharing a page) stays so.
    for r in info.reserved.as_slice().iter().map(PhysRange::as_range) {
        if !moved.contains(&pages_of(&r)) {
            frames.reserve(r);
        }
    }
    if !moved.is_empty() {
        info!("moved {} boot module(s) to the top", moved.len());
    }
}

/// The boot modules, with boot packs expanded into their files.
fn boot_modules(info: &BootInfo) -> Vec<(String, &'static [u8])> {
    let mut out = Vec::new();
    for m in info.modules.as_slice() {
        // SAFETY: the boot paths report only modules that stay mapped and reserved.
        let bytes = unsafe { m.bytes() };
        if Pack::is_pack(bytes) {
            match Pack::parse(bytes) {
                Ok(p) => {
                    for (name, data) in p.entries() {
                        if name != pack::CMDLINE_ENTRY {
                            info!(
                                "boot module `{name}`: {} bytes (from pack `{}`)",
                                data.len(),
                                m.name()
                            );
                            out.push((String::from(name), data));
                        }
                    }
                }
                Err(e) => error!("boot module `{}`: {e}: ignored", m.name()),
            }
        } else {
            info!("boot module `{}`: {} bytes at {:#x}", m.name(), m.len, m.addr);
            out.push((String::from(m.name()), bytes));
        }
    }
    out
}

/// The command line carried in a boot pack, for boot paths without one of their own.
fn pack_cmdline(info: &BootInfo) -> Option<&'static str> {
    info.modules.as_slice().iter().find_map(|m| {
        // SAFETY: as in `boot_modules`.
        let bytes = unsafe { m.bytes() };
        let p = Pack::parse(bytes).ok()?;
        core::str::from_utf8(p.get(pack::CMDLINE_ENTRY)?).ok()
    })
}

/// Turns on the backend the CPU offers.
fn enable_backend(cpu: &cpu::CpuInfo) -> Option<Box<dyn Backend>> {
    match cpu.virt {
        cpu::Virt::Vmx(caps) => match VmxBackend::enable(&caps, cpu.gib_pages) {
            Ok(b) => {
                let c = b.controls();
                info!(
                    "vmx: on; controls pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}",
                    c.pin, c.proc, c.proc2, c.exit, c.entry
                );
                Some(Box::new(b))
            }
            Err(e) => {
                error!("vmx: cannot run partitions: {e}");
                None
            }
        },
        cpu::Virt::Svm(caps) => match crate::arch::svm::SvmBackend::enable(&caps) {
            Ok(b) => {
                info!("svm: on; {} ASIDs, nrip-save {}", caps.asids, caps.nrip_save);
                if !crate::arch::x86::lapic::timer_usable() {
                    warn!("svm: no usable host APIC timer: a guest that never exits keeps the CPU");
                }
                Some(Box::new(b))
            }
            Err(e) => {
                error!("svm: cannot run partitions: {e}");
                None
            }
        },
        cpu::Virt::None => {
            error!("this CPU offers neither VMX nor SVM: cannot run partitions");
            None
        }
    }
}

/// The partitions to run: from the `manifest` module, or one per image without one.
fn partition_configs(modules: &[(String, &'static [u8])]) -> Result<Vec<PartitionConfig>, String> {
    use crate::arch::x86::pins::Request;
    use crate::vmm::manifest::{self, Expect, ImageFormat, Role};
    let find = |name: &str| modules.iter().find(|(n, _)| n == name).map(|(_, d)| *d);
    let Some(text) = find(MANIFEST_MODULE) else {
        return Ok(modules
            .iter()
            .map(|(name, image)| PartitionConfig {
                name: name.clone(),
                image,
                format: ImageFormat::Elf64,
                initrd: None,
                modules: Vec::new(),
                memory: 16 << 20,
                vcpus: 1,
                cmdline: String::new(),
                expect: Expect::Exit,
                on_stop: manifest::OnStop::Destroy,
                management: false,
                keep_free: 0,
                devices: Vec::new(),
                cpus: None,
            })
            .collect());
    };
    let m = manifest::parse_bytes(text).map_err(|e| alloc::format!("{e}"))?;
    info!(
        "manifest `{}`: {} partition(s)",
        m.name.as_deref().unwrap_or("unnamed"),
        m.partitions.len()
    );
    let refuse = |p: &manifest::PartitionSpec, field: &str, why: &str| {
        alloc::format!("manifest line {}: partition \"{}\": field {field}: {why}", p.line, p.name)
    };
    m.partitions
        .iter()
        .map(|p| {
            let image = find(&p.image).ok_or_else(|| {
                refuse(p, "image", &alloc::format!("no boot module `{}`", p.image))
            })?;
            let initrd = match &p.initrd {
                Some(name) => Some(find(name).ok_or_else(|| {
                    refuse(p, "initrd", &alloc::format!("no boot module `{name}`"))
                })?),
                None => None,
            };
            let mut modules = Vec::new();
            for m in &p.modules {
                let data = find(&m.image).ok_or_else(|| {
                    refuse(p, "modules", &alloc::format!("no boot module `{}`", m.image))
                })?;
                modules.push(crate::vmm::config::BootModule { data, string: m.string.clone() });
            }
            for d in &p.devices {
                crate::vmm::passthrough::parse(d).map_err(|e| refuse(p, "devices", &e))?;
            }
            Ok(PartitionConfig {
                name: p.name.clone(),
                image,
                format: p.format,
                initrd,
                modules,
                memory: p.memory_bytes(),
                vcpus: p.vcpus,
                cmdline: p.cmdline.clone(),
                expect: p.expect,
                on_stop: p.on_stop,
                management: p.role == Role::Management,
                keep_free: 0,
                devices: p.devices.clone(),
                cpus: p.cpus.as_ref().map(|c| match c {
                    manifest::CpuRequest::Count(n) => Request::Count(*n as usize),
                    manifest::CpuRequest::List(l) => {
                        Request::List(l.iter().map(|&i| i as usize).collect())
                    }
                }),
            })
        })
        .collect()
}

/// Prints the final line and powers off.
pub fn finish(success: bool) -> ! {
    println!("{} {}", hvabi::exit::FINAL_LINE_PREFIX, if success { "ok" } else { "failed" });
    power::power_off(success)
}

fn fail() -> ! {
    finish(false)
}

/// Turns caching on, masks the legacy PICs (the hypervisor takes no device interrupts of its own yet) and turns
/// on CR4.OSXSAVE where the CPU has XSAVE, so guests may use XSETBV.
fn platform_quiet() {
    // SAFETY: clearing CR0.CD/NW turns normal caching on (firmware normally does this; a
    // CPU's reset value has both set); WBINVD first so no stale line survives (SDM Vol. 3A
    // §12.5.3).
    unsafe {
        core::arch::asm!("wbinvd");
        x86_64::registers::control::Cr0::update(|c| {
            c.remove(
                x86_64::registers::control::Cr0Flags::CACHE_DISABLE
                    | x86_64::registers::control::Cr0Flags::NOT_WRITE_THROUGH,
            )
        });
    }
    // IRQ 0-15 at vectors 0x20-0x2f, every line masked until a partition owns it.
    crate::arch::x86::pic::init();
    // SAFETY: every x86-64 CPU has FXSAVE/FXRSTOR and SSE; with CR4.OSFXSR they save and
    // restore the XMM registers too (SDM Vol. 3A §2.5), which switching vCPUs needs
    // (`vmm::fpu`). The hypervisor itself uses no SSE.
    unsafe {
        x86_64::registers::control::Cr4::update(|c| {
            c.insert(x86_64::registers::control::Cr4Flags::OSFXSR);
        })
    };
    if raw_cpuid::CpuId::new().get_feature_info().is_some_and(|f| f.has_xsave()) {
        // SAFETY: CPUID says XSAVE exists, so CR4.OSXSAVE may be set (SDM Vol. 3A §2.5).
        unsafe {
            x86_64::registers::control::Cr4::update(|c| {
                c.insert(x86_64::registers::control::Cr4Flags::OSXSAVE);
            })
        };
    }
}

/// Self-IPI round trips on the bare machine, ticks per round trip: a fixed IPI to this CPU's
/// own APIC (the wake-up vector, whose handler counts and ends it), taken at once with
/// interrupts on; the twin of the probe's `ipi-self` (`xtask/src/bench/ipi.rs`). `None`
/// without an APIC, or when an IPI got lost.
fn native_self_ipi() -> Option<u64> {
    use crate::arch::x86::{lapic, smp};
    const ROUNDS: u64 = 256;
    let me = lapic::id()?;
    let (before, t0) = (smp::wakes(), crate::arch::x86::instr::rdtsc());
    for k in 1..=ROUNDS {
        if !lapic::send_fixed(me, smp::WAKE_VECTOR) {
            return None;
        }
        smp::take_pending_interrupts();
        if smp::wakes() < before + k {
            return None;
        }
    }
    Some(crate::arch::x86::instr::rdtsc().wrapping_sub(t0) / ROUNDS)
}

/// The measurement loops run natively (no guest), printed as `BENCH-NATIVE name ticks`: the
/// baseline `cargo xtask bench` prints next to the guest's figures.
fn native_bench() {
    use hvabi::bench::*;
    let n = ITERATIONS;
    let scratch = console::COM1 + 7;
    println!("BENCH-NATIVE cpuid {}", ticks_per_op(n, cpuid_loop));
    let out = |n| {
        // SAFETY: COM1's scratch register holds nothing the console needs.
        unsafe { out_loop(n, scratch) }
    };
    println!("BENCH-NATIVE out {}", ticks_per_op(n, out));
    let mmio = |n| {
        // SAFETY: the local APIC version register (0xfee0_0030) is read-only, identity-mapped,
        // and reading it has no side effects.
        unsafe { mmio_read_loop(n, 0xfee0_0030) }
    };
    println!("BENCH-NATIVE mmio {}", ticks_per_op(n, mmio));
    if let Some(ticks) = native_self_ipi() {
        println!("BENCH-NATIVE ipi-self {ticks}");
    }
    // The CPU-bound loop over a heap buffer, as the bench guest runs it over its RAM.
    let layout = core::alloc::Layout::from_size_align(WALK_BYTES as usize, PAGE_SIZE as usize)
        .expect("a power-of-two alignment and a small size");
    // SAFETY: the layout has a non-zero size.
    let buf = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if buf.is_null() {
        println!("hypervisor: bench: no {} MiB of heap for the loop", WALK_BYTES >> 20);
        return;
    }
    // SAFETY: `buf` is WALK_BYTES of mapped heap memory, ours until freed below.
    let ticks = unsafe { walk(buf as u64) };
    // SAFETY: allocated above with this layout, not used after.
    unsafe { alloc::alloc::dealloc(buf, layout) };
    println!("BENCH-NATIVE loop {ticks}");
}
