//! Every hypercall number (the ABI's, the numbers around them, and random ones) with random
//! arguments: guest-physical buffers inside, across the end of, and far outside its RAM,
//! lengths that wrap, vectors out of range, channel and partition ids that exist and do not.
//! This partition is not the management partition: the privileged calls must answer
//! `PermissionDenied` whatever their arguments.
//!
//! Left out (the exclusion list): `Shutdown` (3), which ends the partition by definition;
//! `ConsoleWrite` (1) of a range inside its RAM, which would print its memory (code and
//! strings included) to the console: the call is made with ranges that are empty, wrap, or
//! leave its RAM, and with a buffer of harmless bytes; `SetTimer` with a delay so long that a
//! later `sti; hlt` sleeps past the run's end is left to the timer operation, which arms its
//! own timer first.

use guest_rt::hvabi::hypercall::Call;
use guest_rt::hypercall::hypercall;

use crate::Ctx;

/// A harmless console text (no newline: it joins the next line of the guest's own output).
static TEXT: [u8; 1] = *b"~";

/// A guest-physical address: inside RAM, at its very end, past it, near the top of the
/// address space (so that `address + length` wraps), or anything.
fn gpa(ctx: &mut Ctx) -> u64 {
    let r = &mut ctx.rng;
    match r.below(6) {
        0 => r.below(ctx.ram_size),
        1 => ctx.ram_size - r.below(64),
        2 => ctx.ram_size + r.below(1 << 30),
        3 => 0u64.wrapping_sub(r.below(4096)),
        4 => r.sparse(),
        _ => r.next(),
    }
}

fn length(ctx: &mut Ctx) -> u64 {
    let r = &mut ctx.rng;
    match r.below(4) {
        0 => 0,
        1 => r.below(4096),
        2 => 0u64.wrapping_sub(r.below(4096)),
        _ => r.next(),
    }
}

fn number(ctx: &mut Ctx) -> u64 {
    let r = &mut ctx.rng;
    match r.below(8) {
        0..=5 => r.below(0x20),
        6 => r.below(0x1_0000),
        _ => r.next(),
    }
}

pub fn run(ctx: &mut Ctx) {
    let call = number(ctx);
    if call == Call::Shutdown as u64 {
        return;
    }
    let mut args = [gpa(ctx), length(ctx), ctx.rng.next(), ctx.rng.next()];
    if ctx.rng.chance(1, 4) {
        // Small ids: this partition's, its neighbours', channel 0 and 1.
        args[0] = ctx.rng.below(4);
    }
    if call == Call::ConsoleWrite as u64 {
        let (addr, len) = (args[0], args[1]);
        let inside = len != 0 && addr.checked_add(len).is_some_and(|end| end <= ctx.ram_size);
        if inside {
            // Instead of its memory: the harmless byte (or nothing).
            args = [TEXT.as_ptr() as u64, ctx.rng.below(2), 0, 0];
        }
    }
    if call == Call::SetTimer as u64 && ctx.rng.chance(1, 2) {
        // Mostly a delay that comes due during the run, at a vector in or out of range.
        args[0] = ctx.rng.below(2_000_000);
        args[1] = ctx.rng.below(300);
    }
    ctx.catch(|| {
        // SAFETY: no call this partition may make writes guest memory (the ones that do are
        // management calls, refused here); the rest change only this partition's own timer,
        // channels or time slice. Shutdown is left out above.
        let _ = unsafe { hypercall(call, args[0], args[1], args[2], args[3]) };
    });
}
