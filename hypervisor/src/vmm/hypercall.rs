//! Hypercall dispatch (the ABI is `hvabi::hypercall`; the table is `docs/hypercalls.md`).
//! Every argument is checked; buffers are read only through the caller's own RAM map.

use super::partition::{Partition, State};
use super::step::{self, Flow};
use super::vcpu::reg;
use hvabi::hypercall::{Call, Status, VERSION};

/// Longest console write accepted in one call.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

/// Longest `SetTimer` delay, in TSC ticks: 2^48 (78 hours at 1 GHz). A longer one, which no
/// run would see expire (`u64::MAX` above all), is `InvalidArgument` and leaves the timer as it
/// was, so that a guest cannot halt "until then" and keep a run from ever ending: with no
/// timer armed, HLT with nothing to wake it ends the partition.
pub const TIMER_DELAY_MAX: u64 = 1 << 48;

/// The deadline of a `SetTimer` of `delay` ticks at TSC `now`; `None` when the delay is longer
/// than [`TIMER_DELAY_MAX`].
pub fn timer_deadline(now: u64, delay: u64) -> Option<u64> {
    (delay <= TIMER_DELAY_MAX).then(|| now.saturating_add(delay))
}

/// Handles the hypercall in the partition's registers.
pub fn handle(p: &mut Partition, v: usize) -> Flow {
    let g = *p.vcpus[v].vcpu.gprs();
    let (nr, a1, a2) = (g.0[reg::RAX], g.0[reg::RDI], g.0[reg::RSI]);
    let mut value = None;
    let mut flow = Flow::Continue;
    let status = match Call::from_u64(nr) {
        Some(c) if c.privileged() && !p.config.management => {
            p.refused += 1;
            log::info!("partition {}: privileged hypercall {c:?} refused", p.name);
            Status::PermissionDenied
        }
        Some(
            c @ (Call::PartitionList
            | Call::PartitionCreate
            | Call::PartitionStart
            | Call::PartitionPause
            | Call::PartitionResume
            | Call::PartitionDestroy
            | Call::ConsoleRead
            | Call::PartitionStats
            | Call::ChannelCreate
            | Call::ChannelQuery
            | Call::ChannelBind
            | Call::ChannelNotify),
        ) => return Flow::Admin(c),
        Some(Call::Version) => {
            value = Some(VERSION);
            Status::Success
        }
        Some(Call::ConsoleWrite) => {
            if a2 > CONSOLE_WRITE_MAX {
                Status::InvalidArgument
            } else {
                match p.ram.slice(a1, a2) {
                    Ok(bytes) => {
                        let bytes = alloc::vec::Vec::from(bytes);
                        p.console_bytes(&bytes);
                        Status::Success
                    }
                    Err(_) => Status::BadAddress,
                }
            }
        }
        Some(Call::Yield) => {
            flow = Flow::Yield;
            Status::Success
        }
        Some(Call::Shutdown) => {
            p.flush_console();
            p.state = State::Shutdown(a1);
            flow = Flow::Stopped;
            Status::Success
        }
        Some(Call::PartitionId) => {
            value = Some(p.id);
            Status::Success
        }
        Some(Call::SetTimer) => {
            p.rearm = true;
            if a1 == 0 {
                p.vcpus[v].timer = None;
                Status::Success
            } else if !(32..=255).contains(&a2) {
                Status::InvalidArgument
            } else if let Some(at) = timer_deadline(crate::arch::x86::instr::rdtsc(), a1) {
                p.vcpus[v].timer = Some((at, a2 as u8));
                Status::Success
            } else {
                Status::InvalidArgument
            }
        }
        None => {
            log::info!("partition {}: unknown hypercall {nr:#x}", p.name);
            Status::UnknownCall
        }
    };
    let g = p.vcpus[v].vcpu.gprs();
    g.0[reg::RAX] = status as u64;
    if let Some(v) = value {
        g.0[reg::RDX] = v;
    }
    if flow == Flow::Stopped {
        return flow;
    }
    let next = step::skip(p, v);
    if next != Flow::Continue { next } else { flow }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_delays_are_capped() {
        assert_eq!(timer_deadline(100, 1), Some(101));
        assert_eq!(timer_deadline(100, TIMER_DELAY_MAX), Some(100 + TIMER_DELAY_MAX));
        assert_eq!(timer_deadline(u64::MAX - 1, TIMER_DELAY_MAX), Some(u64::MAX));
        assert_eq!(timer_deadline(100, TIMER_DELAY_MAX + 1), None);
        assert_eq!(timer_deadline(0, u64::MAX), None);
    }
}
