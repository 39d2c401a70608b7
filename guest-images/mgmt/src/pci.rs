//! The PCI functions this partition can see through configuration mechanism #1 (ports
//! 0xcf8/0xcfc). The hypervisor filters the data port: functions not handed to us read as
//! absent (all-ones), so this lists exactly ours. Bus 0 first, then the buses behind any
//! bridge found.

use guest_rt::instr::{inl, outl};
use guest_rt::println;
use mgmt::report::PciFunction;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Configuration dword `reg` of bus:dev.func.
fn config_read(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    let address = (1 << 31)
        | (u32::from(bus) << 16)
        | (u32::from(dev) << 11)
        | (u32::from(func) << 8)
        | u32::from(reg & 0xfc);
    // SAFETY: 0xcf8/0xcfc is the hypervisor's filtered configuration window: a read reaches
    // only a function handed to this partition and changes nothing.
    unsafe {
        outl(CONFIG_ADDRESS, address);
        inl(CONFIG_DATA)
    }
}

fn function(bus: u8, dev: u8, func: u8) -> Option<PciFunction> {
    let id = config_read(bus, dev, func, 0x00);
    if id as u16 == 0xffff {
        return None;
    }
    let class = config_read(bus, dev, func, 0x08);
    let header = config_read(bus, dev, func, 0x0c);
    PciFunction::from_config((bus, dev, func), id, class, header)
}

/// Lists every function found, then `mgmt: pci: <n> functions`.
pub fn report() {
    let mut seen = [false; 256];
    let mut queue = [0u8; 256];
    let (mut head, mut tail) = (0, 1);
    seen[0] = true;
    let mut count = 0;
    while head < tail {
        let bus = queue[head];
        head += 1;
        for dev in 0..32 {
            // Function 0 of a single-function device is all there is. Where function 0 is
            // absent (hidden by the filter) the others are still looked at: a partition may own
            // function 1 alone.
            let funcs = match function(bus, dev, 0) {
                Some(f) if !f.multifunction => 1,
                _ => 8,
            };
            for func in 0..funcs {
                let Some(f) = function(bus, dev, func) else { continue };
                println!("mgmt: pci {f}");
                count += 1;
                if f.is_bridge() {
                    let secondary = (config_read(bus, dev, func, 0x18) >> 8) as u8;
                    if !seen[usize::from(secondary)] && tail < queue.len() {
                        seen[usize::from(secondary)] = true;
                        queue[tail] = secondary;
                        tail += 1;
                    }
                }
            }
        }
    }
    println!("mgmt: pci: {count} functions");
}
