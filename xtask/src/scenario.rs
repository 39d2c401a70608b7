//! Scenarios: which partitions boot. `--scenario NAME` is the partition manifest
//! `scenarios/NAME.toml` (format: `docs/guests.md`). The xtask checks it with the hypervisor's
//! own schema crate (`hvmanifest`, `hypervisor/manifest`) before anything boots, so that a typo
//! is an error here, naming the file, line, partition and field, and not a refused partition at
//! the end of a slow boot. It then checks the text it sends once more, as the hypervisor will.
//!
//! A scenario's boot modules are `manifest` (the file's bytes) and each distinct image the
//! partitions name, under that name. An image is a guest crate (`build::GUEST_CRATES`, its
//! release artifact) or else a file path relative to the repository. A path with folders in it
//! travels under its file name (multiboot names a module by its string's last path component),
//! and the manifest that goes along says that name in place of the path.
//!
//! A `format = "linux"` partition also names its `initrd`, which travels as a module the same
//! way, and a `format = "multiboot"` partition's `modules` entries each name a file (their
//! first word) that travels so, the rest of the entry with it. Files under `target/linux/` are made by `linux::provision` before they are packed.
//! In a `cmdline`, `microhv.date=@now` becomes `microhv.date=<the host's Unix time>`, rounded
//! down to the hour (so that the manifest, and the boot images made from it, change at most
//! hourly): the Linux guest's `/init` checks its clock against it.
//!
//! `none` is built in: the hypervisor alone, no modules (the boot tests use it).

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::build;
use crate::image::Module;
use crate::linux;
use crate::step;

/// The built-in scenario without partitions.
pub const NONE: &str = "none";
/// The scenario a run boots when none is named, if its file exists.
pub const DEFAULT_FILE: &str = "default";
/// Else this one, where the checkout has every image it names: the management partition, its
/// shell on the console, and guests.
pub const MGMT: &str = "mgmt";
/// The module name under which the manifest travels (the kernel's `start::MANIFEST_MODULE`).
pub const MANIFEST_MODULE: &str = hvmanifest::MANIFEST_MODULE;

/// The folder of the scenario files.
pub fn dir() -> PathBuf {
    step::root().join("scenarios")
}

/// The scenario a run boots when `--scenario` is not given: `default` once
/// `scenarios/default.toml` exists; else `mgmt` where its images are all in this checkout
/// (`guest-images/mgmt` and `chan`); else `none`.
pub fn default_name() -> &'static str {
    if dir().join(format!("{DEFAULT_FILE}.toml")).is_file() {
        DEFAULT_FILE
    } else if load(MGMT).is_ok() {
        MGMT
    } else {
        NONE
    }
}

/// Every scenario name: `none` and the stems of `scenarios/*.toml`, sorted.
pub fn known() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let stem = path.file_stem()?.to_str()?.to_string();
            (path.extension()? == "toml" && path.is_file()).then_some(stem)
        })
        .filter(|n| n != NONE)
        .collect();
    names.push(NONE.to_string());
    names.sort();
    names
}

