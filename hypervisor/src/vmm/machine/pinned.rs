//! Partitions pinned to host CPUs of their own (issue 10, items 2 and 4; `docs/cpus.md`).
//!
//! A pinned partition lives on its CPU: it is built there (a VMCS or VMCB is used on the CPU
//! that made it, and a partition holds its backend's objects), runs there with no time slice
//! and no scheduling exits, halts that CPU while it waits (HLT with that CPU's APIC timer armed
//! for its next deadline), and is dropped there. The boot CPU holds a [`Remote`] for it: the
//! management partition's requests (start, pause, resume, a fresh look, destroy), and the
//! partition's state, statistics and console history as its CPU last published them, for
//! `list`, `stats`, `console` and the final report.
//!
//! A request interrupts the partition's CPU: the wake-up IPI ([`smp::WAKE_VECTOR`]) makes its
//! guest exit (a host-interrupt exit: VMX external-interrupt exiting, SDM vol. 3C §26.2; the
//! SVM INTR intercept, APM vol. 2 §15.21.4) or ends its HLT; the CPU answers, and the boot CPU
//! waits for the answer.

pub use super::pinned_report::{Snapshot, print_stats, report};
use crate::arch::x86::instr::{rdtsc, wait_for_interrupt};
use crate::arch::x86::{lapic, smp};
use crate::vmm::dispatch::Flow;
use crate::vmm::exit::ExitStats;
use crate::vmm::manifest::{Expect, OnStop};
use crate::vmm::partition::{HISTORY_BYTES, Partition, PartitionConfig, State};
use crate::vmm::platform::Platform;
use crate::vmm::run;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use hvabi::hypercall::Status;

/// Requests from the boot CPU (one at a time: it waits for each answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Request {
    /// Start a created partition, resume a paused one.
    Run = 1,
    Pause = 2,
    /// Publish the state and statistics now.
    Look = 3,
    /// Leave the guest, flush its translations, free it, give the CPU back.
    Stop = 4,
}

// Phases of a pinned partition's CPU.
const BUILDING: u8 = 0;
const RUNNING: u8 = 1;
/// Its loop ended and it is freed (or its build failed): the CPU is idle again.
const DONE: u8 = 2;

/// Exits handled on each CPU, for the overlap figure of the pinned partitions' end lines.
static EXITS: [AtomicU64; smp::MAX_CPUS] = [const { AtomicU64::new(0) }; smp::MAX_CPUS];

/// Counts `n` exits handled on CPU `cpu`.
pub fn count_exits(cpu: usize, n: u64) {
    if let Some(c) = EXITS.get(cpu) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Exits handled so far on every CPU but `cpu`.
pub(super) fn others_exits(cpu: usize) -> u64 {
    EXITS
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cpu)
        .map(|(_, c)| c.load(Ordering::Relaxed))
        .sum()
}

/// A request posted ([`Remote::post`]), for [`Remote::wait`].
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    req: Request,
    /// Requests answered before it.
    answers: u64,
}

/// The boot CPU's handle on a pinned partition.
pub struct Remote {
    pub id: u64,
    pub name: String,
    pub tag: u16,
    /// Its CPUs; its vCPU runs on the first.
    pub cpus: Vec<usize>,
    pub expect: Expect,
    request: AtomicU8,
    /// Requests answered.
    answers: AtomicU64,
    phase: AtomicU8,
    shared: spin::Mutex<Snapshot>,
    /// The boot CPU has given its CPUs back to the pool.
    pub reaped: AtomicBool,
    /// Console output not yet read by the management partition's ConsoleRead.
    history: spin::Mutex<VecDeque<u8>>,
    /// Typed bytes for its UART, from the boot CPU's console (at most [`INPUT_QUEUE`]).
    input: spin::Mutex<VecDeque<u8>>,
    has_input: AtomicBool,
    /// The console's input goes to it: its CPU shows its prompt once it waits.
    pub focused: AtomicBool,
}

/// Typed bytes queued for a pinned partition's UART; more stay in COM1 (never dropped).
const INPUT_QUEUE: usize = 64;

