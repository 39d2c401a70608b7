//! `uefi-image KERNEL RAMDISK OUT`: writes a GPT disk image that boots KERNEL (a `bootloader_api`
//! ELF) under UEFI firmware, with RAMDISK (a boot pack) handed to the kernel.

use std::path::PathBuf;
use std::process::ExitCode;

use bootloader::{BootConfig, UefiBoot};
use bootloader_boot_config::LevelFilter;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [kernel, ramdisk, out] = args.as_slice() else {
        eprintln!("usage: uefi-image KERNEL RAMDISK OUT");
        return ExitCode::from(2);
    };
    // The framebuffer logger is slow under emulation and nobody reads it; the bootloader's
    // serial log stays on so a boot that stops before the kernel still says where.
    let mut config = BootConfig::default();
    config.frame_buffer_logging = false;
    config.log_level = LevelFilter::Info;
    match UefiBoot::new(kernel).set_ramdisk(ramdisk).set_boot_config(&config).create_disk_image(out)
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uefi-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}
