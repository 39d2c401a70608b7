//! The machine: every partition, the backend, the boot modules and the channels, scheduled
//! round-robin on this CPU; and the console: which partition typed input goes to (Ctrl-A three
//! times cycles, as in Xen) and the hypervisor's debug keys.

mod admin;
mod channels;
pub mod pinned;
mod pinned_report;
mod spread;

use super::dispatch::Flow;
use super::manifest::OnStop;
use super::partition::{Partition, State};
use super::run::{print_stats, run_slice};
use super::vcpu::Backend;
use crate::arch::x86::instr::rdtsc;
use crate::arch::x86::pins::Pins;
use crate::mm::addr::HostPhys;
use crate::{console, println};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// A shared page between two partitions (`hvabi::channel`).
#[derive(Debug)]
pub struct Channel {
    pub id: u64,
    pub page: HostPhys,
    /// The two partitions' ids: [creator (management), other].
    pub ends: [u64; 2],
    /// Interrupt vector bound by each end (0 = none).
    pub vectors: [u8; 2],
}

/// Where typed console input goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The hypervisor's debug keys.
    Hypervisor,
    /// Partition with this id.
    Partition(u64),
}

/// Ctrl-A: pressed three times in a row, switches the console's focus.
const CTRL_A: u8 = 0x01;
/// The longest an idle CPU sleeps before it looks at the console and the host's IRQ lines
/// again, as a fraction of a second (10 ms): a wake-up that never comes (a UART whose
/// interrupt line stayed high while the focused partition had no room for its bytes) costs
/// at most this much latency.
const IDLE_POLLS_PER_SECOND: u64 = 100;
/// Where the host APIC timer is not usable, the idle loop spins this many TSC ticks between
/// looks at the console and the host IRQs.
const IDLE_SPIN_TICKS: u64 = 200_000;
/// Most restarts a partition with `on_stop = "restart"` gets before it stays down.
pub const MAX_RESTARTS: u32 = 3;

/// Every partition and what they share.
pub struct Machine<'a> {
    pub parts: Vec<Partition>,
    pub backend: &'a mut dyn Backend,
    pub modules: &'a [(String, &'static [u8])],
    pub channels: Vec<Channel>,
    pub next_id: u64,
    /// The machine as boot measured it (clocks, memory layout).
    pub platform: super::platform::Platform,
    restarts: Vec<(u64, u32)>,
    focus: Focus,
    ctrl_a: u8,
    /// Host interrupts at unexpected vectors already reported.
    unexpected_irqs: u64,
    /// Times the CPU halted for want of work (the `idle` line of the debug keys' stats).
    pub idle_halts: u64,
    /// Partitions running on CPUs of their own ([`pinned`]).
    pub pinned: Vec<Arc<pinned::Remote>>,
    /// Which CPU runs which pinned partition.
    pub pins: Pins,
}

