//! Exit handling, written once for both backends: each [`VmExit`] is emulated, forwarded to a
//! device, answered with an injected fault, or ends the partition with a report.

use super::cpuid::{Regs, VcpuCpuid, host_max_basic, vcpu_cpuid};
use super::cr::{self, CR4_OSXSAVE};
use super::decode::{self, DecodeError, MAX_INSN_LEN};
use super::exit::{Access, IoAccess, VmExit};
use super::hypercall;
use super::msr::{self, Place};
use super::partition::{Partition, RunState, State};
pub use super::step::Flow;
pub use super::step::report_last_exits;
use super::step::{
    completed, fault_or_kill, fetch_at_rip, fetch_at_rip_of, forget_code_sites, linear_rip, raise,
    refuse_gp, skip,
};
use super::vcpu::{Event, reg};
use alloc::format;

const RFLAGS_IF: u64 = 1 << 9;

/// How a partition powered off, for [`State::Off`].
const OFF_BY_HLT: &str = "HLT with interrupts off";
const OFF_BY_ACPI: &str = "ACPI soft-off, S5";

/// Handles one exit of vCPU `vc` (the run loop has counted it in the statistics and pushed it
/// on the vCPU's last exits, where it holds the vCPU already).
pub fn handle(p: &mut Partition, vc: usize, exit: VmExit) -> Flow {
    match exit {
        VmExit::Cpuid => cpuid(p, vc),
        VmExit::Rdmsr => rdmsr(p, vc),
        VmExit::Wrmsr => {
            let flow = wrmsr(p, vc);
            parked_yields(p, vc, flow)
        }
        VmExit::CrAccess { cr, write, gpr } => cr_access(p, vc, cr, write, gpr),
        VmExit::Xsetbv => xsetbv(p, vc),
        VmExit::CacheFlush => skip(p, vc),
        VmExit::Hlt => hlt(p, vc),
        VmExit::Hypercall => hypercall::handle(p, vc),
        VmExit::Rdpmc => rdpmc(p, vc),
        VmExit::Pause => pause(p, vc),
        VmExit::VirtInstruction | VmExit::Unsupported => {
            p.refused += 1;
            log::info!(
                "partition {}: {} at RIP {:#x}: #UD injected",
                p.name,
                exit.name(),
                p.vcpus[vc].vcpu.rip()
            );
            raise(p, vc, Event::UD);
            Flow::Continue
        }
        VmExit::Io(io) => port_io(p, vc, io),
        VmExit::Paging { gpa, access } => paging(p, vc, gpa, access),
        VmExit::Preempted | VmExit::HostInterrupt => Flow::Yield,
        VmExit::InterruptWindow => {
            p.vcpus[vc].vcpu.set_interrupt_window_exiting(false);
            Flow::Continue
        }
        VmExit::TripleFault => {
            report_last_exits(p, vc);
            p.kill(format!("triple fault at RIP {:#x}", p.vcpus[vc].vcpu.rip()));
            Flow::Stopped
        }
        VmExit::Init => {
            p.kill(format!("INIT signal at RIP {:#x}", p.vcpus[vc].vcpu.rip()));
            Flow::Stopped
        }
        VmExit::Unknown { code, qualification } => {
            report_last_exits(p, vc);
            p.kill(format!(
                "unhandled exit {code:#x} (qualification {qualification:#x}) at RIP {:#x}",
                p.vcpus[vc].vcpu.rip()
            ));
            Flow::Stopped
        }
    }
}

/// After an exit that may have sent an IPI (an ICR write through WRMSR or the APIC page): an
/// INIT to vCPU 0 stopped the partition; a vCPU that sent itself INIT waits for a SIPI, so its
/// slice ends; one whose IPI gave another
/// vCPU of its CPU work ends its slice for it, the write completed (a directed yield:
/// [`Partition::yield_to`], `vmm/run.rs`).
#[inline]
fn parked_yields(p: &Partition, vc: usize, flow: Flow) -> Flow {
    if p.stopped() {
        // Its IPI stopped the partition (an INIT to vCPU 0 is a reset).
        return Flow::Stopped;
    }
    let ended = p.vcpus[vc].run != RunState::Runnable || p.yield_to.is_some();
    if flow == Flow::Continue && ended { Flow::Yield } else { flow }
}

