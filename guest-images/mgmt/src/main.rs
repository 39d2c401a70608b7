//! The management partition's kernel (the Xen dom0 / Hyper-V root partition of this
//! hypervisor). Its RAM is identity-mapped, all the host RAM the others do not use, and it
//! links at `hvabi::start::MGMT_IMAGE_BASE` (`build.rs`). It shows that the devices handed to it work (sector 0 of
//! the primary ATA disk, the PCI functions it may see), then offers a shell on its console
//! that drives the management hypercalls (`docs/hypercalls.md`) and echoes channel messages.
#![no_std]
#![no_main]

mod ata;
mod channels;
mod firmware;
mod idle;
mod irq;
mod pci;
mod shell;

use guest_rt::{StartInfo, println};
use hvabi::start::{MGMT_IMAGE_BASE, MGMT_START_INFO_GPA};

guest_rt::entry!(main);

fn main(info: &'static StartInfo) -> u64 {
    println!(
        "mgmt: management partition {}, {} MiB RAM, identity-mapped",
        info.partition_id,
        info.ram_size >> 20
    );
    let at = info as *const StartInfo as u64;
    let (image_start, _) = guest_rt::image_range();
    if at != MGMT_START_INFO_GPA || image_start != MGMT_IMAGE_BASE {
        println!(
            "mgmt: warning: start info at {at:#x}, image at {image_start:#x}: expected {MGMT_START_INFO_GPA:#x} and {MGMT_IMAGE_BASE:#x}"
        );
    }
    idle::init();
    irq::init();
    ata::report();
    firmware::report();
    pci::report();
    shell::run()
}
