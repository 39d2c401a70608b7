//! Port-I/O and MMIO buses: address ranges mapped to device models. An address no device
//! claims is absent: reads give all-ones, writes are dropped, and both are counted.

use crate::devices::uart16550::Uart16550;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::Range;

/// A device model reached through the buses.
pub trait Device {
    /// Short name for reports.
    fn name(&self) -> &'static str;
    /// Reads `size` bytes at `offset` from the start of the device's range.
    fn read(&mut self, offset: u64, size: u8) -> u64;
    /// Writes the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64);
    /// Console bytes the device produced since the last call (a UART's output).
    fn take_output(&mut self, _out: &mut Vec<u8>) {}
    /// True for a device that can produce output ([`Device::take_output`]): the bus asks only
    /// those, after every write.
    fn produces_output(&self) -> bool {
        false
    }
    /// The device model as a UART, for console input.
    fn as_uart(&mut self) -> Option<&mut Uart16550> {
        None
    }
}

/// One bus: non-overlapping ranges, each claimed by one device.
#[derive(Default)]
pub struct Bus {
    devices: Vec<(Range<u64>, Box<dyn Device>)>,
    /// Indices in `devices` of those that produce output.
    with_output: Vec<usize>,
    /// Accesses that hit no device.
    pub absent: u64,
    /// The address of the last such access (for the statistics).
    pub last_absent: u64,
}

impl Bus {
    /// Claims `range` for `dev`. Panics on overlap: the layout is the hypervisor's own.
    pub fn attach(&mut self, range: Range<u64>, dev: Box<dyn Device>) {
        assert!(
            self.devices.iter().all(|(r, _)| r.end <= range.start || r.start >= range.end),
            "overlapping device ranges"
        );
        if dev.produces_output() {
            self.with_output.push(self.devices.len());
        }
        self.devices.push((range, dev));
    }

    /// True when a device claims `addr`.
    pub fn claims(&self, addr: u64) -> bool {
        self.devices.iter().any(|(r, _)| r.contains(&addr))
    }

    fn find(&mut self, addr: u64) -> Option<(u64, &mut Box<dyn Device>)> {
        self.devices.iter_mut().find(|(r, _)| r.contains(&addr)).map(|(r, d)| (addr - r.start, d))
    }

    /// Reads; all-ones for absent hardware.
    pub fn read(&mut self, addr: u64, size: u8) -> u64 {
        match self.find(addr) {
            Some((off, d)) => d.read(off, size),
            None => {
                self.absent += 1;
                self.last_absent = addr;
                if size >= 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 }
            }
        }
    }

    /// Writes; dropped for absent hardware.
    pub fn write(&mut self, addr: u64, size: u8, value: u64) {
        match self.find(addr) {
            Some((off, d)) => d.write(off, size, value),
            None => {
                self.absent += 1;
                self.last_absent = addr;
            }
        }
    }

    /// Every device's pending console output, appended to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        for &i in &self.with_output {
            self.devices[i].1.take_output(out);
        }
    }

    /// The first UART on the bus.
    pub fn uart(&mut self) -> Option<&mut Uart16550> {
        self.devices.iter_mut().find_map(|(_, d)| d.as_uart())
    }
}

impl Device for Uart16550 {
    fn name(&self) -> &'static str {
        "uart16550"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        // Wider accesses read consecutive registers, as on a real ISA bus.
        (0..u64::from(size))
            .fold(0, |v, i| v | (u64::from(Uart16550::read(self, (offset + i) as u8)) << (8 * i)))
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        for i in 0..u64::from(size) {
            Uart16550::write(self, (offset + i) as u8, (value >> (8 * i)) as u8);
        }
    }
    fn produces_output(&self) -> bool {
        true
    }
    fn take_output(&mut self, out: &mut Vec<u8>) {
        out.extend(self.drain_output());
    }
    fn as_uart(&mut self) -> Option<&mut Uart16550> {
        Some(self)
    }
}

/// The sysinfo MMIO device (`docs/guest-contract.md`): magic, partition id, a scratch
/// register and a read counter.
#[derive(Debug)]
pub struct Sysinfo {
    pub id: u64,
    pub scratch: u64,
    pub reads: u64,
}

impl Device for Sysinfo {
    fn name(&self) -> &'static str {
        "sysinfo"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        use hvabi::start::*;
        self.reads += 1;
        let v = match offset & !7 {
            0 => u64::from(SYSINFO_MAGIC),
            SYSINFO_ID => self.id,
            SYSINFO_SCRATCH => self.scratch,
            SYSINFO_READS => self.reads,
            _ => 0,
        };
        let v = v >> (8 * (offset & 7));
        if size >= 8 { v } else { v & ((1 << (size * 8)) - 1) }
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        if offset & !7 == hvabi::start::SYSINFO_SCRATCH {
            let shift = 8 * (offset & 7);
            let mask = if size >= 8 { u64::MAX } else { ((1u64 << (size * 8)) - 1) << shift };
            self.scratch = (self.scratch & !mask) | ((value << shift) & mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_hardware_reads_all_ones_and_counts() {
        let mut b = Bus::default();
        b.attach(0x3f8..0x400, Box::new(Uart16550::new()));
        assert_eq!(b.read(0x1f7, 1), 0xff);
        assert_eq!(b.read(0x1f0, 2), 0xffff);
        assert_eq!(b.read(0x1f0, 4), 0xffff_ffff);
        b.write(0x80, 1, 0);
        assert_eq!(b.absent, 4);
        b.write(0x3ff, 1, 0x5a);
        assert_eq!(b.read(0x3ff, 1), 0x5a);
        assert_eq!(b.absent, 4);
        assert!(b.claims(0x3f8) && !b.claims(0x400));
    }

    #[test]
    fn uart_output_reaches_the_bus() {
        let mut b = Bus::default();
        b.attach(0x3f8..0x400, Box::new(Uart16550::new()));
        for c in b"hi\n" {
            b.write(0x3f8, 1, u64::from(*c));
        }
        let mut out = Vec::new();
        b.take_output(&mut out);
        assert_eq!(out, b"hi\n");
    }

    #[test]
    fn sysinfo_registers() {
        let mut s = Sysinfo { id: 7, scratch: 0, reads: 0 };
        assert_eq!(s.read(0, 4), u64::from(hvabi::start::SYSINFO_MAGIC));
        assert_eq!(s.read(8, 8), 7);
        s.write(0x10, 8, 0x1122_3344_5566_7788);
        assert_eq!(s.read(0x10, 8), 0x1122_3344_5566_7788);
        s.write(0x11, 1, 0xaa);
        assert_eq!(s.read(0x10, 8), 0x1122_3344_5566_aa88);
        assert_eq!(s.read(0x18, 8), 5);
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn overlap_is_a_bug() {
        let mut b = Bus::default();
        b.attach(0..8, Box::new(Sysinfo { id: 0, scratch: 0, reads: 0 }));
        b.attach(4..12, Box::new(Sysinfo { id: 0, scratch: 0, reads: 0 }));
    }
}
