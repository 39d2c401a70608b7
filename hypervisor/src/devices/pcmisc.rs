//! Small chipset ports a stock PC kernel touches at boot.
//!
//! - [`SysCtlA`], port 0x92, "system control port A" (PS/2 and every PC chipset since):
//!   bit 0 fast reset (a 0 to 1 transition resets the CPU), bit 1 A20 gate enable, the
//!   others kept as written. The A20 gate is not emulated: the partition's address space
//!   never wraps at 1 MiB whatever bit 1 says, as on every machine that has no A20 mask any
//!   more; the bit reads back as written (set at reset, as firmware leaves it).
//! - [`PciNone`], ports 0xCF8-0xCFF: PCI configuration mechanism #1 (PCI Local Bus
//!   Specification 3.0, 3.2.2.3.2) with no devices behind it. CONFIG_ADDRESS (a dword at
//!   0xCF8) keeps the enable bit and bits 23:2 and reads them back, so Linux's
//!   `pci_check_type1()` finds the mechanism; CONFIG_DATA (0xCFC-0xCFF) reads all-ones for
//!   every bus, device and function (no device) and drops writes. Byte accesses to
//!   0xCF8-0xCFB are not CONFIG_ADDRESS: they read 0xFF (so mechanism #2 is not found),
//!   except 0xCF9, the reset control register of Intel chipsets (ICH/PCH datasheets, "RST_CNT"):
//!   bits 3:1 read back, and setting bit 2 (RST_CPU) requests a reset, for `reboot=pci`.
//! - [`PostPort`], port 0x80: the POST code and I/O-delay port. Writes are kept; reads return
//!   the last byte written (as many chipsets do; others float the bus to 0xFF).

use super::shared::{ones, read_bytes, write_bytes};
use crate::vmm::bus::Device;

/// Port 0x92. Attach at 0x92..0x93.
#[derive(Debug)]
pub struct SysCtlA {
    value: u8,
    reset: bool,
}

impl Default for SysCtlA {
    fn default() -> Self {
        Self::new()
    }
}

impl SysCtlA {
    /// Bit 0 fast reset.
    pub const RESET: u8 = 1 << 0;
    /// Bit 1 A20 enable.
    pub const A20: u8 = 1 << 1;

    /// A20 enabled, no reset requested.
    pub fn new() -> Self {
        Self { value: Self::A20, reset: false }
    }

    /// Whether the guest requested a reset since the last call.
    pub fn reset_requested(&mut self) -> bool {
        core::mem::take(&mut self.reset)
    }

    /// Bit 1 as the guest last wrote it (informational: A20 is always enabled).
    pub fn a20(&self) -> bool {
        self.value & Self::A20 != 0
    }

    fn write_byte(&mut self, v: u8) {
        if v & Self::RESET != 0 && self.value & Self::RESET == 0 {
            self.reset = true;
        }
        self.value = v;
    }
}

impl Device for SysCtlA {
    fn name(&self) -> &'static str {
        "sysctl-a"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        read_bytes(offset, size, 1, |_| self.value)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        write_bytes(offset, size, 1, value, |_, v| self.write_byte(v));
    }
}

/// Ports 0xCF8-0xCFF. Attach at 0xCF8..0xD00.
#[derive(Debug, Default)]
pub struct PciNone {
    address: u32,
    /// 0xCF9 bits 3:1.
    rst_cnt: u8,
    reset: bool,
}

impl PciNone {
    /// CONFIG_ADDRESS bits kept: enable (31) and bus, device, function, register (23:2).
    const ADDRESS_BITS: u32 = 0x80ff_fffc;
    /// 0xCF9 RST_CPU.
    const RST_CPU: u8 = 1 << 2;

    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the guest requested a reset through 0xCF9 since the last call.
    pub fn reset_requested(&mut self) -> bool {
        core::mem::take(&mut self.reset)
    }

    /// CONFIG_ADDRESS as the guest last wrote it (reserved bits dropped).
    pub fn address(&self) -> u32 {
        self.address
    }
}

impl Device for PciNone {
    fn name(&self) -> &'static str {
        "pci-none"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        match (offset, size) {
            (0, 4) => u64::from(self.address),
            (4.., _) => ones(size),
            _ => read_bytes(offset, size, 8, |p| if p == 1 { self.rst_cnt } else { 0xff }),
        }
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        if (offset, size) == (0, 4) {
            self.address = value as u32 & Self::ADDRESS_BITS;
            return;
        }
        write_bytes(offset, size, 8, value, |p, v| {
            if p == 1 {
                if v & Self::RST_CPU != 0 && self.rst_cnt & Self::RST_CPU == 0 {
                    self.reset = true;
                }
                self.rst_cnt = v & 0x0e;
            }
        });
    }
}

/// Port 0x80. Attach at 0x80..0x81.
#[derive(Debug, Default)]
pub struct PostPort {
    last: u8,
    writes: u64,
}

