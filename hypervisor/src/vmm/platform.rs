//! What the core needs to know about the machine it runs on, measured once at boot and handed
//! to it as a value (the core reads no globals of the boot code).

/// The machine as boot found it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// The TSC when the hypervisor started (guests get it in their start-info page).
    pub start_tsc: u64,
    /// The TSC's rate in Hz, measured against the PIT (0: unknown). Partitions' virtual PIT
    /// and RTC count in TSC ticks at this rate.
    pub tsc_hz: u64,
    /// The host's wall clock: `(tsc, unix_seconds)` read together from the RTC at boot.
    pub wall_clock: Option<(u64, u64)>,
    /// End of the conventional memory usable from address 0 (below the EBDA): the management
    /// partition's boot structures go there.
    pub low_ram_end: u64,
    /// The end of the highest usable RAM range below 4 GiB (device space starts above it).
    pub ram_top_below_4g: u64,
    /// The firmware's memory that is not usable RAM, with its types (`vmm::firmware`).
    pub firmware: super::firmware::FirmwareMap,
    /// The host's ACPI RSDP (the boot path's, else found by the BIOS search), if any.
    pub firmware_rsdp: Option<u64>,
}

impl Platform {
    /// The TSC rate to compute with: the measured one, or 1 GHz when none was measured (the
    /// virtual clocks still run, at a nominal rate).
    pub fn tsc_hz_or_nominal(&self) -> u64 {
        if self.tsc_hz == 0 { 1_000_000_000 } else { self.tsc_hz }
    }
}

/// Guest time as the device models read it: the TSC (guests run with no TSC offset, so a
/// partition's TSC and its virtual PIT and RTC agree), at the rate measured at boot.
#[derive(Debug)]
pub struct HostClock {
    pub hz: u64,
}

impl crate::devices::clock::Clock for HostClock {
    fn now(&self) -> u64 {
        crate::arch::x86::instr::rdtsc()
    }
    fn hz(&self) -> u64 {
        self.hz
    }
}
