//! What the serial log of each end-to-end case must hold (and must not), and what its input
//! script types.

use super::cases::{AtLeast, Line, LineWith, Want};

/// A serial line containing any of these fails the case (a guest's failed check, a kernel
/// panic, a partition that did not end as its manifest expected, a byte the hypervisor took for
/// a debug key it does not know: no case types one, so it is a stray byte on COM1, as the UART
/// self-test's `7` under Bochs was).
/// A kernel's `[Firmware Bug]` is the partition's firmware tables or CPUID disagreeing (Linux's
/// "CPU1: APIC id mismatch" when CPUID's APIC ID is not the MADT's).
/// Linux's "segfault at" (a user process killed by a page fault): with its checks still
/// passing, vmx-linux-smp once showed only so that a vCPU read another's CR2.
pub const FORBIDDEN: &[&str] = &[
    "FAIL",
    "PANIC",
    "[UNEXPECTED]",
    "hypervisor: no debug key",
    "[Firmware Bug]",
    " segfault at ",
];

/// What every probe run must print: each check passed (there are 30 or so; fewer than 25 means
/// checks went missing), the probe's own summary, its clean shutdown.
pub const PROBE_PASSES: Want = AtLeast(25, "[probe] PASS ");
pub const PROBE_SUMMARY: Want = LineWith(&["[probe] probe: ", " checks, 0 failed"]);
pub const PROBE_EXIT: Want =
    Line("hypervisor: partition probe (id 0): shut down with status 0 [as expected]");
pub const POWER_OFF_OK: Want = Line("hypervisor: power off: ok");

/// `scenarios/probe.toml`: one probe that passes every check (the NMI ones named: they must
/// run, not merely not fail).
pub const PROBE: &[Want] = &[
    PROBE_PASSES,
    Line("[probe] PASS nmi-self-ipi"),
    Line("[probe] PASS nmi-blocked-until-iret"),
    PROBE_SUMMARY,
    PROBE_EXIT,
    POWER_OFF_OK,
];

/// `scenarios/vcpus2.toml`: the probe's two-vCPU mode: vCPU 1 started by INIT-SIPI-SIPI
/// (the hypervisor says where), its APIC timer, fixed IPIs both ways, a restart by INIT.
pub const VCPUS2: &[Want] = &[
    Line("[probe-smp] PASS vcpus2-ap-started"),
    Line("[probe-smp] PASS vcpus2-ap-real-mode-cs"),
    Line("[probe-smp] PASS vcpus2-ap-apic-timer"),
    Line("[probe-smp] PASS vcpus2-fpu-isolated"),
    Line("[probe-smp] PASS vcpus2-cpuid-apic-id"),
    Line("[probe-smp] PASS vcpus2-cpuid-logical-count"),
    Line("[probe-smp] PASS vcpus2-cpuid-x2apic-id"),
    Line("[probe-smp] PASS vcpus2-second-sipi-ignored"),
    Line("[probe-smp] PASS vcpus2-ipi-to-ap"),
    Line("[probe-smp] PASS vcpus2-ipi-to-bsp"),
    Line("[probe-smp] PASS vcpus2-ipi-spin-roundtrip"),
    Line("[probe-smp] PASS vcpus2-pause-yields"),
    Line("[probe-smp] PASS vcpus2-init-restarts"),
    Line("[probe-smp] PASS vcpus2-ap-timer-after-init"),
    Line("[probe-smp] PASS vcpus2-nmi-wakes-hlt"),
    Line("[probe-smp] PASS vcpus2-nmi-to-bsp"),
    Line("[probe-smp] PASS vcpus2-nmi-once"),
    LineWith(&["[probe-smp] probe: ", " checks, 0 failed"]),
    Line("partition probe-smp: vCPU 1 started by vCPU 0 at 0x8000"),
    Line("hypervisor: partition probe-smp (id 0): shut down with status 0 [as expected]"),
    POWER_OFF_OK,
];

