//! Starting the machine: builds the manifest's partitions (the management partition first: it
//! takes the RAM the others leave), runs them until they end, and reports how each ended. The
//! top of the core: it uses the machine, which uses the run loop below it.

use super::machine::Machine;
use super::partition::{Partition, PartitionConfig};
use super::profile;
use super::run::report;
use super::vcpu::Backend;
use alloc::string::String;
use alloc::vec::Vec;

/// Host RAM the management partition leaves free beyond the manifest's other partitions: for
/// the partitions it creates at run time (and their second-level tables, VMCS/VMCB, channels).
pub const MGMT_KEEPS_FREE: u64 = 64 << 20;

/// Builds `configs` (the management partition first: it takes the RAM the others leave) and runs
/// them on `backend`; true when all ended as expected.
pub fn run_partitions(
    mut configs: Vec<PartitionConfig>,
    backend: &mut dyn Backend,
    modules: &[(String, &'static [u8])],
    platform: super::platform::Platform,
) -> bool {
    configs.sort_by_key(|c| !c.management);
    // The management partition takes the host RAM the others leave: keep theirs, and some for
    // the partitions it creates later, their tables and channels.
    let others: u64 = configs.iter().filter(|c| !c.management).map(|c| c.memory).sum();
    for c in configs.iter_mut().filter(|c| c.management) {
        c.keep_free = others + MGMT_KEEPS_FREE;
    }
    let mut m = Machine::new(backend, modules, platform);
    let mut ok = true;
    for mut c in configs {
        let name = c.name.clone();
        let id = m.next_id;
        let tag = m.free_tag().expect("fewer partitions than tags");
        if let Some(request) = c.cpus.take() {
            // Built created: started with the others once all are built.
            match m.pin(id, tag, c, &request, true) {
                Ok(None) => {
                    m.next_id += 1;
                    continue;
                }
                // A count the machine cannot meet: time-sliced on CPU 0 instead.
                Ok(Some(back)) => c = back,
                Err(e) => {
                    crate::println!("hypervisor: partition {name}: refused: {e}");
                    ok = false;
                    continue;
                }
            }
        }
        match Partition::build(id, tag, c, m.backend, &m.platform) {
            Ok(p) => {
                log::info!(
                    "partition {name} (id {id}): {} MiB RAM in {} block(s) from guest-physical {:#x}, entry {:#x}, {} {} table pages",
                    p.map.iter().map(|b| b.1).sum::<u64>() >> 20,
                    p.map.len(),
                    p.map.first().map_or(0, |b| b.0),
                    p.vcpus[0].vcpu.rip(),
                    m.backend.name(),
                    p.slat.tables_used()
                );
                m.parts.push(p);
                m.next_id += 1;
            }
            Err(e) => {
                crate::println!("hypervisor: partition {name}: refused: {e}");
                ok = false;
            }
        }
    }
    m.focus_management();
    m.start_pinned();
    let powered_off = m.run();
    let ended = report(&mut m.parts, powered_off) & m.report_pinned(powered_off) && ok;
    profile::report();
    ended
}