/// HLT (SDM Vol. 2A HLT): vCPU `vc` waits for an interrupt, or for good with interrupts off.
fn hlt(p: &mut Partition, vc: usize) -> Flow {
    let flow = skip(p, vc);
    if flow != Flow::Continue || p.interrupt_pending_for(vc) {
        return flow;
    }
    // Another vCPU that still runs (or will, on an interrupt) could wake this one by an IPI.
    let others = (0..p.vcpus.len()).any(|o| o != vc && !p.vcpus[o].run.parked());
    if p.vcpus[vc].vcpu.rflags() & RFLAGS_IF == 0 {
        // Only NMI, SMI, INIT or reset wake a CPU halted with interrupts off (SDM vol. 2
        // HLT), and only another vCPU's IPI is a source of those: with no other vCPU left
        // running, the partition has stopped for good, which is how a kernel without ACPI
        // powers off.
        p.vcpus[vc].run = RunState::Stopped;
        if others {
            return Flow::Yield;
        }
        p.flush_console();
        log::info!(
            "partition {}: HLT with interrupts off at RIP {:#x}: halted for good",
            p.name,
            p.vcpus[vc].vcpu.rip()
        );
        p.state = State::Off(OFF_BY_HLT);
        Flow::Stopped
    } else if p.can_be_woken(vc) || others {
        // Until an interrupt: a timer, a forwarded device line, a typed key, a notification,
        // an IPI.
        p.vcpus[vc].run = RunState::Halted { until: p.next_deadline_for(vc).unwrap_or(u64::MAX) };
        Flow::Yield
    } else {
        report_last_exits(p, vc);
        p.kill(format!(
            "HLT at RIP {:#x} with no timer armed and no interrupt source: it would never wake",
            p.vcpus[vc].vcpu.rip()
        ));
        Flow::Stopped
    }
}

/// A PAUSE that spins (PAUSE-loop exiting, the PAUSE intercept: only in partitions of several
/// vCPUs, `Partition::build`): the vCPU waits for something another vCPU of its CPU must do
/// (release a lock, answer an IPI), so the next runnable one gets the rest of the turn
/// ([`Partition::yield_to`], `vmm/run.rs`). With none runnable it goes on spinning.
fn pause(p: &mut Partition, vc: usize) -> Flow {
    let flow = skip(p, vc);
    let n = p.vcpus.len();
    let other = super::vcpu_slot::next_runnable(n, (vc + 1) % n, |v| {
        v != vc && p.vcpus[v].run == RunState::Runnable
    });
    match other {
        Some(v) if flow == Flow::Continue => {
            p.yield_to = Some(v);
            Flow::Yield
        }
        _ => flow,
    }
}

/// A CPUID the fast path left (out of line: `guest_cpuid` is inlined, and the exits that are
/// not CPUID should not pay for its size in [`handle`]).
#[inline(never)]
fn cpuid(p: &mut Partition, vc: usize) -> Flow {
    let g = p.vcpus[vc].vcpu.gprs();
    let (leaf, sub) = (g.0[reg::RAX] as u32, g.0[reg::RCX] as u32);
    let h = core::arch::x86_64::__cpuid_count(leaf, sub);
    // The APIC ID is the vCPU's index, as the partition's MADT lists it (`vmm/vlapic.rs`).
    let who = VcpuCpuid {
        apic_id: vc as u32,
        vcpus: p.vcpus.len() as u32,
        apic_enabled: p.vcpus[vc].lapic.enabled(),
        osxsave: p.vcpus[vc].vcpu.cr(4) & CR4_OSXSAVE != 0,
        max_basic: host_max_basic(),
    };
    let r = vcpu_cpuid(leaf, sub, Regs { eax: h.eax, ebx: h.ebx, ecx: h.ecx, edx: h.edx }, &who);
    let g = p.vcpus[vc].vcpu.gprs();
    g.0[reg::RAX] = u64::from(r.eax);
    g.0[reg::RBX] = u64::from(r.ebx);
    g.0[reg::RCX] = u64::from(r.ecx);
    g.0[reg::RDX] = u64::from(r.edx);
    // The backend's fast path finds the site by RIP: only where RIP is the linear address.
    let decoded =
        p.vcpus[vc].vcpu.next_rip().is_none() && linear_rip(p, vc) == p.vcpus[vc].vcpu.rip();
    let flow = skip(p, vc);
    if decoded {
        let slot = &mut p.vcpus[vc];
        slot.vcpu.set_cpuid_site(slot.insn_cache);
    }
    flow
}

