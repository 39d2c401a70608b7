//! Links with this crate's own script into a raw file that is itself an ELF32 executable (its
//! headers are written in the assembly): the bare-metal target makes ELF64 objects, and a
//! multiboot kernel without the a.out-kludge addresses must be ELF32 (Multiboot §3.1.3).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/link.ld");
    println!("cargo:rerun-if-changed={script}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rustc-link-arg-bins=--oformat=binary");
    }
}