impl PostPort {
    pub fn new() -> Self {
        Self::default()
    }
    /// The last POST code written.
    pub fn last_code(&self) -> u8 {
        self.last
    }
    /// Writes seen (Linux's `outb_p` I/O delays land here; `io_delay=none` avoids them).
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl Device for PostPort {
    fn name(&self) -> &'static str {
        "post"
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        read_bytes(offset, size, 1, |_| self.last)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        write_bytes(offset, size, 1, value, |_, v| {
            self.last = v;
            self.writes += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::bus::Bus;
    use alloc::boxed::Box;

    #[test]
    fn port_92_a20_and_fast_reset() {
        let mut p = SysCtlA::new();
        assert_eq!(p.read(0, 1), 0x02, "A20 on from firmware");
        assert!(p.a20());
        // Linux's enable_a20_fast(): set A20, clear the reset bit.
        let v = (p.read(0, 1) as u8 | 0x02) & !0x01;
        p.write(0, 1, u64::from(v));
        assert!(!p.reset_requested());
        p.write(0, 1, 0x00);
        assert!(!p.a20() && p.read(0, 1) == 0, "the bit reads back as written");
        p.write(0, 1, 0x01);
        assert!(p.reset_requested());
        assert!(!p.reset_requested(), "taken once");
        p.write(0, 1, 0x03);
        assert!(!p.reset_requested(), "only a 0 to 1 transition resets");
        p.write(0, 1, 0x02);
        p.write(0, 2, 0xff01);
        assert!(p.reset_requested());
        assert_eq!(p.read(0, 2), 0xff01, "the byte past the port floats");
    }

    #[test]
    fn pci_mechanism_1_with_no_devices() {
        let mut io = Bus::default();
        io.attach(0xcf8..0xd00, Box::new(PciNone::new()));
        // Linux pci_check_type1().
        io.write(0xcfb, 1, 0x01);
        let saved = io.read(0xcf8, 4);
        io.write(0xcf8, 4, 0x8000_0000);
        assert_eq!(io.read(0xcf8, 4), 0x8000_0000);
        io.write(0xcf8, 4, saved);
        // Every function of every device on every bus: absent.
        for bus in [0u32, 1, 255] {
            for dev in 0..32u32 {
                io.write(0xcf8, 4, u64::from(0x8000_0000 | bus << 16 | dev << 11));
                assert_eq!(io.read(0xcfc, 4), 0xffff_ffff);
                assert_eq!(io.read(0xcfe, 2), 0xffff);
                assert_eq!(io.read(0xcff, 1), 0xff);
                io.write(0xcfc, 4, 0);
            }
        }
        io.write(0xcf8, 4, 0xffff_ffff);
        assert_eq!(io.read(0xcf8, 4), 0x80ff_fffc, "reserved bits read 0");
        // Mechanism #2's probe fails: byte accesses are not CONFIG_ADDRESS.
        io.write(0xcfb, 1, 0);
        io.write(0xcf8, 1, 0);
        io.write(0xcfa, 1, 0);
        assert_eq!((io.read(0xcf8, 1), io.read(0xcfa, 1)), (0xff, 0xff));
        assert_eq!(io.read(0xcf8, 4), 0x80ff_fffc, "unchanged by byte writes");
        assert_eq!(io.absent, 0);
    }

    #[test]
    fn pci_reset_control_register() {
        let mut p = PciNone::new();
        p.write(1, 1, 0x02);
        assert_eq!(p.read(1, 1), 0x02);
        assert!(!p.reset_requested());
        p.write(1, 1, 0x06);
        assert!(p.reset_requested());
        assert_eq!(p.read(1, 1), 0x06);
        p.write(1, 1, 0x0e);
        assert!(!p.reset_requested(), "RST_CPU already set");
    }

    #[test]
    fn post_port_keeps_the_last_code() {
        let mut p = PostPort::new();
        p.write(0, 1, 0x55);
        p.write(0, 1, 0xaa);
        assert_eq!((p.read(0, 1), p.last_code(), p.writes()), (0xaa, 0xaa, 2));
        p.write(0, 4, 0x1234_5678);
        assert_eq!((p.read(0, 2), p.writes()), (0xff78, 3));
    }

    #[test]
    fn hostile_accesses_never_panic() {
        let mut devs: [Box<dyn Device>; 3] =
            [Box::new(SysCtlA::new()), Box::new(PciNone::new()), Box::new(PostPort::new())];
        for d in &mut devs {
            for offset in [0, 1, 2, 3, 4, 5, 7, 8, 100, u64::MAX] {
                for size in [0, 1, 2, 3, 4, 8, 16, 255] {
                    for v in [0, 1, 0xff, 0x8000_0001, u64::MAX] {
                        d.write(offset, size, v);
                        let r = d.read(offset, size);
                        assert!(size >= 8 || r <= ones(size), "{} {offset} {size}", d.name());
                    }
                }
            }
        }
    }
}