impl<'a> Machine<'a> {
    pub fn new(
        backend: &'a mut dyn Backend,
        modules: &'a [(String, &'static [u8])],
        platform: super::platform::Platform,
    ) -> Self {
        Self {
            parts: Vec::new(),
            backend,
            modules,
            channels: Vec::new(),
            next_id: 0,
            platform,
            restarts: Vec::new(),
            focus: Focus::Hypervisor,
            ctrl_a: 0,
            unexpected_irqs: 0,
            idle_halts: 0,
            pinned: Vec::new(),
            pins: Pins::new(
                crate::arch::x86::smp::cpu_slots(),
                &crate::arch::x86::smp::ready_cpus(),
            ),
        }
    }

    /// The boot module called `name`.
    pub fn module(&self, name: &str) -> Option<&'static [u8]> {
        self.modules.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }

    /// The smallest VPID/ASID tag no live partition uses.
    pub fn free_tag(&self) -> Option<u16> {
        (1..=u16::MAX).find(|t| {
            !self.parts.iter().any(|p| p.tag == *t)
                && !self.pinned.iter().any(|r| r.tag == *t && !r.done())
        })
    }

    /// Sends console input to the management partition, if there is one.
    pub fn focus_management(&mut self) {
        if let Some(p) = self.parts.iter().find(|p| p.config.management) {
            self.focus = Focus::Partition(p.id);
            println!("hypervisor: console input goes to {} (Ctrl-A three times to switch)", p.name);
        }
    }

    /// Applies the partition's `on_stop` policy; true when the machine must power off now.
    fn on_stop(&mut self, i: usize) -> bool {
        let p = &self.parts[i];
        let id = p.id;
        match p.config.on_stop {
            OnStop::Destroy => false,
            OnStop::PowerOff => {
                println!("hypervisor: partition {} stopped with on_stop = poweroff", p.name);
                true
            }
            OnStop::Restart => {
                let count = match self.restarts.iter_mut().find(|(r, _)| *r == id) {
                    Some((_, n)) => n,
                    None => {
                        self.restarts.push((id, 0));
                        &mut self.restarts.last_mut().expect("just pushed").1
                    }
                };
                if *count >= MAX_RESTARTS {
                    log::warn!(
                        "partition {}: restarted {MAX_RESTARTS} times: stays stopped",
                        p.name
                    );
                    return false;
                }
                *count += 1;
                let n = *count;
                let (config, old_state, tag) = (p.config.clone(), p.state.clone(), p.tag);
                let stats = p.stats;
                // Free the old partition's memory first: the new one may need the same place.
                let mut old = self.parts.remove(i);
                old.flush_console();
                drop(old);
                match Partition::build(id, tag, config, self.backend, &self.platform) {
                    Ok(mut fresh) => {
                        println!(
                            "hypervisor: partition {} restarted ({n} of {MAX_RESTARTS}) after: {old_state:?}",
                            fresh.name
                        );
                        fresh.stats = stats;
                        self.parts.insert(i, fresh);
                        self.claim_irq_lines();
                    }
                    Err(e) => log::error!("partition #{id}: restart failed: {e}"),
                }
                false
            }
        }
    }

    /// Runs until every partition has stopped or one powered the machine off; true when the
    /// run ended by a power-off request.
    pub fn run(&mut self) -> bool {
        let mut next = 0;
        self.claim_irq_lines();
        if crate::arch::x86::lapic::timer_usable() {
            console::enable_receive_interrupt();
            crate::arch::x86::pic::unmask(console::COM1_IRQ);
        }
        loop {
            self.poll_console();
            self.route_host_irqs();
            if !self.pinned.is_empty() && self.reap_pinned() {
                return true;
            }
            let now = rdtsc();
            for p in self.parts.iter_mut() {
                if let State::Halted { until } = p.state {
                    p.tick(now);
                    if now >= until || p.interrupt_pending() {
                        p.state = State::Runnable;
                    }
                }
            }
            let n = self.parts.len();
            if let Some(i) =
                (0..n).map(|k| (next + k) % n).find(|&i| self.parts[i].state == State::Runnable)
            {
                // CPU 0's exits count for the pinned partitions' overlap figure (only while
                // there are any: the sums cost a few instructions a slice).
                let counting = !self.pinned.is_empty();
                let before = if counting { self.parts[i].stats.total() } else { 0 };
                let flow = run_slice(&mut self.parts[i]);
                if counting {
                    pinned::count_exits(0, self.parts[i].stats.total().wrapping_sub(before));
                }
                self.parts[i].drain_devices();
                // The focused partition's prompt or echoed key shows at once once it waits
                // (halted, for a key or a timer), not when its line ends. A slice that ends
                // mid-line otherwise keeps the line whole: a partition still printing, or
                // another's output, must not split it.
                let p = &mut self.parts[i];
                if self.focus == Focus::Partition(p.id) && matches!(p.state, State::Halted { .. }) {
                    p.show_partial_line();
                }
                if let Flow::Admin(call) = flow {
                    self.admin(i, call);
                    continue; // the caller keeps the CPU
                }
                next = i + 1;
                if self.parts[i].stopped() && self.on_stop(i) {
                    return true;
                }
                continue;
            }
            // Nothing runnable: sleep until the earliest timer, or stop when all are done (a
            // created or paused partition waits for the management partition, which is gone).
            let earliest = self
                .parts
                .iter()
                .filter_map(
                    |p| if let State::Halted { until } = p.state { Some(until) } else { None },
                )
                .min();
            match earliest {
                Some(t) => self.idle_until(t),
                // Partitions on other CPUs still run: look again at the next poll.
                None if self.pinned.iter().any(|r| !r.done()) => self.idle_until(u64::MAX),
                None => return false,
            }
        }
    }

    /// Nothing can run before TSC `t`: halts the CPU until then, or until a key on the
    /// console or a forwarded host IRQ, whichever comes first (capped at
    /// [`IDLE_POLLS_PER_SECOND`]), so that an idle machine does not keep a host core busy.
    /// The host APIC timer, armed one-shot, ends the sleep; where it is not usable the CPU
    /// spins on the TSC instead.
    fn idle_until(&mut self, t: u64) {
        let now = rdtsc();
        if t <= now {
            return;
        }
        let cap = self.platform.tsc_hz_or_nominal() / IDLE_POLLS_PER_SECOND;
        let wait = (t - now).min(cap);
        if crate::arch::x86::lapic::timer_usable() {
            crate::arch::x86::lapic::arm(wait);
            crate::arch::x86::instr::wait_for_interrupt();
            crate::arch::x86::lapic::disarm();
            self.idle_halts += 1;
        } else {
            let stop = now + wait.min(IDLE_SPIN_TICKS);
            while rdtsc() < stop {
                core::hint::spin_loop();
            }
        }
    }

    /// Gives the CPUs of pinned partitions that ended back to the pool; true when one ended
    /// with `on_stop = "poweroff"` (the machine powers off now).
    fn reap_pinned(&mut self) -> bool {
        let mut power_off = false;
        for r in &self.pinned {
            if r.done() && !r.reaped.swap(true, core::sync::atomic::Ordering::Relaxed) {
                let cpus = self.pins.unpin(r.id);
                let s = r.snapshot();
                log::info!(
                    "partition {} ended on cpu {}: cpu(s) {cpus:?} back in the pool ({:?})",
                    r.name,
                    r.cpus[0],
                    s.state
                );
                if s.power_off {
                    println!("hypervisor: partition {} stopped with on_stop = poweroff", r.name);
                    power_off = true;
                }
            }
        }
        power_off
    }

    /// The final report of the pinned partitions (after `run::report` of the others): each
    /// CPU is asked for a fresh look first; true when all ended as expected.
    pub fn report_pinned(&self, powered_off: bool) -> bool {
        let timeout = self.platform.tsc_hz_or_nominal();
        let mut ok = true;
        for r in &self.pinned {
            if !r.done() && !r.ask(pinned::Request::Look, timeout) {
                log::warn!("partition {}: cpu {} did not answer", r.name, r.cpus[0]);
            }
            ok &= pinned::report(r, powered_off);
        }
        ok
    }

    /// Unmasks, at the host's PIC, the IRQ lines of every partition that owns some.
    fn claim_irq_lines(&self) {
        for p in &self.parts {
            for irq in (0..16).filter(|i| p.irq_lines & (1 << i) != 0) {
                crate::arch::x86::pic::unmask(irq);
            }
        }
    }

    /// Forwards host IRQs to the partitions that own the lines (their virtual PIC input stays
    /// high until the guest ends the interrupt) and re-enables a line at the host once its
    /// owner has ended the interrupt.
    fn route_host_irqs(&mut self) {
        for p in self.parts.iter_mut() {
            let done = (p.pic.take_eois() | super::vioapic::poll(p)) & p.irq_lines;
            for irq in (0..16u8).filter(|i| done & (1 << i) != 0) {
                p.pic.set_irq(irq, false);
                super::vioapic::set_line(p, irq, false);
                crate::arch::x86::pic::unmask(irq);
            }
        }
        crate::arch::x86::pic::window();
        let (unexpected, vector) = crate::arch::x86::lapic::unexpected(0);
        if unexpected > self.unexpected_irqs {
            log::warn!(
                "{} host interrupt(s) at vectors nothing expects (the last at {vector:#x}): acknowledged and ignored",
                unexpected - self.unexpected_irqs
            );
            self.unexpected_irqs = unexpected;
        }
        let mut fired = crate::arch::x86::pic::take_pending();
        // COM1's line wakes an idle CPU for a key; the bytes are read by `poll_console`.
        let com1 = 1u16 << console::COM1_IRQ;
        if fired & com1 != 0 {
            fired &= !com1;
            crate::arch::x86::pic::unmask(console::COM1_IRQ);
        }
        for irq in (0..16u8).filter(|i| fired & (1 << i) != 0) {
            match self.parts.iter_mut().find(|p| p.irq_lines & (1 << irq) != 0 && !p.stopped()) {
                Some(p) => {
                    p.irqs_forwarded += 1;
                    p.pic.set_irq(irq, true);
                    super::vioapic::set_line(p, irq, true);
                }
                // Its owner is gone: the line stays masked.
                None => log::debug!("host IRQ {irq} has no owner: masked"),
            }
        }
    }

    /// Takes typed bytes from COM1: Ctrl-A ×3 switches focus; other bytes go to the focused
    /// partition's UART or to the debug keys.
    fn poll_console(&mut self) {
        // A pinned partition's CPU takes its bytes from a queue, told by an IPI once a poll's
        // bytes are in.
        let mut kick: Option<Arc<pinned::Remote>> = None;
        // Bytes stay in COM1 (and the emulator or terminal behind it holds the rest) while the
        // focused partition's UART has no room: typed input is never dropped.
        while self.input_room() {
            let Some(b) = console::read_byte() else { break };
            if b == CTRL_A {
                self.ctrl_a += 1;
                if self.ctrl_a == 3 {
                    self.ctrl_a = 0;
                    self.switch_focus();
                }
                continue;
            }
            self.ctrl_a = 0;
            match self.focus {
                Focus::Hypervisor => self.debug_key(b),
                Focus::Partition(id) if !self.parts.iter().any(|p| p.id == id) => {
                    match self.pinned.iter().find(|r| r.id == id && !r.done()) {
                        Some(r) => {
                            r.push_input(b);
                            kick = Some(r.clone());
                        }
                        None => self.focus = Focus::Hypervisor,
                    }
                }
                Focus::Partition(id) => {
                    if let Some(uart) =
                        self.parts.iter_mut().find(|p| p.id == id).and_then(|p| p.io.uart())
                    {
                        if uart.input_room() > 0 {
                            uart.push_input(b);
                        }
                    } else {
                        self.focus = Focus::Hypervisor;
                    }
                    if let Some(p) = self.parts.iter_mut().find(|p| p.id == id) {
                        p.sync_irq_lines();
                    }
                }
            }
        }
        if let Some(r) = kick {
            r.kick();
        }
    }

    /// True when the focus can take a byte now.
    fn input_room(&mut self) -> bool {
        match self.focus {
            Focus::Hypervisor => true,
            Focus::Partition(id) => match self.pinned.iter().find(|r| r.id == id) {
                Some(r) => r.done() || r.input_room() > 0,
                None => self
                    .parts
                    .iter_mut()
                    .find(|p| p.id == id)
                    .and_then(|p| p.io.uart())
                    .is_none_or(|u| u.input_room() > 0),
            },
        }
    }

    fn switch_focus(&mut self) {
        let mut ids: Vec<u64> = self.parts.iter().filter(|p| !p.stopped()).map(|p| p.id).collect();
        ids.extend(self.pinned.iter().filter(|r| !r.done()).map(|r| r.id));
        ids.sort_unstable();
        self.focus = match self.focus {
            Focus::Hypervisor => ids.first().map_or(Focus::Hypervisor, |&id| Focus::Partition(id)),
            Focus::Partition(cur) => match ids.iter().position(|&i| i == cur) {
                Some(k) if k + 1 < ids.len() => Focus::Partition(ids[k + 1]),
                _ => Focus::Hypervisor,
            },
        };
        for r in &self.pinned {
            let on = self.focus == Focus::Partition(r.id);
            r.focused.store(on, core::sync::atomic::Ordering::Relaxed);
            if on {
                println!("hypervisor: console: input to {} (on cpu {})", r.name, r.cpus[0]);
                // Its CPU shows its prompt the next time it looks.
                r.kick();
            }
        }
        match self.focus {
            Focus::Hypervisor => println!("hypervisor: console: debug keys (h for help)"),
            Focus::Partition(id) if self.pinned.iter().any(|r| r.id == id) => {}
            Focus::Partition(id) => {
                println!("hypervisor: console: input to {}", admin::describe(&self.parts, id));
                // Its prompt, if it waits at one.
                if let Some(p) = self.parts.iter_mut().find(|p| p.id == id) {
                    p.show_partial_line();
                }
            }
        }
    }

    /// The hypervisor's debug keys, like Xen's.
    fn debug_key(&mut self, key: u8) {
        match key {
            b'h' | b'?' => println!(
                "hypervisor keys: l list partitions, s exit statistics, r vCPU registers, m memory, c channels, h help; Ctrl-A x3 switches the console"
            ),
            b'l' => {
                for p in &self.parts {
                    println!(
                        "  {:>3} {:<16} {:<10} {:>5} MiB at {:#x} rip {:#x}{}",
                        p.id,
                        p.name,
                        super::run::state_name(&p.state),
                        p.ram.size() >> 20,
                        p.ram.base(),
                        p.vcpus[0].vcpu.rip(),
                        if p.config.management { " [management]" } else { "" }
                    );
                }
                for r in &self.pinned {
                    let s = r.snapshot();
                    println!(
                        "  {:>3} {:<16} {:<10} {:>5} MiB on cpu {}",
                        r.id,
                        r.name,
                        if r.done() { "gone" } else { super::run::state_name(&s.state) },
                        s.memory >> 20,
                        r.cpus[0]
                    );
                }
            }
            b's' => {
                self.parts.iter().for_each(|p| {
                    println!("  {}:", p.name);
                    print_stats(p);
                });
                for r in &self.pinned {
                    println!("  {} (cpu {}):", r.name, r.cpus[0]);
                    pinned::print_stats(&r.snapshot());
                }
                println!("  the CPU halted idle {} times", self.idle_halts);
            }
            b'r' => {
                for p in &mut self.parts {
                    let (rip, rflags) = (p.vcpus[0].vcpu.rip(), p.vcpus[0].vcpu.rflags());
                    let g = *p.vcpus[0].vcpu.gprs();
                    println!(
                        "  {} rip {rip:#x} rflags {rflags:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x}",
                        p.name,
                        p.vcpus[0].vcpu.cr(0),
                        p.vcpus[0].vcpu.cr(3),
                        p.vcpus[0].vcpu.cr(4)
                    );
                    for (k, chunk) in g.0.chunks(4).enumerate() {
                        let names = &super::vcpu::GPR_NAMES[k * 4..k * 4 + 4];
                        println!(
                            "    {} {:#018x} {} {:#018x} {} {:#018x} {} {:#018x}",
                            names[0],
                            chunk[0],
                            names[1],
                            chunk[1],
                            names[2],
                            chunk[2],
                            names[3],
                            chunk[3]
                        );
                    }
                }
            }
            b'm' => {
                if let Some(f) = crate::mm::frames::FRAMES.lock().as_ref() {
                    println!(
                        "  free host memory: {} MiB in {} ranges",
                        f.free_bytes() >> 20,
                        f.ranges().len()
                    );
                }
                for p in &self.parts {
                    let blocks: Vec<String> = p
                        .map
                        .iter()
                        .map(|&(gpa, len)| alloc::format!("[{gpa:#x}, {:#x})", gpa + len))
                        .collect();
                    println!(
                        "  {}: RAM at guest-physical {}, {} second-level table pages",
                        p.name,
                        blocks.join(" "),
                        p.slat.tables_used()
                    );
                }
            }
            b'c' => {
                for c in &self.channels {
                    println!(
                        "  channel {} at {:#x}: {} <-> {}",
                        c.id,
                        c.page.0,
                        admin::describe(&self.parts, c.ends[0]),
                        admin::describe(&self.parts, c.ends[1])
                    );
                }
            }
            b'\r' | b'\n' => {}
            other => println!("hypervisor: no debug key {:?} (h for help)", other as char),
        }
    }
}
