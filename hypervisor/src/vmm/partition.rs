//! A partition: its RAM, second-level table, vCPUs, device buses, console and statistics, and
//! how it is built from an image (the guest contract in `docs/guest-contract.md`). What each
//! vCPU has for itself is in [`VcpuSlot`].

use super::bus::{Bus, Sysinfo};
use super::exit::ExitStats;
use super::fpu::Fpu;
use super::memory::GuestRam;
use super::msr::SoftMsrs;
use super::platform::Platform;
use super::vcpu::{Backend, SecondLevel, VcpuConfig};
use super::vcpu_slot::earliest;
pub use super::vcpu_slot::{ExitRing, RunState, TAG_STRIDE, VcpuSlot, vcpu_tag};
use crate::arch::x86::paging::HostPages;
use crate::devices::pic8259::PicPair;
use crate::devices::uart16550::Uart16550;
use crate::mm::addr::{HostPhys, PAGE_SIZE, PAGE_SIZE_2M};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use hvabi::start::*;

pub use super::config::PartitionConfig;

/// Where a partition is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Built, waiting for the management partition's start call.
    Created,
    /// Paused by the management partition.
    Paused,
    Runnable,
    /// In HLT until the TSC reaches the deadline.
    Halted {
        until: u64,
    },
    /// Stopped with the guest's own shutdown status.
    Shutdown(u64),
    /// Powered off: HLT with interrupts off, which nothing (no NMI, no INIT) can end (how a
    /// kernel without ACPI powers off), or the ACPI soft-off request. Says which.
    Off(&'static str),
    /// Stopped by the hypervisor for what the guest did.
    Killed(String),
}

/// A partition.
pub struct Partition {
    pub id: u64,
    /// The VPID/ASID tag of its vCPUs.
    pub tag: u16,
    pub name: String,
    pub config: PartitionConfig,
    pub ram: GuestRam,
    /// Host frames allocated for its RAM (freed when it goes).
    owned: Vec<core::ops::Range<u64>>,
    /// Its RAM as guest-physical `(start, size)` blocks, as the second-level table maps it.
    pub map: Vec<(u64, u64)>,
    pub slat: Box<dyn SecondLevel>,
    /// Its vCPUs; vCPU 0 is the bootstrap processor, which the PIC and the channel
    /// notifications interrupt.
    pub vcpus: Vec<VcpuSlot>,
    /// The vCPU that ran last (whose management call [`Flow::Admin`] hands over), and from
    /// which the next slice looks for a runnable one.
    ///
    /// [`Flow::Admin`]: super::step::Flow::Admin
    pub current: usize,
    /// The vCPU an IPI just made runnable, set by [`Partition::send_ipi`] for the run loop
    /// (`vmm/run.rs`), which runs it next in the sender's slice (a directed yield).
    pub yield_to: Option<usize>,
    /// An exit reprogrammed a timer or an interrupt line (`run::rearm`): the run's end moves.
    pub rearm: bool,
    /// The partition's state; `Runnable` and `Halted` sum up its vCPUs' [`RunState`]s.
    pub state: State,
    pub stats: ExitStats,
    pub io: Bus,
    pub mmio: Bus,
    pub msrs: SoftMsrs,
    /// Its virtual 8259 pair: the UART on IRQ 4, owned host lines on theirs.
    pub pic: PicPair,
    /// The PC devices of a guest partition (PIT, RTC); the management partition has the
    /// machine's own.
    pub pc: Option<super::pc::PcDevices>,
    /// Host IRQ lines forwarded to this partition (the management partition's devices).
    pub irq_lines: u16,
    /// The management partition's virtual I/O APIC (`vmm::vioapic`).
    pub ioapic: Option<super::vioapic::VioApic>,
    /// Channels with an interrupt vector bound at this partition's end.
    pub bound_channels: u32,
    /// Host interrupts forwarded to it.
    pub irqs_forwarded: u64,
    /// Refused MSR accesses, VMX/SVM instructions and other violations the guest survived.
    pub refused: u64,
    console: Vec<u8>,
    /// The console output budget.
    console_limit: super::console_limit::ConsoleLimit,
    /// Recent console output, for the management partition's ConsoleRead.
    pub history: alloc::collections::VecDeque<u8>,
    /// The APIC ID of each vCPU's host CPU when its vCPUs run on CPUs of their own
    /// (`machine::spread`); empty when they share one ([`Partition::kick`]).
    pub hosts: Vec<u32>,
}

