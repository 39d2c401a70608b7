//! Every rule of the manifest, once: the spanned tables `read` gives become a [`Manifest`] or
//! the first error, in the order written.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Range;

use toml::Spanned;

use crate::error::{ManifestError, shorten, tame};
use crate::read::{Doc, Table, Value};
use crate::*;

/// Parses and checks `text`.
pub(crate) fn manifest(text: &str) -> Result<Manifest, ManifestError> {
    if let Some(at) = crate::depth::too_deep(text.as_bytes()) {
        let why = format!("arrays or tables nested deeper than {}", crate::depth::MAX_NESTING);
        return Err(ManifestError::syntax(line_of(text, at), why));
    }
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        let mut message = tame(e.message());
        if let (Some(span), "duplicate key") = (e.span(), message.as_str()) {
            // Say which: the span is the key's second appearance.
            let key = text.get(span).unwrap_or_default().trim_matches(['"', '\'']);
            message = format!("duplicate key {}", shorten(key));
        }
        ManifestError::syntax(line, message)
    })?;
    let at = |span: Range<usize>| At { line: line_of(text, span.start), span };
    let top_err = |span: Range<usize>, field, message| ManifestError {
        line: line_of(text, span.start),
        partition: None,
        field: Some(field),
        message,
    };

    if let Some(key) = &doc.unknown {
        return Err(ManifestError::syntax(
            line_of(text, key.span().start),
            format!("unknown field {} (fields: {})", shorten(key.get_ref()), TOP_KEYS.join(", ")),
        ));
    }
    let mut m = Manifest {
        name: None,
        timeslice_us: None,
        images: Vec::new(),
        images_at: None,
        partitions: Vec::new(),
    };
    // Module name -> (image reference, line): one file per module.
    let mut modules = Modules::default();
    for (key, value) in &doc.top {
        let span = value.span();
        match (key.get_ref().as_str(), value.get_ref()) {
            ("name", Value::String(s)) => {
                if s.is_empty() || s.len() > SCENARIO_NAME_MAX || s.chars().any(char::is_control) {
                    let why = format!(
                        "{} is not 1..={SCENARIO_NAME_MAX} printable characters",
                        shorten(s)
                    );
                    return Err(top_err(span, "name", why));
                }
                m.name = Some(s.clone());
            }
            ("timeslice_us", Value::Integer(n)) => {
                let n = u64::try_from(*n)
                    .ok()
                    .filter(|n| (TIMESLICE_MIN_US..=TIMESLICE_MAX_US).contains(n))
                    .ok_or_else(|| {
                        let why = format!("{n} is outside {TIMESLICE_MIN_US}..={TIMESLICE_MAX_US}");
                        top_err(span.clone(), "timeslice_us", why)
                    })?;
                m.timeslice_us = Some(n);
            }
            ("images", Value::Array(list)) => {
                let line = line_of(text, span.start);
                for item in list {
                    let Value::String(image) = item else {
                        return Err(top_err(span, "images", "arrays may hold only strings".into()));
                    };
                    image_ref(image)
                        .and_then(|_| modules.add(image, line))
                        .map_err(|why| top_err(span.clone(), "images", why))?;
                }
                m.images = list.iter().filter_map(|v| v.as_str().map(String::from)).collect();
                m.images_at = Some(at(span));
            }
            (key, v) => {
                let (field, want) = match key {
                    "name" => ("name", "a string"),
                    "timeslice_us" => ("timeslice_us", "an integer"),
                    _ => ("images", "an array of strings"),
                };
                return Err(top_err(span, field, format!("expected {want}, found {}", kind(v))));
            }
        }
    }
    if let Some((span, why)) = doc.bad_partition {
        return Err(top_err(span, "partition", format!("want [[partition]] tables, found {why}")));
    }
    if doc.partitions.is_empty() {
        return Err(ManifestError::syntax(0, "no partitions (add a [[partition]] table)"));
    }
    for (index, table) in doc.partitions.iter().enumerate() {
        if index == MAX_PARTITIONS {
            let line = line_of(text, table.span().start);
            return Err(ManifestError::syntax(
                line,
                format!("more than {MAX_PARTITIONS} partitions"),
            ));
        }
        let spec = partition(text, index + 1, table, &m.partitions, &mut modules)?;
        m.partitions.push(spec);
    }
    Ok(m)
}