impl Remote {
    /// The last published state and statistics.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().clone()
    }

    /// True once its CPU has freed it (or failed to build it).
    pub fn done(&self) -> bool {
        self.phase.load(Ordering::Acquire) == DONE
    }

    /// Bytes of console output not yet read by the management partition's ConsoleRead.
    pub fn history_len(&self) -> usize {
        self.history.lock().len()
    }

    /// Takes up to `n` bytes of its console history.
    pub fn take_history(&self, n: usize) -> Vec<u8> {
        let mut h = self.history.lock();
        let n = n.min(h.len());
        h.drain(..n).collect()
    }

    /// Room for typed bytes now.
    pub fn input_room(&self) -> usize {
        INPUT_QUEUE.saturating_sub(self.input.lock().len())
    }

    /// Queues a typed byte for its UART (the caller checked [`Remote::input_room`]); its CPU
    /// takes the queue at its next look ([`Remote::kick`] makes that soon).
    pub fn push_input(&self, b: u8) {
        self.input.lock().push_back(b);
        self.has_input.store(true, Ordering::Release);
    }

    /// Interrupts its CPU (the wake-up IPI) so that it looks at its queue and requests now.
    pub fn kick(&self) {
        if !self.done()
            && let Some(apic) = smp::apic_id(self.cpus[0])
        {
            lapic::send_fixed(apic, smp::WAKE_VECTOR);
        }
    }

    /// On its CPU: moves queued typed bytes into the partition's UART, as far as it has room.
    pub(super) fn take_input(&self, p: &mut Partition) {
        if !self.has_input.load(Ordering::Acquire) {
            return;
        }
        let mut q = self.input.lock();
        if let Some(uart) = p.io.uart() {
            while uart.input_room() > 0 {
                let Some(b) = q.pop_front() else { break };
                uart.push_input(b);
            }
        }
        self.has_input.store(!q.is_empty(), Ordering::Release);
        drop(q);
        p.sync_irq_lines();
    }

    /// Sends `req` to its CPU and waits (up to `timeout` TSC ticks) for the answer: for
    /// [`Request::Stop`], until the partition is freed. False on a timeout.
    pub fn ask(&self, req: Request, timeout: u64) -> bool {
        if self.done() {
            return true;
        }
        let asked = self.post(req);
        self.wait(asked, timeout)
    }

    /// Sends `req` to its CPU without waiting; [`Remote::wait`] waits for the answer.
    pub fn post(&self, req: Request) -> Asked {
        let answers = self.answers.load(Ordering::Acquire);
        self.request.store(req as u8, Ordering::Release);
        self.kick();
        Asked { req, answers }
    }

    /// Waits up to `timeout` TSC ticks for the answer to `asked`; false on a timeout.
    pub fn wait(&self, asked: Asked, timeout: u64) -> bool {
        let t0 = rdtsc();
        loop {
            let answered = match asked.req {
                Request::Stop => self.done(),
                _ => self.done() || self.answers.load(Ordering::Acquire) != asked.answers,
            };
            if answered {
                return true;
            }
            if rdtsc().wrapping_sub(t0) > timeout {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    /// On its CPU: carries out the boot CPU's request, if one came, and answers it (but
    /// [`Request::Stop`], which the caller carries out). Returns the request.
    pub(super) fn answer(
        &self,
        p: &mut Partition,
        others0: Option<u64>,
        cpu: usize,
    ) -> Option<Request> {
        let req = match self.request.swap(0, Ordering::AcqRel) {
            1 => Request::Run,
            2 => Request::Pause,
            3 => Request::Look,
            4 => return Some(Request::Stop),
            _ => return None,
        };
        match &p.state {
            State::Created | State::Paused if req == Request::Run => p.state = State::Runnable,
            State::Runnable | State::Halted { .. } if req == Request::Pause => {
                p.state = State::Paused
            }
            _ => {}
        }
        self.publish(p, others0, cpu);
        self.answers.fetch_add(1, Ordering::AcqRel);
        Some(req)
    }

    /// On the first CPU of a partition spread over CPUs (`machine::spread`): where each vCPU
    /// runs and how many exits came while another of its vCPUs was in its guest.
    pub(super) fn note_spread(&self, p: &Partition, overlap: u64) {
        let mut s = self.shared.lock();
        if s.homes.is_empty() {
            s.homes = self.cpus[..p.vcpus.len().min(self.cpus.len())].to_vec();
        }
        s.overlap = overlap;
    }

    pub(super) fn publish(&self, p: &mut Partition, others0: Option<u64>, cpu: usize) {
        let mut s = self.shared.lock();
        s.state = p.state.clone();
        s.stats = p.stats;
        s.absent_ports = p.io.absent;
        s.last_absent = p.io.last_absent;
        s.absent_mmio = p.mmio.absent;
        s.refused = p.refused;
        s.tables = p.slat.tables_used();
        s.memory = p.ram.size();
        if let Some(o) = others0 {
            s.alongside = others_exits(cpu).wrapping_sub(o);
        }
        drop(s);
        if !p.history.is_empty() {
            let mut h = self.history.lock();
            h.extend(p.history.drain(..));
            let excess = h.len().saturating_sub(HISTORY_BYTES);
            h.drain(..excess);
        }
    }
}

/// Builds `config` as partition `id` on CPU `cpus[0]` and starts its loop there; returns once
/// it is built (`Err` with why not). `created`: it waits for the start call (the create
/// hypercall), otherwise it runs at once (the manifest).
pub fn launch(
    id: u64,
    tag: u16,
    cpus: Vec<usize>,
    config: PartitionConfig,
    platform: Platform,
    created: bool,
) -> Result<Arc<Remote>, String> {
    let remote = Arc::new(Remote {
        id,
        name: config.name.clone(),
        tag,
        cpus,
        expect: config.expect,
        request: AtomicU8::new(0),
        answers: AtomicU64::new(0),
        phase: AtomicU8::new(BUILDING),
        shared: spin::Mutex::new(Snapshot {
            state: State::Created,
            stats: ExitStats::default(),
            absent_ports: 0,
            last_absent: 0,
            absent_mmio: 0,
            refused: 0,
            tables: 0,
            memory: config.memory,
            error: None,
            power_off: false,
            alongside: 0,
            homes: Vec::new(),
            overlap: 0,
        }),
        reaped: AtomicBool::new(false),
        history: spin::Mutex::new(VecDeque::new()),
        input: spin::Mutex::new(VecDeque::new()),
        has_input: AtomicBool::new(false),
        focused: AtomicBool::new(false),
    });
    let cpu = remote.cpus[0];
    let r = remote.clone();
    let job: smp::Work = Box::new(move || host_loop(&r, config, platform, created));
    if smp::run_on(cpu, job).is_err() {
        return Err(format!("cpu {cpu} takes no work"));
    }
    while remote.phase.load(Ordering::Acquire) == BUILDING {
        core::hint::spin_loop();
    }
    match remote.snapshot().error {
        Some(e) => Err(e),
        None => Ok(remote),
    }
}

impl super::Machine<'_> {
    /// Pins partition `id` (config `config`, VPID/ASID tag `tag`) to the CPUs `request` gets
    /// and builds it there. `Ok(None)`: it runs there now (`created`: waiting for the start
    /// call). `Ok(Some(config))`: a count (`cpus = N`) this machine cannot meet, said in a
    /// warning: the caller runs it time-sliced on CPU 0 as every partition ran before. `Err`:
    /// a list naming CPUs that do not exist, are not up or are taken, or a failed build.
    pub fn pin(
        &mut self,
        id: u64,
        tag: u16,
        config: PartitionConfig,
        request: &crate::arch::x86::pins::Request,
        created: bool,
    ) -> Result<Option<PartitionConfig>, String> {
        use crate::arch::x86::pins::{PinError, Request as Ask};
        let cpus = match self.pins.pin(id, request) {
            Ok(cpus) => cpus,
            Err(e @ PinError::TooMany { .. }) if matches!(request, Ask::Count(_)) => {
                log::warn!("partition {}: {e}: runs time-sliced on CPU 0", config.name);
                return Ok(Some(config));
            }
            Err(e) => return Err(format!("{e}")),
        };
        let name = config.name.clone();
        match launch(id, tag, cpus.clone(), config, self.platform, created) {
            Ok(r) => {
                log::info!("partition {name} (id {id}): pinned to cpu(s) {cpus:?}, built there");
                self.pinned.push(r);
                Ok(None)
            }
            Err(e) => {
                self.pins.unpin(id);
                Err(e)
            }
        }
    }
}

impl super::Machine<'_> {
    /// Starts every pinned partition still waiting for its start (the manifest's, built
    /// created so that they all start together, with the partitions of CPU 0): the requests go
    /// out to every CPU first, then the answers are awaited.
    pub fn start_pinned(&self) {
        let timeout = self.platform.tsc_hz_or_nominal();
        let created = |r: &&Arc<Remote>| !r.done() && r.snapshot().state == State::Created;
        let asked: Vec<(&Arc<Remote>, Asked)> =
            self.pinned.iter().filter(created).map(|r| (r, r.post(Request::Run))).collect();
        for (r, a) in asked {
            if !r.wait(a, timeout) {
                log::warn!("partition {}: cpu {} did not start it", r.name, r.cpus[0]);
            }
        }
    }
}

