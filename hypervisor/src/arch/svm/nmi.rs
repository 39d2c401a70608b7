//! NMI blocking on SVM without V_NMI (APM Vol. 2 §15.20, §15.21.4): the hypervisor tracks
//! it. An injected NMI sets it and turns on the IRET intercept; at that intercept (before the
//! IRET runs) a single step starts (RFLAGS.TF, #DB intercepted), and its #DB, right after the
//! IRET, ends the blocking and reports an NMI window. An interrupt shadow that holds an NMI
//! back is stepped over the same way. The guest's own TF and DR6 are kept: a #DB it would take
//! itself is still delivered.
//!
//! An event injected while the step's TF is still live (the stepped instruction has not run:
//! an exit came first, e.g. a host interrupt, or QEMU's PAUSE, which skips the single-step
//! trap) would push that TF with the event's frame, and the guest's IRET would bring it back
//! after the step ended (the #DB that smpvcpu saw at the instruction after `sti; pause; cli`:
//! an NMI injected under a shadow step, its IRET step merged into it, the popped TF left set).
//! The event is delivered at the boundary before the stepped instruction (APM Vol. 2 §15.20),
//! so the step is called off there ([`SvmVcpu::step_meets_event`]): the delivery ends an
//! interrupt shadow anyway, and the IRET intercept is armed again for an IRET not yet run.
//!
//! Limits: an IRET that faults inside the guest (a #GP, a not-present stack page) pushes the
//! hypervisor's TF with its frame, and the blocking ends at the next single-step trap; an NMI
//! that waits behind another injected event goes in at the next exit of any kind.

use super::{Event, I1, RFLAGS_TF, SvmVcpu, VmExit, code};

/// A single step the hypervisor runs (RFLAGS.TF set by it, #DB intercepted) to see the guest
/// past an IRET that ends NMI blocking or past an interrupt shadow that holds an NMI back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    /// The guest's own RFLAGS.TF and DR6 before the step.
    pub(super) guest_tf: bool,
    pub(super) dr6: u64,
    /// The stepped instruction is the IRET that ends NMI blocking.
    pub(super) after_iret: bool,
    /// The step began at that IRET: its trap comes with the RFLAGS the IRET popped, the
    /// guest's. Not so for an IRET step merged into a shadow step whose TF left with a native
    /// exception's frame ([`SvmVcpu::begin_step`]): that TF, ours, comes back at the trap.
    pub(super) popped: bool,
}

impl Step {
    /// What RFLAGS becomes when an event is injected before the stepped instruction: `None`
    /// when the step's TF is no longer live (the instruction ran, or a native exception took
    /// it into a frame whose IRET the step still waits for); otherwise RFLAGS with the guest's
    /// own TF, and the step is called off.
    pub(super) fn called_off_by_event(&self, rflags: u64) -> Option<u64> {
        if rflags & RFLAGS_TF == 0 {
            return None;
        }
        Some(if self.guest_tf { rflags } else { rflags & !RFLAGS_TF })
    }

    /// RFLAGS once the step's trap came and the guest's own TF was clear: after the stepped
    /// IRET, what it popped (the guest's); otherwise TF is still ours and goes.
    pub(super) fn rflags_after_trap(&self, rflags: u64) -> u64 {
        if self.popped { rflags } else { rflags & !RFLAGS_TF }
    }
}

/// Exception intercept bit of #DB (control offset 0x008, one bit per vector).
pub(super) const INTERCEPT_DB: u32 = 1 << 1;

impl SvmVcpu {
    /// Starts a single step of the guest's next instruction (RFLAGS.TF, #DB intercepted; SDM
    /// Vol. 3B §17.3.1.4: the trap comes after the instruction, with TF as it was before it:
    /// after an IRET too, whatever RFLAGS it pops).
    pub(super) fn begin_step(&mut self, after_iret: bool) {
        if let Some(s) = &mut self.step {
            // A step under way whose TF is not live (an event would have called it off,
            // `step_meets_event`): the shadow step's instruction faulted in the guest and the
            // TF sits in that fault's frame. The IRET is not stepped; the blocking ends at the
            // trap after the fault handler's IRET (later, never earlier), which clears that TF.
            s.after_iret |= after_iret;
            return;
        }
        let v = self.vmcb_mut();
        let step = Step {
            guest_tf: v.save.rflags & RFLAGS_TF != 0,
            dr6: v.save.dr6,
            after_iret,
            popped: after_iret,
        };
        v.save.rflags |= RFLAGS_TF;
        v.control.intercept_exceptions |= INTERCEPT_DB;
        self.step = Some(step);
    }

