//! ASIDs shared by more vCPUs than the CPU has (issue 13, item 6): QEMU TCG offers 16 ASIDs,
//! the manifest up to 64 partitions. A vCPU's tag (unique, from 1) maps onto the guest ASIDs
//! round-robin, and a vCPU whose ASID another vCPU used since its own last VMRUN has the TLB
//! flushed before it runs (TLB_CONTROL, APM Vol. 2 §15.16: the TLB entries of an ASID are
//! whatever the last guest with it left; a shared ASID is safe only with a flush on the switch).
//!
//! Each CPU has its own owner table (a TLB is per CPU: what one CPU's guests left under an ASID
//! says nothing of another CPU's), found by the CPU index its backend was enabled on; a vCPU
//! runs only on the CPU that made it. A vCPU dropped gives its slot up ([`Owners::release`]):
//! the next vCPU with that ASID on that CPU is flushed, even one whose VMCB lands at the same
//! address (the "fresh tag" rule for a destroyed partition's translations).

use core::sync::atomic::{AtomicU64, Ordering};

/// ASIDs tracked (and used at most): 1..MAX_ASIDS.
pub const MAX_ASIDS: u32 = 256;

/// Who last ran with each ASID (a vCPU's unique id, its VMCB address; 0: nobody).
pub struct Owners([AtomicU64; MAX_ASIDS as usize]);

impl Owners {
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; MAX_ASIDS as usize])
    }

    /// Records that vCPU `id` runs with `asid` now; true when another vCPU used it since
    /// `id` last did, so that its TLB entries must be flushed first.
    pub fn claim(&self, asid: u32, id: u64) -> bool {
        let slot = &self.0[asid as usize % MAX_ASIDS as usize];
        slot.swap(id, Ordering::Relaxed) != id
    }

    /// vCPU `id` is gone: whoever runs with `asid` next flushes first.
    pub fn release(&self, asid: u32, id: u64) {
        let slot = &self.0[asid as usize % MAX_ASIDS as usize];
        let _ = slot.compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The owners of each CPU's ASIDs, by CPU index.
static OWNERS: [Owners; crate::arch::x86::smp::MAX_CPUS] =
    [const { Owners::new() }; crate::arch::x86::smp::MAX_CPUS];

/// The owner table of CPU `cpu` (indices past the last share the last table).
pub fn owners(cpu: usize) -> &'static Owners {
    &OWNERS[cpu.min(OWNERS.len() - 1)]
}

/// The guest ASID for tag `tag` (from 1) on a CPU with `asids` ASIDs (ASID 0 is the host's,
/// §15.5.1), or `None` for tag 0 or a CPU without a guest ASID.
pub fn for_tag(tag: u16, asids: u32) -> Option<u32> {
    let guest = asids.min(MAX_ASIDS).checked_sub(1).filter(|&n| n > 0)?;
    let tag = u32::from(tag).checked_sub(1)?;
    Some(1 + tag % guest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_share_asids_round_robin() {
        assert_eq!(for_tag(1, 16), Some(1));
        assert_eq!(for_tag(15, 16), Some(15));
        assert_eq!(for_tag(16, 16), Some(1), "the 16th vCPU shares ASID 1");
        assert_eq!(for_tag(64, 16), Some(4));
        assert_eq!(for_tag(0, 16), None);
        assert_eq!(for_tag(1, 1), None, "no guest ASID");
        assert_eq!(for_tag(300, 65536), Some(1 + 299 % 255), "at most MAX_ASIDS tracked");
        for t in 1..=u16::MAX {
            let a = for_tag(t, 16).unwrap();
            assert!((1..16).contains(&a));
        }
    }

    #[test]
    fn a_switch_between_sharers_flushes() {
        let o = Owners::new();
        assert!(o.claim(1, 0x1000), "first run: whatever was there before");
        assert!(!o.claim(1, 0x1000), "the same vCPU again: its own entries");
        assert!(o.claim(1, 0x2000), "another vCPU with the same ASID");
        assert!(o.claim(1, 0x1000), "and back");
        assert!(o.claim(2, 0x3000));
        assert!(!o.claim(1, 0x1000), "other ASIDs do not matter");
        o.release(1, 0x2000);
        assert!(!o.claim(1, 0x1000), "a release by a vCPU that is not the owner changes nothing");
        o.release(1, 0x1000);
        assert!(o.claim(1, 0x1000), "a VMCB reused at the same address after a release flushes");
    }

    #[test]
    fn each_cpu_has_its_own_table() {
        assert!(owners(5).claim(7, 0x9000));
        assert!(owners(6).claim(7, 0x9000), "another CPU's TLB never held it");
        assert!(!owners(5).claim(7, 0x9000));
    }
}
