//! The bench guest: measures exit round trips with the loops of `hvabi::bench` (the same
//! instructions the hypervisor runs natively with `bench=1`) and prints one `BENCH name ticks`
//! line each, plus the ticks from the hypervisor's first instruction to this guest's `main`
//! and those of a CPU-bound loop without exits (`loop`, next to the hypervisor's native run).
//! Under Bochs and QEMU `-icount shift=0` a tick is one retired instruction, so the figures are
//! exact. `cargo xtask bench` reads them.
//!
//! Two more roles for the pinned-CPU figures (issue 10, item 7; `scenarios/bench-pinned*.toml`):
//! with `storm=1` on its command line it only takes OUT exits, without end (the exit storm on
//! another CPU); with `pinned=NAME` it waits [`SETTLE_TICKS`] (for that storm to be running),
//! then measures the CPUID round trip alone and prints `BENCH NAME TICKS`.
#![no_std]
#![no_main]

use guest_rt::paging::{self, Caching};
use guest_rt::{StartInfo, println};
use hvabi::bench::*;
use hvabi::start::SYSINFO_GPA;

guest_rt::entry!(main);

/// What `pinned=NAME` waits before it measures: longer than the hypervisor takes to build and
/// start the storm partition after this one (a few million instructions).
const SETTLE_TICKS: u64 = 50_000_000;

fn main(info: &'static StartInfo) -> u64 {
    let now = guest_rt::instr::rdtsc();
    let mut words = info.cmdline().split_ascii_whitespace();
    if words.clone().any(|w| w == "storm=1") {
        loop {
            // SAFETY: 0x3ff is the virtual UART's scratch register: writing it changes nothing else.
            unsafe { out_loop(1 << 20, 0x3ff) };
        }
    }
    if let Some(name) = words.find_map(|w| w.strip_prefix("pinned=")) {
        while guest_rt::instr::rdtsc().wrapping_sub(now) < SETTLE_TICKS {
            core::hint::spin_loop();
        }
        println!("BENCH {name} {}", ticks_per_op(ITERATIONS, cpuid_loop));
        return 0;
    }
    println!("BENCH boot-to-guest {}", now.saturating_sub(info.hv_start_tsc));
    let n = ITERATIONS;
    println!("BENCH cpuid {}", ticks_per_op(n, cpuid_loop));
    let intel = guest_rt::hypercall::uses_vmcall();
    // SAFETY: we run under the hypervisor, which answers the Version hypercall.
    println!("BENCH hypercall {}", ticks_per_op(n, |n| unsafe { hypercall_loop(n, intel) }));
    // SAFETY: 0x3ff is the virtual UART's scratch register: writing it changes nothing else.
    println!("BENCH out {}", ticks_per_op(n, |n| unsafe { out_loop(n, 0x3ff) }));
    let window = SYSINFO_GPA & !0x1f_ffff;
    // SAFETY: the 2 MiB window around the sysinfo device lies far above RAM (nothing of ours
    // lives there); reading its magic register has no side effect but a counter.
    if let Err(e) = unsafe { paging::map_2m(window, window, Caching::Uncached) } {
        println!("FAIL bench: cannot map the sysinfo device: {e:?}");
        return 1;
    }
    // SAFETY: mapped just above; the magic register is read-only.
    println!("BENCH mmio {}", ticks_per_op(n, |n| unsafe { mmio_read_loop(n, SYSINFO_GPA) }));
    // The CPU-bound loop over RAM above the image, 2 MiB-aligned, leaving the top MiB (the
    // stack below `ram_size`) alone.
    let (_, image_end) = guest_rt::image_range();
    let buffer = (image_end + paging::PAGE_2M - 1) & !(paging::PAGE_2M - 1);
    if buffer + WALK_BYTES + (1 << 20) > info.ram_size {
        println!("FAIL bench: {} MiB of RAM leave no room for the loop", info.ram_size >> 20);
        return 1;
    }
    // SAFETY: RAM is identity-mapped; the buffer lies above this image and below the stack.
    println!("BENCH loop {}", unsafe { walk(buffer) });
    // Last, out of every figure: OUT exits with TSC stamps, for the hypervisor's exit profile
    // (`cargo xtask bench --profile`) to split the world switch into entry, guest and exit.
    // SAFETY: as for the OUT figure above.
    unsafe { stamped_out_loop(256, 0x3ff) };
    0
}
