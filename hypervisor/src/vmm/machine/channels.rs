//! The channel calls (`hvabi::channel`): a page shared by two partitions of CPU 0, an
//! interrupt vector at each end, and the notification that raises it. The management
//! partition creates them ([`Machine::admin`]); either end binds and notifies.

use super::{Channel, Machine};
use crate::vmm::partition::State;
use hvabi::hypercall::Status;

/// A status and an optional result for RDX.
type Answer = Result<Option<u64>, Status>;

impl Machine<'_> {
    pub(super) fn channel_create(&mut self, caller: u64, other: u64) -> Answer {
        if let Some(r) = self.pinned.iter().find(|r| r.id == other) {
            crate::println!(
                "hypervisor: no channel with {}: it runs on cpu {}, channels join partitions of CPU 0",
                r.name,
                r.cpus[0]
            );
            return Err(Status::InvalidArgument);
        }
        let j = self.index_of(other)?;
        if other == caller {
            return Err(Status::InvalidArgument);
        }
        let id = (0..hvabi::channel::MAX_CHANNELS)
            .find(|n| !self.channels.iter().any(|c| c.id == *n))
            .ok_or(Status::InvalidArgument)?;
        let page =
            crate::arch::x86::paging::HostPages::alloc_zeroed(1).ok_or(Status::InvalidArgument)?;
        let gpa = hvabi::channel::gpa(id);
        let channel = Channel { id, page, ends: [caller, other], vectors: [0, 0] };
        for (n, pid) in [caller, other].into_iter().enumerate() {
            let k = self.index_of(pid)?;
            if self.parts[k].slat.map(gpa, page.0, 4096).is_err() {
                // Undo the mapping already made, and give the page back.
                self.unmap_channel(&channel, [caller, other].into_iter().take(n));
                crate::arch::x86::paging::HostPages::free(page, 1);
                return Err(Status::InvalidArgument);
            }
        }
        crate::println!(
            "hypervisor: channel {id} between {} and {} at guest-physical {gpa:#x}",
            self.parts[self.index_of(caller)?].name,
            self.parts[j].name
        );
        self.channels.push(channel);
        Ok(Some(id))
    }

    /// Removes channel `c`'s page from the second-level tables of `ends`.
    pub(super) fn unmap_channel(&mut self, c: &Channel, ends: impl Iterator<Item = u64>) {
        let gpa = hvabi::channel::gpa(c.id);
        for e in ends {
            if let Ok(k) = self.index_of(e) {
                let p = &mut self.parts[k];
                if p.slat.unmap(gpa, 4096).is_err() {
                    log::warn!("partition {}: channel {} page was not mapped", p.name, c.id);
                }
                p.flush_second_level();
            }
        }
    }

    pub(super) fn channel_bind(&mut self, caller: u64, id: u64, vector: u64) -> Answer {
        if vector != 0 && !(32..=255).contains(&vector) {
            return Err(Status::InvalidArgument);
        }
        let c = self.channels.iter_mut().find(|c| c.id == id).ok_or(Status::NotFound)?;
        let end = c.ends.iter().position(|&e| e == caller).ok_or(Status::PermissionDenied)?;
        let was = c.vectors[end];
        c.vectors[end] = vector as u8;
        if let Ok(k) = self.index_of(caller) {
            let bound = &mut self.parts[k].bound_channels;
            match (was, vector) {
                (0, 1..) => *bound += 1,
                (1.., 0) => *bound -= 1,
                _ => {}
            }
        }
        Ok(None)
    }

    pub(super) fn channel_notify(&mut self, caller: u64, id: u64) -> Answer {
        let c = self.channels.iter().find(|c| c.id == id).ok_or(Status::NotFound)?;
        let end = c.ends.iter().position(|&e| e == caller).ok_or(Status::PermissionDenied)?;
        let (other, vector) = (c.ends[1 - end], c.vectors[1 - end]);
        if let Ok(k) = self.index_of(other) {
            let p = &mut self.parts[k];
            if vector != 0 {
                p.raise_vector(vector);
            }
            if let State::Halted { .. } = p.state {
                p.state = State::Runnable;
            }
        }
        Ok(None)
    }
}
