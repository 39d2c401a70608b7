//! How the kernel's findings are printed: sector 0 of the disk, a PCI function, a partition's
//! list entry, another partition's console output.

use core::fmt::{self, Write};

use hvabi::hypercall::{PartitionInfo, state};

/// Bytes in a disk sector.
pub const SECTOR_SIZE: usize = 512;
/// Most characters of sector 0 that are shown.
pub const PREFIX_MAX: usize = 32;

/// What is shown of sector 0: its printable start and its boot signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sector0<'a> {
    /// The printable ASCII bytes up to the first other one, at most [`PREFIX_MAX`].
    pub prefix: &'a str,
    /// Bytes 510 and 511 as a little-endian `u16` (`0xaa55` on a boot disk).
    pub signature: u16,
}

impl<'a> Sector0<'a> {
    pub fn of(sector: &'a [u8; SECTOR_SIZE]) -> Self {
        let n = sector.iter().take(PREFIX_MAX).take_while(|b| (0x20..=0x7e).contains(*b)).count();
        Self {
            // Printable ASCII is UTF-8.
            prefix: core::str::from_utf8(&sector[..n]).unwrap_or(""),
            signature: u16::from_le_bytes([sector[510], sector[511]]),
        }
    }
}

impl fmt::Display for Sector0<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sector 0 starts \"{}\", signature {:#06x}", self.prefix, self.signature)
    }
}

/// A PCI function as its configuration space describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    /// Header type (register 0x0e) without the multi-function bit.
    pub header: u8,
    pub multifunction: bool,
}

impl PciFunction {
    /// From configuration dwords 0x00 (ids), 0x08 (class, revision) and 0x0c (header type);
    /// `None` when the function is absent (vendor 0xffff, what an empty slot or a filtered
    /// function reads).
    pub fn from_config(bdf: (u8, u8, u8), id: u32, class: u32, header: u32) -> Option<Self> {
        let vendor = id as u16;
        (vendor != 0xffff && vendor != 0).then_some(Self {
            bus: bdf.0,
            dev: bdf.1,
            func: bdf.2,
            vendor,
            device: (id >> 16) as u16,
            class: (class >> 24) as u8,
            subclass: (class >> 16) as u8,
            prog_if: (class >> 8) as u8,
            header: (header >> 16) as u8 & 0x7f,
            multifunction: (header >> 16) & 0x80 != 0,
        })
    }

    /// A PCI-to-PCI bridge (header type 1), whose secondary bus lies behind it.
    pub fn is_bridge(&self) -> bool {
        self.header == 1
    }
}

impl fmt::Display for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{} {:04x}:{:04x} class {:02x}:{:02x}:{:02x}",
            self.bus,
            self.dev,
            self.func,
            self.vendor,
            self.device,
            self.class,
            self.subclass,
            self.prog_if
        )
    }
}

/// The name in a partition record, `name_len` bytes up to the first NUL (`?` when it is not
/// UTF-8).
pub fn partition_name(info: &PartitionInfo) -> &str {
    let len = usize::try_from(info.name_len).unwrap_or(usize::MAX).min(info.name.len());
    let name = &info.name[..len];
    let name = name.split(|&b| b == 0).next().unwrap_or(name);
    core::str::from_utf8(name).unwrap_or("?")
}

/// The name of a [`state`] value.
pub fn state_name(code: u32) -> &'static str {
    state::NAMES.get(code as usize).copied().unwrap_or("unknown state")
}

/// One line of `list`: `  <id> <name> <state> <MiB> MiB[ management][ exit <status>]`.
pub struct ListLine<'a>(pub &'a PartitionInfo);

impl fmt::Display for ListLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(
            f,
            "  {} {} {} {} MiB",
            p.id,
            partition_name(p),
            state_name(p.state),
            p.memory_bytes >> 20
        )?;
        if p.management != 0 {
            f.write_str(" management")?;
        }
        if p.state == state::SHUT_DOWN {
            write!(f, " exit {}", p.exit_status)?;
        }
        Ok(())
    }
}

/// Prints another partition's console output a chunk at a time, each line prefixed `  | `.
/// Carriage returns are dropped and other control bytes and non-ASCII shown as `.`.
#[derive(Debug, Default)]
pub struct ConsoleDump {
    /// Inside a line (its prefix is printed).
    mid_line: bool,
    /// Bytes taken so far.
    pub bytes: u64,
}

