//! The place-holder of a vCPU whose backend object lives, or lived, on another host CPU.
//!
//! A partition whose vCPUs run on CPUs of their own (`machine::spread`) is built on its first
//! CPU, but vCPU k's VMCS or VMCB must be made, run and dropped on CPU k (a VMCS is current on
//! one logical processor and VMCLEAR must run there, SDM Vol. 3C §25.11.1; an ASID's TLB
//! entries and its owner table are per CPU, APM Vol. 2 §15.16). Its slot holds a [`Gone`]
//! until CPU k puts its own vCPU there, and again once CPU k took its vCPU back to drop it:
//! the partition's own drop (on the first CPU) then drops only place-holders.
//!
//! A [`Gone`] is never run (its slot's CPU runs the real one); what reads it gets zeros and
//! what writes it changes nothing, so that no path can reach another CPU's vCPU through it.

use super::decode::CpuMode;
use super::exit::VmExit;
use super::vcpu::{EntryError, Event, Gprs, HwMsr, InitialState, Vcpu};
use core::fmt;

/// A vCPU slot's place-holder (see the module's comment).
#[derive(Debug, Default)]
pub struct Gone {
    /// Scratch registers for [`Vcpu::gprs`], which must hand out something.
    gprs: Gprs,
}

/// What [`Gone::run`] answers: it has no guest to enter.
const NOT_HERE: EntryError = EntryError { what: "this vCPU runs on another host CPU", code: 0 };

impl Vcpu for Gone {
    fn run(&mut self) -> Result<VmExit, EntryError> {
        Err(NOT_HERE)
    }
    fn gprs(&mut self) -> &mut Gprs {
        &mut self.gprs
    }
    fn rip(&self) -> u64 {
        0
    }
    fn set_rip(&mut self, _rip: u64) {}
    fn rflags(&self) -> u64 {
        2
    }
    fn set_rflags(&mut self, _v: u64) {}
    fn next_rip(&self) -> Option<u64> {
        None
    }
    fn cr(&self, _n: u8) -> u64 {
        0
    }
    fn set_cr(&mut self, _n: u8, _v: u64) {}
    fn msr(&self, _m: HwMsr) -> u64 {
        0
    }
    fn set_msr(&mut self, _m: HwMsr, _v: u64) {}
    fn mode(&self) -> CpuMode {
        CpuMode::Real
    }
    fn cs_base(&self) -> u64 {
        0
    }
    fn cpl(&self) -> u8 {
        0
    }
    fn inject(&mut self, _e: Event) {}
    fn event_pending(&self) -> bool {
        false
    }
    fn interruptible(&self) -> bool {
        false
    }
    fn instruction_completed(&mut self) {}
    fn set_interrupt_window_exiting(&mut self, _on: bool) {}
    fn nmi_injectable(&self) -> bool {
        false
    }
    fn set_nmi_window_exiting(&mut self, _on: bool) {}
    fn set_timeslice(&mut self, _ticks: u64) {}
    fn pass_through_ports(&mut self, _first: u16, _count: u16) {}
    fn flush_second_level(&mut self) {}
    fn reset(&mut self, _s: &InitialState) {}
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(out, "(vCPU on another host CPU)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_holder_never_enters_a_guest_and_keeps_nothing() {
        let mut g = Gone::default();
        assert_eq!(g.run(), Err(NOT_HERE));
        g.set_rip(0x1234);
        g.set_cr(0, 1);
        assert_eq!((g.rip(), g.cr(0), g.interruptible()), (0, 0, false));
    }
}