fn rdmsr(p: &mut Partition, vc: usize) -> Flow {
    let m = p.vcpus[vc].vcpu.gprs().0[reg::RCX] as u32;
    let v = match msr::place(m, msr::host_vendor()) {
        Some(Place::Hardware(h)) => p.vcpus[vc].vcpu.msr(h),
        Some(Place::Software(i)) => p.msrs.get(i),
        Some(Place::Constant(c)) => c,
        Some(Place::Tsc) => crate::arch::x86::instr::rdtsc(),
        Some(Place::Apic) => match super::vlapic::rdmsr(p, vc, m) {
            Some(v) => v,
            None => {
                return refuse_gp(p, vc, format_args!("RDMSR {m:#x} refused (local APIC)"));
            }
        },
        None => return refuse_gp(p, vc, format_args!("RDMSR {m:#x} refused")),
    };
    let g = p.vcpus[vc].vcpu.gprs();
    g.0[reg::RAX] = v & 0xffff_ffff;
    g.0[reg::RDX] = v >> 32;
    skip(p, vc)
}

/// RDPMC (SDM vol. 2B RDPMC; APM vol. 3 RDPMC): at CPL 0, or with CR4.PCE at any CPL, a
/// counter the CPUID the guest sees offers reads as its MSR does (AMD's legacy PerfCtr0-3 for
/// ECX 0-3, storage that never counts, `vmm/msr.rs`); anything else is #GP(0), as on a CPU
/// without that counter. Intel guests see no PMU (CPUID leaf 0xA is zero), so every RDPMC is
/// #GP(0) there.
fn rdpmc(p: &mut Partition, vc: usize) -> Flow {
    const CR4_PCE: u64 = 1 << 8;
    let ecx = p.vcpus[vc].vcpu.gprs().0[reg::RCX] as u32;
    if p.vcpus[vc].vcpu.cpl() != 0 && p.vcpus[vc].vcpu.cr(4) & CR4_PCE == 0 {
        return refuse_gp(
            p,
            vc,
            format_args!("RDPMC at CPL {} without CR4.PCE", p.vcpus[vc].vcpu.cpl()),
        );
    }
    let vendor = msr::host_vendor();
    let counter = match vendor {
        msr::Vendor::Amd if ecx < 4 => msr::place(msr::AMD_PERF_CTR0 + ecx, vendor),
        _ => None,
    };
    let Some(Place::Software(i)) = counter else {
        return refuse_gp(p, vc, format_args!("RDPMC of counter {ecx:#x}, which it does not have"));
    };
    let v = p.msrs.get(i) & ((1 << 48) - 1);
    let g = p.vcpus[vc].vcpu.gprs();
    g.0[reg::RAX] = v & 0xffff_ffff;
    g.0[reg::RDX] = v >> 32;
    skip(p, vc)
}

