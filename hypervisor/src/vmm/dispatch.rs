//! Exit handling, written once for both backends: each [`VmExit`] is emulated, forwarded to a
//! device, answered with an injected fault, or ends the partition with a report.

use super::cpuid::{Regs, guest_cpuid};
use super::decode::{self, MAX_INSN_LEN};
use super::exit::{Access, IoAccess, VmExit};
use super::hypercall;
use super::msr::{self, Place};
use super::partition::{InsnCache, Partition, State};
use super::profile::{self, Stage};
use super::vcpu::{CpuidSite, Event, reg};
use alloc::format;

/// What the run loop does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Enter the guest again.
    Continue,
    /// Let another partition run.
    Yield,
    /// The partition stopped (its state says how).
    Stopped,
    /// A call the machine carries out (management, channels); RIP not yet advanced.
    Admin(hvabi::hypercall::Call),
}

const CR4_VMXE: u64 = 1 << 13;
const RFLAGS_IF: u64 = 1 << 9;
const CR4_SMXE: u64 = 1 << 14;
const CR4_OSXSAVE: u64 = 1 << 18;

/// CR4 bits a guest may set (SDM Vol. 3A §2.5), VMXE and SMXE excluded: VME PVI TSD DE PSE PAE
/// MCE PGE PCE OSFXSR OSXMMEXCPT always; UMIP FSGSBASE PCIDE OSXSAVE SMEP SMAP where the CPU
/// has the feature (each is reserved, #GP on setting it, where it does not).
/// How a partition powered off, for [`State::Off`].
const OFF_BY_HLT: &str = "HLT with interrupts off";
const OFF_BY_ACPI: &str = "ACPI soft-off, S5";

fn cr4_guest_bits() -> u64 {
    let l1 = core::arch::x86_64::__cpuid_count(1, 0);
    let l7 = core::arch::x86_64::__cpuid_count(7, 0);
    let has = |reg: u32, bit: u32| reg & (1 << bit) != 0;
    [
        (has(l7.ecx, 2), 1 << 11),
        (has(l7.ebx, 0), 1 << 16),
        (has(l1.ecx, 17), 1 << 17),
        (has(l1.ecx, 26), CR4_OSXSAVE),
        (has(l7.ebx, 7), 1 << 20),
        (has(l7.ebx, 20), 1 << 21),
    ]
    .iter()
    .filter(|(present, _)| *present)
    .fold(0x7ff, |bits, (_, bit)| bits | bit)
}

/// Handles one exit.
pub fn handle(p: &mut Partition, exit: VmExit) -> Flow {
    p.stats.record(&exit);
    profile::mark(Stage::Statistics);
    p.last_exits.push(p.vcpu.rip(), exit);
    profile::mark(Stage::LastExits);
    match exit {
        VmExit::Cpuid => cpuid(p),
        VmExit::Rdmsr => rdmsr(p),
        VmExit::Wrmsr => wrmsr(p),
        VmExit::CrAccess { cr, write, gpr } => cr_access(p, cr, write, gpr),
        VmExit::Xsetbv => xsetbv(p),
        VmExit::CacheFlush => skip(p),
        VmExit::Hlt => {
            let flow = skip(p);
            if flow != Flow::Continue || p.interrupt_pending() {
                return flow;
            }
            if p.vcpu.rflags() & RFLAGS_IF == 0 {
                // Only NMI, SMI, INIT or reset wake a CPU halted with interrupts off (SDM
                // vol. 2 HLT), and no partition has a source of those: the vCPU has stopped
                // for good, which is how a kernel without ACPI powers off.
                p.flush_console();
                log::info!(
                    "partition {}: HLT with interrupts off at RIP {:#x}: halted for good",
                    p.name,
                    p.vcpu.rip()
                );
                p.state = State::Off(OFF_BY_HLT);
                Flow::Stopped
            } else if p.can_be_woken() {
                // Until an interrupt: a timer, a forwarded device line, a typed key, a
                // notification.
                p.state = State::Halted { until: p.next_deadline().unwrap_or(u64::MAX) };
                Flow::Yield
            } else {
                p.kill(format!(
                    "HLT at RIP {:#x} with no timer armed and no interrupt source: it would never wake",
                    p.vcpu.rip()
                ));
                Flow::Stopped
            }
        }
        VmExit::Hypercall => hypercall::handle(p),
        VmExit::Rdpmc => rdpmc(p),
        VmExit::VirtInstruction | VmExit::Unsupported => {
            p.refused += 1;
            log::info!(
                "partition {}: {} at RIP {:#x}: #UD injected",
                p.name,
                exit.name(),
                p.vcpu.rip()
            );
            p.vcpu.inject(Event::UD);
            Flow::Continue
        }
        VmExit::Io(io) => port_io(p, io),
        VmExit::Paging { gpa, access } => paging(p, gpa, access),
        VmExit::Preempted | VmExit::HostInterrupt => Flow::Yield,
        VmExit::InterruptWindow => {
            p.vcpu.set_interrupt_window_exiting(false);
            Flow::Continue
        }
        VmExit::TripleFault => {
            report_last_exits(p);
            p.kill(format!("triple fault at RIP {:#x}", p.vcpu.rip()));
            Flow::Stopped
        }
        VmExit::Init => {
            p.kill(format!("INIT signal at RIP {:#x}", p.vcpu.rip()));
            Flow::Stopped
        }
        VmExit::Unknown { code, qualification } => {
            report_last_exits(p);
            p.kill(format!(
                "unhandled exit {code:#x} (qualification {qualification:#x}) at RIP {:#x}",
                p.vcpu.rip()
            ));
            Flow::Stopped
        }
    }
}

