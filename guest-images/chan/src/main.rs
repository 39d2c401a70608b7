//! The chan guest: a partner for the management partition's channel echo (`hvabi::channel`).
//!
//! It waits, quietly and without end, until the management partition creates a channel with
//! it (`chan NAME` in the shell: its first line says so), sends 16 messages of 1 to 1024 bytes (a sequence number, then a pattern), and checks
//! that each comes back unchanged: `PASS chan-echo 16 messages`. With `bench=1` on its command
//! line it then times round trips of 64- and 1024-byte messages with RDTSC and prints
//! `BENCH chan-64 TICKS` and `BENCH chan-1024 TICKS` (ticks per message, the format of the
//! bench guest). The shutdown status is 0 when everything passed, 1 otherwise.
#![no_std]
#![no_main]

use guest_rt::hypercall as hc;
use guest_rt::instr::{self, rdtsc};
use guest_rt::{InterruptFrame, StartInfo, println, register_handler};
use hvabi::channel::{MAX_MESSAGE, Page, SendError, gpa};
use hvabi::hypercall::Status;

guest_rt::entry!(main);

const TIMER_VECTOR: u8 = 0x40;
const CHANNEL_VECTOR: u8 = 0x41;
/// TSC ticks of one nap while an echo is late.
const NAP_TICKS: u64 = 2_000_000;
/// Waiting for the channel: naps that double from the first to the longest, in milliseconds
/// of the TSC rate the hypervisor reports ([`ticks_per_ms`]). The wait has no end: a person at
/// the shell creates the channel when they choose (the test's script at once), and a
/// partition waiting for its partner is no failure; four looks a second keep an idle machine
/// idle (at 40 a second, this wait alone cost the emulator 2.7% of a host core).
const CHANNEL_FIRST_NAP_MS: u64 = 1;
const CHANNEL_LONGEST_NAP_MS: u64 = 250;
/// Waiting for one echo (or for room in the ring): polls and TSC ticks.
const ECHO_POLLS: u32 = 100_000;
const ECHO_TICKS: u64 = 20_000_000_000;
/// Polls that yield before the wait naps instead (the echo normally comes after one yield).
const YIELD_POLLS: u32 = 16;
/// The lengths of the echo test's messages, one message each.
const LENGTHS: [usize; 16] = [1, 2, 3, 4, 7, 16, 31, 64, 100, 255, 256, 511, 512, 777, 1000, 1024];
/// Messages per size in the benchmark.
const BENCH_MESSAGES: u32 = 256;

/// Both interrupts only end a nap: the rings say what happened.
fn on_wakeup(_: &mut InterruptFrame) {}

/// Sleeps about `ticks` (or until a notification); interrupts off again on return.
fn nap(ticks: u64) {
    if hc::set_timer(ticks, TIMER_VECTOR).ok().is_ok() {
        instr::sti_hlt();
        instr::cli();
    } else {
        // HLT without a timer would never end: yield instead.
        hc::yield_now();
    }
}

/// TSC ticks per millisecond: the TSC rate in kHz from the hypervisor's timing leaf
/// (CPUID 0x4000_0010 EAX, `docs/guest-contract.md`), or 1 GHz's where it says 0 (unknown).
fn ticks_per_ms() -> u64 {
    match instr::cpuid(0x4000_0010, 0).eax {
        0 => 1_000_000,
        khz => u64::from(khz),
    }
}

/// Why the test failed.
type Failure = guest_rt::checks::Why;

/// Message `seq`: its sequence number (little-endian, as much as fits), then a pattern that
/// depends on both the sequence number and the position.
fn fill(msg: &mut [u8], seq: u32) {
    let s = seq.to_le_bytes();
    for (i, b) in msg.iter_mut().enumerate() {
        *b = match s.get(i) {
            Some(&x) => x,
            None => (i as u32).wrapping_mul(7).wrapping_add(seq.wrapping_mul(131)) as u8 ^ 0x5a,
        };
    }
}

/// Polls, quietly and for as long as it takes, for the channel the management partition
/// creates with us.
fn wait_for_channel() -> Result<u64, Failure> {
    let ms = ticks_per_ms();
    let mut nap_ticks = CHANNEL_FIRST_NAP_MS * ms;
    loop {
        match hc::channel_query() {
            Ok(id) => return Ok(id),
            Err(Status::NotFound) => {}
            Err(s) => return Err(guest_rt::why!("ChannelQuery: {s:?}")),
        }
        nap(nap_ticks);
        nap_ticks = (nap_ticks * 2).min(CHANNEL_LONGEST_NAP_MS * ms);
    }
}