fn wrmsr(p: &mut Partition, vc: usize) -> Flow {
    let g = p.vcpus[vc].vcpu.gprs();
    let m = g.0[reg::RCX] as u32;
    let v = (g.0[reg::RDX] << 32) | (g.0[reg::RAX] & 0xffff_ffff);
    let Some(place) = msr::place(m, msr::host_vendor()) else {
        return refuse_gp(p, vc, format_args!("WRMSR {m:#x} <- {v:#x} refused"));
    };
    if place == Place::Apic {
        if let Err(why) = super::vlapic::wrmsr(p, vc, m, v) {
            let what = format_args!("WRMSR {m:#x} <- {v:#x} refused ({why})");
            return refuse_gp(p, vc, what);
        }
        return skip(p, vc);
    }
    let old = match place {
        Place::Hardware(h) => p.vcpus[vc].vcpu.msr(h),
        Place::Software(i) => p.msrs.get(i),
        _ => 0,
    };
    let v = match msr::check_write(m, v, old, &msr::WriteCtx::host(p.vcpus[vc].vcpu.cr(0))) {
        Ok(v) => v,
        Err(why) => {
            return refuse_gp(p, vc, format_args!("WRMSR {m:#x} <- {v:#x} refused ({why})"));
        }
    };
    match place {
        Place::Hardware(h) => {
            if h == super::vcpu::HwMsr::Efer {
                forget_code_sites(p, vc);
            }
            p.vcpus[vc].vcpu.set_msr(h, v)
        }
        Place::Software(i) => p.msrs.set(i, v),
        Place::Constant(_) | Place::Tsc | Place::Apic => {}
    }
    skip(p, vc)
}

fn cr_access(p: &mut Partition, vc: usize, cr: u8, write: bool, gpr: Option<u8>) -> Flow {
    if let (false, Some(g)) = (write, gpr) {
        let v = p.vcpus[vc].vcpu.cr(cr);
        p.vcpus[vc].vcpu.gprs().0[usize::from(g)] = v;
        return skip(p, vc);
    }
    // The operand: the named register, else the decoded instruction's (SVM without decode
    // assists; and CLTS and LMSW, which the CR0 write intercept also catches, APM §15.9).
    let value = match gpr {
        Some(g) => p.vcpus[vc].vcpu.gprs().0[usize::from(g)],
        None => {
            let mut buf = [0; MAX_INSN_LEN];
            let got = fetch_at_rip(p, vc, &mut buf);
            let (bytes, mode) = (&buf[..got.n], p.vcpus[vc].vcpu.mode());
            match decode::decode_mov_cr(bytes, mode) {
                Ok(i) if i.cr == cr && !i.write && !write => {
                    let v = p.vcpus[vc].vcpu.cr(cr);
                    p.vcpus[vc].vcpu.gprs().0[usize::from(i.gpr)] = v;
                    return skip(p, vc);
                }
                Ok(i) if i.cr == cr && i.write && write => {
                    p.vcpus[vc].vcpu.gprs().0[usize::from(i.gpr)]
                }
                _ => match decode::decode_cr0_write(bytes, mode) {
                    Ok(decode::Cr0Write::Clts) if cr == 0 && write => {
                        p.vcpus[vc].vcpu.cr(0) & !cr::CR0_TS
                    }
                    Ok(decode::Cr0Write::Lmsw { gpr: Some(g) }) if cr == 0 && write => {
                        cr::lmsw(p.vcpus[vc].vcpu.cr(0), p.vcpus[vc].vcpu.gprs().0[usize::from(g)])
                    }
                    Err(e) => {
                        let what = format!("CR{cr} exit: not a MOV CR{cr}, CLTS or LMSW");
                        return fault_or_kill(p, vc, got, e, &what);
                    }
                    Ok(_) => {
                        let e = DecodeError::Unsupported { opcode: 0x0f01 };
                        let what =
                            format!("CR{cr} exit: not a MOV CR{cr}, CLTS or LMSW from a register");
                        return fault_or_kill(p, vc, got, e, &what);
                    }
                },
            }
        }
    };
    let state = cr::CrState {
        cr0: p.vcpus[vc].vcpu.cr(0),
        cr3: p.vcpus[vc].vcpu.cr(3),
        cr4: p.vcpus[vc].vcpu.cr(4),
        efer: p.vcpus[vc].vcpu.msr(super::vcpu::HwMsr::Efer),
        cr4_allowed: cr::cr4_guest_bits(),
        maxphyaddr: cr::maxphyaddr(),
    };
    let v = match cr::check_write(cr, value, &state) {
        Ok(v) => v,
        Err(why) => return refuse_gp(p, vc, format_args!("MOV CR{cr} <- {value:#x} ({why})")),
    };
    p.vcpus[vc].vcpu.set_cr(cr, v);
    if cr != 3 && cr != 8 {
        forget_code_sites(p, vc);
    }
    skip(p, vc)
}