/// The boot modules (name, file) of scenario `name`, after checking its manifest. Guest images
/// are named by their build artifact, which need not exist yet (`build::kernels` makes it).
pub fn modules(name: &str) -> Result<Vec<Module>> {
    if name == NONE {
        return Ok(Vec::new());
    }
    let (file, text, checked) = load(name)?;
    let manifest = if checked.rewritten == text {
        file
    } else {
        // Path images travel under their file names: the manifest that goes along says so.
        let out = step::work_dir().join("scenarios").join(format!("{name}.toml"));
        fs::create_dir_all(out.parent().expect("a folder"))?;
        if fs::read_to_string(&out).ok().as_deref() != Some(&checked.rewritten) {
            fs::write(&out, &checked.rewritten)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        out
    };
    let mut modules = vec![Module { name: MANIFEST_MODULE.into(), path: manifest }];
    modules.extend(checked.images.into_iter().map(|(name, path)| Module { name, path }));
    Ok(modules)
}

/// True when scenario `name` has a management partition (`none` has not).
pub fn has_management(name: &str) -> Result<bool> {
    if name == NONE {
        return Ok(false);
    }
    Ok(load(name)?.2.management)
}

/// Reads and checks `scenarios/NAME.toml`: its path, text and what the check found.
fn load(name: &str) -> Result<(PathBuf, String, Checked)> {
    let file = dir().join(format!("{name}.toml"));
    if name.contains(['/', '\\']) || name.starts_with('.') || !file.is_file() {
        bail!("unknown scenario {name:?}; known scenarios: {}", known().join(", "));
    }
    let text =
        fs::read_to_string(&file).with_context(|| format!("reading {}", rel(&file).display()))?;
    // `@now` to the hour: see the module documentation.
    let now = linux::now() / 3600 * 3600;
    let checked = check(&text, &rel(&file).display().to_string(), &resolve_image, now)?;
    Ok((file, text, checked))
}

fn rel(path: &Path) -> &Path {
    path.strip_prefix(step::root()).unwrap_or(path)
}

/// Where a partition's image comes from: a guest crate's artifact, or a repository file (made
/// first where it is one of the Linux guest's artefacts).
fn resolve_image(image: &str) -> Result<PathBuf, String> {
    if linux::provides(image) {
        linux::provision().map_err(|e| format!("making {image:?}: {e:#}"))?;
    }
    if build::GUEST_CRATES.contains(&image) {
        if !build::guest_crates().contains(&image) {
            return Err(format!(
                "guest crate {image:?} is not in this checkout yet \
                 (no guest-images/{image}/Cargo.toml, or not a workspace member)"
            ));
        }
        return Ok(build::guest_image(image));
    }
    let path = Path::new(image);
    let inside = path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    let full = step::root().join(path);
    if inside && full.is_file() {
        return Ok(full);
    }
    Err(format!(
        "{image:?} is neither a guest crate ({}) nor a file path relative to the repository",
        build::GUEST_CRATES.join(", ")
    ))
}

/// A checked manifest: the text to send (path images renamed) and its images, in order.
#[derive(Debug)]
struct Checked {
    rewritten: String,
    /// (module name, file), each module once.
    images: Vec<(String, PathBuf)>,
    /// A partition has `role = "management"`.
    management: bool,
}

/// Checks manifest `text` (from `file`, for messages) with the schema crate; `resolve` finds an
/// image's file; `now` (Unix seconds) replaces `@now` in `microhv.date=@now`. The text the
/// hypervisor gets has each path image under its module name and the date filled in, on the
/// same lines, and is checked again.
fn check(
    text: &str,
    file: &str,
    resolve: &dyn Fn(&str) -> Result<PathBuf, String>,
    now: u64,
) -> Result<Checked> {
    let m = hvmanifest::parse(text).map_err(|e| anyhow::anyhow!("{}", e.located(file)))?;
    let mut images: Vec<(String, PathBuf)> = Vec::new();
    // (byte range, replacement) of the text the hypervisor gets.
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut add = |image: &str, place: &str| -> Result<String> {
        let path = resolve(image).map_err(|why| anyhow::anyhow!("{file} line {place}: {why}"))?;
        // The schema checked the module name, and that one module is one image.
        let module = hvmanifest::module_name(image).map_err(anyhow::Error::msg)?.to_string();
        if !images.iter().any(|(m, _)| *m == module) {
            images.push((module.clone(), path));
        }
        Ok(module)
    };
    if let Some(at) = &m.images_at {
        let mut modules = Vec::new();
        for image in &m.images {
            modules.push(format!("{:?}", add(image, &format!("{}: field images", at.line))?));
        }
        // One line per line of the array as written, so that line numbers still match.
        let newlines = text[at.span.clone()].matches('\n').count();
        edits.push((at.span.clone(), format!("[{}{}]", modules.join(", "), "\n".repeat(newlines))));
    }
    for p in &m.partitions {
        let files = [("image", &p.image, &p.image_at)]
            .into_iter()
            .chain(p.initrd.as_ref().map(|i| ("initrd", i, &p.initrd_at)));
        for (field, image, at) in files {
            let module =
                add(image, &format!("{}: partition {:?}: field {field}", at.line, p.name))?;
            if module != *image {
                edits.push((at.span.clone(), format!("\"{module}\"")));
            }
        }
        // Multiboot modules: each entry's file travels under its module name, the entry's
        // arguments with it; one line per line of the array as written.
        if !p.modules.is_empty() {
            let at = &p.modules_at;
            let mut entries = Vec::new();
            for module in &p.modules {
                let place = format!("{}: partition {:?}: field modules", at.line, p.name);
                let name = add(&module.image, &place)?;
                let args = module.args();
                let entry = if args.is_empty() { name } else { format!("{name} {args}") };
                entries.push(format!("{entry:?}"));
            }
            let newlines = text[at.span.clone()].matches('\n').count();
            edits.push((
                at.span.clone(),
                format!("[{}{}]", entries.join(", "), "\n".repeat(newlines)),
            ));
        }
        // `microhv.date=@now` as written in the file (a string with escapes keeps `@now`).
        let date = format!("{}{}", linux::DATE_KEY, linux::NOW);
        let span = p.cmdline_at.span.clone();
        for (at, _) in text[span.clone()].match_indices(&date) {
            let start = span.start + at + linux::DATE_KEY.len();
            edits.push((start..start + linux::NOW.len(), now.to_string()));
        }
    }
    let mut rewritten = text.to_string();
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    for (span, with) in edits {
        rewritten.replace_range(span, &with);
    }
    if rewritten != text {
        hvmanifest::parse(&rewritten).map_err(|e| {
            anyhow::anyhow!("{} (as sent: @now expanded, images renamed)", e.located(file))
        })?;
    }
    Ok(Checked { rewritten, images, management: m.management().is_some() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_000_000;

    fn fake(image: &str) -> Result<PathBuf, String> {
        match image {
            "probe" | "attack" | "dir/guest.elf" | "other/guest.elf" | "k/vmlinuz" | "k/initrd" => {
                Ok(PathBuf::from("/r").join(image))
            }
            _ => Err(format!("{image:?} is neither a guest crate nor a file")),
        }
    }

    fn err(text: &str) -> String {
        format!("{:#}", check(text, "s.toml", &fake, NOW).expect_err(text))
    }

    fn one(body: &str) -> String {
        err(&format!("[[partition]]\nname = \"p\"\nimage = \"probe\"\n{body}\n"))
    }

    #[test]
    fn the_scenario_files_pass() {
        for name in known().iter().filter(|n| *n != NONE) {
            let file = dir().join(format!("{name}.toml"));
            let text = fs::read_to_string(&file).unwrap();
            // Every guest crate counts, also one not in this checkout yet; the Linux artefacts
            // are not fetched for a unit test.
            let resolve = |image: &str| {
                if build::GUEST_CRATES.contains(&image) || linux::provides(image) {
                    Ok(build::kernel_artifact(image))
                } else {
                    resolve_image(image)
                }
            };
            let checked = check(&text, name, &resolve, NOW).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!checked.images.is_empty());
        }
    }

    #[test]
    fn modules_are_manifest_and_distinct_images() {
        let text = "name = \"x\"\ntimeslice_us = 100\n\
                    [[partition]]\nname = \"a\"\nimage = \"attack\"\n\
                    [[partition]]\nname = \"b\"\nimage = \"attack\"\nmemory = 4\n\
                    [[partition]]\nname = \"c\"\nimage = \"probe\"\nexpect = \"fault\"\n";
        let c = check(text, "s.toml", &fake, NOW).unwrap();
        assert_eq!(c.rewritten, text);
        let names: Vec<&str> = c.images.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["attack", "probe"]);
    }

    #[test]
    fn path_images_travel_under_their_file_names() {
        let text = "[[partition]]\nname = \"a\"\nimage = \"dir/guest.elf\" # x\n";
        let c = check(text, "s.toml", &fake, NOW).unwrap();
        assert_eq!(c.rewritten, "[[partition]]\nname = \"a\"\nimage = \"guest.elf\" # x\n");
        assert_eq!(c.images, [("guest.elf".to_string(), PathBuf::from("/r/dir/guest.elf"))]);
        let clash = "[[partition]]\nname = \"a\"\nimage = \"dir/guest.elf\"\n\
                     [[partition]]\nname = \"b\"\nimage = \"other/guest.elf\"\n";
        assert!(err(clash).contains("s.toml line 6: partition \"b\": field image: module name"));
        // `images` keeps its lines: the hypervisor's line numbers are the file's.
        let text = "images = [\n  \"dir/guest.elf\",\n  \"probe\",\n]\n[[partition]]\nname = \"a\"\nimage = \"attack\"\n";
        let c = check(text, "s.toml", &fake, NOW).unwrap();
        assert_eq!(
            c.rewritten,
            "images = [\"guest.elf\", \"probe\"\n\n\n]\n[[partition]]\nname = \"a\"\nimage = \"attack\"\n"
        );
        let names: Vec<&str> = c.images.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["guest.elf", "probe", "attack"]);
        assert_eq!(
            err("images = [\"nope\"]\n[[partition]]\nname = \"a\"\nimage = \"probe\"\n"),
            "s.toml line 1: field images: \"nope\" is neither a guest crate nor a file"
        );
    }

    #[test]
    fn errors_name_file_line_partition_and_field() {
        assert_eq!(
            one("memry = 4"),
            "s.toml line 4: partition \"p\": unknown field \"memry\" (fields: name, role, image, \
             format, initrd, modules, memory, vcpus, cpus, cmdline, devices, on_stop, expect)"
        );
        assert_eq!(
            one("memory = \"4\""),
            "s.toml line 4: partition \"p\": field memory: expected an integer, found a string"
        );
        assert_eq!(
            one("memory = 3"),
            "s.toml line 4: partition \"p\": field memory: 3 is not a multiple of 2 MiB"
        );
        assert!(
            one("expect = \"crash\"").contains("field expect: \"crash\" is not one of exit, fault")
        );
        assert!(one("role = \"boss\"").contains("field role:"));
        assert!(one("format = \"pe\"").contains("field format:"));
        assert!(one("on_stop = \"x\"").contains("field on_stop:"));
        assert!(one("vcpus = 9").contains("field vcpus:"));
        assert!(one("devices = [\"serial0\"]").contains("field devices: devices are handed only"));
        assert!(one(&format!("cmdline = \"{}\"", "a".repeat(256))).contains("field cmdline:"));
        assert_eq!(
            err("[[partition]]\nname = \"p\"\nimage = \"nope\"\n"),
            "s.toml line 3: partition \"p\": field image: \"nope\" is neither a guest crate nor a file"
        );
        assert_eq!(
            err("[[partition]]\nimage = \"probe\"\n"),
            "s.toml line 1: partition #1: field name: missing: every partition needs a name"
        );
        assert!(err("[[partition]]\nname = \"p\"\n").contains("field image: missing"));
        assert!(
            err("[[partition]]\nname = \"Bad\"\nimage = \"probe\"\n").contains("#1: field name")
        );
        let twice = "[[partition]]\nname = \"p\"\nimage = \"probe\"\n\
                     [[partition]]\nname = \"p\"\nimage = \"probe\"\n";
        assert!(err(twice).contains("line 5: partition \"p\": field name: \"p\" is already"));
        assert!(
            err("nam = 1\n[[partition]]\n").starts_with("s.toml line 1: unknown field \"nam\"")
        );
        assert!(err("timeslice_us = 1\n").contains("field timeslice_us: 1 is outside"));
        assert_eq!(err("name = \"x\"\n"), "s.toml: no partitions (add a [[partition]] table)");
        assert!(err("[[partition]\n").starts_with("s.toml line 1:"));
    }

    #[test]
    fn multiboot_modules_travel_under_their_module_names() {
        let text = "[[partition]]\nname = \"m\"\nformat = \"multiboot\"\nimage = \"probe\"\n\
                    modules = [\"k/initrd  a=\\\"1\\\"\",\n  \"attack\"]\nmemory = 8\n";
        let c = check(text, "s.toml", &fake, NOW).unwrap();
        assert_eq!(
            c.rewritten,
            "[[partition]]\nname = \"m\"\nformat = \"multiboot\"\nimage = \"probe\"\n\
             modules = [\"initrd a=\\\"1\\\"\", \"attack\"\n]\nmemory = 8\n"
        );
        let names: Vec<&str> = c.images.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["probe", "initrd", "attack"]);
        assert!(
            one("format = \"multiboot\"\nmodules = [\"gone x\"]")
                .starts_with("s.toml line 5: partition \"p\": field modules: \"gone\" is neither")
        );
    }

    #[test]
    fn linux_partitions_carry_their_initrd_and_the_host_date() {
        let text = "[[partition]]\nname = \"linux\"\nformat = \"linux\"\nimage = \"k/vmlinuz\"\n\
                    initrd = \"k/initrd\"\nmemory = 128\n\
                    cmdline = \"console=ttyS0 microhv.date=@now x=@now\"\n";
        let c = check(text, "s.toml", &fake, NOW).unwrap();
        assert_eq!(
            c.rewritten,
            "[[partition]]\nname = \"linux\"\nformat = \"linux\"\nimage = \"vmlinuz\"\n\
             initrd = \"initrd\"\nmemory = 128\n\
             cmdline = \"console=ttyS0 microhv.date=1796000000 x=@now\"\n"
        );
        let names: Vec<&str> = c.images.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["vmlinuz", "initrd"]);
        assert_eq!(
            one("initrd = \"k/initrd\""),
            "s.toml line 4: partition \"p\": field initrd: an initrd is for Linux images \
             (format = \"linux\"); this one is elf64"
        );
        assert!(
            one("format = \"linux\"\ninitrd = \"gone\"")
                .starts_with("s.toml line 5: partition \"p\": field initrd: \"gone\" is neither")
        );
        assert!(one("format = \"linux\"\ninitrd = 3").contains("field initrd: expected a string"));
        // The length counts the expanded time: 4 characters become 10.
        let long = format!("cmdline = \"{}microhv.date=@now\"", "a".repeat(255 - 17));
        assert_eq!(
            one(&long),
            "s.toml line 4: partition \"p\": field cmdline: 261 bytes long; at most 255 for format \
             elf64 (2047 for linux) (as sent: @now expanded, images renamed)"
        );
    }

    #[test]
    fn none_and_unknown_scenarios() {
        assert!(modules(NONE).unwrap().is_empty());
        let e = format!("{:#}", modules("no-such-scenario").unwrap_err());
        assert!(e.contains("unknown scenario \"no-such-scenario\"; known scenarios:"));
        assert!(e.contains("none"));
        assert!(modules("../Cargo").is_err());
        assert!(known().contains(&NONE.to_string()));
    }
}
