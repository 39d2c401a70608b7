//! Inter-processor interrupts between the vCPUs of one partition, and the INIT and start-up
//! states they put a vCPU in.
//!
//! An ICR write (`devices::lapic`, [`Ipi`]) reaches the vCPUs of the sender's partition only:
//! [`targets`] picks them by shorthand or destination (SDM Vol. 3A §11.6.1-§11.6.2), and
//! [`effect`] says what the IPI does to each, given where it is in its run:
//! - fixed and lowest priority: the vector is accepted by the target's local APIC (lowest
//!   priority goes to one target, the first that matches: §11.6.2.4 lets the chipset choose);
//!   a vCPU waiting for a SIPI takes no interrupts;
//! - INIT: the vCPU waits for a SIPI (§9.4.2) with its local APIC reset but for its ID and
//!   mode (§11.4.7.3); the INIT level de-assert does nothing (§11.6.1);
//!   INIT to vCPU 0, the bootstrap processor, is a reset of the partition (a BSP would run
//!   its firmware at the reset vector, and a partition has none);
//! - start-up: a vCPU waiting for one takes the INIT state (§10.1.1, Table 10-1: real mode,
//!   CR0 60000010H) with CS = vector << 8, IP = 0 (§9.4.3, §11.6.1: "the vector ...
//!   000VV000H"); one not waiting ignores it;
//! - NMI: latched in the target's local APIC (one NMI waits; more before it is taken are the
//!   same one) and injected before its next entry, ahead of external interrupts (`vmm/run.rs`);
//!   it wakes a vCPU halted with interrupts on or off (SDM Vol. 2A HLT); a vCPU waiting for a
//!   SIPI ignores it (SDM Vol. 3A §9.4.2: only INIT and SIPI end that state);
//! - SMI and the reserved modes are not delivered (counted as refused): no partition has an
//!   SMI handler contract.
//!
//! [`Partition::send_ipi`] carries it out; the local APICs (`vmm/vlapic.rs`) match the
//! destinations and take the vectors.

use super::partition::{Partition, RunState, State, VcpuSlot};
use super::vcpu::{Gprs, InitialState, Segment, reg};
pub use crate::devices::lapic::{DeliveryMode, Destination, Ipi};
use alloc::format;
use alloc::vec::Vec;

/// Most vCPUs a partition may have (the manifest's `vcpus`): each is time-sliced on its
/// partition's host CPU, and eight keep the xAPIC's flat logical mode (one bit per vCPU in an
/// 8-bit destination) usable for all of them.
pub const MAX_VCPUS: u32 = 8;

/// Access rights (VMX layout) of real-mode segments after INIT (Table 10-1): present,
/// read/write, accessed; CS also executable.
const ACCESS_REAL_CODE: u16 = 0x9b;
const ACCESS_REAL_DATA: u16 = 0x93;
/// TR after INIT: present, busy 32-bit TSS (type 11), as KVM resets it; VM entry accepts it
/// outside IA-32e mode (SDM Vol. 3C §27.3.1.2), and a kernel may enter IA-32e mode with it
/// (Bochs refuses to with a 16-bit TSS in TR, which Linux's trampoline never reloads).
const ACCESS_REAL_TSS: u16 = 0x8b;
/// CR0 after INIT: CD, NW, ET (Table 10-1; CD and NW are kept by INIT on a real CPU, set by
/// RESET: a vCPU after INIT starts with caching off either way, as at power-on).
const CR0_INIT: u64 = 0x6000_0010;

/// The state INIT puts a vCPU in (SDM Vol. 3A §10.1.1, Table 10-1; APM Vol. 2 §14.1.3): real
/// mode, CS selector F000H with base FFFF0000H, IP FFF0H, every other segment at 0 with a
/// 64 KiB limit, GDTR and IDTR base 0 limit FFFFH, EFLAGS 2, EDX the processor signature
/// (`signature`, CPUID.1:EAX), the other registers 0.
pub fn init_state(signature: u32) -> InitialState {
    let real = |selector: u16, base: u64, access| Segment { selector, base, limit: 0xffff, access };
    let mut gprs = Gprs::default();
    gprs.0[reg::RDX] = u64::from(signature);
    InitialState {
        gprs,
        rip: 0xfff0,
        rflags: 2,
        cr0: CR0_INIT,
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs: real(0xf000, 0xffff_0000, ACCESS_REAL_CODE),
        data: real(0, 0, ACCESS_REAL_DATA),
        tr: real(0, 0, ACCESS_REAL_TSS),
        gdt_base: 0,
        gdt_limit: 0xffff,
        idt_base: 0,
        idt_limit: 0xffff,
    }
}