fn xsetbv(p: &mut Partition, vc: usize) -> Flow {
    if p.vcpus[vc].vcpu.cr(4) & CR4_OSXSAVE == 0 {
        raise(p, vc, Event::UD);
        return Flow::Continue;
    }
    let g = p.vcpus[vc].vcpu.gprs();
    let (index, v) = (g.0[reg::RCX] as u32, (g.0[reg::RDX] << 32) | (g.0[reg::RAX] & 0xffff_ffff));
    let h = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = (u64::from(h.edx) << 32) | u64::from(h.eax);
    if let Err(why) = super::xcr0::check(index, v, supported) {
        return refuse_gp(p, vc, format_args!("XSETBV XCR{index} <- {v:#x} ({why})"));
    }
    p.vcpus[vc].fpu.xcr0 = v;
    // SAFETY: the value passed every XSETBV check of the SDM (`xcr0::check`) against what the
    // CPU supports, the host runs with CR4.OSXSAVE set whenever a guest can have it (it is a
    // guest CR4 bit on top of the host's), and the host itself uses no extended state.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") v as u32, in("edx") (v >> 32) as u32)
    };
    skip(p, vc)
}

fn port_io(p: &mut Partition, vc: usize, io: IoAccess) -> Flow {
    if io.string {
        return refuse_gp(p, vc, format_args!("string I/O on port {:#x} is not emulated", io.port));
    }
    if p.config.management && io.write && io.port == hvabi::exit::QEMU_EXIT_PORT {
        // The management partition owns the machine: QEMU's isa-debug-exit, written by a
        // kernel made for the bare machine, powers its partition off with that status.
        let status = p.vcpus[vc].vcpu.gprs().0[reg::RAX] & 0xffff_ffff;
        p.flush_console();
        log::info!("partition {}: wrote {status:#x} to the debug-exit port", p.name);
        p.state = State::Shutdown(status);
        return Flow::Stopped;
    }
    let port = u64::from(io.port);
    if let Some(pc) = &p.pc {
        pc.accessed(io.port);
    }
    // The partition's own 8259 pair (byte registers), else its port bus.
    let pic = matches!(io.port, 0x20 | 0x21 | 0xa0 | 0xa1) && io.size == 1;
    if !pic && log::log_enabled!(log::Level::Debug) && !p.io.claims(port) {
        log::debug!("partition {}: port {:#x} absent", p.name, io.port);
    }
    if io.write {
        // The 8259s' masks, the PIT's counters, the RTC's periodic rate: the next interrupt moves.
        p.rearm |= matches!(io.port, 0x20 | 0x21 | 0x40..=0x43 | 0x70 | 0x71 | 0xa0 | 0xa1);
        let v = p.vcpus[vc].vcpu.gprs().0[reg::RAX];
        if pic {
            p.pic.write(io.port, v as u8);
        } else {
            p.io.write(port, io.size, v);
            p.drain_devices();
            // The management partition's also: the machine's PM1 control (`vmm::host_pm`).
            let power = super::pc::PcDevices::controls_power(io.port)
                || (p.config.management
                    && p.pc.as_ref().is_some_and(|pc| pc.controls_power_at(io.port)));
            if power && power_request(p, io.port) {
                return Flow::Stopped;
            }
        }
    } else {
        let v = if pic { u64::from(p.pic.read(io.port)) } else { p.io.read(port, io.size) };
        let rax = &mut p.vcpus[vc].vcpu.gprs().0[reg::RAX];
        *rax = match io.size {
            1 => (*rax & !0xff) | v,
            2 => (*rax & !0xffff) | v,
            _ => v & 0xffff_ffff,
        };
    }
    p.sync_irq_lines();
    skip(p, vc)
}