/// A CPUID the fast path left (out of line: `guest_cpuid` is inlined, and the exits that are
/// not CPUID should not pay for its size in [`handle`]).
#[inline(never)]
fn cpuid(p: &mut Partition) -> Flow {
    let g = p.vcpu.gprs();
    let (leaf, sub) = (g.0[reg::RAX] as u32, g.0[reg::RCX] as u32);
    let h = core::arch::x86_64::__cpuid_count(leaf, sub);
    let osxsave = p.vcpu.cr(4) & CR4_OSXSAVE != 0;
    let r =
        guest_cpuid(leaf, sub, Regs { eax: h.eax, ebx: h.ebx, ecx: h.ecx, edx: h.edx }, osxsave);
    let g = p.vcpu.gprs();
    g.0[reg::RAX] = u64::from(r.eax);
    g.0[reg::RBX] = u64::from(r.ebx);
    g.0[reg::RCX] = u64::from(r.ecx);
    g.0[reg::RDX] = u64::from(r.edx);
    let decoded = p.vcpu.next_rip().is_none();
    let flow = skip(p);
    if decoded && let Some(c) = p.insn_cache {
        let host = p.ram.host_addr(c.gpa, u64::from(c.len));
        p.vcpu.set_cpuid_site(host.map(|host| CpuidSite {
            rip: c.rip,
            cr3: c.cr3,
            host,
            len: c.len,
            bytes: c.bytes,
        }));
    }
    flow
}

/// Prints the partition's last exits (oldest first), repeats folded.
pub fn report_last_exits(p: &Partition) {
    crate::println!("partition {}: last exits (oldest first):", p.name);
    let mut last: Option<(u64, VmExit, u32)> = None;
    let print = |(rip, e, n): (u64, VmExit, u32)| {
        if n > 1 {
            crate::println!("    RIP {rip:#x}: {e} (x{n})");
        } else {
            crate::println!("    RIP {rip:#x}: {e}");
        }
    };
    for (rip, e) in p.last_exits.iter() {
        match &mut last {
            Some((r, x, n)) if *r == rip && *x == e => *n += 1,
            _ => {
                if let Some(l) = last.take() {
                    print(l);
                }
                last = Some((rip, e, 1));
            }
        }
    }
    if let Some(l) = last {
        print(l);
    }
}

/// Reads up to 15 bytes of the instruction at the guest's RIP.
fn fetch(p: &Partition, buf: &mut [u8; MAX_INSN_LEN]) -> Option<usize> {
    let rip = p.vcpu.rip();
    let paging = p.vcpu.cr(0) & (1 << 31) != 0;
    let mut n = 0;
    while n < MAX_INSN_LEN {
        let la = rip.wrapping_add(n as u64);
        let gpa = if paging { p.ram.translate_4level(p.vcpu.cr(3), la)? } else { la };
        let in_page = (4096 - (la & 0xfff)) as usize;
        let take = in_page.min(MAX_INSN_LEN - n);
        match p.ram.slice(gpa, take as u64) {
            Ok(b) => buf[n..n + take].copy_from_slice(b),
            Err(_) if n > 0 => break,
            Err(_) => return None,
        }
        n += take;
    }
    Some(n)
}