/// How a pinned partition's run ended.
pub(super) enum End {
    /// The boot CPU asked it to stop (destroy).
    Asked,
    /// It stopped by itself (shutdown, power-off, killed).
    Stopped,
}

/// The job on the pinned CPU: build, run (restarts per `on_stop`), flush, free.
fn host_loop(r: &Remote, config: PartitionConfig, platform: Platform, created: bool) {
    let cpu = smp::cpu_index();
    let mut restarts = 0;
    let mut carried = None;
    let mut state = if created { State::Created } else { State::Runnable };
    // Its vCPUs on CPUs of their own, or all time-sliced here (`machine::spread`).
    let homes = super::spread::homes(config.vcpus, &r.cpus);
    match &homes {
        Some(h) => {
            let each: Vec<String> =
                h.iter().enumerate().map(|(v, c)| format!("vCPU {v} runs on cpu {c}")).collect();
            log::info!("partition {}: {}", r.name, each.join(", "));
        }
        None if config.vcpus > 1 => log::info!(
            "partition {}: its {} vCPUs share cpu {} (time-sliced): {} CPU(s) pinned",
            r.name,
            config.vcpus,
            cpu,
            r.cpus.len()
        ),
        None => {}
    }
    let cap = platform.tsc_hz_or_nominal();
    loop {
        let here = homes.is_none();
        let built = smp::with_backend(|b| {
            Partition::build_as(r.id, r.tag, config.clone(), b, &platform, here)
        });
        let mut p = match built {
            Some(Ok(p)) => p,
            Some(Err(e)) => return fail(r, e),
            None => return fail(r, format!("cpu {cpu} has no VMX/SVM backend")),
        };
        if let Some(stats) = carried.take() {
            p.stats = stats;
        }
        p.state = state.clone();
        let (end, mut p) = match &homes {
            None => {
                r.publish(&mut p, None, cpu);
                r.phase.store(RUNNING, Ordering::Release);
                let end = run_here(&mut p, r, cpu, &platform);
                (end, p)
            }
            Some(h) => match super::spread::start(p, h, cap) {
                Ok(sh) => {
                    r.phase.store(RUNNING, Ordering::Release);
                    super::spread::run(sh, r)
                }
                Err(failed) if restarts == 0 => {
                    let (p, why) = *failed;
                    drop(p);
                    return fail(r, why);
                }
                Err(failed) => {
                    let (mut p, why) = *failed;
                    p.kill(why);
                    restarts = super::MAX_RESTARTS;
                    (End::Stopped, p)
                }
            },
        };
        // Its second-level translations are cached on this CPU (the others that ran its vCPUs
        // flushed theirs, `machine::spread`): flushed here before its memory goes back to the
        // allocator. VMX: INVEPT
        // single-context for its EPTP (SDM vol. 3C §29.4.3.1); SVM: its ASID's owner slot is
        // cleared when the vCPU is dropped, so whichever vCPU takes that ASID next on this
        // CPU runs with TLB_CONTROL flushing it (APM vol. 2 §15.16, `arch/svm/asid.rs`).
        p.flush_second_level();
        p.flush_console();
        r.publish(&mut p, None, cpu);
        let on_stop = p.config.on_stop;
        match end {
            End::Asked => {
                drop(p);
                break;
            }
            End::Stopped if on_stop == OnStop::Restart && restarts < super::MAX_RESTARTS => {
                restarts += 1;
                crate::println!(
                    "hypervisor: partition {} restarted ({restarts} of {}) on cpu {cpu} after: {:?}",
                    p.name,
                    super::MAX_RESTARTS,
                    p.state
                );
                carried = Some(p.stats);
                state = State::Runnable;
                drop(p);
            }
            End::Stopped => {
                if on_stop == OnStop::PowerOff {
                    r.shared.lock().power_off = true;
                }
                drop(p);
                break;
            }
        }
    }
    lapic::disarm();
    r.phase.store(DONE, Ordering::Release);
}