/// Each boot module's image reference, so that two different files never take one name.
#[derive(Default)]
struct Modules(Vec<(String, String, usize)>);

impl Modules {
    fn add(&mut self, image: &str, line: usize) -> Result<(), String> {
        let module = module_name(image)?;
        match self.0.iter().find(|(m, _, _)| m == module) {
            Some((_, other, at)) if other != image => Err(format!(
                "module name {} is already taken by {} (line {at})",
                shorten(module),
                shorten(other)
            )),
            Some(_) => Ok(()),
            None => {
                self.0.push((module.to_string(), image.to_string(), line));
                Ok(())
            }
        }
    }
}

/// An image reference: 1..=[`IMAGE_PATH_MAX`] printable characters without spaces, whose last
/// component is a valid module name.
fn image_ref(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > IMAGE_PATH_MAX || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} is not 1..={IMAGE_PATH_MAX} printable characters without spaces",
            shorten(s)
        ));
    }
    module_name(s).map(|_| ())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Boolean => "a boolean",
        Value::Array(_) => "an array",
        Value::Other(kind) => kind,
    }
}

/// How messages name a partition: by its name once that is known to be valid, else by its
/// 1-based index (`#2`).
fn label(index: usize, table: &Table) -> String {
    match table.iter().find(|(k, _)| k.get_ref() == "name").map(|(_, v)| v.get_ref()) {
        Some(Value::String(s)) if valid_name(s) => format!("{s:?}"),
        _ => format!("#{index}"),
    }
}