/// The state a start-up IPI with `vector` starts a waiting vCPU in: the INIT state with
/// CS selector `vector << 8`, base `vector << 12`, IP 0 (SDM Vol. 3A §9.4.3 and §11.6.1).
pub fn sipi_state(vector: u8, signature: u32) -> InitialState {
    let mut s = init_state(signature);
    s.cs.selector = u16::from(vector) << 8;
    s.cs.base = u64::from(vector) << 12;
    s.rip = 0;
    s
}

/// The vCPUs of an `n`-vCPU partition that `dest`, sent by vCPU `from`, reaches; `matches(v,
/// dest)` says whether vCPU `v`'s local APIC is a physical or logical destination `dest`.
/// Lowest-priority delivery reaches only the first match.
pub fn targets(
    from: usize,
    n: usize,
    ipi: &Ipi,
    matches: impl Fn(usize, Destination) -> bool,
) -> Vec<usize> {
    let all: Vec<usize> = match ipi.dest {
        Destination::SelfOnly => alloc::vec![from],
        Destination::AllIncludingSelf => (0..n).collect(),
        Destination::AllExcludingSelf => (0..n).filter(|&v| v != from).collect(),
        d @ (Destination::Physical(_) | Destination::Logical(_)) => {
            (0..n).filter(|&v| matches(v, d)).collect()
        }
    };
    if ipi.mode == DeliveryMode::LowestPriority { all.into_iter().take(1).collect() } else { all }
}

/// What an IPI does to one target vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Its local APIC accepts `vector` (fixed, lowest priority).
    Accept(u8),
    /// INIT: the INIT state, then wait for a SIPI.
    Init,
    /// INIT sent to the bootstrap vCPU: the partition is reset.
    ResetPartition,
    /// Start in real mode at `vector << 12`.
    Start(u8),
    /// An NMI for its local APIC's latch.
    Nmi,
    /// Nothing (a SIPI to a running vCPU, an interrupt to one waiting for a SIPI, INIT
    /// de-assert).
    Ignored,
    /// Not delivered: SMI, reserved delivery modes.
    Refused,
}

/// What `ipi` does to vCPU `target`, which is in `run`.
pub fn effect(ipi: &Ipi, target: usize, run: RunState) -> Effect {
    match ipi.mode {
        DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
            if run == RunState::WaitForSipi {
                Effect::Ignored
            } else {
                Effect::Accept(ipi.vector)
            }
        }
        DeliveryMode::Init if ipi.deassert => Effect::Ignored,
        DeliveryMode::Init if target == 0 => Effect::ResetPartition,
        DeliveryMode::Init => Effect::Init,
        DeliveryMode::StartUp if run == RunState::WaitForSipi => Effect::Start(ipi.vector),
        DeliveryMode::StartUp => Effect::Ignored,
        DeliveryMode::Nmi if run == RunState::WaitForSipi => Effect::Ignored,
        DeliveryMode::Nmi => Effect::Nmi,
        DeliveryMode::Smi | DeliveryMode::Reserved => Effect::Refused,
    }
}

/// True when IPI effect `effect`, sent by vCPU `from` to vCPU `target` (now in `run`), is a
/// reason to end the sender's slice and run the target at once (a directed yield): the target
/// is another vCPU of the sender's CPU, the IPI gives it work (an interrupt, an NMI, a start)
/// and it can run. A sender that then waits for an answer (HLT, or a spin loop such as Linux's
/// `csd_lock_wait`) gets it within the slice instead of after it (`vmm/run.rs`).
pub fn yields_to(from: usize, target: usize, effect: Effect, run: RunState) -> bool {
    target != from
        && matches!(effect, Effect::Accept(_) | Effect::Nmi | Effect::Start(_))
        && run == RunState::Runnable
}