fn fail(r: &Remote, why: String) {
    r.shared.lock().error = Some(why);
    r.phase.store(DONE, Ordering::Release);
}

/// Runs `p` on this CPU until it stops or the boot CPU asks it to.
fn run_here(p: &mut Partition, r: &Remote, cpu: usize, platform: &Platform) -> End {
    // Everything that can wake it comes by IPI (requests, typed input) or is its own deadline:
    // its CPU sleeps up to a second at a time (the boot CPU's 10 ms cap is for host IRQs and
    // COM1, which only it takes).
    let cap = platform.tsc_hz_or_nominal();
    // Other CPUs' exits at its first entry.
    let mut others0 = None;
    let mut unexpected = lapic::unexpected(cpu).0;
    loop {
        if r.answer(p, others0, cpu) == Some(Request::Stop) {
            return End::Asked;
        }
        r.take_input(p);
        match p.state {
            State::Runnable => {
                others0.get_or_insert_with(|| others_exits(cpu));
                let before = p.stats.total();
                let flow = run::run_pinned(p);
                count_exits(cpu, p.stats.total().wrapping_sub(before));
                // The IPI that ended the run stays pending while interrupts are off and would
                // end every later entry at once: take it (its handler only ends it).
                smp::take_pending_interrupts();
                let (now, vector) = lapic::unexpected(cpu);
                if now > unexpected {
                    log::warn!(
                        "{} host interrupt(s) at vectors nothing expects (the last at {vector:#x}): acknowledged and ignored",
                        now - unexpected
                    );
                    unexpected = now;
                }
                p.drain_devices();
                // The focused partition's prompt or echoed key shows once it waits (as on CPU 0).
                if matches!(p.state, State::Halted { .. }) && r.focused.load(Ordering::Relaxed) {
                    p.show_partial_line();
                }
                if let Flow::Admin(call) = flow {
                    let v = p.current;
                    refuse(p, v, call);
                }
                r.publish(p, others0, cpu);
                if p.stopped() {
                    return End::Stopped;
                }
            }
            State::Halted { until } => {
                let now = rdtsc();
                p.tick(now);
                if now >= until || p.interrupt_pending() {
                    p.state = State::Runnable;
                } else {
                    if r.focused.load(Ordering::Relaxed) {
                        p.show_partial_line();
                    }
                    sleep((until - now).min(cap));
                }
            }
            State::Created | State::Paused => sleep(cap),
            _ => return End::Stopped,
        }
    }
}

