//! The instruction that exited, as the handlers of every exit need it: its length (from the
//! CPU's next RIP, the cached [`CodeSite`] or a decode of guest memory), stepping past it once
//! it is emulated (its interrupt shadow ends, single-step traps), and exceptions raised the way
//! the CPU raises them. Below `dispatch` and the hypercall and management handlers, which all
//! use it. Each takes the partition and the index of the vCPU whose exit it handles.

use super::code_site::{CodeSite, Walk};
use super::decode::{self, DecodeError, MAX_INSN_LEN};
use super::exit::VmExit;
use super::fetch::{self, Fetched};
use super::memory::GuestRam;
use super::partition::{Partition, VcpuSlot};
use super::vcpu::{Event, HwMsr, Vcpu};
use alloc::format;

const RFLAGS_RF: u64 = 1 << 16;
const EFER_NXE: u64 = 1 << 11;

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

/// Prints vCPU `v`'s last exits (oldest first), repeats folded.
pub fn report_last_exits(p: &Partition, v: usize) {
    if p.vcpus.len() > 1 {
        crate::println!("partition {} vCPU {v}: last exits (oldest first):", p.name);
    } else {
        crate::println!("partition {}: last exits (oldest first):", p.name);
    }
    let mut last: Option<(u64, VmExit, u32)> = None;
    let print = |(rip, e, n): (u64, VmExit, u32)| {
        if n > 1 {
            crate::println!("    RIP {rip:#x}: {e} (x{n})");
        } else {
            crate::println!("    RIP {rip:#x}: {e}");
        }
    };
    for (rip, e) in p.vcpus[v].last_exits.iter() {
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

/// The linear address of the instruction at vCPU `v`'s RIP ([`super::vcpu::Vcpu::linear_rip`]).
#[inline]
pub fn linear_rip(p: &Partition, v: usize) -> u64 {
    p.vcpus[v].vcpu.linear_rip()
}

/// Reads up to 15 bytes of the instruction at the guest's RIP ([`fetch::fetch`]).
#[inline]
pub fn fetch_at_rip(p: &Partition, v: usize, buf: &mut [u8; MAX_INSN_LEN]) -> Fetched {
    fetch_at_rip_of(&p.ram, &*p.vcpus[v].vcpu, buf)
}

/// [`fetch_at_rip`] for a vCPU borrowed apart from its partition (the run loop's split
/// borrows).
#[inline]
pub fn fetch_at_rip_of(ram: &GuestRam, vcpu: &dyn Vcpu, buf: &mut [u8; MAX_INSN_LEN]) -> Fetched {
    let paging = vcpu.cr(0) & (1 << 31) != 0;
    fetch::fetch(ram, vcpu.linear_rip(), vcpu.cr(3), paging, buf)
}

/// The bytes at RIP did not decode (`err`): when they ended before the instruction did, the
/// guest gets the fault fetching the next byte raises (issue 13, item 9); otherwise the
/// partition ends, with `what` in its report.
pub fn fault_or_kill(
    p: &mut Partition,
    v: usize,
    got: Fetched,
    err: DecodeError,
    what: &str,
) -> Flow {
    if let (DecodeError::Truncated, Some(fault)) = (err, got.fault) {
        let nxe = p.vcpus[v].vcpu.msr(HwMsr::Efer) & EFER_NXE != 0;
        let (e, cr2) = fault.event(p.vcpus[v].vcpu.cpl(), nxe);
        log::info!(
            "partition {}: the instruction at RIP {:#x} runs into {fault:?}: fault injected",
            p.name,
            p.vcpus[v].vcpu.rip()
        );
        if let Some(cr2) = cr2 {
            p.vcpus[v].vcpu.set_cr(2, cr2);
        }
        raise(p, v, e);
        return Flow::Continue;
    }
    p.kill(format!("{what} at RIP {:#x}: {err}", p.vcpus[v].vcpu.rip()));
    Flow::Stopped
}

/// The length of the instruction at linear address `rip` under `cr3` when the vCPU's
/// [`CodeSite`] cache still holds that instruction (the same bytes there).
#[inline(always)]
fn cached_len(slot: &VcpuSlot, rip: u64, cr3: u64) -> Option<usize> {
    let c = slot.insn_cache.as_ref()?;
    // SAFETY: the site was captured from this partition's RAM, which lives as long as it.
    unsafe { c.still_valid(rip, cr3) }.then_some(usize::from(c.len))
}

/// [`skip`] past the [`CodeSite`] cache: decodes the instruction at linear address `rip` (under
/// `cr3`) from guest memory and caches its site.
#[inline(never)]
fn decode_len_at(p: &mut Partition, v: usize, rip: u64, cr3: u64) -> Result<usize, Flow> {
    // The vCPU borrowed apart from the RAM: indexed once.
    let Partition { vcpus, ram, .. } = &mut *p;
    let slot = &mut vcpus[v];
    // One walk serves the fetch (when all 15 bytes lie in one page) and the new site.
    let paging = slot.vcpu.cr(0) & (1 << 31) != 0;
    let walk = Walk::new(ram, rip, cr3, paging);
    let mut buf = [0; MAX_INSN_LEN];
    let in_page = MAX_INSN_LEN.min((4096 - (rip & 0xfff)) as usize);
    let got = match walk.map(|w| ram.slice(w.gpa, in_page as u64)) {
        Some(Ok(b)) if in_page == MAX_INSN_LEN => {
            buf.copy_from_slice(b);
            Fetched { n: MAX_INSN_LEN, fault: None }
        }
        _ => fetch_at_rip_of(ram, &*slot.vcpu, &mut buf),
    };
    match decode::insn_len(&buf[..got.n], slot.vcpu.mode()) {
        Ok(len) => {
            slot.insn_cache = walk.and_then(|w| CodeSite::from_walk(ram, rip, cr3, &w, len));
            Ok(len)
        }
        Err(e) => Err(fault_or_kill(p, v, got, e, "cannot decode the instruction")),
    }
}

/// Drops what the core cached about the guest's code: the paging mode may have changed (a
/// write to CR0, CR4 or EFER; see [`CodeSite`]).
pub fn forget_code_sites(p: &mut Partition, v: usize) {
    p.vcpus[v].insn_cache = None;
    p.vcpus[v].vcpu.set_cpuid_site(None);
}

/// Moves RIP past the instruction that exited and ends any interrupt shadow.
/// [`skip`] for the other handler modules.
pub fn skip_public(p: &mut Partition, v: usize) -> Flow {
    skip(p, v)
}

#[inline(always)]
pub fn skip(p: &mut Partition, v: usize) -> Flow {
    // The vCPU's slot once: this runs after nearly every emulated instruction.
    let slot = &mut p.vcpus[v];
    if let Some(next) = slot.vcpu.next_rip() {
        slot.vcpu.set_rip(next);
        completed(&mut *slot.vcpu);
        return Flow::Continue;
    }
    let (rip, cr3) = (slot.vcpu.linear_rip(), slot.vcpu.cr(3));
    if let Some(len) = cached_len(slot, rip, cr3) {
        step_over(&mut *slot.vcpu, len);
        return Flow::Continue;
    }
    match decode_len_at(p, v, rip, cr3) {
        Ok(len) => {
            step_over(&mut *p.vcpus[v].vcpu, len);
            Flow::Continue
        }
        Err(flow) => flow,
    }
}

/// Moves RIP `len` bytes on and ends the instruction ([`completed`]).
#[inline(always)]
fn step_over(vcpu: &mut dyn Vcpu, len: usize) {
    vcpu.set_rip(vcpu.rip() + len as u64);
    completed(vcpu);
}

/// An emulated instruction completed (RIP already past it): its interrupt shadow ends, and
/// under single-step the #DB trap follows (SDM Vol. 3B §17.3.1.4).
#[inline]
pub fn completed(vcpu: &mut dyn Vcpu) {
    vcpu.instruction_completed();
}

/// Injects exception `e` as the CPU would raise it: a fault saves RFLAGS with RF set (SDM
/// Vol. 3A §6.13; neither VM entry nor VMRUN does it for an injected event, SDM Vol. 3C
/// §27.6.1.1, APM Vol. 2 §15.20).
#[inline]
pub fn raise(p: &mut Partition, v: usize, e: Event) {
    if e.is_fault() {
        let rflags = p.vcpus[v].vcpu.rflags();
        p.vcpus[v].vcpu.set_rflags(rflags | RFLAGS_RF);
    }
    p.vcpus[v].vcpu.inject(e);
}

/// Refuses what vCPU `v` tried (`what`, for the log) with #GP(0), counted in the partition's
/// refused accesses. A guest can repeat a refused access at will (an RDMSR loop, APIC register
/// abuse): the log line is rate-limited by the vCPU's budget (`vmm/log_limit.rs`), so that it
/// neither floods the console every partition shares nor slows its CPU to the console's pace.
pub fn refuse_gp(p: &mut Partition, v: usize, what: core::fmt::Arguments<'_>) -> Flow {
    p.refused += 1;
    if let Some(note) = p.vcpus[v].lapic.log_admit() {
        log::info!("partition {}: {what}: #GP injected{note}", p.name);
    }
    raise(p, v, Event::GP0);
    Flow::Continue
}