/// `scenarios/vcpus2-pinned.toml`: every check of [`VCPUS2`], each vCPU on a host CPU of its
/// own, and the handshake only vCPUs running at the same time finish in time; the report says
/// where each ran and that exits of one came while the other was in its guest.
pub const VCPUS2_PINNED: &[Want] = &[
    Line("[probe-smp] PASS vcpus2-ap-started"),
    Line("[probe-smp] PASS vcpus2-ap-real-mode-cs"),
    Line("[probe-smp] PASS vcpus2-ap-apic-timer"),
    Line("[probe-smp] PASS vcpus2-fpu-isolated"),
    Line("[probe-smp] PASS vcpus2-second-sipi-ignored"),
    Line("[probe-smp] PASS vcpus2-ipi-to-ap"),
    Line("[probe-smp] PASS vcpus2-ipi-to-bsp"),
    Line("[probe-smp] PASS vcpus2-ipi-spin-roundtrip"),
    Line("[probe-smp] PASS vcpus2-pause-yields"),
    Line("[probe-smp] PASS vcpus2-init-restarts"),
    Line("[probe-smp] PASS vcpus2-ap-timer-after-init"),
    Line("[probe-smp] PASS vcpus2-nmi-wakes-hlt"),
    Line("[probe-smp] PASS vcpus2-nmi-to-bsp"),
    Line("[probe-smp] PASS vcpus2-nmi-once"),
    Line("[probe-smp] PASS vcpus2-parallel"),
    LineWith(&["[probe-smp] probe: ", " checks, 0 failed"]),
    Line("partition probe-smp: vCPU 0 runs on cpu 1, vCPU 1 runs on cpu 2"),
    Line("partition probe-smp: vCPU 1 started by vCPU 0 at 0x8000"),
    Line("hypervisor: partition probe-smp (id 0): shut down with status 0 [as expected]"),
    Line("    pinned to cpus [1, 2]: vCPU 0 on cpu 1, vCPU 1 on cpu 2"),
    Line("    its vCPUs ran at the same time: "),
    POWER_OFF_OK,
];

/// `scenarios/attack.toml`: the hypervisor refuses each forbidden access (its log lines) and
/// stops each attack partition (its `stopped:` warning and its final report), while the
/// neighbouring probe passes every check. RIPs and addresses are left out: they move with the
/// code.
/// `scenarios/multiboot.toml`: a 32-bit multiboot 1 kernel, unchanged, passes its entry checks.
pub const MULTIBOOT: &[Want] = &[
    AtLeast(9, "[mb32] PASS "),
    Line("[mb32] mb32: modules 2"),
    // guest-images/mb32/module.txt: 60 bytes whose sum is 0x15cd.
    Line("[mb32] mb32: module \"module.txt greeting=hello\" 60 bytes, sum 0x000015cd"),
    Line("[mb32] mb32: module \"module.txt\" 60 bytes, sum 0x000015cd"),
    Line("[mb32] mb32: cmdline \"console=ttyS0 quiet\", loader \"microhv\""),
    Line("hypervisor: partition mb32 (id 0): shut down with status 0 [as expected]"),
    POWER_OFF_OK,
];

/// `scenarios/lowmem.toml`: a multiboot kernel at 16 MiB with a segment at 0x8000 runs as the
/// management partition and passes its checks; the probe beside it passes.
pub const LOWMEM: &[Want] = &[
    Line("[mblow] PASS runs-at-16mib"),
    Line("[mblow] PASS low-segment-loaded"),
    Line("[mblow] PASS bss-zero"),
    Line("[mblow] PASS boot-structures-outside-image"),
    Line("[mblow] PASS memory-map-lists-image"),
    Line("[mblow] mblow: all checks passed"),
    Line("hypervisor: partition mblow (id 0): shut down with status 0 [as expected]"),
    LineWith(&["[probe] probe: ", " checks, 0 failed"]),
    Line("hypervisor: partition probe (id 1): shut down with status 0 [as expected]"),
    POWER_OFF_OK,
];

