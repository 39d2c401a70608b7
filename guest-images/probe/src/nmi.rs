//! NMIs through the local APIC (SDM Vol. 3A §6.7, §11.6.1): an NMI self-IPI (ICR delivery
//! mode 100b) arrives at vector 2 with RFLAGS.IF clear; a second NMI sent inside the handler
//! waits for the handler's IRET (NMI blocking, §6.7.1) and then arrives, once.
//! (The `vcpus=2` mode adds an NMI between two vCPUs that wakes a halted one: [`crate::smp`].)

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use guest_rt::exception::{register_handler, unregister_handler};
use guest_rt::{Checks, InterruptFrame, checks::Why, ensure, instr};

use crate::apic::write;

const ICR_LOW: u64 = 0x300;
/// ICR: delivery mode NMI (bits 10:8 = 100b), shorthand "self" (bits 19:18 = 01). The vector
/// field is ignored for NMIs.
const ICR_SELF_NMI: u32 = (4 << 8) | (1 << 18);
const NMI_VECTOR: u8 = 2;
const RFLAGS_IF: u64 = 1 << 9;
/// CPUIDs (each an exit) run to give a pending NMI every chance to come in.
const EXITS: u32 = 200;

static HITS: AtomicU32 = AtomicU32::new(0);
static DEPTH: AtomicU32 = AtomicU32::new(0);
static MAX_DEPTH: AtomicU32 = AtomicU32::new(0);
/// The interrupted RFLAGS of the last NMI.
static FLAGS: AtomicU64 = AtomicU64::new(0);
/// The handler sends a second NMI on its next run, and records how many had come when it ended.
static NEST: AtomicBool = AtomicBool::new(false);
static HITS_AT_END: AtomicU32 = AtomicU32::new(0);

fn on_nmi(f: &mut InterruptFrame) {
    let depth = DEPTH.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_DEPTH.fetch_max(depth, Ordering::SeqCst);
    HITS.fetch_add(1, Ordering::SeqCst);
    FLAGS.store(f.rflags, Ordering::SeqCst);
    if NEST.swap(false, Ordering::SeqCst) {
        write(ICR_LOW, ICR_SELF_NMI);
        exits();
        HITS_AT_END.store(HITS.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    DEPTH.fetch_sub(1, Ordering::SeqCst);
}

fn exits() {
    for _ in 0..EXITS {
        instr::cpuid(0, 0);
    }
}

pub fn run(c: &mut Checks) {
    register_handler(NMI_VECTOR, on_nmi);
    c.check("nmi-self-ipi", self_ipi());
    c.check("nmi-blocked-until-iret", blocked_until_iret());
    unregister_handler(NMI_VECTOR);
}

/// With interrupts off, an NMI self-IPI comes in at vector 2 (the only vector whose handler
/// counts), once.
fn self_ipi() -> Result<(), Why> {
    instr::cli();
    write(ICR_LOW, ICR_SELF_NMI);
    exits();
    let (hits, flags) = (HITS.load(Ordering::SeqCst), FLAGS.load(Ordering::SeqCst));
    ensure!(hits == 1, "{hits} NMIs for one NMI self-IPI sent with IF=0")?;
    ensure!(flags & RFLAGS_IF == 0, "interrupted RFLAGS {flags:#x}: IF set")
}

/// A second NMI sent inside the handler comes only after its IRET, and then comes.
fn blocked_until_iret() -> Result<(), Why> {
    let before = HITS.load(Ordering::SeqCst);
    NEST.store(true, Ordering::SeqCst);
    write(ICR_LOW, ICR_SELF_NMI);
    exits();
    let (hits, at_end) = (HITS.load(Ordering::SeqCst) - before, HITS_AT_END.load(Ordering::SeqCst));
    let depth = MAX_DEPTH.load(Ordering::SeqCst);
    ensure!(depth == 1, "an NMI came inside the NMI handler (depth {depth})")?;
    ensure!(at_end == before + 1, "{} NMIs by the end of the first handler", at_end - before)?;
    ensure!(hits == 2, "{hits} NMIs after the handler's IRET, want 2")
}
