//! The management partition's kernel (the Xen dom0 / Hyper-V root partition of this
//! hypervisor). Its RAM is identity-mapped at `hvabi::start::MGMT_RAM_BASE` and it links at
//! that base + 2 MiB (`build.rs`). It shows that the devices handed to it work (sector 0 of
//! the primary ATA disk, the PCI functions it may see), then offers a shell on its console
//! that drives the management hypercalls (`docs/hypercalls.md`) and echoes channel messages.
#![no_std]
#![no_main]

mod ata;
mod channels;
mod idle;
mod irq;
mod pci;
mod shell;

use guest_rt::{StartInfo, println};
use hvabi::start::{MGMT_RAM_BASE, MGMT_START_INFO_OFFSET};

guest_rt::entry!(main);

/// Where the image must start: `MGMT_RAM_BASE + 2 MiB` (`build.rs` links it there).
const LINK_BASE: u64 = MGMT_RAM_BASE + (2 << 20);

fn main(info: &'static StartInfo) -> u64 {
    // The start-info page lies at a fixed offset from the start of RAM.
    let base = (info as *const StartInfo as u64).wrapping_sub(MGMT_START_INFO_OFFSET);
    println!(
        "mgmt: management partition {}, {} MiB RAM at {base:#x}",
        info.partition_id,
        info.ram_size >> 20
    );
    let (image_start, _) = guest_rt::image_range();
    if base != MGMT_RAM_BASE || image_start != LINK_BASE {
        println!(
            "mgmt: warning: RAM at {base:#x}, image at {image_start:#x}: expected {MGMT_RAM_BASE:#x} and {LINK_BASE:#x}"
        );
    }
    idle::init();
    irq::init();
    ata::report();
    pci::report();
    shell::run()
}