pub const ATTACK: &[Want] = &[
    Line("partition attack-msr: RDMSR 0x480 refused: #GP injected"),
    // The hypervisor's refusal lines are rate-limited per vCPU (a burst of 8, `vmm/log_limit.rs`):
    // the WRMSR's comes after the burst of RDMSRs, so the guest's own verdict says it got #GP.
    Line("[attack-msr] PASS wrmsr-vm-cr"),
    LineWith(&["partition attack-msr: virt-insn at RIP ", ": #UD injected"]),
    Line("partition attack-msr: stopped: triple fault at RIP "),
    Line("partition attack-triple: stopped: triple fault at RIP "),
    Line("partition attack-oob-read: stopped: read of guest-physical 0x100000000 outside its RAM"),
    Line("partition attack-oob-write: stopped: write of guest-physical 0x400000 outside its RAM"),
    Line("partition attack-hv-memory: stopped: read of guest-physical 0x900000 outside its RAM"),
    Line("partition attack-mmio-hole: stopped: read of guest-physical 0xfec00000 outside its RAM"),
    // The page walk through CR3 reads (Bochs' EPT) or sets an accessed bit (QEMU's NPT).
    LineWith(&[
        "partition attack-cr3: stopped: ",
        " of guest-physical 0x100000000 outside its RAM",
    ]),
    LineWith(&[
        "hypervisor: partition attack-msr (id 0): stopped by the hypervisor: triple fault",
        "[as expected]",
    ]),
    LineWith(&[
        "hypervisor: partition attack-triple (id 1): stopped by the hypervisor: triple fault",
        "[as expected]",
    ]),
    LineWith(&[
        "hypervisor: partition attack-oob-read (id 2): stopped by the hypervisor: ",
        "outside its RAM",
        "[as expected]",
    ]),
    LineWith(&[
        "hypervisor: partition attack-oob-write (id 3): stopped by the hypervisor: ",
        "outside its RAM",
        "[as expected]",
    ]),
    LineWith(&[
        "hypervisor: partition attack-hv-memory (id 4): stopped by the hypervisor: ",
        "outside its RAM",
        "[as expected]",
    ]),
    LineWith(&[
        "hypervisor: partition attack-mmio-hole (id 5): stopped by the hypervisor: ",
        "outside its RAM",
        "[as expected]",
    ]),
    LineWith(&[
        "hypervisor: partition attack-cr3 (id 6): stopped by the hypervisor: ",
        "outside its RAM",
        "[as expected]",
    ]),
    AtLeast(25, "[neighbour] PASS "),
    LineWith(&["[neighbour] probe: ", " checks, 0 failed"]),
    Line("hypervisor: partition neighbour (id 7): shut down with status 0 [as expected]"),
    POWER_OFF_OK,
];
/// `scenarios/chaos.toml`: the chaos guest runs its operations, catches every fault and
/// passes (no integrity failure: a `FAIL` line would fail the case anyway), ends as its
/// manifest expects, and the probe beside it passes every check as it does alone (`PROBE`'s
/// lines); the power-off is clean. A hypervisor panic, a hang (the timeout) or a changed probe
/// fails the case.
pub const CHAOS: &[Want] = &[
    LineWith(&["[chaos] chaos: seed ", ", ops "]),
    LineWith(&["[chaos] chaos: ", " operations, ", " faults caught, ", ", 0 integrity failures"]),
    Line("[chaos] PASS chaos"),
    Line("hypervisor: partition chaos (id 1): shut down with status 0 [as expected]"),
    PROBE_PASSES,
    PROBE_SUMMARY,
    PROBE_EXIT,
    POWER_OFF_OK,
];

/// The management shell session of the mgmt cases (`scenarios/mgmt.toml`): list, create two
/// probe partitions and start them, destroy one, open a channel to `chan` and wait for the echo
/// test and the surviving probe, then list, show statistics and shut down (the management
/// partition's `on_stop = "poweroff"` ends the run).
///
/// Each command is typed once the previous one's answer is on the console, not the prompt: an
/// answer is there whether or not the hypervisor shows a partial line (the prompt has no
/// newline), and a line of the shell's may be cut by other partitions' output. The first command
/// starts with Ctrl-C, which drops whatever stray byte is in the line (Bochs' COM1 handed the
/// hypervisor a '7' left over from its UART self-test while the receive trigger level was 14;
/// `docs/testing.md`). g2's summary may come before
/// `destroyed g1` (g2 runs while the shell waits for its turn): `^` looks for it anywhere.
pub const MGMT_INPUT: &[(&[&str], &str)] = &[
    (&["[mgmt] mgmt: pci: * functions"], "\x03list\r"),
    (&["[mgmt] * partitions"], "create g1 probe\r"),
    (&["[mgmt] created g1 (id "], "create g2 probe\r"),
    (&["[mgmt] created g2 (id "], "start g1\r"),
    (&["[mgmt] started g1"], "start g2\r"),
    (&["[mgmt] started g2"], "destroy g1\r"),
    (&["[mgmt] destroyed g1"], "chan chan\r"),
    (&["^[g2] probe: * checks, 0 failed", "PASS chan-echo"], "list\r"),
    (&["[mgmt] * partitions"], "stats g2\r"),
    (&["[mgmt] stats g2: "], "create m mb32+module.txt 8 from-mgmt\r"),
    (&["[mgmt] created m (id "], "start m\r"),
    (&["[m] mb32: all checks passed"], "shutdown\r"),
];

