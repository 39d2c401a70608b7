//! Hypercalls: every call of ABI 1.0, bad arguments, the management calls refused to a guest,
//! and the timer with HLT.

use core::sync::atomic::{AtomicU64, Ordering};

use guest_rt::hvabi::hypercall::{Call, PartitionInfo, Status, VERSION};
use guest_rt::hypercall::{self as hc, Reply};
use guest_rt::{Checks, InterruptFrame, StartInfo, checks::Why, ensure, instr, register_handler};

const TIMER_VECTOR: u8 = 0x40;
const SPARE_VECTOR: u8 = 0x41;
const TIMER_TICKS: u64 = 100_000;
/// How far ahead the timer that is disarmed at once is armed.
const DISARM_TICKS: u64 = 40_000_000;

static TIMER_HITS: AtomicU64 = AtomicU64::new(0);
static SPARE_HITS: AtomicU64 = AtomicU64::new(0);

fn on_timer(_: &mut InterruptFrame) {
    TIMER_HITS.fetch_add(1, Ordering::SeqCst);
}

fn on_spare(_: &mut InterruptFrame) {
    SPARE_HITS.fetch_add(1, Ordering::SeqCst);
}

fn status(r: Reply, want: Status) -> Result<(), Why> {
    ensure!(r.is(want), "{r}, want {want:?}")
}

/// A raw hypercall for argument checks.
fn raw(call: u64, a1: u64, a2: u64) -> Reply {
    // SAFETY: the calls made here read guest memory at most (ConsoleWrite) and write none.
    unsafe { hc::hypercall(call, a1, a2, 0, 0) }
}

pub fn run(c: &mut Checks, info: &StartInfo) {
    let v = hc::version();
    c.check(
        "hc-version",
        status(v, Status::Success).and_then(|()| {
            ensure!(v.value == VERSION, "version {:#x}, want {VERSION:#x}", v.value)
        }),
    );
    c.check("hc-unknown", status(raw(0xdead, 0, 0), Status::UnknownCall));
    c.check(
        "hc-console-write",
        status(hc::console_write(b"probe: console via hypercall\n"), Status::Success),
    );
    let console = Call::ConsoleWrite as u64;
    let ram = info.ram_size;
    c.check("hc-console-outside-ram", status(raw(console, ram, 16), Status::BadAddress));
    c.check("hc-console-straddle", status(raw(console, ram - 8, 16), Status::BadAddress));
    let wrap = raw(console, 0x20_0000, u64::MAX);
    c.check(
        "hc-console-wrap",
        ensure!(
            wrap.is(Status::BadAddress) || wrap.is(Status::InvalidArgument),
            "{wrap}, want BadAddress"
        ),
    );
    let id = hc::partition_id();
    c.check(
        "hc-partition-id",
        status(id, Status::Success).and_then(|()| {
            ensure!(
                id.value == info.partition_id,
                "id {}, start-info says {}",
                id.value,
                info.partition_id
            )
        }),
    );
    c.check("hc-yield", status(hc::yield_now(), Status::Success));
    privileged(c);
    c.check("timer-bad-vector", status(hc::set_timer(1000, 5), Status::InvalidArgument));
    // A delay no run would see expire is refused (docs/hypercalls.md): otherwise `sti; hlt`
    // after it would sleep for ever and the run would never end.
    c.check(
        "timer-endless-refused",
        status(hc::set_timer(u64::MAX, TIMER_VECTOR), Status::InvalidArgument),
    );
    timer(c);
}

/// A guest may not manage partitions, and has no channel unless the management partition made one.
fn privileged(c: &mut Checks) {
    fn refused<T: core::fmt::Debug>(r: Result<T, Status>, want: Status) -> Result<(), Why> {
        match r {
            Err(s) => ensure!(s == want, "status {s:?}, want {want:?}"),
            Ok(v) => Err(guest_rt::why!("succeeded ({v:?}), want {want:?}")),
        }
    }
    let mut list = [PartitionInfo::default(); 4];
    c.check(
        "hc-partition-list-denied",
        refused(hc::partition_list(&mut list), Status::PermissionDenied),
    );
    c.check(
        "hc-partition-create-denied",
        match hc::create_request("probe-child", "probe", "", 4) {
            Ok(req) => refused(hc::partition_create(&req), Status::PermissionDenied),
            Err(e) => Err(guest_rt::why!("cannot build the request: {e}")),
        },
    );
    c.check("hc-channel-query-none", refused(hc::channel_query(), Status::NotFound));
}

fn timer(c: &mut Checks) {
    register_handler(TIMER_VECTOR, on_timer);
    register_handler(SPARE_VECTOR, on_spare);

    let start = instr::rdtsc();
    let r = hc::set_timer(TIMER_TICKS, TIMER_VECTOR);
    let mut wakeups = 0;
    if r.is(Status::Success) {
        // A HLT may end early (a yield, a spurious wake-up): wait for the interrupt itself.
        while TIMER_HITS.load(Ordering::SeqCst) == 0 && wakeups < 1000 {
            instr::sti_hlt();
            instr::cli();
            wakeups += 1;
        }
    }
    let elapsed = instr::rdtsc().wrapping_sub(start);
    let hits = TIMER_HITS.load(Ordering::SeqCst);
    c.check(
        "hlt-timer",
        status(r, Status::Success).and_then(|()| {
            ensure!(hits == 1, "{hits} interrupts on vector 0x40 after {wakeups} HLTs")
        }),
    );
    c.check(
        "timer-delay",
        ensure!(elapsed >= TIMER_TICKS, "woke after {elapsed} TSC ticks, armed for {TIMER_TICKS}"),
    );
    spin_with_interrupts(2 * TIMER_TICKS);
    let again = TIMER_HITS.load(Ordering::SeqCst);
    c.check(
        "timer-one-shot",
        ensure!(again == 1, "{again} interrupts: the one-shot timer fired again"),
    );

    // Armed far enough ahead that the disarming call surely comes first, even where the TSC
    // runs in real time (QEMU TCG) and the other partitions' time slices (2 M ticks each) come
    // between the two calls; then past that deadline.
    let armed = hc::set_timer(DISARM_TICKS, SPARE_VECTOR);
    let disarmed = hc::set_timer(0, SPARE_VECTOR);
    spin_with_interrupts(2 * DISARM_TICKS);
    let spare = SPARE_HITS.load(Ordering::SeqCst);
    c.check(
        "timer-disarm",
        status(armed, Status::Success)
            .and_then(|()| status(disarmed, Status::Success))
            .and_then(|()| ensure!(spare == 0, "{spare} interrupts after disarming")),
    );
}

/// Runs with interrupts enabled for about `ticks` TSC ticks, exiting to the hypervisor (CPUID)
/// all the while so it can inject anything pending.
fn spin_with_interrupts(ticks: u64) {
    let start = instr::rdtsc();
    instr::sti();
    for _ in 0..1_000_000 {
        instr::cpuid(0, 0);
        if instr::rdtsc().wrapping_sub(start) >= ticks {
            break;
        }
    }
    instr::cli();
}
