//! ATA PIO on the primary channel (ATA/ATAPI-6: "PIO data-in command protocol", "READ
//! SECTORS", the Status and Device Control registers): READ SECTORS of LBA 0 with the device's
//! interrupt enabled; the interrupt handler reads Status (which deasserts INTRQ).

use crate::cpu::{inb, inw, outb};

const DATA: u16 = 0x1f0;
const COUNT: u16 = 0x1f2;
const LBA0: u16 = 0x1f3;
const LBA1: u16 = 0x1f4;
const LBA2: u16 = 0x1f5;
const DEVICE: u16 = 0x1f6;
const STATUS: u16 = 0x1f7;
const ALT_STATUS: u16 = 0x3f6;
const BSY: u8 = 0x80;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;
const DF: u8 = 0x20;

/// The interrupt handler's part: acknowledge the device.
pub fn acknowledge() {
    let _ = inb(STATUS);
}

fn wait_idle() -> Result<(), &'static str> {
    for _ in 0..4_000_000 {
        let s = inb(STATUS);
        if s == 0xff {
            return Err("no device on the primary channel (status 0xff)");
        }
        if s & (BSY | DRQ) == 0 {
            return Ok(());
        }
    }
    Err("timeout waiting for BSY and DRQ to clear")
}

/// Selects the master and issues READ SECTORS of LBA 0, interrupts enabled (nIEN = 0).
pub fn start_read() -> Result<(), &'static str> {
    wait_idle()?;
    outb(DEVICE, 0xe0);
    for _ in 0..4 {
        let _ = inb(ALT_STATUS);
    }
    wait_idle()?;
    outb(ALT_STATUS, 0);
    outb(COUNT, 1);
    outb(LBA0, 0);
    outb(LBA1, 0);
    outb(LBA2, 0);
    outb(STATUS, 0x20);
    Ok(())
}

/// After the interrupt: waits for DRQ on Alternate Status and reads the 512 bytes.
pub fn finish_read(sector: &mut [u8; 512]) -> Result<(), &'static str> {
    for _ in 0..4_000_000 {
        let s = inb(ALT_STATUS);
        if s & BSY != 0 {
            continue;
        }
        if s & (ERR | DF) != 0 {
            return Err("READ SECTORS ended with ERR or DF");
        }
        if s & DRQ != 0 {
            for w in sector.chunks_mut(2) {
                w.copy_from_slice(&inw(DATA).to_le_bytes());
            }
            return Ok(());
        }
    }
    Err("timeout waiting for DRQ")
}