/// What the mgmt session must print: the passed-through disk (its IRQ 14 forwarded through
/// the virtual PIC exactly once) and PCI function, each command's
/// answer, the hypervisor's own report of the destruction, the echo over the channel, the
/// surviving probe's checks (among them that a guest's privileged call is refused and the ATA
/// ports it was not given read as absent), and a clean power-off.
pub const MGMT: &[Want] = &[
    Line("mgmt: disk: IRQ 14 taken 1 time(s) at vector 0x2e"),
    Line("host IRQ lines 0xc000: 1 interrupts forwarded"),
    Line("mgmt: disk: sector 0 starts \"MICROHV TEST DISK\", signature 0xaa55"),
    LineWith(&["mgmt: pci: ", " functions"]),
    // The firmware's ACPI tables, identity-mapped (docs/guest-contract.md).
    Line("[mgmt] mgmt: PASS acpi RSDP at "),
    Line("[mgmt] mgmt: PASS acpi FACP at "),
    Line("[mgmt] mgmt: PASS acpi DSDT at "),
    LineWith(&["[mgmt] mgmt: PASS acpi APIC at ", " processor(s) enabled"]),
    Line("created g1 (id "),
    Line("created g2 (id "),
    Line("destroyed g1"),
    // A multiboot partition the shell made, with a boot module (`create m mb32+module.txt`).
    Line("[m] mb32: module \"module.txt\" 60 bytes, sum 0x000015cd"),
    Line("[m] mb32: cmdline \"from-mgmt\""),
    Line("channel "),
    Line("PASS chan-echo"),
    LineWith(&["[g2] probe: ", " checks, 0 failed"]),
    Line("[g2] PASS hc-partition-list-denied"),
    Line("[g2] PASS port-absent-inb"),
    LineWith(&["hypervisor: partition g1 (id ", ") destroyed by mgmt"]),
    POWER_OFF_OK,
];

/// A first run as a new user has it: the default scenario (`mgmt`, `scenario::default_name`)
/// and only what its screen says to type. The shell and the chan guest each say what to type,
/// chan waits for its channel without failing, and no line reports a failure ([`FORBIDDEN`]).
pub const FIRST_RUN_INPUT: &[(&[&str], &str)] = &[
    (
        &[
            "^[mgmt] mgmt: shell ready: type `help`",
            "^[chan] chan: partition * waits for a channel: type `chan chan`",
        ],
        "help\r",
    ),
    (&["ends this partition, and with it the run"], "chan chan\r"),
    (&["^PASS chan-echo"], "shutdown\r"),
];

pub const FIRST_RUN: &[Want] = &[
    Line("[mgmt] mgmt: shell ready: type `help` for the commands"),
    LineWith(&["[chan] chan: partition ", " waits for a channel: type `chan chan` at the"]),
    Line("[mgmt] commands:"),
    Line("[chan] PASS chan-echo"),
    POWER_OFF_OK,
];

/// `scenarios/bare.toml`: a kernel made for the bare PC, unchanged, as the management partition
/// with `devices = ["all"]`: its multiboot entry, its IRQ 14 through its own (virtual) 8259s,
/// the disk's sector 0, the PCI functions it sees, its debug-exit write ending its partition;
/// the probe beside it passes every check.
pub const BARE: &[Want] = &[
    LineWith(&["[bare] bare: multiboot ok, mem_upper ", " KiB"]),
    Line("[bare] bare: irq 14 received 1 time(s), vector 0x2e"),
    Line("[bare] bare: disk: sector 0 starts \"MICROHV TEST DISK\", signature 0xaa55"),
    Line("[bare] bare: pci 00:01.1 8086:7010 class 01.01"),
    // The firmware's ACPI tables, identity-mapped read-only where the firmware reserves them.
    Line("[bare] bare: PASS acpi RSDP at "),
    Line("[bare] bare: PASS acpi FACP at "),
    Line("[bare] bare: PASS acpi DSDT at "),
    LineWith(&["[bare] bare: PASS acpi APIC at ", " processor(s) enabled"]),
    // A write to the read-only BIOS area faults, is decoded and dropped, as ROM drops it.
    Line("[bare] bare: PASS bios-area-read-only"),
    Line("[bare] bare: done"),
    Line("partition bare: wrote 0x0 to the debug-exit port"),
    Line("hypervisor: partition bare (id 0): shut down with status 0 [as expected]"),
    LineWith(&["host IRQ lines 0xffea: ", " interrupts forwarded"]),
    LineWith(&["[probe] probe: ", " checks, 0 failed"]),
    Line("hypervisor: partition probe (id 1): shut down with status 0 [as expected]"),
    POWER_OFF_OK,
];

