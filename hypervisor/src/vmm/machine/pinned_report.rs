//! What a pinned partition's CPUs publish for the boot CPU (`machine::pinned`), and the final
//! report lines made from it (as `run::report` prints the others').

use super::pinned::Remote;
use crate::vmm::exit::ExitStats;
use crate::vmm::manifest::Expect;
use crate::vmm::partition::State;
use crate::vmm::run;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// What a pinned partition's CPU last published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub state: State,
    pub stats: ExitStats,
    pub absent_ports: u64,
    pub last_absent: u64,
    pub absent_mmio: u64,
    pub refused: u64,
    pub tables: usize,
    pub memory: u64,
    /// Why it could not be built.
    pub error: Option<String>,
    /// It stopped with `on_stop = "poweroff"`.
    pub power_off: bool,
    /// Exits the other CPUs handled between its first entry and its end (0: none ran
    /// alongside it).
    pub alongside: u64,
    /// The host CPU of each vCPU where they run on CPUs of their own (`machine::spread`);
    /// empty: all on `cpus[0]`.
    pub homes: Vec<usize>,
    /// Its exits that came while another of its vCPUs was in its guest (`machine::spread`).
    pub overlap: u64,
}

/// The report lines of a pinned partition (as `run::report` prints the others'); true when it
/// ended as its manifest expected.
pub fn report(r: &Remote, powered_off: bool) -> bool {
    let s = r.snapshot();
    let (ended, ok) = match &s.state {
        State::Shutdown(st) => {
            (format!("shut down with status {st}"), *st == 0 && r.expect == Expect::Exit)
        }
        State::Off(how) => (format!("powered off ({how})"), r.expect == Expect::Halt),
        State::Killed(why) => {
            (format!("stopped by the hypervisor: {why}"), r.expect == Expect::Fault)
        }
        other if powered_off => (format!("still {} at power-off", run::state_name(other)), true),
        other => (format!("still {}", run::state_name(other)), false),
    };
    // The line every partition's end gets (scripts read it), then where it ran.
    crate::println!(
        "hypervisor: partition {} (id {}): {ended} [{}]",
        r.name,
        r.id,
        if ok { "as expected" } else { "UNEXPECTED" }
    );
    print_stats(&s);
    let at = if s.homes.is_empty() {
        format!("cpu {}", r.cpus[0])
    } else {
        // Where each vCPU ran (`machine::spread`), and the proof that they ran at once.
        let each: alloc::vec::Vec<String> =
            s.homes.iter().enumerate().map(|(v, c)| format!("vCPU {v} on cpu {c}")).collect();
        crate::println!("    pinned to cpus {:?}: {}", r.cpus, each.join(", "));
        if s.overlap > 0 {
            crate::println!(
                "    its vCPUs ran at the same time: {} of its exits came while another of its vCPUs was in its guest",
                s.overlap
            );
        } else {
            crate::println!(
                "    its vCPUs never ran at the same time: no exit came while another ran"
            );
        }
        format!("cpus {:?}", r.cpus)
    };
    if s.alongside > 0 {
        crate::println!(
            "    pinned to {at}: ran alongside the other CPUs: they handled {} exits while it ran",
            s.alongside
        );
    } else {
        crate::println!("    pinned to {at}: ran alone: no other CPU handled an exit while it ran");
    }
    ok
}

/// A pinned partition's statistics, as `run::print_stats` prints a partition's.
pub fn print_stats(s: &Snapshot) {
    let mut line = format!("    exits: {} total", s.stats.total());
    for (name, count) in s.stats.nonzero() {
        line.push_str(&format!(", {name} {count}"));
    }
    crate::println!("{line}");
    crate::println!(
        "    absent ports {} (last {:#x}) absent MMIO {} refused accesses {} table pages {}",
        s.absent_ports,
        s.last_absent,
        s.absent_mmio,
        s.refused,
        s.tables
    );
}