/// Checks one `[[partition]]` table (`index` 1-based) against the partitions before it.
fn partition(
    text: &str,
    index: usize,
    table: &Spanned<Table>,
    before: &[PartitionSpec],
    modules: &mut Modules,
) -> Result<PartitionSpec, ManifestError> {
    let header = line_of(text, table.span().start);
    let who = label(index, table.get_ref());
    let err =
        |line, field, message| ManifestError { line, partition: Some(who.clone()), field, message };
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);

    let mut spec = PartitionSpec {
        name: String::new(),
        role: Role::Guest,
        image: String::new(),
        format: ImageFormat::Elf64,
        initrd: None,
        modules: Vec::new(),
        memory_mib: MEMORY_DEFAULT_MIB,
        vcpus: 1,
        cpus: None,
        cmdline: String::new(),
        devices: Vec::new(),
        on_stop: OnStop::Destroy,
        expect: Expect::Exit,
        line: header,
        image_at: At::default(),
        initrd_at: At::default(),
        cmdline_at: At::default(),
        modules_at: At::default(),
    };
    let mut devices_line = 0;
    let mut cpus_line = 0;
    let mut memory_given = false;
    for (key, value) in entries {
        let line = line_of(text, key.span().start);
        let Some(&field) = PARTITION_KEYS.iter().find(|&&k| k == key.get_ref()) else {
            return Err(err(
                line,
                None,
                format!(
                    "unknown field {} (fields: {})",
                    shorten(key.get_ref()),
                    PARTITION_KEYS.join(", ")
                ),
            ));
        };
        let at = At { line, span: value.span() };
        let fail = |message: String| err(line, Some(field), message);
        let keyword = |all: &[&str], s: &str| {
            fail(format!("{} is not one of {}", shorten(s), all.join(", ")))
        };
        match (field, value.get_ref()) {
            ("name", Value::String(s)) => {
                if !valid_name(s) {
                    return Err(fail(format!(
                        "{} is not 1..={NAME_MAX} characters of a-z, 0-9, _ and -",
                        shorten(s)
                    )));
                }
                if let Some(other) = before.iter().find(|p| &p.name == s) {
                    return Err(fail(format!(
                        "{} is already the name of the partition on line {}",
                        shorten(s),
                        other.line
                    )));
                }
                spec.name = s.clone();
            }
            ("role", Value::String(s)) => {
                spec.role = Role::from_text(s).ok_or_else(|| keyword(Role::ALL, s))?;
                let first = before.iter().find(|p| p.role == Role::Management);
                if let (Role::Management, Some(other)) = (spec.role, first) {
                    return Err(fail(format!(
                        "a second management partition (the first is {:?})",
                        other.name
                    )));
                }
            }
            ("image" | "initrd", Value::String(s)) => {
                image_ref(s).and_then(|_| modules.add(s, line)).map_err(fail)?;
                if field == "image" {
                    spec.image = s.clone();
                    spec.image_at = at;
                } else {
                    spec.initrd = Some(s.clone());
                    spec.initrd_at = at;
                }
            }
            ("modules", Value::Array(list)) => {
                if list.len() > MODULES_MAX {
                    return Err(fail(format!("{} modules; at most {MODULES_MAX}", list.len())));
                }
                for entry in list {
                    let Value::String(entry) = entry else {
                        return Err(fail("arrays may hold only strings".to_string()));
                    };
                    let module = ModuleSpec::parse(entry);
                    if module.string.len() > MODULE_STRING_MAX
                        || module.string.chars().any(char::is_control)
                    {
                        return Err(fail(format!(
                            "{} is not 1..={MODULE_STRING_MAX} characters without control \
                             characters",
                            shorten(entry)
                        )));
                    }
                    image_ref(&module.image)
                        .and_then(|_| modules.add(&module.image, line))
                        .map_err(fail)?;
                    spec.modules.push(module);
                }
                spec.modules_at = at;
            }
            ("format", Value::String(s)) => {
                spec.format =
                    ImageFormat::from_text(s).ok_or_else(|| keyword(ImageFormat::ALL, s))?;
            }
            ("memory", Value::Integer(n)) => {
                let n = *n;
                if n < MEMORY_MIN_MIB as i64 {
                    return Err(fail(format!(
                        "{n} MiB is below the minimum of {MEMORY_MIN_MIB} MiB"
                    )));
                }
                if n > MEMORY_MAX_MIB as i64 {
                    return Err(fail(format!(
                        "{n} MiB is above the maximum of {MEMORY_MAX_MIB} MiB"
                    )));
                }
                if n % 2 != 0 {
                    return Err(fail(format!("{n} is not a multiple of 2 MiB")));
                }
                spec.memory_mib = n.unsigned_abs();
                memory_given = true;
            }
            ("vcpus", Value::Integer(n)) => {
                if !(1..=i64::from(MAX_VCPUS)).contains(n) {
                    return Err(fail(format!(
                        "{n} vCPUs asked for; a partition has 1 to {MAX_VCPUS}"
                    )));
                }
                spec.vcpus = *n as u32;
            }
            ("cpus", v @ (Value::Integer(_) | Value::Array(_))) => {
                spec.cpus = Some(cpus(v, before).map_err(fail)?);
                cpus_line = line;
            }
            ("cmdline", Value::String(s)) => {
                if s.len() > LINUX_CMDLINE_MAX {
                    return Err(fail(format!(
                        "{} bytes long; at most {LINUX_CMDLINE_MAX}",
                        s.len()
                    )));
                }
                if s.chars().any(char::is_control) {
                    return Err(fail("control characters are not allowed".to_string()));
                }
                spec.cmdline = s.clone();
                spec.cmdline_at = at;
            }
            ("devices", Value::Array(list)) => {
                for (i, d) in list.iter().enumerate() {
                    let Value::String(d) = d else {
                        return Err(fail("arrays may hold only strings".to_string()));
                    };
                    if d.is_empty()
                        || d.len() > DEVICE_MAX
                        || !d.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(fail(format!(
                            "{} is not 1..={DEVICE_MAX} printable characters without spaces",
                            shorten(d)
                        )));
                    }
                    if list[..i].iter().any(|e| e.as_str() == Some(d)) {
                        return Err(fail(format!("{} is listed twice", shorten(d))));
                    }
                    spec.devices.push(d.clone());
                }
                devices_line = line;
            }
            ("on_stop", Value::String(s)) => {
                spec.on_stop = OnStop::from_text(s).ok_or_else(|| keyword(OnStop::ALL, s))?;
            }
            ("expect", Value::String(s)) => {
                spec.expect = Expect::from_text(s).ok_or_else(|| keyword(Expect::ALL, s))?;
            }
            (_, v) => {
                let want = match field {
                    "memory" | "vcpus" => "an integer",
                    "cpus" => "an integer or an array of integers",
                    "devices" | "modules" => "an array of strings",
                    _ => "a string",
                };
                return Err(fail(format!("expected {want}, found {}", kind(v))));
            }
        }
    }
    if spec.name.is_empty() {
        return Err(err(header, Some("name"), "missing: every partition needs a name".into()));
    }
    if spec.image.is_empty() {
        return Err(err(header, Some("image"), "missing: every partition needs an image".into()));
    }
    if spec.initrd.is_some() && spec.format != ImageFormat::Linux {
        return Err(err(
            spec.initrd_at.line,
            Some("initrd"),
            format!(
                "an initrd is for Linux images (format = \"linux\"); this one is {}",
                spec.format.as_str()
            ),
        ));
    }
    if !spec.modules.is_empty() && spec.format != ImageFormat::Multiboot {
        return Err(err(
            spec.modules_at.line,
            Some("modules"),
            format!(
                "boot modules are for multiboot images (format = \"multiboot\"); this one is {}",
                spec.format.as_str()
            ),
        ));
    }
    if spec.cmdline.len() > spec.cmdline_max() {
        return Err(err(
            spec.cmdline_at.line,
            Some("cmdline"),
            format!(
                "{} bytes long; at most {} for format {} ({LINUX_CMDLINE_MAX} for linux)",
                spec.cmdline.len(),
                spec.cmdline_max(),
                spec.format.as_str()
            ),
        ));
    }
    if spec.role == Role::Management && !memory_given {
        // All the host RAM the hypervisor and the other partitions do not use.
        spec.memory_mib = 0;
    }
    if !spec.devices.is_empty() && spec.role != Role::Management {
        return Err(err(
            devices_line,
            Some("devices"),
            "devices are handed only to the management partition (role = \"management\")".into(),
        ));
    }
    if spec.cpus.is_some() && spec.role == Role::Management {
        return Err(err(
            cpus_line,
            Some("cpus"),
            "the management partition runs on CPU 0: cpus is for guest partitions".into(),
        ));
    }
    Ok(spec)
}

