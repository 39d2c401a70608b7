//! Scenarios: which partitions boot. `--scenario NAME` is the partition manifest
//! `scenarios/NAME.toml` (format: `docs/guests.md`; the kernel's parser in
//! `hypervisor/src/vmm/manifest.rs` has the final word). The xtask reads it with the `toml`
//! crate and checks it before anything boots, so that a typo is an error here, naming the file,
//! line, partition and field, and not a refused partition at the end of a slow boot.
//!
//! A scenario's boot modules are `manifest` (the file's bytes) and each distinct image the
//! partitions name, under that name. An image is a guest crate (`build::GUEST_CRATES`, its
//! release artifact) or else a file path relative to the repository. A path with folders in it
//! travels under its file name (multiboot names a module by its string's last path component),
//! and the manifest that goes along says that name in place of the path.
//!
//! A `format = "linux"` partition also names its `initrd`, which travels as a module the same
//! way. Files under `target/linux/` are made by `linux::provision` before they are packed.
//! In a `cmdline`, `microhv.date=@now` becomes `microhv.date=<the host's Unix time>`, rounded
//! down to the hour (so that the manifest, and the boot images made from it, change at most
//! hourly): the Linux guest's `/init` checks its clock against it.
//!
//! `none` is built in: the hypervisor alone, no modules (the boot tests use it).

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toml::Spanned;

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
pub const MANIFEST_MODULE: &str = "manifest";

/// Mirrors of the kernel's limits (`hypervisor/src/vmm/manifest.rs`), so that a manifest the
/// kernel would refuse is refused here, before a boot.
const NAME_MAX: usize = 31;
const IMAGE_MAX: usize = hvabi::pack::NAME_LEN - 1;
const CMDLINE_MAX: usize = 255;
const LINUX_CMDLINE_MAX: usize = 2047;
const DEVICE_MAX: usize = 63;
const MEMORY_MIB: Range<i64> = 2..1025;
const TIMESLICE_US: Range<i64> = 10..1_000_001;
const MAX_PARTITIONS: usize = 64;

const ROLES: &[&str] = &["management", "guest"];
const FORMATS: &[&str] = &["elf64", "multiboot", "linux"];
const ON_STOP: &[&str] = &["destroy", "restart", "poweroff"];
const EXPECT: &[&str] = &["exit", "fault", "halt"];
const PARTITION_KEYS: &[&str] = &[
    "name", "role", "image", "format", "initrd", "memory", "vcpus", "cmdline", "devices",
    "on_stop", "expect",
];

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
        return Ok(build::kernel_artifact(image));
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

type Table = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    name: Option<Spanned<toml::Value>>,
    timeslice_us: Option<Spanned<toml::Value>>,
    /// The xtask's own key: more boot modules than the partitions name (images the management
    /// partition creates partitions from). Taken out of the manifest the kernel gets.
    images: Option<Spanned<toml::Value>>,
    #[serde(default)]
    partition: Vec<Spanned<Table>>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count()
}