/// RAM blocks `(gpa, hpa, len)` to map, and the host frames allocated for them.
type RamBlocks = (Vec<(u64, u64, u64)>, Vec<core::ops::Range<u64>>);

/// The management partition's boot structures and first stack live in `[0, LOW_RAM_NEEDED)`
/// for the formats that put them at fixed addresses (the guest contract, Linux); a multiboot
/// kernel's go in pages it leaves free (`loader::place`), wherever they are.
const LOW_RAM_NEEDED: u64 = 0x8_0000;
/// The pages those fixed boot structures use, cleared before they are written.
const BOOT_AREA: u64 = 0x1_0000;

/// The heap has no room for a vCPU's FPU state.
const NO_HEAP: &str = "no heap left for a vCPU's FPU state";

/// Bytes of console output kept per partition for ConsoleRead.
pub const HISTORY_BYTES: usize = 16 * 1024;

/// Why a partition could not be built.
pub type BuildError = String;

impl Partition {
    /// Builds partition `id` from `config`: RAM, second-level table, image, boot structures,
    /// vCPU, devices. The VPID/ASID tag is `tag` (unique among live partitions).
    pub fn build(
        id: u64,
        tag: u16,
        config: PartitionConfig,
        backend: &mut dyn Backend,
        platform: &Platform,
    ) -> Result<Self, BuildError> {
        Self::build_as(id, tag, config, backend, platform, true)
    }