/// `scenarios/linux.toml`: Debian's stock kernel (`linux::provision`) boots to its `/init`,
/// which prints its marker and passes each check (`guest-images/linux/init`); the probe beside
/// it passes every check; the shell `/init` starts takes typed input (Ctrl-A three times gives
/// it the console) and `poweroff -f` powers the partition off through the ACPI tables and
/// power-management block it is given (`loader::acpi`, `devices::acpi_pm`).
pub const LINUX: &[Want] = &[
    Line("[linux] INIT-MARKER uptime="),
    LineWith(&["[linux] ", "ACPI: PM: (supports S0 S5)"]),
    Line("[linux] PASS uname-r"),
    Line("[linux] PASS cpuinfo-hypervisor"),
    Line("[linux] PASS timer-ticks"),
    Line("[linux] PASS lapic-timer"),
    Line("[linux] PASS date"),
    Line("[linux] PASS tmpfs"),
    Line("[linux] ALL-CHECKS-DONE passed=6 failed=0"),
    PROBE_PASSES,
    PROBE_SUMMARY,
    Line("hypervisor: partition probe (id 1): shut down with status 0 [as expected]"),
    Line("hypervisor: partition linux (id 0): powered off (ACPI soft-off, S5) [as expected]"),
    POWER_OFF_OK,
];
/// `scenarios/linux-smp.toml`: Linux in a two-vCPU partition brings up both CPUs (the
/// hypervisor says vCPU 1 started), lists them in /proc/cpuinfo, runs a task on each, passes
/// the other checks and powers off.
pub const LINUX_SMP: &[Want] = &[
    Line("partition linux-smp: vCPU 1 started by vCPU 0 at "),
    LineWith(&["[linux-smp] ", "smpboot: Total of 2 processors activated"]),
    // CPUID's topology: both vCPUs are cores of one package.
    LineWith(&["[linux-smp] ", "smpboot: Max logical packages: 1"]),
    Line("[linux-smp] PASS lapic-timer"),
    Line("[linux-smp] PASS cpus"),
    Line("[linux-smp] PASS task-per-cpu"),
    Line("[linux-smp] ALL-CHECKS-DONE passed=8 failed=0"),
    Line("hypervisor: partition linux-smp (id 0): powered off (ACPI soft-off, S5) [as expected]"),
    POWER_OFF_OK,
];
/// `scenarios/linux-smp-pinned.toml`: [`LINUX_SMP`]'s checks with each vCPU on a host CPU of
/// its own, running at the same time.
pub const LINUX_SMP_PINNED: &[Want] = &[
    Line("partition linux-smp: vCPU 0 runs on cpu 1, vCPU 1 runs on cpu 2"),
    Line("partition linux-smp: vCPU 1 started by vCPU 0 at "),
    LineWith(&["[linux-smp] ", "smpboot: Total of 2 processors activated"]),
    Line("[linux-smp] PASS lapic-timer"),
    Line("[linux-smp] PASS cpus"),
    Line("[linux-smp] PASS task-per-cpu"),
    Line("[linux-smp] ALL-CHECKS-DONE passed=8 failed=0"),
    Line("hypervisor: partition linux-smp (id 0): powered off (ACPI soft-off, S5) [as expected]"),
    Line("    pinned to cpus [1, 2]: vCPU 0 on cpu 1, vCPU 1 on cpu 2"),
    Line("    its vCPUs ran at the same time: "),
    POWER_OFF_OK,
];
pub const LINUX_INPUT: &[(&[&str], &str)] = &[
    (&["[linux] ALL-CHECKS-DONE"], "\x01\x01\x01"),
    (&["hypervisor: console: input to "], "poweroff -f\r"),
];

/// `scenarios/mgmt-linux.toml`: the management shell creates a Linux partition from the
/// kernel and initramfs modules, starts it, reads its statistics once its checks pass, and
/// destroys it while its shell waits.
pub const MGMT_LINUX_INPUT: &[(&[&str], &str)] = &[
    (
        &["[mgmt] mgmt: pci: * functions"],
        "\x03create lx vmlinuz+initrd.gz 96 console=ttyS0 acpi=off panic=-1 cryptomgr.notests\r",
    ),
    (&["[mgmt] created lx (id "], "start lx\r"),
    (&["[lx] shell on the console"], "stats lx\r"),
    (&["[mgmt] stats lx: "], "destroy lx\r"),
    (&["[mgmt] destroyed lx"], "shutdown\r"),
];
pub const MGMT_LINUX: &[Want] = &[
    Line("created lx (id "),
    Line("[lx] INIT-MARKER uptime="),
    Line("[lx] PASS uname-r"),
    Line("[lx] PASS cpuinfo-hypervisor"),
    Line("[lx] PASS timer-ticks"),
    Line("[lx] PASS date"),
    Line("[lx] PASS tmpfs"),
    Line("[lx] SKIP lapic-timer: the kernel uses no local APIC"),
    Line("[lx] ALL-CHECKS-DONE passed=5 failed=0"),
    Line("[mgmt] stats lx: "),
    Line("destroyed lx"),
    POWER_OFF_OK,
];

