//! The probe guest: checks the guest contract (`docs/guest-contract.md`) from inside a
//! partition, one `PASS name` / `FAIL name: why` line per check, then `probe: N checks, M
//! failed`; the shutdown status is M. The check list is in `docs/guests.md`. With `vcpus=2`
//! on its command line (a partition with two vCPUs) it runs the multi-vCPU checks alone
//! ([`smp`]); with `bench=1` too, the IPI round-trip figures instead ([`ipi_bench`]).
#![no_std]
#![no_main]

mod apic;
mod control;
mod cpu;
mod debug;
mod devices;
mod entry;
mod hypercalls;
mod ipi_bench;
mod memory;
mod msrs;
mod nmi;
mod remap;
mod smp;

use guest_rt::{Checks, StartInfo, println};

guest_rt::entry!(main);

fn main(info: &'static StartInfo) -> u64 {
    println!(
        "probe: partition {} \"{}\", {} MiB RAM, cmdline \"{}\"",
        info.partition_id,
        info.name(),
        info.ram_size >> 20,
        info.cmdline()
    );
    let mut c = Checks::new();
    let has = |word: &str| info.cmdline().split(' ').any(|w| w == word);
    if has("vcpus=2") && has("bench=1") {
        // The IPI figures of `cargo xtask bench` (scenario `bench-ipi`).
        ipi_bench::run(&mut c);
        return c.summary("probe");
    }
    if has("vcpus=2") {
        // The two-vCPU scenario: this vCPU starts the other and checks IPIs between them.
        smp::run(&mut c);
        return c.summary("probe");
    }
    entry::run(&mut c, info);
    cpu::run(&mut c);
    remap::run(&mut c, info);
    remap::run_edges(&mut c, info);
    control::run(&mut c);
    debug::run(&mut c);
    msrs::run(&mut c, info);
    devices::run(&mut c, info);
    hypercalls::run(&mut c, info);
    memory::run(&mut c, info);
    if apic::run(&mut c) {
        nmi::run(&mut c);
    }
    c.summary("probe")
}