/// The processor signature a vCPU finds in EDX after INIT: the CPUID leaf 1 EAX the guest
/// sees (family, model, stepping are the host's).
fn signature() -> u32 {
    #[cfg(not(test))]
    {
        core::arch::x86_64::__cpuid(1).eax
    }
    #[cfg(test)]
    {
        0x000806c1
    }
}

impl Partition {
    /// Carries out `ipi`, sent by vCPU `from` (an ICR write, after the writing instruction
    /// completed): each target of this partition accepts the vector, takes the INIT state or
    /// starts. Returns `false` when it reset the partition (INIT to vCPU 0), which is then
    /// stopped.
    pub fn send_ipi(&mut self, from: usize, ipi: Ipi) -> bool {
        let n = self.vcpus.len();
        let mut to = targets(from, n, &ipi, |v, d| self.vcpus[v].lapic.is_target(d, v == from));
        // A globally disabled APIC (IA32_APIC_BASE.EN clear) receives nothing (§11.4.3); a
        // software-disabled one still takes INIT and SIPI (§11.4.7.2).
        to.retain(|&v| self.vcpus[v].lapic.enabled());
        for v in to {
            let e = effect(&ipi, v, self.vcpus[v].run);
            if v != from && !matches!(e, Effect::Ignored | Effect::Refused) {
                // On another host CPU it may be in its guest or asleep: it looks again.
                self.kick(v);
            }
            match e {
                Effect::Accept(_) => {
                    self.vcpus[v].lapic.deliver_ipi(&ipi);
                }
                Effect::Nmi => {
                    let slot = &mut self.vcpus[v];
                    slot.lapic.deliver_ipi(&ipi);
                    // An NMI ends HLT even with interrupts off (a halted one wakes through
                    // `interrupt_pending_for`).
                    if slot.run == RunState::Stopped {
                        slot.run = RunState::Runnable;
                    }
                }
                Effect::Init => {
                    // The registers take the INIT state when the SIPI comes (`Start`): until
                    // then nothing runs or reads them, and the sender itself may be the target,
                    // its instruction not yet completed.
                    self.vcpus[v].init();
                    log::debug!("partition {}: vCPU {v}: INIT from vCPU {from}", self.name);
                }
                Effect::Start(vector) => {
                    // Its registers take the start-up state right before its next entry, on
                    // the CPU that runs it ([`apply_start`]): it may run on another host CPU
                    // than the sender, and a backend vCPU is touched only by its own.
                    self.vcpus[v].start_up(vector);
                    // Rate-limited: a guest may start its vCPUs in a loop.
                    if let Some(note) = self.vcpus[from].lapic.log_admit() {
                        log::info!(
                            "partition {}: vCPU {v} started by vCPU {from} at {:#x}{note}",
                            self.name,
                            u64::from(vector) << 12
                        );
                    }
                }
                Effect::ResetPartition => {
                    self.kill(format!("INIT IPI to vCPU 0 from vCPU {from} (a reset)"));
                    return false;
                }
                Effect::Ignored => {}
                Effect::Refused => {
                    self.refused += 1;
                    if let Some(note) = self.vcpus[from].lapic.log_admit() {
                        log::info!(
                            "partition {}: {:?} IPI from vCPU {from} to vCPU {v} not delivered{note}",
                            self.name,
                            ipi.mode
                        );
                    }
                }
            }
            if v != from {
                self.directed_yield(from, v, e);
            }
        }
        if self.state != State::Runnable && !self.stopped() {
            // A halted partition's vCPUs may have been woken; the run loop looks again.
            self.state = State::Runnable;
        }
        true
    }

