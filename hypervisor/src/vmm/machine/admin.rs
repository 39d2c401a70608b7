//! The management partition's privileged hypercalls and the channel calls: everything that
//! needs more than the calling partition. The run loop hands these over as [`Flow::Admin`]
//! (`dispatch`); [`Machine::admin`] carries them out with every argument checked and writes
//! the status (and result) into the caller's registers.

use super::pinned::Request;
use super::{Channel, Machine};
use crate::vmm::partition::{Partition, PartitionConfig, State};
use crate::vmm::vcpu::reg;
use alloc::format;
use alloc::string::String;
use hvabi::hypercall::{
    CREATE_REQUEST_SIZE, CREATE_REQUEST_SIZE_V0, Call, CreateRequest, MAX_VCPUS, PartitionInfo,
    STATS_RECORD_SIZE, StatsRecord, Status, state,
};

/// A status and an optional result for RDX.
type Answer = Result<Option<u64>, Status>;

/// Plain-data records copied to and from guest RAM.
trait Record: Copy {
    fn bytes(&self) -> &[u8] {
        // SAFETY: implementors are repr(C) plain data with no padding that matters to the
        // reader; viewing them as bytes is sound.
        unsafe {
            core::slice::from_raw_parts(
                core::ptr::from_ref(self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }
}
impl Record for PartitionInfo {}

/// Writes `r` to `gpa` in the caller `p`'s RAM in the layout its RDX (`size`) asks for
/// ([`StatsRecord::words`]); any other size is refused with `InvalidArgument`, said on the
/// console.
fn write_stats(p: &mut Partition, gpa: u64, size: u64, r: &StatsRecord) -> Answer {
    let Some((words, n)) = r.words(size) else {
        crate::println!(
            "hypervisor: partition stats: a record of {size} bytes asked for; ABI 1.1 writes {STATS_RECORD_SIZE} (or the 1.0 layout for 0 or {})",
            hvabi::hypercall::STATS_RECORD_SIZE_V0
        );
        return Err(Status::InvalidArgument);
    };
    let mut bytes = [0u8; STATS_RECORD_SIZE as usize];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(&words[..n]) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    p.ram.write(gpa, &bytes[..n * 8]).map_err(|_| Status::BadAddress)?;
    Ok(None)
}

/// Reads the [`CreateRequest`] at `gpa`, `size` bytes long (the caller's RSI): the current
/// layout ([`CREATE_REQUEST_SIZE`]), or the first one without `vcpus` (RSI 0, as every ABI 1.0
/// caller passed, or [`CREATE_REQUEST_SIZE_V0`]), which gets one vCPU; any other size is
/// refused with `InvalidArgument`, said on the console.
fn read_request(p: &Partition, gpa: u64, size: u64) -> Result<CreateRequest, Status> {
    let len = match size {
        0 | CREATE_REQUEST_SIZE_V0 => CREATE_REQUEST_SIZE_V0,
        CREATE_REQUEST_SIZE => CREATE_REQUEST_SIZE,
        _ => {
            crate::println!(
                "hypervisor: partition {}: PartitionCreate: request size {size} (RSI) is neither {CREATE_REQUEST_SIZE} nor {CREATE_REQUEST_SIZE_V0} (or 0) for the layout without vcpus",
                p.name
            );
            return Err(Status::InvalidArgument);
        }
    };
    let bytes = p.ram.slice(gpa, len).map_err(|_| Status::BadAddress)?;
    Ok(request_from(bytes))
}

/// A [`CreateRequest`] from the guest's bytes: its first layout (without `vcpus`) gets 1.
fn request_from(bytes: &[u8]) -> CreateRequest {
    let mut full = [0u8; CREATE_REQUEST_SIZE as usize];
    let n = bytes.len().min(full.len());
    full[..n].copy_from_slice(&bytes[..n]);
    if n as u64 == CREATE_REQUEST_SIZE_V0 {
        full[n..].copy_from_slice(&1u64.to_le_bytes());
    }
    // SAFETY: CreateRequest is repr(C) made of byte arrays and u64s: every bit pattern is valid,
    // and read_unaligned copies from a local buffer of its size.
    unsafe { core::ptr::read_unaligned(full.as_ptr().cast::<CreateRequest>()) }
}

/// A `vcpus` field checked: 1..=[`MAX_VCPUS`] (the manifest's bound), else why not.
fn check_vcpus(vcpus: u64) -> Result<u32, String> {
    const _: () = assert!(MAX_VCPUS == crate::vmm::ipi::MAX_VCPUS as u64);
    if (1..=MAX_VCPUS).contains(&vcpus) {
        Ok(vcpus as u32)
    } else {
        Err(format!("{vcpus} vCPUs asked for; a partition has 1 to {MAX_VCPUS}"))
    }
}

fn text(bytes: &[u8], len: u64) -> Result<&str, Status> {
    let len =
        usize::try_from(len).ok().filter(|&l| l <= bytes.len()).ok_or(Status::InvalidArgument)?;
    core::str::from_utf8(&bytes[..len]).map_err(|_| Status::InvalidArgument)
}

/// `, N vCPUs` for a partition of several, for the creation message (nothing for one).
fn vcpus_note(vcpus: u32) -> String {
    if vcpus > 1 { format!(", {vcpus} vCPUs") } else { String::new() }
}

/// A partition name: 1..=31 bytes of `[a-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=31).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn state_code(s: &State) -> u32 {
    match s {
        State::Created => state::CREATED,
        State::Runnable => state::RUNNING,
        State::Paused => state::PAUSED,
        State::Halted { .. } => state::HALTED,
        State::Shutdown(_) | State::Off(_) => state::SHUT_DOWN,
        State::Killed(_) => state::KILLED,
    }
}

impl Machine<'_> {
    /// Carries out `call` for partition `i` and moves it past its hypercall.
    pub fn admin(&mut self, i: usize, call: Call) {
        let p = &mut self.parts[i];
        let g = *p.vcpus[p.current].vcpu.gprs();
        let caller = self.parts[i].id;
        let (a1, a2, a3) = (g.0[reg::RDI], g.0[reg::RSI], g.0[reg::RDX]);
        let target = matches!(
            call,
            Call::PartitionStart
                | Call::PartitionPause
                | Call::PartitionResume
                | Call::PartitionDestroy
                | Call::ConsoleRead
                | Call::PartitionStats
        )
        .then(|| self.pinned.iter().position(|r| r.id == a1))
        .flatten();
        let answer = match call {
            _ if let Some(k) = target => self.pinned_call(k, i, call, a2, a3),
            Call::PartitionList => self.list(i, a1, a2),
            Call::PartitionCreate => self.create(i, a1, a2),
            Call::PartitionStart => {
                self.transition(a1, |s| (*s == State::Created).then_some(State::Runnable))
            }
            // Pausing itself would leave nobody to resume it (or anything else): refused,
            // like destroying itself.
            Call::PartitionPause if a1 == caller => Err(Status::InvalidArgument),
            Call::PartitionPause => self.transition(a1, |s| {
                matches!(s, State::Runnable | State::Halted { .. }).then_some(State::Paused)
            }),
            Call::PartitionResume => {
                self.transition(a1, |s| (*s == State::Paused).then_some(State::Runnable))
            }
            Call::PartitionDestroy if a1 == caller => Err(Status::InvalidArgument),
            Call::PartitionDestroy => self.destroy(a1, caller),
            Call::ConsoleRead => self.console_read(i, a1, a2, a3),
            Call::PartitionStats => self.stats(i, a1, a2, a3),
            Call::ChannelCreate => self.channel_create(caller, a1),
            Call::ChannelQuery => self
                .channels
                .iter()
                .find(|c| c.ends.contains(&caller))
                .map(|c| Some(c.id))
                .ok_or(Status::NotFound),
            Call::ChannelBind => self.channel_bind(caller, a1, a2),
            Call::ChannelNotify => self.channel_notify(caller, a1),
            _ => Err(Status::UnknownCall),
        };
        // The call may have removed partitions: find the caller again.
        let Some(p) = self.parts.iter_mut().find(|p| p.id == caller) else { return };
        match answer {
            // The normal answer while a guest waits for its channel.
            Err(Status::NotFound) if call == Call::ChannelQuery => {
                log::debug!("partition {}: {call:?}: no channel yet", p.name)
            }
            Err(s) => log::info!("partition {}: {call:?} refused: {s:?}", p.name),
            Ok(_) => {}
        }
        let v = p.current;
        let g = p.vcpus[v].vcpu.gprs();
        match answer {
            Ok(v) => {
                g.0[reg::RAX] = Status::Success as u64;
                if let Some(v) = v {
                    g.0[reg::RDX] = v;
                }
            }
            Err(s) => g.0[reg::RAX] = s as u64,
        }
        crate::vmm::step::skip(p, v);
    }

    pub(super) fn index_of(&self, id: u64) -> Result<usize, Status> {
        self.parts.iter().position(|p| p.id == id).ok_or(Status::NotFound)
    }

    fn list(&mut self, i: usize, gpa: u64, len: u64) -> Answer {
        let size = core::mem::size_of::<PartitionInfo>() as u64;
        let fit = (len / size) as usize;
        // Partitions on other CPUs publish their state when asked.
        let timeout = self.platform.tsc_hz_or_nominal() / 10;
        for r in self.pinned.iter().filter(|r| !r.done()) {
            r.ask(Request::Look, timeout);
        }
        let rows = self
            .parts
            .iter()
            .map(|p| (p.id, p.state.clone(), p.config.management, p.ram.size(), p.name.as_str()))
            .chain(self.pinned.iter().map(|r| {
                let s = r.snapshot();
                (r.id, s.state, false, s.memory, r.name.as_str())
            }));
        let infos: alloc::vec::Vec<PartitionInfo> = rows
            .take(fit)
            .map(|(id, state, management, memory_bytes, name)| {
                let mut info = PartitionInfo {
                    id,
                    state: state_code(&state),
                    management: u32::from(management),
                    memory_bytes,
                    exit_status: if let State::Shutdown(s) = state { s } else { 0 },
                    name_len: name.len().min(32) as u64,
                    name: [0; 32],
                };
                info.name[..info.name_len as usize]
                    .copy_from_slice(&name.as_bytes()[..info.name_len as usize]);
                info
            })
            .collect();
        let caller = &mut self.parts[i];
        // Nothing to write (a buffer too small for one record, RSI = 0 to ask for the count):
        // the address is not looked at.
        if !infos.is_empty() {
            caller.ram.slice(gpa, infos.len() as u64 * size).map_err(|_| Status::BadAddress)?;
        }
        for (k, info) in infos.iter().enumerate() {
            caller
                .ram
                .write(gpa + k as u64 * size, info.bytes())
                .map_err(|_| Status::BadAddress)?;
        }
        Ok(Some((self.parts.len() + self.pinned.len()) as u64))
    }

    fn create(&mut self, i: usize, gpa: u64, size: u64) -> Answer {
        let req = read_request(&self.parts[i], gpa, size)?;
        let name = text(&req.name, req.name_len)?;
        let image_name = text(&req.image, req.image_len)?;
        let cmdline = text(&req.cmdline, req.cmdline_len)?;
        let initrd_name = text(&req.initrd, req.initrd_len)?;
        if !valid_name(name)
            || self.parts.iter().any(|p| p.name == name)
            || self.pinned.iter().any(|r| r.name == name)
        {
            return Err(Status::InvalidArgument);
        }
        if !(2..=1024).contains(&req.memory_mib) || req.memory_mib % 2 != 0 {
            return Err(Status::InvalidArgument);
        }
        let vcpus = check_vcpus(req.vcpus).map_err(|why| {
            crate::println!("hypervisor: creating partition {name}: {why}");
            Status::InvalidArgument
        })?;
        let image = self.module(image_name).ok_or(Status::NotFound)?;
        use crate::vmm::manifest::ImageFormat;
        // Linux bzImages and ELF64 (our guests) say what they are, except that an ELF64 file
        // with a multiboot header (a 64-bit kernel that gives its load addresses, flag 16) is
        // a multiboot kernel, as GRUB would boot it; anything else is tried as multiboot.
        use crate::vmm::loader::{linux, multiboot};
        let format = if linux::is_bzimage(image) {
            ImageFormat::Linux
        } else if image.get(..5) == Some(b"\x7fELF\x02") && !multiboot::has_header(image) {
            ImageFormat::Elf64
        } else {
            ImageFormat::Multiboot
        };
        // A multiboot image's `initrd` field names its boot modules, `+`-separated (the shell's
        // `IMAGE+MODULE+...`); each module's string is its name.
        let mut modules = alloc::vec::Vec::new();
        if format == ImageFormat::Multiboot && !initrd_name.is_empty() {
            for m in initrd_name.split('+') {
                let data = self.module(m).ok_or(Status::NotFound)?;
                modules.push(crate::vmm::config::BootModule { data, string: String::from(m) });
            }
        }
        let initrd = match initrd_name {
            "" => None,
            _ if format == ImageFormat::Multiboot => None,
            _ if format != ImageFormat::Linux => {
                crate::println!(
                    "hypervisor: creating partition {name}: an initrd is for Linux images; `{image_name}` is {}",
                    format.as_str()
                );
                return Err(Status::InvalidArgument);
            }
            n => Some(self.module(n).ok_or(Status::NotFound)?),
        };
        let config = PartitionConfig {
            name: String::from(name),
            image,
            format,
            memory: req.memory_mib << 20,
            vcpus,
            cmdline: String::from(cmdline),
            expect: crate::vmm::manifest::Expect::Exit,
            initrd,
            modules,
            on_stop: crate::vmm::manifest::OnStop::Destroy,
            management: false,
            keep_free: 0,
            devices: alloc::vec::Vec::new(),
            cpus: None,
        };
        let id = self.next_id;
        let tag = self.free_tag().ok_or(Status::InvalidArgument)?;
        if req.cpus != 0 {
            let cpus: alloc::vec::Vec<usize> =
                (0..64).filter(|b| req.cpus & (1 << b) != 0).collect();
            let request = crate::arch::x86::pins::Request::List(cpus.clone());
            return match self.pin(id, tag, config, &request, true) {
                Ok(_) => {
                    crate::println!(
                        "hypervisor: partition {name} (id {id}) created by {} from image `{image_name}`, {} MiB{}, on cpu(s) {cpus:?}",
                        self.parts[i].name,
                        req.memory_mib,
                        vcpus_note(vcpus)
                    );
                    self.next_id += 1;
                    Ok(Some(id))
                }
                Err(e) => {
                    crate::println!("hypervisor: creating partition {name}: {e}");
                    Err(Status::InvalidArgument)
                }
            };
        }
        match Partition::build(id, tag, config, self.backend, &self.platform) {
            Ok(mut p) => {
                p.state = State::Created;
                crate::println!(
                    "hypervisor: partition {name} (id {id}) created by {} from image `{image_name}`, {} MiB{}",
                    self.parts[i].name,
                    req.memory_mib,
                    vcpus_note(vcpus)
                );
                self.next_id += 1;
                self.parts.push(p);
                Ok(Some(id))
            }
            Err(e) => {
                crate::println!("hypervisor: creating partition {name}: {e}");
                Err(Status::InvalidArgument)
            }
        }
    }

    fn transition(&mut self, id: u64, f: impl FnOnce(&State) -> Option<State>) -> Answer {
        let j = self.index_of(id)?;
        let p = &mut self.parts[j];
        let new = f(&p.state).ok_or(Status::InvalidArgument)?;
        log::info!("partition {}: {:?} -> {new:?}", p.name, p.state);
        p.state = new;
        Ok(None)
    }

    fn destroy(&mut self, id: u64, by: u64) -> Answer {
        let j = self.index_of(id)?;
        let by =
            self.parts.iter().find(|p| p.id == by).map_or_else(String::new, |p| p.name.clone());
        let mut p = self.parts.remove(j);
        p.flush_console();
        crate::println!(
            "hypervisor: partition {} (id {id}) destroyed by {by} ({:?})",
            p.name,
            p.state
        );
        crate::vmm::run::print_stats(&p);
        drop(p);
        // Its channels go too: unmapped from the surviving end, their pages freed.
        let (gone, kept): (alloc::vec::Vec<Channel>, _) =
            core::mem::take(&mut self.channels).into_iter().partition(|c| c.ends.contains(&id));
        self.channels = kept;
        for c in gone {
            self.unmap_channel(&c, c.ends.iter().copied().filter(|&e| e != id));
            for (end, vector) in c.ends.iter().zip(c.vectors) {
                if vector != 0
                    && let Ok(k) = self.index_of(*end)
                {
                    self.parts[k].bound_channels -= 1;
                }
            }
            crate::arch::x86::paging::HostPages::free(c.page, 1);
        }
        Ok(None)
    }

    fn console_read(&mut self, i: usize, id: u64, gpa: u64, len: u64) -> Answer {
        let j = self.index_of(id)?;
        let n = (self.parts[j].history.len() as u64).min(len);
        self.parts[i].ram.slice(gpa, n).map_err(|_| Status::BadAddress)?;
        let bytes: alloc::vec::Vec<u8> = self.parts[j].history.drain(..n as usize).collect();
        self.parts[i].ram.write(gpa, &bytes).map_err(|_| Status::BadAddress)?;
        Ok(Some(n))
    }

    fn stats(&mut self, i: usize, id: u64, gpa: u64, size: u64) -> Answer {
        let j = self.index_of(id)?;
        let p = &self.parts[j];
        let r = StatsRecord {
            exits_total: p.stats.total(),
            exits: p.stats.counts,
            absent_ports: p.io.absent,
            absent_mmio: p.mmio.absent,
            refused: p.refused,
        };
        write_stats(&mut self.parts[i], gpa, size, &r)
    }
}

impl Machine<'_> {
    /// Carries out `call` for the management partition (index `i`) on pinned partition `k`:
    /// its CPU is interrupted and answers (`pinned::Remote::ask`).
    fn pinned_call(&mut self, k: usize, i: usize, call: Call, a2: u64, a3: u64) -> Answer {
        let timeout = self.platform.tsc_hz_or_nominal();
        let r = self.pinned[k].clone();
        let state = r.snapshot().state;
        let asked = |req| if r.ask(req, timeout) { Ok(None) } else { Err(Status::InvalidArgument) };
        match call {
            Call::PartitionStart if state == State::Created => asked(Request::Run),
            Call::PartitionResume if state == State::Paused => asked(Request::Run),
            Call::PartitionPause if matches!(state, State::Runnable | State::Halted { .. }) => {
                asked(Request::Pause)?;
                log::info!("partition {}: {state:?} -> Paused on cpu {}", r.name, r.cpus[0]);
                Ok(None)
            }
            Call::PartitionDestroy => {
                if !r.ask(Request::Stop, timeout) {
                    log::warn!("partition {}: cpu {} did not stop it", r.name, r.cpus[0]);
                    return Err(Status::InvalidArgument);
                }
                self.pinned.remove(k);
                // Given back already if it had ended by itself (`reap_pinned`).
                self.pins.unpin(r.id);
                let cpus = &r.cpus;
                let s = r.snapshot();
                crate::println!(
                    "hypervisor: partition {} (id {}) destroyed by {} on cpu {} ({:?}): cpu(s) {cpus:?} back in the pool",
                    r.name,
                    r.id,
                    self.parts[i].name,
                    r.cpus[0],
                    s.state
                );
                super::pinned::print_stats(&s);
                Ok(None)
            }
            Call::ConsoleRead => {
                r.ask(Request::Look, timeout);
                let n = (r.history_len() as u64).min(a3);
                self.parts[i].ram.slice(a2, n).map_err(|_| Status::BadAddress)?;
                let bytes = r.take_history(n as usize);
                self.parts[i].ram.write(a2, &bytes).map_err(|_| Status::BadAddress)?;
                Ok(Some(bytes.len() as u64))
            }
            Call::PartitionStats => {
                r.ask(Request::Look, timeout);
                let s = r.snapshot();
                let rec = StatsRecord {
                    exits_total: s.stats.total(),
                    exits: s.stats.counts,
                    absent_ports: s.absent_ports,
                    absent_mmio: s.absent_mmio,
                    refused: s.refused,
                };
                write_stats(&mut self.parts[i], a2, a3, &rec)
            }
            _ => Err(Status::InvalidArgument),
        }
    }
}