/// The length of the instruction at RIP, decoded from guest memory (no next RIP from the
/// CPU): from [`InsnCache`] when the same bytes sit at the same place as last time.
fn decoded_len(p: &mut Partition) -> Option<usize> {
    let (rip, cr3) = (p.vcpu.rip(), p.vcpu.cr(3));
    if let Some(c) = p.insn_cache
        && c.rip == rip
        && c.cr3 == cr3
        && p.ram.slice(c.gpa, u64::from(c.len)).is_ok_and(|b| b == &c.bytes[..usize::from(c.len)])
    {
        return Some(usize::from(c.len));
    }
    let mut buf = [0; MAX_INSN_LEN];
    let n = fetch(p, &mut buf)?;
    let len = decode::insn_len(&buf[..n], p.vcpu.mode()).ok()?;
    let paging = p.vcpu.cr(0) & (1 << 31) != 0;
    let gpa = if paging { p.ram.translate_4level(cr3, rip) } else { Some(rip) };
    // Only an instruction inside one page has all its bytes at `gpa`.
    p.insn_cache = gpa.filter(|_| (rip & 0xfff) as usize + len <= 4096).map(|gpa| InsnCache {
        rip,
        cr3,
        gpa,
        len: len as u8,
        bytes: buf[..MAX_INSN_LEN].try_into().unwrap_or([0; MAX_INSN_LEN]),
    });
    Some(len)
}

/// Moves RIP past the instruction that exited and ends any interrupt shadow.
/// [`skip`] for the other handler modules.
pub fn skip_public(p: &mut Partition) -> Flow {
    skip(p)
}

fn skip(p: &mut Partition) -> Flow {
    let next = match p.vcpu.next_rip() {
        Some(n) => n,
        None => match decoded_len(p) {
            Some(len) => p.vcpu.rip() + len as u64,
            None => {
                p.kill(format!("cannot decode the instruction at RIP {:#x}", p.vcpu.rip()));
                return Flow::Stopped;
            }
        },
    };
    p.vcpu.set_rip(next);
    p.vcpu.clear_interrupt_shadow();
    Flow::Continue
}

fn refuse_gp(p: &mut Partition, what: core::fmt::Arguments<'_>) -> Flow {
    p.refused += 1;
    log::info!("partition {}: {what}: #GP injected", p.name);
    p.vcpu.inject(Event::GP0);
    Flow::Continue
}

fn rdmsr(p: &mut Partition) -> Flow {
    let m = p.vcpu.gprs().0[reg::RCX] as u32;
    let v = match msr::place(m, msr::host_vendor()) {
        Some(Place::Hardware(h)) => p.vcpu.msr(h),
        Some(Place::Software(i)) => p.msrs.get(i),
        Some(Place::Constant(c)) => c,
        Some(Place::Tsc) => crate::arch::x86::instr::rdtsc(),
        None => return refuse_gp(p, format_args!("RDMSR {m:#x} refused")),
    };
    let g = p.vcpu.gprs();
    g.0[reg::RAX] = v & 0xffff_ffff;
    g.0[reg::RDX] = v >> 32;
    skip(p)
}

/// RDPMC (SDM vol. 2B RDPMC; APM vol. 3 RDPMC): at CPL 0, or with CR4.PCE at any CPL, a
/// counter the CPUID the guest sees offers reads as its MSR does (AMD's legacy PerfCtr0-3 for
/// ECX 0-3, storage that never counts, `vmm/msr.rs`); anything else is #GP(0), as on a CPU
/// without that counter. Intel guests see no PMU (CPUID leaf 0xA is zero), so every RDPMC is
/// #GP(0) there.
fn rdpmc(p: &mut Partition) -> Flow {
    const CR4_PCE: u64 = 1 << 8;
    let ecx = p.vcpu.gprs().0[reg::RCX] as u32;
    if p.vcpu.cpl() != 0 && p.vcpu.cr(4) & CR4_PCE == 0 {
        return refuse_gp(p, format_args!("RDPMC at CPL {} without CR4.PCE", p.vcpu.cpl()));
    }
    let vendor = msr::host_vendor();
    let counter = match vendor {
        msr::Vendor::Amd if ecx < 4 => msr::place(msr::AMD_PERF_CTR0 + ecx, vendor),
        _ => None,
    };
    let Some(Place::Software(i)) = counter else {
        return refuse_gp(p, format_args!("RDPMC of counter {ecx:#x}, which it does not have"));
    };
    let v = p.msrs.get(i) & ((1 << 48) - 1);
    let g = p.vcpu.gprs();
    g.0[reg::RAX] = v & 0xffff_ffff;
    g.0[reg::RDX] = v >> 32;
    skip(p)
}