    /// The IRET intercept (before the IRET runs) and the #DB of a single step (after it): both
    /// come back to the core as an interrupt window, which looks at the sources again.
    #[inline(never)]
    pub(super) fn nmi_exit(&mut self, exit_code: u64) -> VmExit {
        if exit_code == code::IRET {
            self.vmcb_mut().control.intercept1.remove(I1::IRET);
            self.begin_step(true);
            return VmExit::InterruptWindow;
        }
        if !self.end_step() {
            // The guest single-steps as well (or no step was ours): the #DB is the guest's,
            // with DR6.BS as the CPU set it.
            self.pending.get_or_insert(Event::Exception { vector: 1, error_code: None });
        }
        VmExit::InterruptWindow
    }

    /// VMRUN injects an event (`event_inj`): a step whose TF is still live is called off before
    /// the delivery can push that TF (see the module note). An IRET step gets its intercept
    /// back (the IRET runs when the handler returns to it); a shadow step is moot, the
    /// delivery ends the shadow.
    pub(super) fn step_meets_event(&mut self) {
        let Some(step) = self.step else { return };
        let v = self.vmcb_mut();
        let Some(rflags) = step.called_off_by_event(v.save.rflags) else { return };
        v.save.rflags = rflags;
        v.control.intercept_exceptions &= !INTERCEPT_DB;
        if step.after_iret {
            v.control.intercept1 |= I1::IRET;
        }
        self.step = None;
    }

    /// The stepped instruction completed: NMI blocking ends after an IRET, TF and DR6 are the
    /// guest's again. False when the guest's own TF was set (its #DB is due) or no step ran.
    pub(super) fn end_step(&mut self) -> bool {
        self.vmcb_mut().control.intercept_exceptions &= !INTERCEPT_DB;
        let Some(step) = self.step.take() else { return false };
        if step.after_iret {
            self.nmi_masked = false;
        }
        if step.guest_tf {
            return false;
        }
        let g = &mut self.vmcb_mut().save;
        g.dr6 = step.dr6;
        g.rflags = step.rflags_after_trap(g.rflags);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF: u64 = 1 << 9;

    fn step(guest_tf: bool, after_iret: bool) -> Step {
        Step { guest_tf, dr6: 0xffff_0ff0, after_iret, popped: after_iret }
    }

    #[test]
    fn an_event_before_the_stepped_instruction_never_carries_the_hypervisors_tf() {
        // The NMI injected under a shadow step (the #DB after `sti; pause; cli`).
        for after_iret in [false, true] {
            let r = step(false, after_iret).called_off_by_event(IF | RFLAGS_TF);
            assert_eq!(r, Some(IF), "after_iret {after_iret}");
        }
    }

    #[test]
    fn the_trap_after_a_stepped_iret_keeps_what_it_popped() {
        // A guest that returns into single-stepping code keeps its TF.
        assert_eq!(step(false, true).rflags_after_trap(IF | RFLAGS_TF), IF | RFLAGS_TF);
        assert_eq!(step(false, false).rflags_after_trap(IF | RFLAGS_TF), IF);
    }

    #[test]
    fn an_iret_step_merged_into_an_escaped_shadow_step_clears_our_tf() {
        // The shadow step's instruction faulted in the guest (our TF in the fault's frame), an
        // NMI came in its handler: the trap after the fault handler's IRET pops our TF.
        let mut s = step(false, false);
        s.after_iret |= true;
        assert_eq!(s.rflags_after_trap(IF | RFLAGS_TF), IF);
    }

    #[test]
    fn the_guests_own_tf_goes_with_the_event() {
        let r = step(true, false).called_off_by_event(IF | RFLAGS_TF);
        assert_eq!(r, Some(IF | RFLAGS_TF));
    }

    #[test]
    fn a_step_whose_tf_left_with_a_native_exception_stays() {
        // The stepped instruction faulted in the guest: its handler runs with TF clear, and
        // the step waits for the trap after that handler's IRET.
        assert_eq!(step(false, false).called_off_by_event(IF), None);
        assert_eq!(step(true, true).called_off_by_event(0), None);
    }
}