    /// After IPI effect `e` on vCPU `v` (not the sender, `from`): a halted vCPU the IPI
    /// interrupts runs again (as the run loop would wake it at its next slice), and the first
    /// target that can run is where the sender's slice goes ([`Partition::yield_to`]).
    fn directed_yield(&mut self, from: usize, v: usize, e: Effect) {
        if matches!(self.vcpus[v].run, RunState::Halted { .. })
            && matches!(e, Effect::Accept(_) | Effect::Nmi)
            && self.interrupt_pending_for(v)
        {
            self.vcpus[v].run = RunState::Runnable;
        }
        // vCPUs on host CPUs of their own (`machine::spread`) run at once: no slice to hand
        // over, the target's CPU was kicked.
        let shared_cpu = self.hosts.is_empty();
        if shared_cpu && self.yield_to.is_none() && yields_to(from, v, e, self.vcpus[v].run) {
            self.yield_to = Some(v);
        }
    }
}

/// Puts vCPU `slot` in the start-up state of the SIPI it took ([`VcpuSlot::start`]), if any:
/// called by the CPU that runs it, right before its entry.
#[inline]
pub fn apply_start(slot: &mut VcpuSlot) {
    if let Some(vector) = slot.take_start() {
        slot.vcpu.reset(&sipi_state(vector, signature()));
    }
}

