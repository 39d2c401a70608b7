//! The Linux guest's initramfs: a `newc` cpio archive (the `cpio` crate writes the headers),
//! gzipped (`flate2`, pure-Rust deflate), as the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`
//! describes. Reproducible: every entry has mtime 0, uid and gid 0 and an inode number from its
//! position; the gzip header carries no time or name. The same inputs give the same bytes.

use std::io::Write;

use anyhow::{Context, Result};
use cpio::newc::{Builder, trailer};
use flate2::{Compression, GzBuilder};

/// File type bits of a cpio `mode` (as in `stat(2)`'s `st_mode`).
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// One archive member. Paths are relative to the root, without a leading `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Dir { path: &'a str, perm: u32 },
    File { path: &'a str, perm: u32, data: &'a [u8] },
    Symlink { path: &'a str, target: &'a str },
    CharDev { path: &'a str, perm: u32, major: u32, minor: u32 },
}

/// The newc archive of `entries`, in order, ended by `TRAILER!!!`.
pub fn cpio(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        // Inode 0 is what the trailer has; start at 1.
        let ino = u32::try_from(index + 1).context("too many cpio entries")?;
        let (path, mode, nlink, data, rdev): (&str, u32, u32, &[u8], (u32, u32)) = match *entry {
            Entry::Dir { path, perm } => (path, S_IFDIR | perm, 2, &[], (0, 0)),
            Entry::File { path, perm, data } => (path, S_IFREG | perm, 1, data, (0, 0)),
            Entry::Symlink { path, target } => {
                (path, S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0))
            }
            Entry::CharDev { path, perm, major, minor } => {
                (path, S_IFCHR | perm, 1, &[], (major, minor))
            }
        };
        let size = u32::try_from(data.len())
            .with_context(|| format!("{path}: larger than a newc entry can hold"))?;
        let mut w = Builder::new(path)
            .ino(ino)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(0)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1)
            .write(&mut out, size);
        // The writer pads the data to 4 bytes only when all `size` bytes went through it; an
        // empty entry still needs its header written.
        w.write_all(data)?;
        w.finish()?;
    }
    trailer(&mut out)?;
    Ok(out)
}

/// `data` gzipped at the best ratio, with mtime 0 and no file name in the header.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut gz = GzBuilder::new().mtime(0).write(Vec::new(), Compression::best());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

/// The kernel modules of the disk driver stack, as paths under the kernel package's
/// `lib/modules/RELEASE/`, in the order they load (each after what it depends on, from their
/// `depends=` modinfo): the Debian cloud kernel builds libata, ata_piix and the SCSI disk
/// driver as modules. The initramfs holds them as `/lib/modules/NAME.ko`; `/init` loads them
/// with `insmod` for the management role's disk check (`guest-images/linux/init`).
pub const DISK_MODULES: [&str; 5] = [
    "kernel/drivers/scsi/scsi_common.ko",
    "kernel/drivers/scsi/scsi_mod.ko",
    "kernel/drivers/ata/libata.ko",
    "kernel/drivers/ata/ata_piix.ko",
    "kernel/drivers/scsi/sd_mod.ko",
];

/// The initramfs path of module `path` (one of [`DISK_MODULES`]): `lib/modules/NAME.ko`.
pub fn module_entry_path(path: &str) -> String {
    format!("lib/modules/{}", path.rsplit('/').next().unwrap_or(path))
}

