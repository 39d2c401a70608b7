//! A VMCS region and the typed access to the current VMCS.
//!
//! Only code holding a [`Current`] token (proof that this VMCS was made current by VMPTRLD) can
//! read or write fields; read-only exit fields have no write.

use super::fields::{Field, ReadOnly};
use super::instr::{self, VmFail};
use crate::arch::x86::paging::HostPages;
use crate::mm::addr::HostPhys;
use core::sync::atomic::{AtomicU64, Ordering};

/// Per CPU index: the physical address of the VMCS current on that CPU (0: none). The
/// current-VMCS pointer is per logical processor (SDM Vol. 3C §25.1): one record per CPU, or
/// two CPUs loading their own VMCSs would each find the other's address and VMPTRLD again.
static CURRENT: [AtomicU64; crate::arch::x86::smp::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::arch::x86::smp::MAX_CPUS];

/// One VMCS region (SDM Vol. 3C §25.2): a 4 KiB page starting with the revision identifier.
/// Used on one CPU only, the one that made it.
#[derive(Debug)]
pub struct Vmcs {
    pa: HostPhys,
    /// The current-VMCS record of its CPU.
    current: &'static AtomicU64,
}

/// Proof that a VMCS is current; field access goes through it.
#[derive(Debug)]
pub struct Current(());

impl Vmcs {
    /// A fresh, clear VMCS, for use on CPU `cpu` (an index).
    pub fn new(revision: u32, cpu: usize) -> Result<Self, &'static str> {
        let pa = HostPages::alloc_zeroed(1).ok_or("out of memory for a VMCS")?;
        // SAFETY: the frame was just allocated for this VMCS.
        unsafe { HostPages::page_mut(pa)[..4].copy_from_slice(&revision.to_le_bytes()) };
        // SAFETY: the region is ours with the right revision identifier (SDM §25.11.3).
        unsafe { instr::vmclear(pa.0) }.map_err(|_| "VMCLEAR of a new VMCS failed")?;
        Ok(Self { pa, current: &CURRENT[cpu.min(CURRENT.len() - 1)] })
    }

    /// Makes this VMCS current (VMPTRLD), unless it already is. Always inlined, like the
    /// field accessors below: the entry and exit paths are made of these, and their length
    /// must not depend on the compiler's inlining budget for the function around them.
    #[inline(always)]
    pub fn load(&self) -> Result<Current, VmFail> {
        if self.current.load(Ordering::Relaxed) != self.pa.0 {
            // SAFETY: the region is ours, initialised by `new`.
            unsafe { instr::vmptrld(self.pa.0) }?;
            self.current.store(self.pa.0, Ordering::Relaxed);
        }
        Ok(Current(()))
    }
}

impl Drop for Vmcs {
    fn drop(&mut self) {
        // SAFETY: VMCLEAR flushes the CPU's cached copy before the frame is freed (§25.11.1).
        let _ = unsafe { instr::vmclear(self.pa.0) };
        let _ = self.current.compare_exchange(self.pa.0, 0, Ordering::Relaxed, Ordering::Relaxed);
        HostPages::free(self.pa, 1);
    }
}

impl Current {
    /// Reads a field. Failing here means the field does not exist on this CPU: a hypervisor bug.
    #[inline(always)]
    pub fn read(&self, f: Field) -> u64 {
        // SAFETY: a VMCS is current (this token exists); VMREAD does not change state.
        unsafe { instr::vmread_raw(f as u32) }.expect("VMREAD of a field the CPU has")
    }

    /// Reads an exit-information field.
    #[inline(always)]
    pub fn read_ro(&self, f: ReadOnly) -> u64 {
        // SAFETY: as `read`.
        unsafe { instr::vmread_raw(f as u32) }.expect("VMREAD of a field the CPU has")
    }

    /// Writes a field.
    #[inline(always)]
    pub fn write(&self, f: Field, v: u64) {
        // SAFETY: a VMCS is current; the fields reachable through `Field` hold guest state or
        // controls whose values the VM-entry checks validate, and host-state fields are only
        // written by the backend's setup with the host's real values.
        unsafe { instr::vmwrite_raw(f as u32, v) }.expect("VMWRITE of a writable field the CPU has")
    }
}
