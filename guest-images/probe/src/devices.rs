//! Port I/O (absent ports, the virtual UART) and the sysinfo MMIO device.

use core::arch::asm;

use guest_rt::console::{COM1, LCR, LSR, LSR_TEMT, LSR_THRE, SCR};
use guest_rt::hvabi::start::{
    SYSINFO_GPA, SYSINFO_ID, SYSINFO_MAGIC, SYSINFO_READS, SYSINFO_SCRATCH,
};
use guest_rt::instr::{inb, inl, inw, outb, outl, outw};
use guest_rt::paging::{self, Caching, PAGE_2M};
use guest_rt::{Checks, StartInfo, checks::Why, ensure};

/// An ATA status/data port pair: never given to a partition.
const ABSENT_8: u16 = 0x1f7;
const ABSENT_16_32: u16 = 0x1f0;

pub fn run(c: &mut Checks, info: &StartInfo) {
    absent_ports(c);
    uart(c);
    sysinfo(c, info);
}

fn absent_ports(c: &mut Checks) {
    // SAFETY: these ports are absent in a partition (reads all-ones, writes ignored).
    let (b, w, l) = unsafe { (inb(ABSENT_8), inw(ABSENT_16_32), inl(ABSENT_16_32)) };
    c.check_eq("port-absent-inb", b, 0xff);
    c.check_eq("port-absent-inw", w, 0xffff);
    c.check_eq("port-absent-inl", l, 0xffff_ffff);
    // SAFETY: as above; the writes must be ignored.
    let after = unsafe {
        outb(ABSENT_8, 0x00);
        outw(ABSENT_16_32, 0x1234);
        outl(ABSENT_16_32, 0);
        (inb(ABSENT_8), inl(ABSENT_16_32))
    };
    c.check(
        "port-absent-write",
        ensure!(after == (0xff, 0xffff_ffff), "after writes: {:#x}, {:#x}", after.0, after.1),
    );
}

fn uart(c: &mut Checks) {
    // SAFETY: COM1 is the partition's own virtual UART; LSR reads have no side effect here.
    let lsr = unsafe { inb(LSR) };
    let want = LSR_THRE | LSR_TEMT;
    c.check("uart-lsr", ensure!(lsr & want == want, "LSR {lsr:#x} lacks THRE|TEMT"));

    // SAFETY: the scratch register only stores a byte.
    let got = unsafe {
        let mut got = [0u8; 2];
        for (slot, v) in got.iter_mut().zip([0xa5u8, 0x5a]) {
            outb(SCR, v);
            *slot = inb(SCR);
        }
        got
    };
    c.check("uart-scratch", ensure!(got == [0xa5, 0x5a], "wrote a5, 5a; read {got:02x?}"));

    // With DLAB set, ports +0/+1 are the divisor latch. Nothing may print until LCR is back.
    // SAFETY: our own UART; the old divisor and LCR are restored before anything prints.
    let (lcr_dlab, dll, dlm, lcr_after) = unsafe {
        let lcr = inb(LCR);
        outb(LCR, lcr | 0x80);
        let lcr_dlab = inb(LCR);
        let (old_dll, old_dlm) = (inb(COM1), inb(COM1 + 1));
        outb(COM1, 0x0c);
        outb(COM1 + 1, 0x01);
        let (dll, dlm) = (inb(COM1), inb(COM1 + 1));
        outb(COM1, old_dll);
        outb(COM1 + 1, old_dlm);
        outb(LCR, lcr);
        (lcr_dlab, dll, dlm, (lcr, inb(LCR)))
    };
    let r = ensure!(lcr_dlab & 0x80 != 0, "LCR {lcr_dlab:#x} after setting DLAB")
        .and_then(|()| ensure!((dll, dlm) == (0x0c, 0x01), "divisor {dlm:02x}{dll:02x}, want 010c"))
        .and_then(|()| {
            ensure!(
                lcr_after.0 == lcr_after.1,
                "LCR {:#x} after restoring {:#x}",
                lcr_after.1,
                lcr_after.0
            )
        });
    c.check("uart-dlab", r);
}

fn mmio_read32(gpa: u64) -> u32 {
    let v: u32;
    // SAFETY: `gpa` is in the sysinfo page, mapped uncached by `sysinfo`; a plain MOV so the
    // hypervisor's MMIO decoder sees the simplest form.
    unsafe {
        asm!("mov {:e}, dword ptr [{}]", out(reg) v, in(reg) gpa, options(nostack, preserves_flags))
    };
    v
}

fn mmio_read64(gpa: u64) -> u64 {
    let v: u64;
    // SAFETY: as in `mmio_read32`.
    unsafe {
        asm!("mov {}, qword ptr [{}]", out(reg) v, in(reg) gpa, options(nostack, preserves_flags))
    };
    v
}

fn mmio_write64(gpa: u64, v: u64) {
    // SAFETY: as in `mmio_read32`; only the scratch register is written.
    unsafe {
        asm!("mov qword ptr [{}], {}", in(reg) gpa, in(reg) v, options(nostack, preserves_flags))
    };
}

fn sysinfo(c: &mut Checks, info: &StartInfo) {
    let window = SYSINFO_GPA & !(PAGE_2M - 1);
    // SAFETY: the start-up map covers only RAM (below 1 GiB), so nothing of ours lives at
    // 0xfea0_0000..0xfec0_0000; the only device there is sysinfo.
    let mapped = unsafe { paging::map_2m(window, window, Caching::Uncached) };
    let ok = c.check("sysinfo-map", mapped);
    if !ok {
        return;
    }
    c.check_eq("sysinfo-magic", mmio_read32(SYSINFO_GPA), SYSINFO_MAGIC);
    c.check_eq("sysinfo-id", mmio_read64(SYSINFO_GPA + SYSINFO_ID), info.partition_id);
    c.check("sysinfo-scratch", scratch());
    let a = mmio_read64(SYSINFO_GPA + SYSINFO_READS);
    let b = mmio_read64(SYSINFO_GPA + SYSINFO_READS);
    c.check("sysinfo-reads", ensure!(a >= 3 && b == a + 1, "read counter {a} then {b}"));
}

fn scratch() -> Result<(), Why> {
    let at = SYSINFO_GPA + SYSINFO_SCRATCH;
    for v in [0x0123_4567_89ab_cdef_u64, !0x0123_4567_89ab_cdef, 0] {
        mmio_write64(at, v);
        let got = mmio_read64(at);
        ensure!(got == v, "wrote {v:#x}, read {got:#x}")?;
    }
    Ok(())
}