/// The gzipped initramfs: `/init` (the script), `/bin/busybox` (static; `/init` installs its
/// applet links at boot) with `/bin/sh` beside it, `/dev/console` (character device 5:1, so
/// that the kernel can open the console for PID 1 before devtmpfs is mounted),
/// `/etc/microhv-kver` (the kernel release `uname -r` must print), the empty mount points and
/// `modules` (initramfs path, contents) under `/lib/modules`.
pub fn build(
    init: &str,
    busybox: &[u8],
    kernel_release: &str,
    modules: &[(String, Vec<u8>)],
) -> Result<Vec<u8>> {
    let kver = format!("{kernel_release}\n");
    let mut entries = vec![
        Entry::Dir { path: "bin", perm: 0o755 },
        Entry::File { path: "bin/busybox", perm: 0o755, data: busybox },
        Entry::Symlink { path: "bin/sh", target: "busybox" },
        Entry::Dir { path: "dev", perm: 0o755 },
        Entry::CharDev { path: "dev/console", perm: 0o600, major: 5, minor: 1 },
        Entry::Dir { path: "etc", perm: 0o755 },
        Entry::File { path: "etc/microhv-kver", perm: 0o644, data: kver.as_bytes() },
        Entry::File { path: "init", perm: 0o755, data: init.as_bytes() },
        Entry::Dir { path: "mnt", perm: 0o755 },
        Entry::Dir { path: "proc", perm: 0o555 },
        Entry::Dir { path: "root", perm: 0o700 },
        Entry::Dir { path: "sys", perm: 0o555 },
        Entry::Dir { path: "tmp", perm: 0o1777 },
    ];
    if !modules.is_empty() {
        entries.push(Entry::Dir { path: "lib", perm: 0o755 });
        entries.push(Entry::Dir { path: "lib/modules", perm: 0o755 });
    }
    for (path, data) in modules {
        entries.push(Entry::File { path, perm: 0o644, data });
    }
    gzip(&cpio(&entries)?)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use cpio::newc::Reader;
    use flate2::read::GzDecoder;

    use super::*;

    /// (name, mode, nlink, rdev major, rdev minor, data) of every member, trailer included.
    type Member = (String, u32, u32, u32, u32, Vec<u8>);

    fn members(archive: &[u8]) -> Vec<Member> {
        let mut rest = archive;
        let mut out = Vec::new();
        loop {
            let mut r = Reader::new(rest).expect("a newc header");
            let e = r.entry().clone();
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            let trailer = e.is_trailer();
            out.push((e.name().into(), e.mode(), e.nlink(), e.rdev_major(), e.rdev_minor(), data));
            rest = r.finish().unwrap();
            if trailer {
                assert!(rest.is_empty(), "bytes after the trailer");
                return out;
            }
        }
    }

    /// Field `index` (0 = c_ino) of the header at `at`, decoded from its 8 hex digits.
    fn field(archive: &[u8], at: usize, index: usize) -> u32 {
        let start = at + 6 + 8 * index;
        u32::from_str_radix(std::str::from_utf8(&archive[start..start + 8]).unwrap(), 16).unwrap()
    }

    #[test]
    fn newc_headers_padding_and_trailer() {
        let a = cpio(&[
            Entry::File { path: "init", perm: 0o755, data: b"#!/bin/sh\n" },
            Entry::CharDev { path: "dev/console", perm: 0o600, major: 5, minor: 1 },
        ])
        .unwrap();
        // Header 1: magic, then ino 1, mode, uid 0, gid 0, nlink 1, mtime 0, size 10, ...,
        // namesize 5 ("init" and its NUL).
        assert_eq!(&a[..6], b"070701");
        assert_eq!(field(&a, 0, 0), 1);
        assert_eq!(field(&a, 0, 1), 0o100_755);
        assert_eq!((field(&a, 0, 2), field(&a, 0, 3), field(&a, 0, 5)), (0, 0, 0));
        assert_eq!(field(&a, 0, 6), 10);
        assert_eq!(field(&a, 0, 11), 5);
        assert_eq!(&a[110..115], b"init\0");
        // 110 + 5 = 115 rounds to 116 for the data; 116 + 10 = 126 rounds to 128.
        assert_eq!(&a[115..116], b"\0");
        assert_eq!(&a[116..126], b"#!/bin/sh\n");
        assert_eq!(&a[126..128], b"\0\0");
        // Header 2 at 128: the console, character device 5:1 (rdevmajor, rdevminor).
        assert_eq!(&a[128..134], b"070701");
        assert_eq!(field(&a, 128, 1), 0o020_600);
        assert_eq!((field(&a, 128, 9), field(&a, 128, 10)), (5, 1));
        assert_eq!(field(&a, 128, 6), 0);
        assert_eq!(a.len() % 4, 0);
        let m = members(&a);
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].0, "TRAILER!!!");
    }

    #[test]
    fn the_initramfs_holds_what_init_needs_and_is_reproducible() {
        let modules = [(module_entry_path(DISK_MODULES[3]), b"\x7fELF module".to_vec())];
        let make = || {
            build(
                "#!/bin/busybox sh\necho hi\n",
                b"\x7fELF busybox",
                "6.1.0-57-cloud-amd64",
                &modules,
            )
            .unwrap()
        };
        let gz = make();
        assert_eq!(gz, make());
        // gzip magic, deflate, no flags (no name), mtime 0.
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0]);
        let mut archive = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut archive).unwrap();
        let m = members(&archive);
        let get = |name: &str| m.iter().find(|e| e.0 == name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(get("init").1, 0o100_755);
        assert_eq!(get("init").5, b"#!/bin/busybox sh\necho hi\n");
        assert_eq!(get("bin/busybox").5, b"\x7fELF busybox");
        assert_eq!(get("bin/sh").1 & 0o170_000, S_IFLNK);
        assert_eq!(get("bin/sh").5, b"busybox");
        let console = get("dev/console");
        assert_eq!((console.1, console.3, console.4), (S_IFCHR | 0o600, 5, 1));
        assert_eq!(get("etc/microhv-kver").5, b"6.1.0-57-cloud-amd64\n");
        for dir in ["proc", "sys", "dev", "tmp", "mnt"] {
            assert_eq!(get(dir).1 & 0o170_000, S_IFDIR, "{dir}");
        }
        assert_eq!(get("tmp").1, S_IFDIR | 0o1777);
        assert_eq!(get("lib/modules/ata_piix.ko").5, b"\x7fELF module");
        assert_eq!(get("lib/modules").1 & 0o170_000, S_IFDIR);
        assert_eq!(m.last().unwrap().0, "TRAILER!!!");
    }
}
