//! Guest RAM: every page readable, a few pages up to the last byte writable.

use guest_rt::hvabi::start::IMAGE_MIN_GPA;
use guest_rt::{Checks, StartInfo, checks::Why, ensure, expect_exception, image_range};

const PAGE: u64 = 4096;

pub fn run(c: &mut Checks, info: &StartInfo) {
    c.check("ram-read", read_all(info.ram_size));
    c.check("ram-write", write_some(info.ram_size));
}

/// Reads one word of every page from 1 MiB to the end of RAM.
fn read_all(ram: u64) -> Result<(), Why> {
    let mut sum = 0u64;
    let mut addr = IMAGE_MIN_GPA;
    let e = expect_exception(|| {
        while addr < ram {
            // SAFETY: `addr` is inside RAM, identity-mapped; a read changes nothing.
            sum = sum.wrapping_add(unsafe { (addr as *const u64).read_volatile() });
            addr += PAGE;
        }
    });
    match e {
        None => Ok(()),
        Some(e) => Err(guest_rt::why!("{e} reading {addr:#x}")),
    }
}

/// Writes, reads back and restores a pattern at places outside this image (which holds the
/// stack): just above 1 MiB, just above the image, the middle and the top page of RAM (the
/// page the contract leaves free), its last byte included.
fn write_some(ram: u64) -> Result<(), Why> {
    let (image_start, image_end) = image_range();
    let places = [IMAGE_MIN_GPA, image_end + PAGE, ram / 2, ram - 2 * PAGE, ram - PAGE, ram - 8];
    let mut tested = 0;
    for at in places {
        if at < IMAGE_MIN_GPA || (image_start..image_end).contains(&at) || at + 8 > ram {
            continue;
        }
        let pattern = at ^ 0xa5a5_5a5a_0f0f_f0f0;
        let p = at as *mut u64;
        // SAFETY: `at..at + 8` is RAM outside this image and below the free top page's end:
        // nothing of ours lives there (the runtime's stack is in the image); the old value is
        // put back.
        let got = unsafe {
            let old = p.read_volatile();
            p.write_volatile(pattern);
            let got = p.read_volatile();
            p.write_volatile(old);
            got
        };
        ensure!(got == pattern, "at {at:#x}: wrote {pattern:#x}, read {got:#x}")?;
        tested += 1;
    }
    let last = (ram - 1) as *mut u8;
    // SAFETY: the last byte of RAM lies in the top page, which nothing uses.
    let got = unsafe {
        last.write_volatile(0x5a);
        last.read_volatile()
    };
    ensure!(got == 0x5a, "last byte {:#x}: read {got:#x} after writing 0x5a", ram - 1)?;
    ensure!(tested >= 3, "only {tested} places were outside the image")
}