    /// [`Partition::build`]; `aps_here` false: vCPUs 1 and up get place-holders
    /// ([`super::vcpu_gone::Gone`]), each made on its own host CPU later (`machine::spread`).
    pub fn build_as(
        id: u64,
        tag: u16,
        config: PartitionConfig,
        backend: &mut dyn Backend,
        platform: &Platform,
        aps_here: bool,
    ) -> Result<Self, BuildError> {
        let (mut blocks, mut owned) = if config.management {
            Self::management_memory(&config, platform.low_ram_end)?
        } else {
            Self::guest_memory(config.memory)?
        };
        // The management partition's shadow ACPI tables (`firmware_acpi`) take the top page of
        // its conventional memory, which then is the firmware's, read-only, listed reserved.
        let acpi_tables = match (config.management, platform.firmware_rsdp) {
            (true, Some(rsdp)) if blocks[0].2 > LOW_RAM_NEEDED => {
                blocks[0].2 -= PAGE_SIZE;
                Some((rsdp, blocks[0].2))
            }
            _ => None,
        };
        let free_owned = || {
            for r in &owned {
                HostPages::free(HostPhys(r.start), (r.end - r.start) / PAGE_SIZE);
            }
        };
        let cleanup = |msg: String| {
            free_owned();
            msg
        };
        // The hypervisor never touches host page 0 (a null pointer), which the management
        // partition has at guest-physical 0; the guest has it all the same.
        let host_blocks: Vec<(u64, *mut u8, u64)> = blocks
            .iter()
            .map(|&(gpa, hpa, len)| {
                if hpa == 0 {
                    (gpa + PAGE_SIZE, PAGE_SIZE as *mut u8, len - PAGE_SIZE)
                } else {
                    (gpa, hpa as *mut u8, len)
                }
            })
            .collect();
        // SAFETY: every block is RAM allocated for this partition alone (or low memory the
        // hypervisor never uses, for the management partition), identity-mapped on the host.
        let mut ram = unsafe { GuestRam::from_blocks(&host_blocks) }
            .ok_or_else(|| cleanup("RAM blocks overlap".into()))?;
        if config.management {
            // RAM holds whatever it held, as on a machine after its firmware; only the boot
            // structures' pages start clear (a multiboot loader clears the pages it picks).
            if config.format != super::manifest::ImageFormat::Multiboot {
                ram.zero(PAGE_SIZE, BOOT_AREA - PAGE_SIZE).map_err(|e| cleanup(format!("{e}")))?;
            }
        } else {
            ram.zero(0, config.memory).map_err(|e| cleanup(format!("{e}")))?;
        }
        let mut slat = backend.new_second_level().map_err(|e| cleanup(e.into()))?;
        for &(gpa, hpa, len) in &blocks {
            slat.map(gpa, hpa, len).map_err(|e| cleanup(format!("second-level map: {e:?}")))?;
        }
        let map: Vec<(u64, u64)> = blocks.iter().map(|&(gpa, _, len)| (gpa, len)).collect();
        let firmware = if config.management {
            super::firmware::map_into(slat.as_mut(), &map, platform).map_err(cleanup)?
        } else {
            Vec::new()
        };
        let initial = super::image::load(&mut ram, &map, id, &config, platform).map_err(cleanup)?;
        let vcpus = super::vcpu_slot::check_vcpus(&config, tag).map_err(cleanup)?;
        // Each vCPU's local APIC, with APIC ID = its index; vCPU 0 is the bootstrap processor.
        let clock: alloc::rc::Rc<dyn crate::devices::clock::Clock> =
            alloc::rc::Rc::new(super::platform::HostClock { hz: platform.tsc_hz_or_nominal() });
        let lapic = |k: u32| super::vlapic::Vlapic::new(clock.clone(), k, k == 0);
        let fpu_method = super::fpu::Method::host();
        let fpu = Fpu::new(fpu_method).ok_or_else(|| cleanup(NO_HEAP.into()))?;
        let mut vcpu = backend
            .create_vcpu(&VcpuConfig { initial, slat_root: slat.root(), tag })
            .map_err(|e| cleanup(e.into()))?;
        // The application processors wait for a start-up IPI, in the INIT state.
        let mut slots = alloc::vec::Vec::with_capacity(vcpus as usize);
        for k in 1..vcpus {
            let config = VcpuConfig {
                initial: super::ipi::init_state(core::arch::x86_64::__cpuid(1).eax),
                slat_root: slat.root(),
                tag: vcpu_tag(tag, k),
            };
            let ap: Box<dyn super::vcpu::Vcpu> = if aps_here {
                backend.create_vcpu(&config).map_err(|e| cleanup(e.into()))?
            } else {
                Box::new(super::vcpu_gone::Gone::default())
            };
            let fpu = Fpu::new(fpu_method).ok_or_else(|| cleanup(NO_HEAP.into()))?;
            slots.push(VcpuSlot::new(ap, RunState::WaitForSipi, fpu, lapic(k)));
        }
        if vcpus > 1 && aps_here {
            // They share a CPU (not so on CPUs of their own, `machine::spread`): one spinning on PAUSE for another hands it the CPU
            // (`dispatch::pause`; docs/cpus.md).
            let on = slots
                .iter_mut()
                .fold(vcpu.set_pause_exiting(true), |on, s| s.vcpu.set_pause_exiting(true) && on);
            log::info!(
                "partition {}: {vcpus} vCPUs, PAUSE exits {}",
                config.name,
                if on { "on" } else { "not offered by the CPU" }
            );
        }
        let mut io = Bus::default();
        io.attach(0x3f8..0x400, Box::new(Uart16550::new()));
        let all_devices = config.devices.iter().any(|d| d == "all");
        let host_pm = super::host_pm::for_partition(&config, all_devices, platform);
        let keep: Vec<core::ops::RangeInclusive<u16>> =
            host_pm.iter().map(|&(port, _)| port..=port.saturating_add(1)).collect();
        // A management partition handed the machine (`all`) gets the PC devices the hypervisor
        // keeps, emulated; one handed a few devices gets those alone.
        let pc = if !config.management {
            Some(super::pc::PcDevices::attach(&mut io, platform, config.memory))
        } else if all_devices {
            Some(super::pc::PcDevices::attach_management(&mut io, platform, host_pm))
        } else {
            None
        };
        let mut mmio = Bus::default();
        mmio.attach(
            SYSINFO_GPA..SYSINFO_GPA + PAGE_SIZE,
            Box::new(Sysinfo { id, scratch: 0, reads: 0 }),
        );
        // ID 0, as QEMU's I/O APIC has (Bochs' has 1): the MADT the partition reads should
        // give the same.
        let ioapic = config.management.then(|| super::vioapic::attach(&mut mmio, 0));
        for w in firmware.iter().filter(|w| w.access == super::firmware::Access::ReadOnly) {
            mmio.attach(w.start..w.end, Box::new(super::firmware::RomWrites::default()));
        }
        let irq_lines = if config.management {
            // Every vCPU gets the same ports (the I/O bitmap is per vCPU).
            let mut all: Vec<&mut dyn super::vcpu::Vcpu> = alloc::vec![vcpu.as_mut()];
            slots.iter_mut().for_each(|s| all.push(s.vcpu.as_mut()));
            super::passthrough::hand_over(
                &config.devices,
                &mut all,
                slat.as_mut(),
                &mut io,
                platform.ram_top_below_4g,
                &keep,
            )
            .map_err(cleanup)?
        } else {
            0
        };
        super::firmware_acpi::map_facs(slat.as_mut(), platform, &firmware).map_err(cleanup)?;
        if let Some((rsdp, tables)) = acpi_tables {
            match super::firmware_acpi::install(slat.as_mut(), rsdp, tables, vcpus) {
                Ok(frame) => owned.push(frame..frame + PAGE_SIZE),
                Err(why) => log::warn!(
                    "partition {}: the firmware's MADT is not replaced: {why}",
                    config.name
                ),
            }
        }
        Ok(Self {
            id,
            tag,
            name: config.name.clone(),
            config,
            ram,
            owned,
            map,
            slat,
            vcpus: core::iter::once(VcpuSlot::new(vcpu, RunState::Runnable, fpu, lapic(0)))
                .chain(slots)
                .collect(),
            current: 0,
            yield_to: None,
            rearm: false,
            state: State::Runnable,
            stats: ExitStats::default(),
            io,
            mmio,
            msrs: SoftMsrs::default(),
            pic: PicPair::default(),
            pc,
            irq_lines,
            ioapic,
            bound_channels: 0,
            irqs_forwarded: 0,
            refused: 0,
            console: Vec::new(),
            console_limit: super::console_limit::ConsoleLimit::new(crate::arch::x86::instr::rdtsc()),
            history: alloc::collections::VecDeque::new(),
            hosts: Vec::new(),
        })
    }