/// Prefix of each line of a [`ConsoleDump`].
pub const CONSOLE_PREFIX: &str = "  | ";

impl ConsoleDump {
    /// Prints `chunk`.
    pub fn write(&mut self, out: &mut impl Write, chunk: &[u8]) -> fmt::Result {
        self.bytes += chunk.len() as u64;
        for &b in chunk {
            if b == b'\r' {
                continue;
            }
            if !self.mid_line {
                out.write_str(CONSOLE_PREFIX)?;
                self.mid_line = true;
            }
            match b {
                b'\n' => {
                    out.write_char('\n')?;
                    self.mid_line = false;
                }
                b'\t' | 0x20..=0x7e => out.write_char(char::from(b))?,
                _ => out.write_char('.')?,
            }
        }
        Ok(())
    }

    /// Ends an unfinished last line.
    pub fn finish(&mut self, out: &mut impl Write) -> fmt::Result {
        if core::mem::take(&mut self.mid_line) {
            out.write_char('\n')?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::{String, ToString};

    #[test]
    fn sector0_shows_the_printable_start_and_the_signature() {
        let mut s = [0u8; SECTOR_SIZE];
        s[..17].copy_from_slice(b"MICROHV TEST DISK");
        s[510] = 0x55;
        s[511] = 0xaa;
        assert_eq!(
            Sector0::of(&s).to_string(),
            "sector 0 starts \"MICROHV TEST DISK\", signature 0xaa55"
        );
        s[..40].fill(b'A');
        let v = Sector0::of(&s);
        assert_eq!(v.prefix.len(), PREFIX_MAX, "at most 32 characters");
        s[0] = 0xeb; // a boot sector's JMP
        assert_eq!(Sector0::of(&s).prefix, "");
        s[510] = 0;
        s[511] = 0;
        assert_eq!(Sector0::of(&s).to_string(), "sector 0 starts \"\", signature 0x0000");
        s[..4].copy_from_slice(b"ab\x7fc");
        assert_eq!(Sector0::of(&s).prefix, "ab", "DEL is not printable");
    }

    #[test]
    fn pci_functions() {
        let f = PciFunction::from_config((0, 1, 1), 0x7010_8086, 0x0101_8000, 0x0000_0000)
            .expect("present");
        assert_eq!(f.to_string(), "00:01.1 8086:7010 class 01:01:80");
        assert!(!f.is_bridge() && !f.multifunction);
        let b = PciFunction::from_config((0, 0x1e, 0), 0x244e_8086, 0x0604_0100, 0x0081_0000)
            .expect("present");
        assert!(b.is_bridge() && b.multifunction);
        assert_eq!(b.to_string(), "00:1e.0 8086:244e class 06:04:01");
        assert_eq!(PciFunction::from_config((0, 2, 0), 0xffff_ffff, 0, 0), None);
    }

    fn info(id: u64, name: &str, st: u32, mib: u64, mgmt: bool, exit: u64) -> PartitionInfo {
        let mut p = PartitionInfo {
            id,
            state: st,
            management: u32::from(mgmt),
            memory_bytes: mib << 20,
            exit_status: exit,
            name_len: name.len() as u64,
            name: [0; 32],
        };
        p.name[..name.len()].copy_from_slice(name.as_bytes());
        p
    }

    #[test]
    fn list_lines() {
        let m = info(0, "mgmt", state::RUNNING, 32, true, 0);
        assert_eq!(ListLine(&m).to_string(), "  0 mgmt running 32 MiB management");
        let g = info(2, "g1", state::SHUT_DOWN, 16, false, 3);
        assert_eq!(ListLine(&g).to_string(), "  2 g1 shut down 16 MiB exit 3");
        let mut odd = info(7, "x", 99, 4, false, 0);
        odd.name_len = u64::MAX;
        assert_eq!(ListLine(&odd).to_string(), "  7 x unknown state 4 MiB");
    }

    #[test]
    fn console_dump_prefixes_lines_across_chunks() {
        let mut out = String::new();
        let mut d = ConsoleDump::default();
        d.write(&mut out, b"PASS a\r\nPA").unwrap();
        d.write(&mut out, b"SS b\n\x01\xffend").unwrap();
        d.finish(&mut out).unwrap();
        assert_eq!(out, "  | PASS a\n  | PASS b\n  | ..end\n");
        assert_eq!(d.bytes, 20);
        let mut empty = String::new();
        ConsoleDump::default().finish(&mut empty).unwrap();
        assert_eq!(empty, "");
    }
}
