//! Links with the guest runtime's script for the bare-metal target only, at
//! `hvabi::start::MGMT_RAM_BASE + 2 MiB`: the management partition's RAM is identity-mapped
//! at `MGMT_RAM_BASE` (0x0400_0000), so its image must link where it will run.
fn main() {
    /// `MGMT_RAM_BASE` (0x0400_0000) + 2 MiB; checked against hvabi in `src/main.rs`.
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