/// `scenarios/pinned.toml` with 4 CPUs: probe1 and probe2 each get a CPU of their own (1 and
/// 2), probe0 runs on CPU 0; all pass, and each pinned probe's report says that the other CPUs
/// handled exits while it ran (they ran at the same time: a run one after the other prints
/// `ran alone`, and the case fails).
pub const PINNED4: &[Want] = &[
    Line("partition probe1 (id 0): pinned to cpu(s) [1], built there"),
    Line("partition probe2 (id 1): pinned to cpu(s) [2], built there"),
    AtLeast(3, " checks, 0 failed"),
    Line("hypervisor: partition probe0 (id 2): shut down with status 0 [as expected]"),
    Line("hypervisor: partition probe1 (id 0): shut down with status 0 [as expected]"),
    Line("hypervisor: partition probe2 (id 1): shut down with status 0 [as expected]"),
    Line("    pinned to cpu 1: ran alongside the other CPUs: they handled "),
    Line("    pinned to cpu 2: ran alongside the other CPUs: they handled "),
    POWER_OFF_OK,
];

/// `scenarios/pinned.toml` with 2 CPUs (Bochs: only CPU 1 is pinnable): probe1 gets CPU 1,
/// probe2's `cpus = 1` cannot be met and it shares CPU 0 with probe0 (a warning says so); all
/// pass, and probe1 ran while CPU 0 handled exits.
pub const PINNED2: &[Want] = &[
    Line("partition probe1 (id 0): pinned to cpu(s) [1], built there"),
    Line("partition probe2: cpus: 1 CPU(s) asked for, 0 free: runs time-sliced on CPU 0"),
    AtLeast(3, " checks, 0 failed"),
    Line("hypervisor: partition probe0 (id 2): shut down with status 0 [as expected]"),
    Line("hypervisor: partition probe1 (id 0): shut down with status 0 [as expected]"),
    Line("hypervisor: partition probe2 (id 1): shut down with status 0 [as expected]"),
    Line("    pinned to cpu 1: ran alongside the other CPUs: they handled "),
    POWER_OFF_OK,
];

/// The management shell session of `scenarios/mgmt-pinned.toml`: once `spin` (chaos, pinned
/// to CPU 1) has started its operations, pause it, read its statistics, resume it and read its
/// console from CPU 0, destroy it, then create `g2` from the probe on the CPU it gave back,
/// start it, wait for its checks, list and shut down.
pub const PINNED_MGMT_INPUT: &[(&[&str], &str)] = &[
    (&["^[mgmt] mgmt: shell ready", "^[spin] chaos: seed "], "\x03list\r"),
    (&["[mgmt] * partitions"], "pause spin\r"),
    (&["[mgmt] paused spin"], "stats spin\r"),
    (&["[mgmt] stats spin: "], "resume spin\r"),
    (&["[mgmt] resumed spin"], "console spin\r"),
    (&["[mgmt] (* bytes)"], "destroy spin\r"),
    (&["[mgmt] destroyed spin"], "create g2 probe@1\r"),
    (&["[mgmt] created g2 (id "], "start g2\r"),
    (&["[mgmt] started g2", "^[g2] probe: * checks, 0 failed"], "list\r"),
    (&["[mgmt] * partitions"], "shutdown\r"),
];

/// What that session must print: the destruction of a partition running on CPU 1 (its CPU
/// back in the pool), a new partition pinned to that CPU passing every check, a clean
/// power-off.
pub const PINNED_MGMT: &[Want] = &[
    Line("partition spin (id 1): pinned to cpu(s) [1], built there"),
    LineWith(&["partition spin: ", " -> Paused on cpu 1"]),
    Line("[mgmt] paused spin"),
    LineWith(&["[mgmt] stats spin: ", " exits"]),
    Line("[mgmt] resumed spin"),
    LineWith(&["[mgmt]   | chaos: seed ", ", ops 100000000"]),
    LineWith(&[
        "hypervisor: partition spin (id 1) destroyed by mgmt on cpu 1 (",
        "): cpu(s) [1] back in the pool",
    ]),
    Line("[mgmt] destroyed spin"),
    Line(
        "hypervisor: partition g2 (id 2) created by mgmt from image `probe`, 16 MiB, on cpu(s) [1]",
    ),
    LineWith(&["[g2] probe: ", " checks, 0 failed"]),
    Line("partition g2 ended on cpu 1: cpu(s) [1] back in the pool (Shutdown(0))"),
    Line("hypervisor: partition g2 (id 2): shut down with status 0 [as expected]"),
    Line("    pinned to cpu 1: ran "),
    POWER_OFF_OK,
];