/// For messages: a partition's name or `#id`.
pub fn describe(parts: &[Partition], id: u64) -> String {
    parts.iter().find(|p| p.id == id).map_or_else(|| format!("#{id}"), |p| p.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("g1") && valid_name("probe_2-x"));
        for bad in ["", "G1", "a b", "x/y", "0123456789012345678901234567890123"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    /// A request's bytes, `len` of them, with `vcpus` in the field after `cpus`.
    fn request_bytes(len: usize, vcpus: u64) -> alloc::vec::Vec<u8> {
        use core::mem::offset_of;
        let mut b = alloc::vec![0u8; CREATE_REQUEST_SIZE as usize];
        let mut put = |at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(offset_of!(CreateRequest, name_len), 2);
        put(offset_of!(CreateRequest, memory_mib), 16);
        put(offset_of!(CreateRequest, cpus), 0b110);
        put(offset_of!(CreateRequest, vcpus), vcpus);
        b.truncate(len);
        b
    }

    #[test]
    fn both_request_layouts_are_understood() {
        let now = request_from(&request_bytes(280, 3));
        assert_eq!((now.name_len, now.memory_mib, now.cpus, now.vcpus), (2, 16, 0b110, 3));
        // The first layout ends at `cpus`: one vCPU, whatever follows it in guest memory.
        let v0 = request_from(&request_bytes(272, 3));
        assert_eq!((v0.name_len, v0.memory_mib, v0.cpus, v0.vcpus), (2, 16, 0b110, 1));
    }

    #[test]
    fn vcpu_counts_are_checked_like_the_manifests() {
        assert_eq!(check_vcpus(1), Ok(1));
        assert_eq!(check_vcpus(8), Ok(8));
        for bad in [0, 9, u64::MAX, 1 << 32] {
            let why = check_vcpus(bad).unwrap_err();
            assert_eq!(why, format!("{bad} vCPUs asked for; a partition has 1 to 8"));
        }
    }

    #[test]
    fn text_fields_are_checked() {
        assert_eq!(text(b"abc\0\0", 3), Ok("abc"));
        assert_eq!(text(b"abc", 4), Err(Status::InvalidArgument));
        assert_eq!(text(&[0xff, 0xfe], 2), Err(Status::InvalidArgument));
        assert_eq!(text(b"abc", u64::MAX), Err(Status::InvalidArgument));
    }
}