fn wrmsr(p: &mut Partition) -> Flow {
    let g = p.vcpu.gprs();
    let m = g.0[reg::RCX] as u32;
    let v = (g.0[reg::RDX] << 32) | (g.0[reg::RAX] & 0xffff_ffff);
    let Some(place) = msr::place(m, msr::host_vendor()) else {
        return refuse_gp(p, format_args!("WRMSR {m:#x} <- {v:#x} refused"));
    };
    let old = match place {
        Place::Hardware(h) => p.vcpu.msr(h),
        Place::Software(i) => p.msrs.get(i),
        _ => 0,
    };
    let v = match msr::check_write(m, v, old, &msr::WriteCtx::host(p.vcpu.cr(0))) {
        Ok(v) => v,
        Err(why) => {
            return refuse_gp(p, format_args!("WRMSR {m:#x} <- {v:#x} refused ({why})"));
        }
    };
    match place {
        Place::Hardware(h) => p.vcpu.set_msr(h, v),
        Place::Software(i) => p.msrs.set(i, v),
        Place::Constant(_) | Place::Tsc => {}
    }
    skip(p)
}

fn cr_access(p: &mut Partition, cr: u8, write: bool, gpr: Option<u8>) -> Flow {
    let gpr = match gpr {
        Some(g) => usize::from(g),
        None => {
            // The exit did not name the register (SVM without decode assists): decode it.
            let mut buf = [0; MAX_INSN_LEN];
            let insn = fetch(p, &mut buf)
                .and_then(|n| decode::decode_mov_cr(&buf[..n], p.vcpu.mode()).ok());
            match insn {
                Some(i) if i.cr == cr && i.write == write => usize::from(i.gpr),
                _ => {
                    p.kill(format!(
                        "CR{cr} exit at RIP {:#x}: the instruction is not a MOV CR{cr}",
                        p.vcpu.rip()
                    ));
                    return Flow::Stopped;
                }
            }
        }
    };
    if !write {
        let v = p.vcpu.cr(cr);
        p.vcpu.gprs().0[gpr] = v;
        return skip(p);
    }
    let v = p.vcpu.gprs().0[gpr];
    let long_mode = p.vcpu.msr(super::vcpu::HwMsr::Efer) & (1 << 10) != 0;
    let bad = match cr {
        0 => {
            if v >> 32 != 0 {
                Some("reserved CR0 bits")
            } else if v & (1 << 31) != 0 && v & 1 == 0 {
                Some("CR0.PG without CR0.PE")
            } else if v & (1 << 29) != 0 && v & (1 << 30) == 0 {
                Some("CR0.NW without CR0.CD")
            } else if long_mode && v & (1 << 31) == 0 {
                Some("leaving long mode is not supported")
            } else {
                None
            }
        }
        4 => {
            if v & (CR4_VMXE | CR4_SMXE) != 0 {
                Some("CR4.VMXE/SMXE: VMX and SMX are not offered")
            } else if v & !cr4_guest_bits() != 0 {
                Some("reserved CR4 bits")
            } else if long_mode && v & (1 << 5) == 0 {
                Some("clearing CR4.PAE in long mode")
            } else {
                None
            }
        }
        3 | 8 => None,
        _ => Some("no such control register"),
    };
    if let Some(why) = bad {
        return refuse_gp(p, format_args!("MOV CR{cr} <- {v:#x} ({why})"));
    }
    p.vcpu.set_cr(cr, v);
    skip(p)
}