/// After a write to a port that controls power: stops the partition when the guest asked for
/// a reset (the partition ends; its `on_stop` applies) or for ACPI soft-off; true then.
fn power_request(p: &mut Partition, port: u16) -> bool {
    let Some(pc) = &p.pc else { return false };
    if pc.reset_requested() {
        p.kill(format!("reset requested through port {port:#x}"));
    } else if pc.poweroff_requested() {
        p.flush_console();
        log::info!("partition {}: powered off through ACPI (S5)", p.name);
        p.state = State::Off(OFF_BY_ACPI);
    } else {
        return false;
    }
    true
}

fn paging(p: &mut Partition, vc: usize, gpa: u64, access: Access) -> Flow {
    let device = p.mmio.claims(gpa);
    // The local APIC page is no bus device: each vCPU sees its own APIC there.
    let apic = !device && super::vlapic::claims(gpa);
    if access != Access::Fetch && (device || apic) {
        let mut buf = [0; MAX_INSN_LEN];
        // The vCPU borrowed apart from the RAM: indexed once for the fetch and the decode.
        let Partition { vcpus, ram, .. } = &mut *p;
        let vcpu = &mut vcpus[vc].vcpu;
        let got = fetch_at_rip_of(ram, &**vcpu, &mut buf);
        let decoded = decode::decode_mmio(&buf[..got.n], vcpu.mode());
        let insn = match decoded {
            Ok(insn) => insn,
            Err(e) => {
                let what = format!("MMIO {access} of {gpa:#x} by an instruction it cannot emulate");
                return fault_or_kill(p, vc, got, e, &what);
            }
        };
        // The registers read in place (no copy of all sixteen).
        let gprs = vcpu.gprs();
        let stored = insn.store_value(|n| gprs.0[n as usize]);
        let mut loaded = None;
        if let Some(v) = stored {
            if apic {
                super::vlapic::mmio_write(p, vc, gpa, insn.size, v);
            } else {
                // The I/O APIC's masks decide whether the PIT's line reaches a vCPU.
                p.rearm |= p.ioapic.is_some();
                p.mmio.write(gpa, insn.size, v);
            }
        } else {
            let data = if apic {
                super::vlapic::mmio_read(p, vc, gpa, insn.size)
            } else {
                p.mmio.read(gpa, insn.size)
            };
            if let super::decode::MmioOp::Load { dst, .. } = insn.op {
                loaded = Some((dst.index() as usize, data));
            }
        }
        // The vCPU again (the APIC's handlers take the partition): the load's register, RIP.
        let vcpu = &mut p.vcpus[vc].vcpu;
        if let Some((dst, data)) = loaded {
            let r = &mut vcpu.gprs().0[dst];
            *r = insn.load_result(*r, data).unwrap_or(*r);
        }
        vcpu.set_rip(vcpu.rip() + insn.len as u64);
        completed(&mut **vcpu);
        // Only its own APIC's ICR can park this vCPU (an INIT to itself); the bus devices,
        // the I/O APIC included (it sends no INIT or SIPI), cannot.
        return if apic { parked_yields(p, vc, Flow::Continue) } else { Flow::Continue };
    }
    report_last_exits(p, vc);
    p.kill(format!(
        "{access} of guest-physical {gpa:#x} outside its RAM (size {:#x}) and devices, at RIP {:#x}",
        p.ram.size(),
        p.vcpus[vc].vcpu.rip()
    ));
    Flow::Stopped
}