/// Most CPUs all partitions together may pin: every CPU the hypervisor starts but the boot CPU.
const PINNABLE: u32 = MAX_HOST_CPUS - 1;

/// Checks a `cpus` value against the partitions before it: a count `1..=PINNABLE`, or a list
/// of distinct indices `1..MAX_HOST_CPUS` that no earlier partition lists; all requests
/// together at most [`PINNABLE`]. Whether the machine has those CPUs is checked at boot.
fn cpus(v: &Value, before: &[PartitionSpec]) -> Result<CpuRequest, String> {
    let request = match v {
        Value::Integer(n) => {
            let n = *n;
            if n < 1 {
                return Err(format!(
                    "{n} asks for no CPU (leave cpus out to share CPU 0 with the others)"
                ));
            }
            if n > i64::from(PINNABLE) {
                return Err(format!(
                    "{n} CPUs asked for; at most {PINNABLE} (the hypervisor starts at most {MAX_HOST_CPUS} CPUs and CPU 0 is not pinnable)"
                ));
            }
            CpuRequest::Count(n as u32)
        }
        Value::Array(list) => {
            if list.is_empty() {
                return Err(
                    "[] asks for no CPU (leave cpus out to share CPU 0 with the others)".into()
                );
            }
            let mut out: Vec<u32> = Vec::new();
            for item in list {
                let Value::Integer(i) = item else {
                    return Err("arrays may hold only integers (host CPU indices)".into());
                };
                let i = *i;
                if i == 0 {
                    return Err(
                        "CPU 0 runs the management partition and the time-sliced ones: not pinnable"
                            .into(),
                    );
                }
                if !(1..i64::from(MAX_HOST_CPUS)).contains(&i) {
                    return Err(format!(
                        "CPU {i} does not exist: host CPU indices are 1..={PINNABLE}"
                    ));
                }
                let i = i as u32;
                if out.contains(&i) {
                    return Err(format!("CPU {i} is listed twice"));
                }
                let taken = before.iter().find(|p| match &p.cpus {
                    Some(CpuRequest::List(l)) => l.contains(&i),
                    _ => false,
                });
                if let Some(other) = taken {
                    return Err(format!(
                        "CPU {i} is already pinned to partition {:?} (line {})",
                        other.name, other.line
                    ));
                }
                out.push(i);
            }
            CpuRequest::List(out)
        }
        other => {
            return Err(format!(
                "expected an integer or an array of integers, found {}",
                kind(other)
            ));
        }
    };
    let earlier: u32 = before.iter().filter_map(|p| p.cpus.as_ref()).map(CpuRequest::count).sum();
    if earlier + request.count() > PINNABLE {
        return Err(format!(
            "{} CPUs asked for here and {earlier} by the partitions before: at most {PINNABLE} are pinnable",
            request.count()
        ));
    }
    Ok(request)
}
