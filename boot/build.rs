//! Link settings for the two bare-metal binaries (nothing for host builds such as clippy).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=src/multiboot/link.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        // Multiboot: loaded at 16 MiB, one contiguous segment (the a.out kludge loads the file raw).
        println!("cargo:rustc-link-arg-bin=hv-multiboot=-T{dir}/src/multiboot/link.ld");
        println!("cargo:rustc-link-arg-bin=hv-multiboot=-zmax-page-size=4096");
        // UEFI: the bootloader maps the static image where it is linked, in the top 2 GiB.
        println!("cargo:rustc-link-arg-bin=hv-uefi=--image-base=0xffffffff80000000");
        println!("cargo:rustc-link-arg-bin=hv-uefi=-zmax-page-size=4096");
    }
}