/// Waits for the other end: the first polls yield, the later ones nap. Gives up after
/// [`ECHO_POLLS`] polls or [`ECHO_TICKS`].
fn wait_until<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> Result<T, Failure> {
    let start = rdtsc();
    for polls in 0..ECHO_POLLS {
        if let Some(v) = ready() {
            return Ok(v);
        }
        if rdtsc().wrapping_sub(start) > ECHO_TICKS {
            break;
        }
        if polls < YIELD_POLLS {
            hc::yield_now();
        } else {
            nap(NAP_TICKS);
        }
    }
    Err(guest_rt::why!("timed out waiting for {what}"))
}

/// Sends `msg`, signals the management partition, and receives the echo into `back`; returns
/// the echo's length.
fn round_trip(id: u64, page: &Page, msg: &[u8], back: &mut [u8]) -> Result<usize, Failure> {
    wait_until("room in the ring", || match page.to_mgmt.send(msg) {
        Ok(()) => Some(Ok(())),
        Err(SendError::Full) => None,
        Err(SendError::TooLong) => Some(Err(guest_rt::why!("{} bytes is too long", msg.len()))),
    })??;
    hc::channel_notify(id).map_err(|s| guest_rt::why!("ChannelNotify: {s:?}"))?;
    wait_until("the echo", || page.to_guest.recv(back))
}

/// Checks an echo against what was sent.
fn check_echo(seq: u32, sent: &[u8], back: &[u8], len: usize) -> Result<(), Failure> {
    if len != sent.len() {
        return Err(guest_rt::why!("message {seq}: echo of {len} bytes, sent {}", sent.len()));
    }
    match sent.iter().zip(back).position(|(a, b)| a != b) {
        Some(i) => Err(guest_rt::why!(
            "message {seq} ({len} bytes): byte {i} came back {:#04x}, sent {:#04x}",
            back[i],
            sent[i]
        )),
        None => Ok(()),
    }
}

/// The echo test: every length of [`LENGTHS`] once.
fn echo_test(id: u64, page: &Page) -> Result<(), Failure> {
    let mut msg = [0u8; MAX_MESSAGE];
    let mut back = [0u8; MAX_MESSAGE];
    for (seq, &len) in LENGTHS.iter().enumerate() {
        let seq = seq as u32;
        fill(&mut msg[..len], seq);
        back.fill(0);
        let got = round_trip(id, page, &msg[..len], &mut back)
            .map_err(|e| guest_rt::why!("message {seq} ({len} bytes): {e}"))?;
        check_echo(seq, &msg[..len], &back, got)?;
    }
    Ok(())
}

/// Mean TSC ticks of a round trip of `len`-byte messages (the filling and checking excluded).
fn bench(id: u64, page: &Page, len: usize) -> Result<u64, Failure> {
    let mut msg = [0u8; MAX_MESSAGE];
    let mut back = [0u8; MAX_MESSAGE];
    let mut ticks = 0u64;
    for seq in 0..BENCH_MESSAGES {
        fill(&mut msg[..len], seq);
        let t0 = rdtsc();
        let got = round_trip(id, page, &msg[..len], &mut back)?;
        ticks += rdtsc().wrapping_sub(t0);
        check_echo(seq, &msg[..len], &back, got)?;
    }
    Ok(ticks / u64::from(BENCH_MESSAGES))
}

fn main(info: &'static StartInfo) -> u64 {
    register_handler(TIMER_VECTOR, on_wakeup);
    register_handler(CHANNEL_VECTOR, on_wakeup);
    let bench_too = info.cmdline().split_ascii_whitespace().any(|w| w == "bench=1");
    // Said once: what the person at the console types to go on.
    println!(
        "chan: partition {} waits for a channel: type `chan {}` at the management shell (mgmt>)",
        info.partition_id,
        info.name()
    );
    let id = match wait_for_channel() {
        Ok(id) => id,
        Err(e) => {
            println!("FAIL chan-echo: {e}");
            return 1;
        }
    };
    let page = match guest_rt::channel::page(id) {
        Ok(p) => p,
        Err(e) => {
            println!("FAIL chan-echo: channel {id}: {e}");
            return 1;
        }
    };
    if let Err(s) = hc::channel_bind(id, CHANNEL_VECTOR) {
        println!("FAIL chan-echo: ChannelBind of channel {id}: {s:?}");
        return 1;
    }
    println!("chan: channel {id} at {:#x}", gpa(id));
    if let Err(e) = echo_test(id, page) {
        println!("FAIL chan-echo: {e}");
        return 1;
    }
    println!("PASS chan-echo {} messages", LENGTHS.len());
    if bench_too {
        for len in [64, 1024] {
            match bench(id, page, len) {
                Ok(ticks) => println!("BENCH chan-{len} {ticks}"),
                Err(e) => {
                    println!("FAIL chan-bench-{len}: {e}");
                    return 1;
                }
            }
        }
    }
    0
}