/// `scenarios/linux-pinned.toml` on 2 CPUs: as [`LINUX`], with the Linux partition on CPU 1 of
/// its own, taking its typed input from the boot CPU's console.
pub const LINUX_PINNED: &[Want] = &[
    Line("partition linux (id 0): pinned to cpu(s) [1], built there"),
    Line("[linux] INIT-MARKER uptime="),
    Line("[linux] PASS timer-ticks"),
    Line("[linux] PASS date"),
    Line("[linux] PASS lapic-timer"),
    Line("[linux] ALL-CHECKS-DONE passed=6 failed=0"),
    Line("hypervisor: console: input to linux (on cpu 1)"),
    PROBE_PASSES,
    PROBE_SUMMARY,
    Line("hypervisor: partition probe (id 1): shut down with status 0 [as expected]"),
    Line("hypervisor: partition linux (id 0): powered off (ACPI soft-off, S5) [as expected]"),
    Line("    pinned to cpu 1: ran alongside the other CPUs: they handled "),
    POWER_OFF_OK,
];

/// `scenarios/linux-mgmt.toml`: Debian's stock kernel as the management partition, with every
/// device and two vCPUs: it starts its second CPU (INIT-SIPI-SIPI into its own low RAM) from the
/// generated MADT, its /init finds both in /proc/cpuinfo with a task running on each, finds the
/// firmware's ACPI tables, reads the test disk through ata_piix and sees the disk's IRQ 14
/// through the I/O APIC; the probe beside it passes; `poweroff -f` (the machine's PM1a control
/// register, trapped) ends the partition, which powers the machine off.
pub const LINUX_MGMT: &[Want] = &[
    Line("[linux] INIT-MARKER uptime="),
    Line("partition linux: vCPU 1 started by vCPU 0 at "),
    LineWith(&["[linux] ", "smp: Brought up 1 node, 2 CPUs"]),
    Line("[linux] PASS cpus"),
    Line("[linux] PASS task-per-cpu"),
    LineWith(&["[linux] ", "ACPI: Using IOAPIC for interrupt routing"]),
    Line("[linux] PASS uname-r"),
    Line("[linux] PASS timer-ticks"),
    Line("[linux] PASS lapic-timer"),
    Line("[linux] PASS date"),
    Line("[linux] PASS acpi-tables"),
    Line("[linux] disk-sector0: starts 'MICROHV TEST DISK', signature bytes 55aa"),
    Line("[linux] PASS disk-sector0"),
    LineWith(&["[linux] disk-irq: 14: ", " IO-APIC 14-edge ata_piix"]),
    Line("[linux] PASS disk-irq"),
    Line("[linux] ALL-CHECKS-DONE passed=11 failed=0"),
    PROBE_PASSES,
    PROBE_SUMMARY,
    Line("hypervisor: partition probe (id 1): shut down with status 0 [as expected]"),
    Line("hypervisor: partition linux (id 0): powered off (ACPI soft-off, S5) [as expected]"),
    POWER_OFF_OK,
];
/// Once the checks are done and the probe has passed: `poweroff -f` at the management shell
/// (the console's input goes to the management partition from the start).
pub const LINUX_MGMT_INPUT: &[(&[&str], &str)] =
    &[(&["[linux] ALL-CHECKS-DONE", "[probe] probe: * checks, 0 failed"], "poweroff -f\r")];

/// `scenarios/barepc.toml`: the bare-PC kernel passes every check (its lines are compared with
/// the bare reference's as well), ends through the debug-exit port with status 0, and the probe
/// beside it passes.
pub const BAREPC: &[Want] = &[
    LineWith(&["[barepc] barepc: ", " checks, 0 failed"]),
    Line("partition barepc: wrote 0x0 to the debug-exit port"),
    Line("hypervisor: partition barepc (id 0): shut down with status 0 [as expected]"),
    LineWith(&["[probe] probe: ", " checks, 0 failed"]),
    Line("hypervisor: partition probe (id 1): shut down with status 0 [as expected]"),
    POWER_OFF_OK,
];

