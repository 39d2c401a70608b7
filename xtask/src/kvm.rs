//! Can KVM run a nested hypervisor here? `/dev/kvm` alone does not say: some hosts offer a
//! paravirtual KVM (e.g. `kvm_pvm`) that cannot run a bare-metal kernel, let alone one that
//! enables VMX or SVM itself.

use std::fs::{self, OpenOptions};

/// `Ok` when QEMU `-enable-kvm -cpu host` can run the hypervisor; otherwise why not.
pub fn nested() -> Result<(), String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").map_err(|e| format!("/proc/cpuinfo: {e}"))?;
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.split_once(':')).map(|(_, f)| f))
        .unwrap_or("");
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    let module = if has("vmx") {
        "kvm_intel"
    } else if has("svm") {
        "kvm_amd"
    } else {
        return Err("the CPU offers neither vmx nor svm to this machine".into());
    };
    let param = format!("/sys/module/{module}/parameters/nested");
    match fs::read_to_string(&param).map(|s| s.trim().to_string()) {
        Ok(v) if v == "Y" || v == "1" => {}
        Ok(v) => return Err(format!("nested virtualization is off ({param} is {v})")),
        Err(_) => return Err(format!("{module} is not loaded (no {param})")),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm cannot be opened read-write: {e}"))?;
    Ok(())
}