    /// A guest's RAM: `size` bytes (a multiple of 2 MiB up to 1 GiB), host-contiguous and
    /// 2 MiB-aligned for large second-level pages, at guest-physical 0. Returns the mapped
    /// blocks `(gpa, hpa, len)` and the frames taken.
    fn guest_memory(size: u64) -> Result<RamBlocks, BuildError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE_2M) || size > (1 << 30) {
            return Err(format!(
                "memory {} MiB is not a multiple of 2 MiB up to 1 GiB",
                size >> 20
            ));
        }
        let hpa = crate::mm::frames::FRAMES
            .lock()
            .as_mut()
            .and_then(|f| f.alloc(size / PAGE_SIZE, PAGE_SIZE_2M))
            .ok_or_else(|| format!("no {} MiB of free host RAM", size >> 20))?;
        Ok((alloc::vec![(0, hpa.0, size)], alloc::vec![hpa.0..hpa.0 + size]))
    }

    /// The management partition's RAM, identity-mapped: the conventional memory below 640 KiB
    /// (its boot structures go there, as a PC loader's do) and the host RAM the hypervisor and
    /// the other partitions do not use, from the bottom up, leaving `keep_free` bytes for
    /// partitions created later; at most `memory` bytes when the manifest gives a size.
    fn management_memory(config: &PartitionConfig, low: u64) -> Result<RamBlocks, BuildError> {
        let fixed_low = config.format != super::manifest::ImageFormat::Multiboot;
        if fixed_low && low < LOW_RAM_NEEDED {
            return Err(format!(
                "the management partition's boot structures need usable RAM at [0, {LOW_RAM_NEEDED:#x}); the firmware's map has [0, {low:#x})"
            ));
        }
        if config.memory != 0 && !config.memory.is_multiple_of(PAGE_SIZE_2M) {
            return Err(format!("memory {} MiB is not a multiple of 2 MiB", config.memory >> 20));
        }
        let limit = if config.memory == 0 { u64::MAX } else { config.memory.saturating_sub(low) };
        let taken = crate::mm::frames::FRAMES
            .lock()
            .as_mut()
            .map(|f| f.take_lowest(limit, config.keep_free))
            .unwrap_or_default();
        if taken.is_empty() {
            return Err(format!(
                "no free host RAM beyond the {} MiB kept for other partitions",
                config.keep_free >> 20
            ));
        }
        // Conventional memory from 0, when there is more of it than page 0.
        let mut blocks = if low > PAGE_SIZE { alloc::vec![(0, 0, low)] } else { Vec::new() };
        blocks.extend(taken.iter().map(|r| (r.start, r.start, r.end - r.start)));
        Ok((blocks, taken))
    }

    /// Appends console bytes; complete lines go to COM1 prefixed with the partition's name
    /// (a partial line waits for [`Partition::show_partial_line`]).
    pub fn console_bytes(&mut self, bytes: &[u8]) {
        let now = crate::arch::x86::instr::rdtsc();
        let khz = u64::from(super::cpuid::tsc_khz());
        let n = self.console_limit.admit(now, khz, bytes.len() as u64) as usize;
        if n > 0 {
            self.note_dropped();
        }
        for &b in &bytes[..n] {
            if self.history.len() >= HISTORY_BYTES {
                self.history.pop_front();
            }
            self.history.push_back(b);
            if b == b'\n' {
                self.emit_console(true);
            } else if b != b'\r' {
                self.console.push(b);
                if self.console.len() >= 200 {
                    self.flush_console();
                }
            }
        }
    }

    /// Shows what is buffered of the current line without ending it (a prompt, an echoed
    /// key); the rest of the line follows it on COM1.
    pub fn show_partial_line(&mut self) {
        if !self.console.is_empty() {
            self.emit_console(false);
        }
    }

    fn emit_console(&mut self, end: bool) {
        let text = String::from_utf8_lossy(&self.console);
        crate::console::write_partition_line(self.id, &format!("[{}] ", self.name), &text, end);
        self.console.clear();
    }

    /// Prints what is buffered of the current console line and ends it, and what the rate
    /// limit dropped.
    pub fn flush_console(&mut self) {
        if !self.console.is_empty() {
            self.emit_console(true);
        }
        self.note_dropped();
    }

    /// Says how much console output the rate limit dropped since it last said
    /// ([`super::console_limit`]).
    fn note_dropped(&mut self) {
        let dropped = self.console_limit.take_dropped();
        if dropped > 0 {
            if !self.console.is_empty() {
                self.emit_console(true);
            }
            let note = format!("[{dropped} bytes dropped]");
            crate::console::write_partition_line(
                self.id,
                &format!("[{}] ", self.name),
                &note,
                true,
            );
        }
    }

    /// Moves the UART's output to the console.
    pub fn drain_devices(&mut self) {
        let mut out = Vec::new();
        self.io.take_output(&mut out);
        if !out.is_empty() {
            self.console_bytes(&out);
        }
    }

    /// Copies device interrupt outputs to the virtual PIC's inputs (the UART on IRQ 4), and to
    /// the I/O APIC's where the partition has one (pin 4: a PC wires ISA lines to both).
    #[inline]
    pub fn sync_irq_lines(&mut self) {
        if let Some(u) = self.io.uart() {
            let line = u.irq_line();
            self.pic.set_irq(4, line);
            if self.ioapic.is_some() {
                self.uart_to_ioapic(line);
            }
        }
    }

    /// The UART's IRQ 4 at the I/O APIC's pin 4 (out of line: guests have no I/O APIC).
    #[inline(never)]
    fn uart_to_ioapic(&mut self, line: bool) {
        super::vioapic::set_line(self, 4, line);
    }

    /// True when an interrupt waits that vCPU `v` could take once it sets RFLAGS.IF: its own
    /// vectors and, for vCPU 0, the PIC's.
    pub fn interrupt_pending_for(&self, v: usize) -> bool {
        let slot = &self.vcpus[v];
        let pic = (v == 0).then_some(&self.pic);
        slot.lapic.nmi_pending()
            || super::interrupts::next(&slot.vectors, pic, &slot.lapic).is_some()
    }

    /// True when an interrupt waits for any halted or runnable vCPU (the machine wakes a
    /// halted partition for it).
    pub fn interrupt_pending(&self) -> bool {
        (0..self.vcpus.len()).any(|v| !self.vcpus[v].run.parked() && self.interrupt_pending_for(v))
    }

    /// True when something could still interrupt vCPU `v` by itself: its timer, its pending
    /// vectors and, for vCPU 0, a bound channel, or an unmasked PIC line with a source behind
    /// it (its UART, a forwarded host line, the PIT and RTC); for any vCPU of a partition with
    /// an I/O APIC, such a line unmasked at its pin (the guest routes it to any vCPU).
    pub fn can_be_woken(&self, v: usize) -> bool {
        let slot = &self.vcpus[v];
        if slot.timer.is_some()
            || slot.lapic.next_deadline().is_some()
            || self.interrupt_pending_for(v)
        {
            return true;
        }
        let wired = self.irq_lines | (1 << 4);
        let unmasked = if v == 0 { self.unmasked_irqs() } else { self.ioapic_unmasked() };
        (v == 0 && self.bound_channels > 0)
            || self.pc.as_ref().is_some_and(|pc| pc.can_wake(unmasked))
            || unmasked & wired != 0
    }

    /// The earliest TSC at which something raises an interrupt for vCPU `v` by itself (its
    /// timer hypercall's deadline, its local APIC timer; the PIT's next tick for vCPU 0, and
    /// for any vCPU through an I/O APIC), for its wake-up from HLT.
    pub fn next_deadline_for(&self, v: usize) -> Option<u64> {
        let slot = &self.vcpus[v];
        let devices = if v == 0 || self.ioapic.is_some() { self.device_deadline() } else { None };
        earliest(devices, slot.deadline())
    }

    /// The earliest TSC at which something raises an interrupt by itself, for any vCPU (the
    /// length of a time slice).
    pub fn next_deadline(&self) -> Option<u64> {
        // A plain loop: this runs once per slice.
        let mut t = self.device_deadline();
        for s in &self.vcpus {
            t = earliest(t, s.deadline());
        }
        t
    }

    /// When the PC devices' next interrupt comes (the PIT's next tick through an unmasked line).
    fn device_deadline(&self) -> Option<u64> {
        let pc = self.pc.as_ref()?;
        pc.next_interrupt(self.unmasked_irqs())
    }

    /// The ISA IRQ lines (bit n: IRQ n) that reach a vCPU: unmasked at the 8259 pair or, for a
    /// partition with an I/O APIC, at its pin (`vioapic::unmasked_lines`).
    fn unmasked_irqs(&self) -> u16 {
        self.pic.unmasked() | self.ioapic_unmasked()
    }

    /// The ISA IRQ lines unmasked at the I/O APIC's pins (none without one).
    fn ioapic_unmasked(&self) -> u16 {
        self.ioapic.as_ref().map_or(0, super::vioapic::unmasked_lines)
    }

    /// Moves what came due into the interrupt inputs: each vCPU's timer hypercall vector and
    /// local APIC timer, the PC devices' IRQ lines.
    pub fn tick(&mut self, now: u64) {
        for slot in &mut self.vcpus {
            slot.tick(now);
        }
        self.tick_devices(now);
    }

    /// The PC devices' [`PcDevices::tick`](super::pc::PcDevices::tick); a PIT period that ended
    /// is an edge on the I/O APIC's pin 2 as well, where the partition has one.
    #[inline]
    fn tick_devices(&mut self, now: u64) {
        let Some(pc) = &self.pc else { return };
        pc.tick(now, &mut self.pic);
        // The run loop ticks the devices before every entry too (`run::deliver_events`): an
        // edge it found waits for this, at the start of the next slice, which the PIT's
        // deadline ends (`run::slice_ticks`).
        if self.ioapic.is_some() && pc.take_irq0_edge() {
            super::vioapic::set_line(self, 0, true);
            super::vioapic::set_line(self, 0, false);
        }
    }

    /// Raises `vector` at vCPU 0 (channel notifications).
    pub fn raise_vector(&mut self, vector: u8) {
        self.vcpus[0].vectors.set(vector);
    }

    /// Flushes every vCPU's translations through the second-level table (a mapping went).
    pub fn flush_second_level(&mut self) {
        for slot in &mut self.vcpus {
            slot.vcpu.flush_second_level();
        }
    }

    /// Stops the partition for something it did.
    pub fn kill(&mut self, why: String) {
        self.flush_console();
        log::warn!("partition {}: stopped: {why}", self.name);
        self.state = State::Killed(why);
    }

    /// True once the partition no longer runs.
    pub fn stopped(&self) -> bool {
        matches!(self.state, State::Shutdown(_) | State::Killed(_) | State::Off(_))
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for r in &self.owned {
            HostPages::free(HostPhys(r.start), (r.end - r.start) / PAGE_SIZE);
        }
    }
}
