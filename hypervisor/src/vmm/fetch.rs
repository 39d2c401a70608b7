//! Reading the instruction at a guest RIP, for the exits the core decodes, and the fault the
//! CPU would raise where the bytes cannot be read.
//!
//! The core reads up to 15 bytes (SDM Vol. 2 §2.3.11), but the instruction that exited may be
//! shorter and end just before an unmapped page or the end of the canonical address space
//! (issue 13, item 9): the bytes up to the first one that cannot be read are kept, and only
//! when the instruction needs more does the guest get the fault a fetch of that byte raises:
//! #GP(0) for a non-canonical address (SDM Vol. 3A §6.15, "General Protection Exception"),
//! else #PF with CR2 the address and an instruction-fetch error code (§4.7).

use super::decode::MAX_INSN_LEN;
use super::memory::GuestRam;
use super::vcpu::Event;

/// #PF error code bits (SDM Vol. 3A §4.7): U/S (a CPL-3 access), I/D (an instruction fetch,
/// reported when EFER.NXE is set).
const PF_USER: u32 = 1 << 2;
const PF_FETCH: u32 = 1 << 4;
const PF: u8 = 14;

/// Where a fetch stopped: the fault that reading the next byte raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchFault {
    /// The byte's linear address is not canonical: #GP(0).
    NonCanonical,
    /// The byte's page is not mapped (or its tables are not RAM): #PF at this address.
    NotPresent { la: u64 },
}

impl FetchFault {
    /// The event to inject, and the CR2 it sets, for a fetch at privilege `cpl`.
    pub fn event(self, cpl: u8, nxe: bool) -> (Event, Option<u64>) {
        match self {
            Self::NonCanonical => (Event::GP0, None),
            Self::NotPresent { la } => {
                let code = if cpl == 3 { PF_USER } else { 0 } | if nxe { PF_FETCH } else { 0 };
                (Event::Exception { vector: PF, error_code: Some(code) }, Some(la))
            }
        }
    }
}

/// Bytes read at RIP: `n` of them, and the fault that stopped the read before 15, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub n: usize,
    pub fault: Option<FetchFault>,
}

/// Reads up to 15 bytes at `rip` into `buf`, through `cr3`'s 4-level tables when `paging`.
/// Outside long mode RIP is below 4 GiB, so every address is canonical there too.
pub fn fetch(
    ram: &GuestRam,
    rip: u64,
    cr3: u64,
    paging: bool,
    buf: &mut [u8; MAX_INSN_LEN],
) -> Fetched {
    let mut n = 0;
    while n < MAX_INSN_LEN {
        let la = rip.wrapping_add(n as u64);
        if ((la as i64) << 16 >> 16) as u64 != la {
            return Fetched { n, fault: Some(FetchFault::NonCanonical) };
        }
        let not_present = Fetched { n, fault: Some(FetchFault::NotPresent { la }) };
        let gpa = if paging { ram.translate_4level(cr3, la) } else { Some(la) };
        let Some(gpa) = gpa else {
            return not_present;
        };
        let take = ((4096 - (la & 0xfff)) as usize).min(MAX_INSN_LEN - n);
        match ram.slice(gpa, take as u64) {
            Ok(b) => buf[n..n + take].copy_from_slice(b),
            // Not RAM (a device, nothing): the CPU would not execute from there either; the
            // exit names what it was, the partition's RAM is what this reads.
            Err(_) => return not_present,
        }
        n += take;
    }
    Fetched { n, fault: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 mapping linear 0x5000 to 0x8000
    /// (0x6000 is not mapped), and through entries 255, 511, 511, 511 the last page of the
    /// canonical lower half, 0x7fff_ffff_f000, to 0x9000.
    fn ram(buf: &mut [u8]) -> GuestRam {
        // SAFETY: the buffer outlives the GuestRam in each test and nothing else touches it.
        let mut r = unsafe { GuestRam::new(buf.as_mut_ptr(), buf.len() as u64) };
        r.write_u64(0x1000, 0x2003).unwrap();
        r.write_u64(0x1000 + 255 * 8, 0x2003).unwrap();
        r.write_u64(0x2000, 0x3003).unwrap();
        r.write_u64(0x2000 + 511 * 8, 0x3003).unwrap();
        r.write_u64(0x3000, 0x4003).unwrap();
        r.write_u64(0x3000 + 511 * 8, 0x4003).unwrap();
        r.write_u64(0x4000 + 5 * 8, 0x8003).unwrap();
        r.write_u64(0x4000 + 511 * 8, 0x9003).unwrap();
        r
    }

    #[test]
    fn stops_at_an_unmapped_page() {
        let mut mem = vec![0u8; 0x10000];
        let r = ram(&mut mem);
        let mut buf = [0; MAX_INSN_LEN];
        let f = fetch(&r, 0x5ffd, 0x1000, true, &mut buf);
        assert_eq!(f, Fetched { n: 3, fault: Some(FetchFault::NotPresent { la: 0x6000 }) });
        let f = fetch(&r, 0x5000, 0x1000, true, &mut buf);
        assert_eq!(f, Fetched { n: 15, fault: None });
        let f = fetch(&r, 0x6000, 0x1000, true, &mut buf);
        assert_eq!(f, Fetched { n: 0, fault: Some(FetchFault::NotPresent { la: 0x6000 }) });
    }

    #[test]
    fn stops_at_the_end_of_the_canonical_lower_half() {
        let mut mem = vec![0u8; 0x10000];
        let r = ram(&mut mem);
        let mut buf = [0; MAX_INSN_LEN];
        let f = fetch(&r, 0x7fff_ffff_fffd, 0x1000, true, &mut buf);
        assert_eq!(f, Fetched { n: 3, fault: Some(FetchFault::NonCanonical) });
        let f = fetch(&r, 0x8000_0000_0000, 0x1000, true, &mut buf);
        assert_eq!(f, Fetched { n: 0, fault: Some(FetchFault::NonCanonical) });
    }

    #[test]
    fn the_fault_a_fetch_raises() {
        let np = FetchFault::NotPresent { la: 0x6000 };
        assert_eq!(
            np.event(0, true),
            (Event::Exception { vector: 14, error_code: Some(0x10) }, Some(0x6000))
        );
        assert_eq!(
            np.event(3, false),
            (Event::Exception { vector: 14, error_code: Some(0x4) }, Some(0x6000))
        );
        assert_eq!(FetchFault::NonCanonical.event(3, true), (Event::GP0, None));
    }

    #[test]
    fn without_paging_addresses_are_physical() {
        let mut mem = vec![0u8; 0x10000];
        let r = ram(&mut mem);
        let mut buf = [0; MAX_INSN_LEN];
        let f = fetch(&r, 0xfffa, 0, false, &mut buf);
        assert_eq!(f, Fetched { n: 6, fault: Some(FetchFault::NotPresent { la: 0x10000 }) });
    }
}