/// `scenarios/mgmt-vcpus.toml`: the shell creates a two-vCPU probe (`IMAGE*2`) and starts it;
/// then a count of 0 and one of 9, each refused; then `list` (the shell still answers).
pub const MGMT_VCPUS_INPUT: &[(&[&str], &str)] = &[
    (&["^[mgmt] mgmt: shell ready"], "\x03create s2 probe*2 vcpus=2\r"),
    (&["[mgmt] created s2 (id "], "start s2\r"),
    (&["[mgmt] started s2", "^[s2] probe: * checks, 0 failed"], "create b0 probe*0\r"),
    (&["[mgmt] error: create: InvalidArgument"], "create b9 probe*9\r"),
    (&["[mgmt] error: create: InvalidArgument"], "list\r"),
    (&["[mgmt] * partitions"], "shutdown\r"),
];

/// What that session must print: the management partition's MADT with its two local APICs,
/// its disk on IRQ 14 as in [`MGMT`], the created probe's two-vCPU checks (vCPU 1 started by
/// INIT-SIPI-SIPI, IPIs both ways), the bad counts refused with the hypervisor's reason, the
/// shell's `list` after them, a clean power-off.
pub const MGMT_VCPUS: &[Want] = &[
    LineWith(&["[mgmt] mgmt: PASS acpi APIC at ", ", 2 processor(s) enabled"]),
    Line("mgmt: disk: sector 0 starts \"MICROHV TEST DISK\", signature 0xaa55"),
    Line("hypervisor: partition s2 (id 1) created by mgmt from image `probe`, 16 MiB, 2 vCPUs"),
    Line("partition s2: vCPU 1 started by vCPU 0 at 0x8000"),
    Line("[s2] PASS vcpus2-ap-started"),
    Line("[s2] PASS vcpus2-ap-apic-timer"),
    Line("[s2] PASS vcpus2-ipi-to-ap"),
    Line("[s2] PASS vcpus2-ipi-to-bsp"),
    Line("[s2] PASS vcpus2-init-restarts"),
    LineWith(&["[s2] probe: ", " checks, 0 failed"]),
    Line("hypervisor: partition s2 (id 1): shut down with status 0 [as expected]"),
    Line("hypervisor: creating partition b0: 0 vCPUs asked for; a partition has 1 to 8"),
    Line("hypervisor: creating partition b9: 9 vCPUs asked for; a partition has 1 to 8"),
    AtLeast(2, "[mgmt] error: create: InvalidArgument (a bad or taken name"),
    Line("[mgmt] 2 partitions"),
    POWER_OFF_OK,
];

/// `scenarios/apic-abuse.toml`: every check of the APIC abuse partition passes (each named:
/// they must run) and it shuts down cleanly; the INIT to itself and the locked access to the
/// APIC page stop their partitions with those reasons; the probe beside them passes.
pub const APIC_ABUSE: &[Want] = &[
    Line("[attack-apic] PASS apic-abuse-xapic-page"),
    Line("[attack-apic] PASS apic-abuse-read-only"),
    Line("[attack-apic] PASS apic-abuse-esr-illegal-vectors"),
    Line("[attack-apic] PASS apic-abuse-error-interrupt"),
    Line("[attack-apic] PASS apic-abuse-software-disable"),
    Line("[attack-apic] PASS apic-abuse-timer-divide-huge"),
    Line("[attack-apic] PASS apic-abuse-timer-1-tick-periodic"),
    Line("[attack-apic] PASS apic-abuse-tsc-deadline"),
    Line("[attack-apic] PASS apic-abuse-apic-base"),
    Line("[attack-apic] PASS apic-abuse-x2apic-msrs"),
    Line("[attack-apic] PASS apic-abuse-storm-coalesced"),
    Line("[attack-apic] PASS apic-abuse-sipi-starts"),
    Line("[attack-apic] PASS apic-abuse-still-works"),
    LineWith(&["[attack-apic] attack: ", " checks, 0 failed"]),
    Line("hypervisor: partition attack-apic (id 0): shut down with status 0 [as expected]"),
    Line("partition attack-apic-init: stopped: INIT IPI to vCPU 0 from vCPU 0 (a reset)"),
    LineWith(&[
        "hypervisor: partition attack-apic-init (id 1): stopped by the hypervisor: INIT IPI",
        "[as expected]",
    ]),
    LineWith(&[
        "partition attack-apic-lock: stopped: MMIO ",
        " of 0xfee00080 by an instruction it cannot emulate",
    ]),
    LineWith(&[
        "hypervisor: partition attack-apic-lock (id 2): stopped by the hypervisor: MMIO ",
        "[as expected]",
    ]),
    AtLeast(25, "[neighbour] PASS "),
    LineWith(&["[neighbour] probe: ", " checks, 0 failed"]),
    Line("hypervisor: partition neighbour (id 3): shut down with status 0 [as expected]"),
    POWER_OFF_OK,
];
