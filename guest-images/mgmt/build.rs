//! Links with the guest runtime's script for the bare-metal target only, at
//! `hvabi::start::MGMT_IMAGE_BASE`: the management partition's RAM is identity-mapped, so its
//! image must link where it will run, in host RAM the hypervisor leaves free (it allocates
//! its own memory from the top down; the multiboot image sits at 16 MiB).
fn main() {
    /// `MGMT_IMAGE_BASE`; checked against hvabi in `src/main.rs`.
    const LINK_BASE: u64 = 0x0420_0000;
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/../rt/link.ld");
    println!("cargo:rerun-if-changed={script}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=--defsym=__guest_link_base={LINK_BASE:#x}");
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}
