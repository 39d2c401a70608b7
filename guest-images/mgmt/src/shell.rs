//! The shell on the console: reads typed lines (the hypervisor forwards COM1 input to the
//! management partition's UART), runs the commands of `mgmt::command`, and between keys
//! serves the channels and naps.

use core::fmt;

use guest_rt::console::{self, COM1, Console};
use guest_rt::hypercall as hc;
use guest_rt::instr::outb;
use guest_rt::{print, println};
use hvabi::hypercall::{EXIT_KIND_NAMES, PartitionInfo, Status};
use mgmt::command::{self, COMMANDS, Command, Usage};
use mgmt::line::{Edit, LineEditor, MAX_LINE};
use mgmt::report::{ConsoleDump, ListLine, partition_name};

use crate::channels::{Channels, MAX_SERVED, OpenError};
use crate::idle;

/// The prompt (no newline after it).
pub const PROMPT: &str = "mgmt> ";
/// Most partitions `list` and the name lookup see (the manifest's limit).
const MAX_PARTITIONS: usize = 64;
/// Bytes per ConsoleRead, and most reads per `console` command (the hypervisor keeps 16 KiB).
const CONSOLE_CHUNK: usize = 1024;
const CONSOLE_READS: usize = 16;
/// FIFO control register of the UART: enable the FIFOs (16 received bytes instead of 1) and
/// clear them.
const FCR: u16 = COM1 + 2;
const FCR_ENABLE_AND_CLEAR: u8 = 0x07;
/// Interrupt enable register: bit 0, received data available.
const IER: u16 = COM1 + 1;
const IER_RECEIVED_DATA: u8 = 0x01;
/// Modem control register: DTR, RTS and OUT2 (which gates the UART's interrupt onto IRQ 4).
const MCR: u16 = COM1 + 4;
const MCR_DTR_RTS_OUT2: u8 = 0x0b;

/// Runs the shell until `shutdown`.
pub fn run() -> ! {
    // SAFETY: COM1 is this partition's virtual UART; turning its FIFOs on only lets more typed
    // bytes wait for us, and its received-data interrupt (IER bit 0, through MCR.OUT2 to IRQ 4)
    // wakes the nap below when a key arrives (PC16550D datasheet, IER and MCR).
    unsafe {
        outb(FCR, FCR_ENABLE_AND_CLEAR);
        outb(IER, IER_RECEIVED_DATA);
        outb(MCR, MCR_DTR_RTS_OUT2);
    }
    let own_id = hc::partition_id().value;
    let mut editor = LineEditor::new();
    let mut channels = Channels::new();
    // The first screen says what to type.
    println!(
        "mgmt: shell ready: type `help` for the commands, `list` for the partitions; \
         Ctrl-A three times switches the console (next partition, then the hypervisor's keys)"
    );
    print!("{PROMPT}");
    loop {
        let mut busy = false;
        while let Some(b) = console::read_byte() {
            busy = true;
            match editor.feed(b) {
                Edit::Nothing => {}
                Edit::Echo(c) => console::put_byte(c),
                Edit::Erase => print!("\x08 \x08"),
                Edit::Line => {
                    println!();
                    execute(editor.line(), &mut channels, own_id);
                    print!("{PROMPT}");
                }
                Edit::Overlong => {
                    println!();
                    println!("error: line longer than {MAX_LINE} characters: ignored");
                    print!("{PROMPT}");
                }
                Edit::Cancel => {
                    println!("^C");
                    print!("{PROMPT}");
                }
            }
        }
        busy |= channels.service();
        if !busy {
            // Typed bytes (IRQ 4) and channel notifications end the nap early.
            idle::nap(idle::SHELL_NAP_TICKS);
        }
    }
}

/// `error: <command>: <reason>`.
fn fail(command: &str, reason: impl fmt::Display) {
    println!("error: {command}: {reason}");
}

