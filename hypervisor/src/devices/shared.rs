//! Plumbing shared by the PC device models: wide port accesses split into bytes, and a
//! device shared between the bus and the code that raises its interrupts.
//!
//! Several devices need two owners: the bus, which routes guest accesses to them, and the
//! hypervisor, which asks them for interrupt edges, deadlines or reset requests. Wrap such a
//! device in [`Shared`] (`Rc<RefCell<T>>`): the bus gets a clone, the hypervisor keeps one.
//! (A shared device is not offered to the bus's `as_uart`: a `RefCell` cannot lend it out.)

use crate::vmm::bus::Device;
use alloc::rc::Rc;
use core::cell::RefCell;

/// A device with more than one owner.
pub type Shared<T> = Rc<RefCell<T>>;

/// Wraps `dev` for sharing.
pub fn shared<T>(dev: T) -> Shared<T> {
    Rc::new(RefCell::new(dev))
}

impl<T: Device> Device for Rc<RefCell<T>> {
    fn name(&self) -> &'static str {
        self.borrow().name()
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.borrow_mut().read(offset, size)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.borrow_mut().write(offset, size, value)
    }
    fn produces_output(&self) -> bool {
        self.borrow().produces_output()
    }
    fn take_output(&mut self, out: &mut alloc::vec::Vec<u8>) {
        self.borrow_mut().take_output(out)
    }
}

/// A read of `size` bytes (at most 8) at `offset` of a device with `ports` byte-wide
/// registers, as the ISA bus performs it: one byte at a time at consecutive ports, `reg`
/// giving each. Bytes past the device's ports read 0xFF (nothing drives the bus).
pub fn read_bytes(offset: u64, size: u8, ports: u64, mut reg: impl FnMut(u64) -> u8) -> u64 {
    (0..u64::from(size.min(8))).fold(0, |v, i| {
        let port = offset.saturating_add(i);
        let b = if port < ports { reg(port) } else { 0xff };
        v | (u64::from(b) << (8 * i))
    })
}

/// A write of the low `size` bytes (at most 8) of `value` at `offset`, byte by byte as
/// [`read_bytes`] reads; bytes past the device's ports are dropped.
pub fn write_bytes(offset: u64, size: u8, ports: u64, value: u64, mut reg: impl FnMut(u64, u8)) {
    for i in 0..u64::from(size.min(8)) {
        let port = offset.saturating_add(i);
        if port < ports {
            reg(port, (value >> (8 * i)) as u8);
        }
    }
}

/// All-ones of `size` bytes (at most 8): what absent hardware returns.
pub fn ones(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn wide_accesses_split_into_consecutive_ports() {
        let regs = [0x11u8, 0x22, 0x33];
        assert_eq!(read_bytes(0, 2, 3, |p| regs[p as usize]), 0x2211);
        assert_eq!(read_bytes(1, 4, 3, |p| regs[p as usize]), 0xffff_3322);
        assert_eq!(read_bytes(u64::MAX, 8, 3, |p| regs[p as usize]), u64::MAX);
        assert_eq!(read_bytes(0, 200, 3, |p| regs[p as usize]), 0xffff_ffff_ff33_2211);
        let mut seen = Vec::new();
        write_bytes(1, 4, 3, 0xaabb_ccdd, |p, b| seen.push((p, b)));
        assert_eq!(seen, [(1, 0xdd), (2, 0xcc)]);
    }

    #[test]
    fn ones_by_size() {
        assert_eq!(
            (ones(0), ones(1), ones(2), ones(4), ones(8), ones(9)),
            (0, 0xff, 0xffff, 0xffff_ffff, u64::MAX, u64::MAX)
        );
    }

    struct Echo(u8);
    impl Device for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn read(&mut self, _: u64, _: u8) -> u64 {
            u64::from(self.0)
        }
        fn write(&mut self, _: u64, _: u8, v: u64) {
            self.0 = v as u8;
        }
    }

    #[test]
    fn a_shared_device_is_one_device() {
        let d = shared(Echo(0));
        let mut on_bus: alloc::boxed::Box<dyn Device> = alloc::boxed::Box::new(d.clone());
        on_bus.write(0, 1, 0x5a);
        assert_eq!(d.borrow().0, 0x5a);
        assert_eq!((on_bus.read(0, 1), on_bus.name()), (0x5a, "echo"));
    }
}