impl Partition {
    /// Makes vCPU `v`'s host CPU look at the partition again (the wake-up IPI: a running guest
    /// exits, SDM Vol. 3C §26.2 external-interrupt exiting, APM Vol. 2 §15.21.4 the INTR
    /// intercept; a sleeping CPU wakes), where the partition's vCPUs are spread over CPUs
    /// ([`Partition::hosts`]); nothing otherwise (they share this CPU, and the run loop looks
    /// at each in turn). One IPI until that CPU has looked ([`VcpuSlot::kicked`]).
    pub fn kick(&mut self, v: usize) {
        let Some(&apic) = self.hosts.get(v) else { return };
        let Some(slot) = self.vcpus.get_mut(v) else { return };
        if slot.kicked {
            return;
        }
        slot.kicked = true;
        #[cfg(not(test))]
        crate::arch::x86::lapic::send_fixed(apic, crate::arch::x86::smp::WAKE_VECTOR);
        #[cfg(test)]
        let _ = apic;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipi(mode: DeliveryMode, vector: u8, dest: Destination) -> Ipi {
        Ipi { mode, vector, deassert: false, dest }
    }

    #[test]
    fn shorthands_pick_self_all_or_the_others() {
        let none = |_, _| false;
        let f = |d| ipi(DeliveryMode::Fixed, 0x40, d);
        assert_eq!(targets(1, 3, &f(Destination::SelfOnly), none), [1]);
        assert_eq!(targets(1, 3, &f(Destination::AllIncludingSelf), none), [0, 1, 2]);
        assert_eq!(targets(1, 3, &f(Destination::AllExcludingSelf), none), [0, 2]);
        assert_eq!(targets(0, 1, &f(Destination::AllExcludingSelf), none), [] as [usize; 0]);
    }

    #[test]
    fn destinations_are_matched_by_the_apics_and_stay_in_the_partition() {
        let phys = |v: usize, d| matches!(d, Destination::Physical(id) if id as usize == v);
        let f = |d| ipi(DeliveryMode::Fixed, 0x40, d);
        assert_eq!(targets(0, 2, &f(Destination::Physical(1)), phys), [1]);
        assert_eq!(targets(0, 2, &f(Destination::Physical(5)), phys), [] as [usize; 0]);
        let logical = |v: usize, d| matches!(d, Destination::Logical(m) if m & (1 << v) != 0);
        assert_eq!(targets(0, 4, &f(Destination::Logical(0b1010)), logical), [1, 3]);
        let lowest = ipi(DeliveryMode::LowestPriority, 0x40, Destination::Logical(0b1010));
        assert_eq!(targets(0, 4, &lowest, logical), [1], "one target only");
    }

    #[test]
    fn init_sipi_sipi_starts_a_waiting_vcpu_once() {
        let init = ipi(DeliveryMode::Init, 0, Destination::Physical(1));
        let sipi = ipi(DeliveryMode::StartUp, 0x08, Destination::Physical(1));
        assert_eq!(effect(&init, 1, RunState::Runnable), Effect::Init);
        assert_eq!(effect(&init, 1, RunState::Halted { until: 3 }), Effect::Init);
        assert_eq!(effect(&sipi, 1, RunState::WaitForSipi), Effect::Start(0x08));
        // The second SIPI finds it running: ignored (SDM Vol. 3A §9.4.4.1).
        assert_eq!(effect(&sipi, 1, RunState::Runnable), Effect::Ignored);
        let deassert = Ipi { deassert: true, ..init };
        assert_eq!(effect(&deassert, 1, RunState::Runnable), Effect::Ignored);
        assert_eq!(effect(&init, 0, RunState::Runnable), Effect::ResetPartition);
    }

    #[test]
    fn interrupts_reach_running_and_halted_vcpus_not_waiting_ones() {
        let fixed = ipi(DeliveryMode::Fixed, 0x41, Destination::Physical(1));
        assert_eq!(effect(&fixed, 1, RunState::Runnable), Effect::Accept(0x41));
        assert_eq!(effect(&fixed, 1, RunState::Halted { until: 0 }), Effect::Accept(0x41));
        assert_eq!(effect(&fixed, 1, RunState::Stopped), Effect::Accept(0x41));
        assert_eq!(effect(&fixed, 1, RunState::WaitForSipi), Effect::Ignored);
        let nmi = ipi(DeliveryMode::Nmi, 0, Destination::Physical(1));
        assert_eq!(effect(&nmi, 1, RunState::Runnable), Effect::Nmi);
        assert_eq!(effect(&nmi, 1, RunState::Halted { until: 0 }), Effect::Nmi);
        assert_eq!(effect(&nmi, 1, RunState::Stopped), Effect::Nmi, "wakes HLT with IF=0");
        assert_eq!(effect(&nmi, 1, RunState::WaitForSipi), Effect::Ignored);
        let smi = ipi(DeliveryMode::Smi, 0, Destination::Physical(1));
        assert_eq!(effect(&smi, 1, RunState::Runnable), Effect::Refused);
    }

    #[test]
    fn only_work_for_another_runnable_vcpu_yields_to_it() {
        use RunState::*;
        assert!(yields_to(0, 1, Effect::Accept(0x40), Runnable));
        assert!(yields_to(1, 0, Effect::Nmi, Runnable));
        assert!(yields_to(0, 2, Effect::Start(0x08), Runnable));
        assert!(!yields_to(1, 1, Effect::Accept(0x40), Runnable), "a self-IPI");
        assert!(!yields_to(0, 1, Effect::Accept(0x40), Halted { until: 9 }), "masked: not woken");
        assert!(!yields_to(0, 1, Effect::Accept(0x40), Stopped), "HLT with IF=0");
        assert!(!yields_to(0, 1, Effect::Init, WaitForSipi));
        assert!(!yields_to(0, 1, Effect::Ignored, Runnable));
        assert!(!yields_to(0, 1, Effect::Refused, Runnable));
    }

    #[test]
    fn the_init_state_is_real_mode_at_the_reset_vector() {
        let s = init_state(0x806c1);
        assert_eq!((s.cs.selector, s.cs.base, s.rip), (0xf000, 0xffff_0000, 0xfff0));
        assert_eq!(s.cs.base + s.rip, 0xffff_fff0, "the reset vector");
        assert_eq!((s.cr0 & 1, s.efer, s.rflags), (0, 0, 2), "real mode, EFLAGS bit 1 only");
        assert_eq!(s.gprs.0[reg::RDX], 0x806c1);
        assert_eq!((s.data.selector, s.data.base, s.data.limit), (0, 0, 0xffff));
        assert_eq!((s.idt_base, s.idt_limit, s.gdt_limit), (0, 0xffff, 0xffff));
        assert_eq!(s.tr.access & 0xf, 11, "a 32-bit busy TSS: IA-32e mode can be entered with it");
    }

    #[test]
    fn a_sipi_starts_at_vector_times_4096() {
        let s = sipi_state(0x9a, 0);
        assert_eq!((s.cs.selector, s.cs.base, s.rip), (0x9a00, 0x9a000, 0));
        assert_eq!(s.cs.base, u64::from(s.cs.selector) << 4, "a real-mode segment");
        assert_eq!(sipi_state(0, 0).cs.base, 0);
    }
}