/// A refused hypercall: the `Status` variant, and what it likely means for this command.
struct Refused(&'static str, Status);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(command, status) = *self;
        write!(f, "{status:?}")?;
        let hint = match (command, status) {
            (_, Status::PermissionDenied) => "this is not the management partition",
            ("start", Status::InvalidArgument) => "only a created partition starts",
            ("pause", Status::InvalidArgument) => "only a running or halted partition pauses",
            ("resume", Status::InvalidArgument) => "only a paused partition resumes",
            ("destroy", Status::InvalidArgument) => "a partition cannot destroy itself",
            ("create", Status::InvalidArgument) => {
                "a bad or taken name, memory not an even 2..=1024 MiB, vCPUs not 1..=8, CPUs not free, or no room for it"
            }
            ("create", Status::NotFound) => "no boot module of that name",
            ("chan", Status::InvalidArgument) => "no free channel, or that is this partition",
            (_, Status::NotFound) => "the partition is gone",
            _ => "",
        };
        if !hint.is_empty() {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// What PartitionList returned.
struct Table {
    infos: [PartitionInfo; MAX_PARTITIONS],
    /// How many records are in `infos`.
    len: usize,
    /// How many partitions there are (may exceed `len`).
    total: usize,
}

impl Table {
    fn read() -> Result<Self, Status> {
        let mut infos = [PartitionInfo::default(); MAX_PARTITIONS];
        let total = hc::partition_list(&mut infos)?;
        Ok(Self { infos, len: total.min(MAX_PARTITIONS), total })
    }

    fn iter(&self) -> impl Iterator<Item = &PartitionInfo> {
        self.infos[..self.len].iter()
    }
}

/// Partition `name`'s record, or an error printed for `command`.
fn resolve(command: &'static str, name: &str) -> Option<PartitionInfo> {
    let table = match Table::read() {
        Ok(t) => t,
        Err(s) => {
            fail(command, format_args!("PartitionList: {}", Refused(command, s)));
            return None;
        }
    };
    let found = table.iter().find(|p| partition_name(p) == name).copied();
    if found.is_none() {
        fail(command, format_args!("NotFound (no partition named `{name}`)"));
    }
    found
}

fn execute(line: &str, channels: &mut Channels, own_id: u64) {
    let cmd = match command::parse(line) {
        Ok(c) => c,
        Err(e) => return println!("error: {e}"),
    };
    match cmd {
        Command::Empty => {}
        Command::Help => help(),
        Command::List => list(),
        Command::Create { name, image, mib, cmdline, cpus, vcpus } => {
            create(name, image, mib, cmdline, cpus, vcpus)
        }
        Command::Start(name) => {
            transition("start", name, hc::partition_start, "started");
        }
        Command::Pause(name) => {
            transition("pause", name, hc::partition_pause, "paused");
        }
        Command::Resume(name) => {
            transition("resume", name, hc::partition_resume, "resumed");
        }
        Command::Destroy(name) => {
            if let Some(id) = transition("destroy", name, hc::partition_destroy, "destroyed") {
                channels.forget_partner(id);
            }
        }
        Command::Console(name) => console(name, own_id),
        Command::Stats(name) => stats(name),
        Command::Chan(None) => chan_counters(channels),
        Command::Chan(Some(name)) => chan_open(channels, name),
        Command::Shutdown(status) => {
            println!("mgmt: shutting down with status {status}");
            guest_rt::shutdown(status)
        }
    }
}

fn help() {
    println!("commands:");
    for (name, _, what) in COMMANDS {
        println!("  {:<38} {what}", Usage(name));
    }
}

fn list() {
    match Table::read() {
        Ok(table) => {
            table.iter().for_each(|p| println!("{}", ListLine(p)));
            if table.total > table.len {
                println!("  ({} more not shown)", table.total - table.len);
            }
            println!("{} partitions", table.total);
            // The count alone (no buffer, address 0) must agree: a hypervisor that checked the
            // address of a buffer it does not write would refuse it (issue 13, finding 6).
            match hc::partition_count() {
                Ok(n) if n == table.total => {}
                Ok(n) => println!("FAIL list: PartitionList without a buffer counts {n}"),
                Err(s) => println!("FAIL list: PartitionList without a buffer: {s:?}"),
            }
        }
        Err(s) => fail("list", Refused("list", s)),
    }
}

fn create(name: &str, image: &str, mib: u64, cmdline: &str, cpus: u64, vcpus: u64) {
    let mut req = match hc::create_request(name, image, cmdline, mib) {
        Ok(r) => r,
        Err(e) => return fail("create", e),
    };
    req.cpus = cpus;
    req.vcpus = vcpus;
    match hc::partition_create(&req) {
        Ok(id) => println!("created {name} (id {id})"),
        Err(s) => fail("create", Refused("create", s)),
    }
}

/// Start, pause, resume or destroy: prints `<done> NAME`; returns the partition's id.
fn transition(
    command: &'static str,
    name: &str,
    call: fn(u64) -> Result<(), Status>,
    done: &str,
) -> Option<u64> {
    let p = resolve(command, name)?;
    match call(p.id) {
        Ok(()) => {
            println!("{done} {name}");
            Some(p.id)
        }
        Err(s) => {
            fail(command, Refused(command, s));
            None
        }
    }
}

fn console(name: &str, own_id: u64) {
    let Some(p) = resolve("console", name) else { return };
    if p.id == own_id {
        // Printing it would add to it as fast as it is read; it is on the console already.
        return fail("console", "that is this partition: its output is on the console already");
    }
    let mut buf = [0u8; CONSOLE_CHUNK];
    let mut dump = ConsoleDump::default();
    for _ in 0..CONSOLE_READS {
        match hc::console_read(p.id, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = dump.write(&mut Console, &buf[..n.min(buf.len())]);
            }
            Err(s) => {
                let _ = dump.finish(&mut Console);
                return fail("console", Refused("console", s));
            }
        }
    }
    let _ = dump.finish(&mut Console);
    println!("({} bytes)", dump.bytes);
}

fn stats(name: &str) {
    let Some(p) = resolve("stats", name) else { return };
    match hc::partition_stats(p.id) {
        Ok(r) => {
            println!("stats {name}: {} exits", r.exits_total);
            for (kind, n) in EXIT_KIND_NAMES.iter().zip(r.exits).filter(|&(_, n)| n != 0) {
                println!("  {kind} {n}");
            }
            println!(
                "  absent ports {}, absent mmio {}, refused {}",
                r.absent_ports, r.absent_mmio, r.refused
            );
        }
        Err(s) => fail("stats", Refused("stats", s)),
    }
}

fn chan_open(channels: &mut Channels, name: &str) {
    let Some(p) = resolve("chan", name) else { return };
    match channels.open(p.id, name) {
        Ok(id) => println!("channel {id} with {name}"),
        Err(OpenError::NoSlot) => fail("chan", format_args!("all {MAX_SERVED} channels in use")),
        Err(OpenError::Call(call, s)) => {
            fail("chan", format_args!("{call}: {}", Refused("chan", s)))
        }
        Err(OpenError::Map(e)) => fail("chan", e),
    }
}

fn chan_counters(channels: &Channels) {
    let mut any = false;
    for c in channels.iter() {
        any = true;
        println!(
            "channel {} with {}: {} messages echoed, {} bytes{}",
            c.id,
            c.name(),
            c.echoed,
            c.bytes,
            if c.closed { " (closed)" } else { "" }
        );
    }
    if !any {
        println!("no channels (chan NAME creates one)");
    }
}
