//! Hypercall dispatch (the ABI is `hvabi::hypercall`; the table is `docs/hypercalls.md`).
//! Every argument is checked; buffers are read only through the caller's own RAM map.

use super::dispatch::Flow;
use super::partition::{Partition, State};
use super::vcpu::reg;
use hvabi::hypercall::{Call, Status, VERSION};

/// Longest console write accepted in one call.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

/// Handles the hypercall in the partition's registers.
pub fn handle(p: &mut Partition) -> Flow {
    let g = *p.vcpu.gprs();
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
            if a1 == 0 {
                p.timer = None;
                Status::Success
            } else if !(32..=255).contains(&a2) {
                Status::InvalidArgument
            } else {
                p.timer = Some((crate::arch::x86::instr::rdtsc().saturating_add(a1), a2 as u8));
                Status::Success
            }
        }
        None => {
            log::info!("partition {}: unknown hypercall {nr:#x}", p.name);
            Status::UnknownCall
        }
    };
    let g = p.vcpu.gprs();
    g.0[reg::RAX] = status as u64;
    if let Some(v) = value {
        g.0[reg::RDX] = v;
    }
    if flow == Flow::Stopped {
        return flow;
    }
    let next = super::dispatch::skip_public(p);
    if next != Flow::Continue { next } else { flow }
}