fn xsetbv(p: &mut Partition) -> Flow {
    if p.vcpu.cr(4) & CR4_OSXSAVE == 0 {
        p.vcpu.inject(Event::UD);
        return Flow::Continue;
    }
    let g = p.vcpu.gprs();
    let (index, v) = (g.0[reg::RCX] as u32, (g.0[reg::RDX] << 32) | (g.0[reg::RAX] & 0xffff_ffff));
    let h = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = (u64::from(h.edx) << 32) | u64::from(h.eax);
    if let Err(why) = super::xcr0::check(index, v, supported) {
        return refuse_gp(p, format_args!("XSETBV XCR{index} <- {v:#x} ({why})"));
    }
    p.xcr0 = v;
    // SAFETY: the value passed every XSETBV check of the SDM (`xcr0::check`) against what the
    // CPU supports, the host runs with CR4.OSXSAVE set whenever a guest can have it (it is a
    // guest CR4 bit on top of the host's), and the host itself uses no extended state.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") v as u32, in("edx") (v >> 32) as u32)
    };
    skip(p)
}

fn port_io(p: &mut Partition, io: IoAccess) -> Flow {
    if io.string {
        return refuse_gp(p, format_args!("string I/O on port {:#x} is not emulated", io.port));
    }
    if p.config.management && io.write && io.port == hvabi::exit::QEMU_EXIT_PORT {
        // The management partition owns the machine: QEMU's isa-debug-exit, written by a
        // kernel made for the bare machine, powers its partition off with that status.
        let status = p.vcpu.gprs().0[reg::RAX] & 0xffff_ffff;
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
    if !pic && !p.io.claims(port) {
        log::debug!("partition {}: port {:#x} absent", p.name, io.port);
    }
    if io.write {
        let v = p.vcpu.gprs().0[reg::RAX];
        if pic {
            p.pic.write(io.port, v as u8);
        } else {
            p.io.write(port, io.size, v);
            p.drain_devices();
            if p.pc.as_ref().is_some_and(super::pc::PcDevices::reset_requested) {
                p.kill(format!("reset requested through port {:#x}", io.port));
                return Flow::Stopped;
            }
            if p.pc.as_ref().is_some_and(super::pc::PcDevices::poweroff_requested) {
                p.flush_console();
                log::info!("partition {}: powered off through ACPI (S5)", p.name);
                p.state = State::Off(OFF_BY_ACPI);
                return Flow::Stopped;
            }
        }
    } else {
        let v = if pic { u64::from(p.pic.read(io.port)) } else { p.io.read(port, io.size) };
        let rax = &mut p.vcpu.gprs().0[reg::RAX];
        *rax = match io.size {
            1 => (*rax & !0xff) | v,
            2 => (*rax & !0xffff) | v,
            _ => v & 0xffff_ffff,
        };
    }
    p.sync_irq_lines();
    skip(p)
}

fn paging(p: &mut Partition, gpa: u64, access: Access) -> Flow {
    if access != Access::Fetch && p.mmio.claims(gpa) {
        let mut buf = [0; MAX_INSN_LEN];
        let insn =
            fetch(p, &mut buf).and_then(|n| decode::decode_mmio(&buf[..n], p.vcpu.mode()).ok());
        let Some(insn) = insn else {
            p.kill(format!(
                "MMIO {access} of {gpa:#x} by an instruction it cannot emulate at RIP {:#x}",
                p.vcpu.rip()
            ));
            return Flow::Stopped;
        };
        let gprs = *p.vcpu.gprs();
        if let Some(v) = insn.store_value(|n| gprs.0[n as usize]) {
            p.mmio.write(gpa, insn.size, v);
        } else {
            let data = p.mmio.read(gpa, insn.size);
            if let super::decode::MmioOp::Load { dst, .. } = insn.op {
                let r = &mut p.vcpu.gprs().0[dst.index() as usize];
                *r = insn.load_result(*r, data).unwrap_or(*r);
            }
        }
        let rip = p.vcpu.rip() + insn.len as u64;
        p.vcpu.set_rip(rip);
        p.vcpu.clear_interrupt_shadow();
        return Flow::Continue;
    }
    report_last_exits(p);
    p.kill(format!(
        "{access} of guest-physical {gpa:#x} outside its RAM (size {:#x}) and devices, at RIP {:#x}",
        p.ram.size(),
        p.vcpu.rip()
    ));
    Flow::Stopped
}