/// Validates manifest `text` (from `file`, for messages); `resolve` finds an image's file;
/// `now` (Unix seconds) replaces `@now` in `microhv.date=@now`.
fn check(
    text: &str,
    file: &str,
    resolve: &dyn Fn(&str) -> Result<PathBuf, String>,
    now: u64,
) -> Result<Checked> {
    let at = |span: Range<usize>| format!("{file} line {}", line_of(text, span.start));
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let place = e.span().map(&at).unwrap_or_else(|| file.to_string());
        anyhow::anyhow!("{place}: {}", e.message().trim_end())
    })?;

    if let Some(v) = &doc.name {
        match v.get_ref() {
            toml::Value::String(s) if !s.is_empty() && s.len() <= 63 => {}
            toml::Value::String(s) => {
                bail!("{}: field name: {s:?} is not 1..=63 characters", at(v.span()))
            }
            other => {
                bail!("{}: field name: expected a string, found {}", at(v.span()), kind(other))
            }
        }
    }
    if let Some(v) = &doc.timeslice_us {
        match v.get_ref() {
            toml::Value::Integer(n) if TIMESLICE_US.contains(n) => {}
            toml::Value::Integer(n) => bail!(
                "{}: field timeslice_us: {n} is outside {}..={}",
                at(v.span()),
                TIMESLICE_US.start,
                TIMESLICE_US.end - 1
            ),
            other => bail!(
                "{}: field timeslice_us: expected an integer, found {}",
                at(v.span()),
                kind(other)
            ),
        }
    }
    if doc.partition.is_empty() {
        bail!("{file}: no partitions (add a [[partition]] table)");
    }
    if doc.partition.len() > MAX_PARTITIONS {
        bail!("{file}: more than {MAX_PARTITIONS} partitions");
    }

    let mut names: Vec<(String, usize)> = Vec::new();
    let mut management: Option<String> = None;
    let mut images: Vec<(String, PathBuf)> = Vec::new();
    // (byte range of an image string, the module name it becomes)
    let mut renames: Vec<(Range<usize>, String)> = Vec::new();
    // (byte range of an `@now`, the time it becomes)
    let mut dates: Vec<(Range<usize>, String)> = Vec::new();
    for (index, table) in doc.partition.iter().enumerate() {
        let header = line_of(text, table.span().start);
        let fields = table.get_ref();
        let get = |key: &str| fields.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v);
        let label = match get("name").map(|v| v.get_ref()) {
            Some(toml::Value::String(s)) if valid_name(s) => format!("{s:?}"),
            _ => format!("#{}", index + 1),
        };
        let fail = |span: Range<usize>, field: &str, why: String| {
            anyhow::anyhow!("{}: partition {label}: field {field}: {why}", at(span))
        };
        if let Some((key, _)) =
            fields.iter().find(|(k, _)| !PARTITION_KEYS.contains(&&**k.get_ref()))
        {
            bail!(
                "{}: partition {label}: unknown field {:?} (fields: {})",
                at(key.span()),
                key.get_ref(),
                PARTITION_KEYS.join(", ")
            );
        }
        let string = |key: &'static str| -> Result<Option<(&str, Range<usize>)>> {
            match get(key) {
                None => Ok(None),
                Some(v) => match v.get_ref() {
                    toml::Value::String(s) => Ok(Some((s.as_str(), v.span()))),
                    other => Err(fail(
                        v.span(),
                        key,
                        format!("expected a string, found {}", kind(other)),
                    )),
                },
            }
        };
        let integer = |key: &'static str| -> Result<Option<(i64, Range<usize>)>> {
            match get(key) {
                None => Ok(None),
                Some(v) => match v.get_ref() {
                    toml::Value::Integer(n) => Ok(Some((*n, v.span()))),
                    other => Err(fail(
                        v.span(),
                        key,
                        format!("expected an integer, found {}", kind(other)),
                    )),
                },
            }
        };
        let keyword = |key: &'static str, all: &[&str]| -> Result<Option<String>> {
            match string(key)? {
                Some((s, _)) if all.contains(&s) => Ok(Some(s.to_string())),
                Some((s, span)) => {
                    Err(fail(span, key, format!("{s:?} is not one of {}", all.join(", "))))
                }
                None => Ok(None),
            }
        };

        let Some((name, span)) = string("name")? else {
            bail!(
                "{file} line {header}: partition {label}: field name: missing: every partition needs a name"
            );
        };
        if !valid_name(name) {
            return Err(fail(
                span,
                "name",
                format!("{name:?} is not 1..={NAME_MAX} characters of a-z, 0-9, _ and -"),
            ));
        }
        if let Some((_, line)) = names.iter().find(|(n, _)| n == name) {
            return Err(fail(
                span,
                "name",
                format!("{name:?} is already the name of the partition on line {line}"),
            ));
        }
        names.push((name.to_string(), header));

        let role = keyword("role", ROLES)?;
        if role.as_deref() == Some("management") {
            if let Some(first) = &management {
                let span = get("role").expect("checked").span();
                return Err(fail(
                    span,
                    "role",
                    format!("a second management partition (the first is {first:?})"),
                ));
            }
            management = Some(name.to_string());
        }
        let format = keyword("format", FORMATS)?;
        let is_linux = format.as_deref() == Some("linux");
        keyword("on_stop", ON_STOP)?;
        keyword("expect", EXPECT)?;
        if let Some((n, span)) = integer("memory")?
            && (!MEMORY_MIB.contains(&n) || n % 2 != 0)
        {
            return Err(fail(
                span,
                "memory",
                format!(
                    "{n} MiB: want an even number of MiB in {}..={}",
                    MEMORY_MIB.start,
                    MEMORY_MIB.end - 1
                ),
            ));
        }
        if let Some((n, span)) = integer("vcpus")?
            && n != 1
        {
            return Err(fail(span, "vcpus", format!("{n} vCPUs; a partition has exactly 1")));
        }
        if let Some((s, span)) = string("cmdline")? {
            // `microhv.date=@now` as written in the file (a string with escapes keeps `@now`).
            let date = format!("{}{}", linux::DATE_KEY, linux::NOW);
            for (at, _) in text[span.clone()].match_indices(&date) {
                let start = span.start + at + linux::DATE_KEY.len();
                dates.push((start..start + linux::NOW.len(), now.to_string()));
            }
            let s = linux::expand(s, now);
            let max = if is_linux { LINUX_CMDLINE_MAX } else { CMDLINE_MAX };
            if s.len() > max {
                return Err(fail(
                    span,
                    "cmdline",
                    format!(
                        "{} bytes long (with @now expanded); at most {max} for this format",
                        s.len()
                    ),
                ));
            }
            if s.chars().any(char::is_control) {
                return Err(fail(span, "cmdline", "control characters are not allowed".into()));
            }
        }
        if let Some(v) = get("devices") {
            let toml::Value::Array(list) = v.get_ref() else {
                return Err(fail(
                    v.span(),
                    "devices",
                    format!("expected an array of strings, found {}", kind(v.get_ref())),
                ));
            };
            let mut seen = Vec::new();
            for d in list {
                let toml::Value::String(d) = d else {
                    return Err(fail(v.span(), "devices", "arrays may hold only strings".into()));
                };
                if d.is_empty() || d.len() > DEVICE_MAX || !d.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(fail(
                        v.span(),
                        "devices",
                        format!(
                            "{d:?} is not 1..={DEVICE_MAX} printable characters without spaces"
                        ),
                    ));
                }
                if seen.contains(&d) {
                    return Err(fail(v.span(), "devices", format!("{d:?} is listed twice")));
                }
                seen.push(d);
            }
            if !list.is_empty() && role.as_deref() != Some("management") {
                return Err(fail(
                    v.span(),
                    "devices",
                    "devices are handed only to the management partition (role = \"management\")"
                        .into(),
                ));
            }
        }

        let Some((image, span)) = string("image")? else {
            bail!(
                "{file} line {header}: partition {label}: field image: missing: every partition needs an image"
            );
        };
        let initrd = string("initrd")?;
        if let Some((_, span)) = &initrd
            && format.as_deref() != Some("linux")
        {
            return Err(fail(
                span.clone(),
                "initrd",
                "an initrd goes only with format = \"linux\"".into(),
            ));
        }
        // The image and the initrd travel as boot modules, each under its file name.
        let files = [("image", (image, span))].into_iter().chain(initrd.map(|i| ("initrd", i)));
        for (field, (image, span)) in files {
            let path = resolve(image).map_err(|why| fail(span.clone(), field, why))?;
            let module = module_name(image).map_err(|why| fail(span.clone(), field, why))?;
            if module != image {
                renames.push((span.clone(), module.clone()));
            }
            match images.iter().find(|(m, _)| *m == module) {
                Some((_, other)) if *other != path => {
                    return Err(fail(
                        span,
                        field,
                        format!(
                            "module name {module:?} is already taken by {}",
                            rel(other).display()
                        ),
                    ));
                }
                Some(_) => {}
                None => images.push((module, path)),
            }
        }
    }

    // (byte range, replacement) of the text the kernel gets: renamed images, `@now`, the
    // `images` key.
    let mut edits: Vec<(Range<usize>, String)> =
        renames.into_iter().map(|(span, name)| (span, format!("\"{name}\""))).collect();
    edits.extend(dates);
    if let Some(v) = &doc.images {
        let toml::Value::Array(list) = v.get_ref() else {
            bail!(
                "{}: field images: expected an array of strings, found {}",
                at(v.span()),
                kind(v.get_ref())
            );
        };
        for item in list {
            let toml::Value::String(image) = item else {
                bail!("{}: field images: arrays may hold only strings", at(v.span()));
            };
            let path = resolve(image)
                .map_err(|why| anyhow::anyhow!("{}: field images: {why}", at(v.span())))?;
            let module = module_name(image)
                .map_err(|why| anyhow::anyhow!("{}: field images: {why}", at(v.span())))?;
            match images.iter().find(|(m, _)| *m == module) {
                Some((_, other)) if *other != path => bail!(
                    "{}: field images: module name {module:?} is already taken by {}",
                    at(v.span()),
                    rel(other).display()
                ),
                Some(_) => {}
                None => images.push((module, path)),
            }
        }
        // The kernel's parser knows no `images`: the key's lines become a comment and blank
        // lines, so that the kernel's line numbers still match the file's.
        let start = text[..v.span().start].rfind('\n').map_or(0, |i| i + 1);
        let end = text[v.span().end..].find('\n').map_or(text.len(), |i| i + v.span().end);
        let newlines = text[start..end].matches('\n').count();
        edits.push((start..end, format!("# images: packed by the xtask{}", "\n".repeat(newlines))));
    }
    let mut rewritten = text.to_string();
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    for (span, with) in edits {
        rewritten.replace_range(span, &with);
    }
    Ok(Checked { rewritten, images, management: management.is_some() })
}