/// Halts this CPU for up to `ticks` (its APIC timer), or until an IPI.
pub(super) fn sleep(ticks: u64) {
    if lapic::timer_usable() {
        lapic::arm(ticks);
        wait_for_interrupt();
        lapic::disarm();
    } else {
        let t0 = rdtsc();
        while rdtsc().wrapping_sub(t0) < ticks.min(super::IDLE_SPIN_TICKS) {
            core::hint::spin_loop();
        }
    }
}

/// A pinned partition is not the management partition, and channels join the management
/// partition with partitions of its own CPU: the calls the machine carries out find nothing.
pub(super) fn refuse(p: &mut Partition, v: usize, call: hvabi::hypercall::Call) {
    log::debug!("partition {}: {call:?} on a pinned CPU: not found", p.name);
    p.vcpus[v].vcpu.gprs().0[crate::vmm::vcpu::reg::RAX] = Status::NotFound as u64;
    crate::vmm::step::skip(p, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_sees_the_exits_of_the_others_only() {
        let (a, b) = (others_exits(40), others_exits(41));
        count_exits(40, 10);
        count_exits(41, 7);
        count_exits(smp::MAX_CPUS + 3, 1000); // no such CPU: not counted
        assert_eq!(others_exits(40) - a, 7, "CPU 40 sees CPU 41's exits, not its own");
        assert_eq!(others_exits(41) - b, 10);
    }
}
