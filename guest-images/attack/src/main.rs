//! The attack guest: does what a partition must not be able to do and reports what it saw.
//!
//! The command line picks the attack (`mode=NAME`, default `msr-ports-vmx`; see
//! `docs/guests.md`). Every mode ends with something the hypervisor must stop (a triple fault,
//! an access outside RAM): its manifest entry says `expect = "fault"`. If the guest is still
//! running afterwards it prints `FAIL ...` and shuts down with a non-zero status, which is an
//! unexpected end for a `fault` partition. The exception is `apic` (`rounds=N`, default 20):
//! it abuses its local APICs, checks what the SDM says comes back, and runs on to a clean
//! shutdown (`expect = "exit"`, two vCPUs); `apic-init-self` and `apic-lock` end the
//! partition (`apic_storm.rs`).
#![no_std]
#![no_main]

mod apic;
mod apic_storm;
mod forbidden;
mod outside;

use guest_rt::{StartInfo, println};

guest_rt::entry!(main);

/// The modes, in the order `docs/guests.md` lists them.
const MODES: [&str; 10] = [
    "msr-ports-vmx",
    "triple-fault",
    "oob-read",
    "oob-write",
    "hypervisor-memory",
    "mmio-hole",
    "cr3-outside",
    "apic",
    "apic-init-self",
    "apic-lock",
];

fn main(info: &'static StartInfo) -> u64 {
    let mode = mode(info.cmdline());
    println!("attack: partition {} \"{}\", mode {mode}", info.partition_id, info.name());
    let failed = match mode {
        "msr-ports-vmx" => forbidden::run(),
        "triple-fault" => 0,
        "oob-read" => outside::oob_read(),
        "oob-write" => outside::oob_write(info.ram_size),
        "hypervisor-memory" => outside::hypervisor_memory(info.ram_size),
        "mmio-hole" => outside::mmio_hole(),
        "cr3-outside" => outside::cr3_outside(),
        "apic" => return apic::run(rounds(info.cmdline())),
        "apic-init-self" => {
            apic_storm::init_self();
            0
        }
        "apic-lock" => {
            apic_storm::lock();
            0
        }
        other => {
            println!("FAIL attack mode: unknown mode \"{other}\" (known: {MODES:?})");
            return 2;
        }
    };
    if mode == "msr-ports-vmx" || mode == "triple-fault" {
        outside::triple_fault();
    }
    // Every mode above ends in something the hypervisor must stop.
    1 + failed
}

/// The value of `rounds=` in the command line (the `apic` mode's storm rounds), else 20.
fn rounds(cmdline: &str) -> u64 {
    cmdline
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix("rounds=")?.parse().ok())
        .unwrap_or(20)
}

/// The value of `mode=` in the command line, else the default.
fn mode(cmdline: &str) -> &str {
    cmdline.split_ascii_whitespace().find_map(|word| word.strip_prefix("mode=")).unwrap_or(MODES[0])
}