/// The boot module an image travels as: its file name (multiboot names a module by its
/// string's last path component), checked against the kernel's rules.
fn module_name(image: &str) -> Result<String, String> {
    let module = if image.contains('/') {
        Path::new(image).file_name().and_then(|n| n.to_str()).unwrap_or("").to_string()
    } else {
        image.to_string()
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if module.is_empty()
        || module.len() > IMAGE_MAX
        || !module.chars().all(ok_char)
        || module == MANIFEST_MODULE
        || module == hvabi::pack::CMDLINE_ENTRY
    {
        return Err(format!(
            "module name {module:?}: want 1..={IMAGE_MAX} of A-Z, a-z, 0-9, '.', '_', '-', \
             and not {MANIFEST_MODULE:?} or {:?}",
            hvabi::pack::CMDLINE_ENTRY
        ));
    }
    Ok(module)
}

fn valid_name(s: &str) -> bool {
    (1..=NAME_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
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
    }

    #[test]
    fn errors_name_file_line_partition_and_field() {
        assert_eq!(
            one("memry = 4"),
            "s.toml line 4: partition \"p\": unknown field \"memry\" (fields: name, role, image, \
             format, initrd, memory, vcpus, cmdline, devices, on_stop, expect)"
        );
        assert_eq!(
            one("memory = \"4\""),
            "s.toml line 4: partition \"p\": field memory: expected an integer, found a string"
        );
        assert!(
            one("memory = 3").starts_with("s.toml line 4: partition \"p\": field memory: 3 MiB")
        );
        assert!(
            one("expect = \"crash\"").contains("field expect: \"crash\" is not one of exit, fault")
        );
        assert!(one("role = \"boss\"").contains("field role:"));
        assert!(one("format = \"pe\"").contains("field format:"));
        assert!(one("on_stop = \"x\"").contains("field on_stop:"));
        assert!(one("vcpus = 2").contains("field vcpus:"));
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
        assert!(err("nam = 1\n[[partition]]\n").starts_with("s.toml line 1: unknown field `nam`"));
        assert!(err("timeslice_us = 1\n").contains("field timeslice_us: 1 is outside"));
        assert_eq!(err("name = \"x\"\n"), "s.toml: no partitions (add a [[partition]] table)");
        assert!(err("[[partition]\n").starts_with("s.toml line 1:"));
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
            "s.toml line 4: partition \"p\": field initrd: an initrd goes only with format = \"linux\""
        );
        assert!(
            one("format = \"linux\"\ninitrd = \"gone\"")
                .starts_with("s.toml line 5: partition \"p\": field initrd: \"gone\" is neither")
        );
        assert!(one("format = \"linux\"\ninitrd = 3").contains("field initrd: expected a string"));
        // The length counts the expanded time: 4 characters become 10.
        let long = format!("cmdline = \"{}microhv.date=@now\"", "a".repeat(255 - 17));
        assert!(one(&long).contains("field cmdline: 261 bytes long (with @now expanded)"));
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
