//! The primary ATA channel's master disk, read with PIO (ATA/ATAPI-6 §9.7 and the READ
//! SECTORS command): proof that the ports handed over in the manifest reach the hardware and
//! that its interrupt reaches us. The drive's interrupt is on (nIEN clear): after the command
//! we sleep until IRQ 14 says the data is ready (`irq.rs`), then move the sector with PIO.
//! Every wait is bounded.

use crate::{idle, irq};
use guest_rt::instr::{inb, inw, outb};
use guest_rt::println;
use mgmt::report::{SECTOR_SIZE, Sector0};

/// Command block registers of the primary channel.
const DATA: u16 = 0x1f0;
const ERROR: u16 = 0x1f1;
const SECTOR_COUNT: u16 = 0x1f2;
const LBA_LOW: u16 = 0x1f3;
const LBA_MID: u16 = 0x1f4;
const LBA_HIGH: u16 = 0x1f5;
const DRIVE: u16 = 0x1f6;
/// Status on read, command on write.
const STATUS: u16 = 0x1f7;
/// Control block: alternate status on read (no side effect), device control on write.
const CONTROL: u16 = 0x3f6;

const STATUS_ERR: u8 = 1 << 0;
const STATUS_DRQ: u8 = 1 << 3;
const STATUS_DF: u8 = 1 << 5;
const STATUS_DRDY: u8 = 1 << 6;
const STATUS_BSY: u8 = 1 << 7;

/// Device control: interrupts on (nIEN, bit 1, clear).
const CONTROL_INTERRUPTS_ON: u8 = 0;
/// Drive/head: LBA addressing, master, LBA bits 27:24 = 0.
const DRIVE_MASTER_LBA: u8 = 0xe0;
const CMD_READ_SECTORS: u8 = 0x20;

/// Status polls before a wait gives up (each is one port read: microseconds at most).
const POLLS: u32 = 1_000_000;

/// Why sector 0 could not be read.
enum Failure {
    /// Nothing answers once the master is selected (the status floats to 0xff without a
    /// controller, or reads 0 without a drive).
    Absent(u8),
    /// `what` did not happen within [`POLLS`] status reads.
    Timeout { what: &'static str, status: u8 },
    /// The device reported an error.
    Error { status: u8, error: u8 },
    /// The data was ready, but IRQ 14 never came.
    NoInterrupt { status: u8 },
}

/// Naps (each up to [`idle::NAP_TICKS`]) to wait for IRQ 14 before giving up.
const IRQ_NAPS: u32 = 200;

fn status() -> u8 {
    // SAFETY: the manifest hands ports 0x1f0-0x1f7 and 0x3f6 to this partition (or they are
    // absent and read all-ones); reading the status only acknowledges a pending interrupt.
    unsafe { inb(STATUS) }
}

fn alt_status() -> u8 {
    // SAFETY: as in `status`; the alternate status has no side effect.
    unsafe { inb(CONTROL) }
}

/// The 400 ns a device may take to post its status after a command or drive select: four
/// reads of the alternate status.
fn settle() {
    for _ in 0..4 {
        alt_status();
    }
}

/// Polls the status until `done` holds; fails on ERR/DF (when `errors`) or after [`POLLS`].
fn wait(what: &'static str, done: impl Fn(u8) -> bool, errors: bool) -> Result<u8, Failure> {
    let mut s = 0;
    for _ in 0..POLLS {
        s = status();
        if errors && s & STATUS_BSY == 0 && s & (STATUS_ERR | STATUS_DF) != 0 {
            // SAFETY: as in `status`; the error register only reads.
            let error = unsafe { inb(ERROR) };
            return Err(Failure::Error { status: s, error });
        }
        if done(s) {
            return Ok(s);
        }
    }
    Err(Failure::Timeout { what, status: s })
}

/// Reads LBA 0 of the primary master.
fn read_sector0(buf: &mut [u8; SECTOR_SIZE]) -> Result<(), Failure> {
    // Select the master before looking at the status: the firmware may have left the slave
    // selected, and an absent slave's status reads 0 on a channel that has a master.
    // SAFETY: the primary ATA channel is this partition's (see `status`): selecting the master,
    // turning its interrupt off and programming LBA 0 touch nothing else.
    unsafe {
        outb(CONTROL, CONTROL_INTERRUPTS_ON);
        outb(DRIVE, DRIVE_MASTER_LBA);
    }
    settle();
    let s = status();
    if s == 0xff || s == 0 {
        return Err(Failure::Absent(s));
    }
    wait("BSY to clear and DRDY", |s| s & (STATUS_BSY | STATUS_DRDY) == STATUS_DRDY, true)?;
    // SAFETY: as above: one sector from LBA 0, a read that changes nothing on the disk.
    unsafe {
        outb(SECTOR_COUNT, 1);
        outb(LBA_LOW, 0);
        outb(LBA_MID, 0);
        outb(LBA_HIGH, 0);
        outb(STATUS, CMD_READ_SECTORS);
    }
    // The drive raises INTRQ once the sector is in its buffer (ATA/ATAPI-6 §9.7, PIO data-in).
    let before = irq::ata_irqs();
    for _ in 0..IRQ_NAPS {
        if irq::ata_irqs() != before {
            break;
        }
        idle::nap(idle::NAP_TICKS);
    }
    if irq::ata_irqs() == before {
        return Err(Failure::NoInterrupt { status: alt_status() });
    }
    settle();
    wait("DRQ", |s| s & (STATUS_BSY | STATUS_DRQ) == STATUS_DRQ, true)?;
    for pair in buf.chunks_exact_mut(2) {
        // SAFETY: DRQ is set: the data register holds the sector, 256 words.
        let w = unsafe { inw(DATA) };
        pair.copy_from_slice(&w.to_le_bytes());
    }
    settle();
    let s = status();
    if s & (STATUS_ERR | STATUS_DF) != 0 {
        // SAFETY: as in `wait`.
        let error = unsafe { inb(ERROR) };
        return Err(Failure::Error { status: s, error });
    }
    Ok(())
}

/// Prints what sector 0 of the primary master holds, or why it could not be read.
pub fn report() {
    let mut sector = [0u8; SECTOR_SIZE];
    match read_sector0(&mut sector) {
        Ok(()) => {
            println!(
                "mgmt: disk: IRQ {} taken {} time(s) at vector {:#x}",
                irq::IRQ_ATA,
                irq::ata_irqs(),
                irq::VECTOR_BASE + irq::IRQ_ATA
            );
            println!("mgmt: disk: {}", Sector0::of(&sector));
        }
        Err(Failure::NoInterrupt { status }) => {
            println!("mgmt: disk: error: IRQ 14 never came (status {status:#04x})")
        }
        Err(Failure::Absent(s)) => println!("mgmt: disk: no ATA device (status {s:#04x})"),
        Err(Failure::Timeout { what, status }) => {
            println!("mgmt: disk: error: timed out waiting for {what} (status {status:#04x})")
        }
        Err(Failure::Error { status, error }) => {
            println!("mgmt: disk: error: status {status:#04x}, error register {error:#04x}")
        }
    }
}
