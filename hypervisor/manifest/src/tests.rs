//! The schema's rules, one by one, and the error messages a person reads.

use super::*;
use alloc::format;
use alloc::string::ToString;

pub(crate) const GOOD: &str = r#"# The attack scenario.
name = "attack"
timeslice_us = 2_000
images = ["probe", "dir/extra.elf"]

[[partition]]
name = "dom0"
role = "management"
image = "mgmt"
memory = 0x40          # 64 MiB
devices = [
    "serial0",   # the real COM1
    'pci:00:1f.2',
]
on_stop = "poweroff"

[[partition]]
name = "attack-msr"
image = "attack"
memory = 4
cmdline = "mode=msr-ports-vmx \"quoted\" \u00e9"
expect = "fault"

[[partition]]
image = "probe"
name = "neighbour"
format = "elf64"
vcpus = 1
on_stop = "restart"

[[partition]]
name = "linux"
format = "linux"
image = "k/vmlinuz"
initrd = "k/initrd.gz"
memory = 128
cmdline = "console=ttyS0"
expect = "halt"
"#;

fn err(text: &str) -> String {
    match parse(text) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e.to_string(),
    }
}

fn one(body: &str) -> String {
    err(&format!("[[partition]]\nname = \"p\"\nimage = \"probe\"\n{body}\n"))
}

/// A partition whose image is in `body`.
fn imaged(body: &str) -> String {
    err(&format!("[[partition]]\nname = \"p\"\n{body}\n"))
}

#[test]
fn good_manifest_parses_with_defaults() {
    let m = parse(GOOD).expect("good manifest");
    assert_eq!(m.name.as_deref(), Some("attack"));
    assert_eq!(m.timeslice_us, Some(2000));
    assert_eq!(m.images, ["probe", "dir/extra.elf"]);
    assert_eq!(
        m.images_at.as_ref().map(|a| (a.line, &GOOD[a.span.clone()])),
        Some((4, "[\"probe\", \"dir/extra.elf\"]"))
    );
    assert_eq!(m.partitions.len(), 4);
    let dom0 = &m.partitions[0];
    assert_eq!(
        (dom0.name.as_str(), dom0.role, dom0.image.as_str()),
        ("dom0", Role::Management, "mgmt")
    );
    assert_eq!(dom0.memory_mib, 64);
    assert_eq!(dom0.memory_bytes(), 64 << 20);
    assert_eq!(dom0.devices, ["serial0", "pci:00:1f.2"]);
    assert_eq!(dom0.on_stop, OnStop::PowerOff);
    assert_eq!(dom0.line, 6);
    assert_eq!((dom0.image_at.line, &GOOD[dom0.image_at.span.clone()]), (9, "\"mgmt\""));
    let attack = &m.partitions[1];
    assert_eq!(attack.cmdline, "mode=msr-ports-vmx \"quoted\" é");
    assert_eq!(attack.expect, Expect::Fault);
    assert_eq!(attack.memory_mib, 4);
    let n = &m.partitions[2];
    assert_eq!(n.name, "neighbour");
    assert_eq!((n.role, n.format, n.vcpus), (Role::Guest, ImageFormat::Elf64, 1));
    assert_eq!(
        (n.memory_mib, n.cmdline.as_str(), n.on_stop, n.expect),
        (16, "", OnStop::Restart, Expect::Exit)
    );
    assert!(n.devices.is_empty());
    let l = &m.partitions[3];
    assert_eq!(
        (l.format, l.initrd.as_deref(), l.expect),
        (ImageFormat::Linux, Some("k/initrd.gz"), Expect::Halt)
    );
    assert_eq!(l.cmdline_max(), LINUX_CMDLINE_MAX);
    assert_eq!(m.management().map(|p| p.name.as_str()), Some("dom0"));
}

#[test]
fn the_scenario_manifests_parse() {
    let probe = parse(include_str!("../../../scenarios/probe.toml")).expect("probe.toml");
    assert_eq!(probe.partitions.len(), 1);
    assert_eq!(probe.partitions[0].image, "probe");
    let attack = parse(include_str!("../../../scenarios/attack.toml")).expect("attack.toml");
    let fault = attack.partitions.iter().filter(|p| p.expect == Expect::Fault);
    assert!(fault.clone().count() >= 3);
    assert!(fault.clone().all(|p| p.image == "attack" && p.cmdline.starts_with("mode=")));
    assert!(attack.partitions.iter().any(|p| p.image == "probe" && p.expect == Expect::Exit));
    let mgmt = parse(include_str!("../../../scenarios/mgmt.toml")).expect("mgmt.toml");
    assert!(mgmt.management().is_some() && !mgmt.images.is_empty());
    let linux = parse(include_str!("../../../scenarios/linux.toml")).expect("linux.toml");
    assert!(linux.partitions.iter().any(|p| p.format == ImageFormat::Linux && p.initrd.is_some()));
}

#[test]
fn minimal_manifest_and_line_endings() {
    let m = parse("[[partition]]\r\nname=\"a\"\r\nimage='x'").expect("CRLF, no final newline");
    assert_eq!(m.partitions[0].image, "x");
    assert_eq!(m.name, None);
    assert_eq!(m.management(), None);
    let m =
        parse("[[ partition ]] # c\n\tname = \"b\"\t# c\nimage = \"y\"\n# end").expect("blanks");
    assert_eq!(m.partitions[0].name, "b");
}

#[test]
fn the_documented_error_format() {
    let text =
        "name = \"s\"\n\n[[partition]]\nname = \"probe\"\nimage = \"probe\"\n# x\nmemory = 3\n";
    assert_eq!(
        err(text),
        "manifest line 7: partition \"probe\": field memory: 3 is not a multiple of 2 MiB"
    );
    let e = parse(text).unwrap_err();
    assert_eq!(
        e.located("scenarios/x.toml").to_string(),
        "scenarios/x.toml line 7: partition \"probe\": field memory: 3 is not a multiple of 2 MiB"
    );
    // Fields are checked in the order written; the partition is named once its name is valid,
    // else by index.
    assert_eq!(
        err("[[partition]]\nmemory = 3\nname = \"p\"\nimage = \"i\""),
        "manifest line 2: partition \"p\": field memory: 3 is not a multiple of 2 MiB"
    );
    assert_eq!(
        err("[[partition]]\nname = \"Bad Name\"\nimage = \"i\""),
        "manifest line 2: partition #1: field name: \"Bad Name\" is not 1..=31 characters of a-z, 0-9, _ and -"
    );
}

#[test]
fn empty_files_and_missing_fields() {
    assert_eq!(err(""), "manifest: no partitions (add a [[partition]] table)");
    assert_eq!(
        err("# nothing\n\nname = \"x\"\n"),
        "manifest: no partitions (add a [[partition]] table)"
    );
    assert_eq!(
        err("[[partition]]\nname = \"a\"\n"),
        "manifest line 1: partition \"a\": field image: missing: every partition needs an image"
    );
    assert_eq!(
        err("x = 1\n[[partition]]\nimage = \"a\"\n"),
        "manifest line 1: unknown field \"x\" (fields: name, timeslice_us, images, partition)"
    );
    assert_eq!(
        err("[[partition]]\nname = \"a\"\nimage = \"i\"\n[[partition]]\nimage = \"a\"\n"),
        "manifest line 4: partition #2: field name: missing: every partition needs a name"
    );
}

#[test]
fn names_roles_and_devices_are_checked_across_partitions() {
    let dup =
        "[[partition]]\nname = \"a\"\nimage = \"i\"\n[[partition]]\nimage = \"i\"\nname = \"a\"\n";
    assert_eq!(
        err(dup),
        "manifest line 6: partition \"a\": field name: \"a\" is already the name of the partition on line 1"
    );
    let two = "[[partition]]\nname = \"a\"\nimage = \"i\"\nrole = \"management\"\n\
               [[partition]]\nname = \"b\"\nimage = \"i\"\nrole = \"management\"\n";
    assert_eq!(
        err(two),
        "manifest line 8: partition \"b\": field role: a second management partition (the first is \"a\")"
    );
    assert!(
        one("devices = [\"serial0\"]")
            .contains("line 4: partition \"p\": field devices: devices are handed only")
    );
    assert!(
        one("role = \"management\"\ndevices = [\"a\", \"a\"]").contains("\"a\" is listed twice")
    );
    assert!(one("role = \"management\"\ndevices = [\"\"]").contains("field devices"));
    assert!(
        one("role = \"management\"\ndevices = [1]")
            .contains("field devices: arrays may hold only strings")
    );
    assert!(
        one("role = \"root\"").contains("field role: \"root\" is not one of management, guest")
    );
    assert!(
        err("[[partition]]\nname = \"abcdefghijabcdefghijabcdefghij12\"\nimage = \"i\"")
            .contains("field name")
    );
    assert!(
        parse("[[partition]]\nname = \"abcdefghijabcdefghijabcdefghij1\"\nimage = \"i\"").is_ok()
    );
}

#[test]
fn vcpus_are_taken_up_to_the_limit() {
    for n in [1, 2, 8] {
        let text = format!("[[partition]]\nname = \"p\"\nimage = \"probe\"\nvcpus = {n}\n");
        let m = parse(&text).expect("accepted");
        assert_eq!(m.partitions[0].vcpus, n);
        // The management partition too (time-sliced on CPU 0, every vCPU with its devices).
        let text = format!("{text}role = \"management\"\n");
        let m = parse(&text).expect("accepted for the management partition");
        assert_eq!(m.partitions[0].vcpus, n);
    }
}

#[test]
fn field_values_are_checked() {
    assert!(one("memory = 0").contains("field memory: 0 MiB is below the minimum of 2 MiB"));
    assert!(one("memory = -4").contains("field memory: -4 MiB is below the minimum of 2 MiB"));
    assert!(
        one("memory = 2048").contains("field memory: 2048 MiB is above the maximum of 1024 MiB")
    );
    assert!(one("memory = \"16\"").contains("field memory: expected an integer, found a string"));
    assert!(one("memory = 16.0").contains("field memory: expected an integer, found a float"));
    assert!(
        one("memory = 1979-05-27").contains("field memory: expected an integer, found a date-time")
    );
    assert!(one("vcpus = 9").contains("field vcpus: 9 vCPUs asked for; a partition has 1 to 8"));
    assert!(one("vcpus = 0").contains("field vcpus: 0 vCPUs asked for"));
    assert!(one("vcpus = -1").contains("field vcpus: -1 vCPUs asked for"));
    assert!(one("vcpus = \"2\"").contains("field vcpus: expected an integer"));
    assert!(one("vcpus = 9\nrole = \"management\"").contains("field vcpus: 9 vCPUs asked for"));
    assert!(
        one("format = \"pe\"")
            .contains("field format: \"pe\" is not one of elf64, multiboot, linux")
    );
    assert!(one("on_stop = \"reboot\"").contains("field on_stop"));
    assert!(one("expect = true").contains("field expect: expected a string, found a boolean"));
    assert!(one("expect = \"crash\"").contains("is not one of exit, fault, halt"));
    assert!(
        one(&format!("cmdline = \"{}\"", "a".repeat(256)))
            .contains("field cmdline: 256 bytes long; at most 255 for format elf64")
    );
    assert!(one("cmdline = \"a\\nb\"").contains("control characters"));
    assert!(one("devices = \"x\"").contains("expected an array of strings, found a string"));
    assert!(imaged("image = \"has space\"").contains("field image"));
    assert!(one("bogus = 1").contains("line 4: partition \"p\": unknown field \"bogus\""));
    assert!(one("sub = { a = 1 }").contains("unknown field \"sub\""));
    assert!(one("name2 = 1").contains("(fields: name, role, image, format, initrd, modules, memory, vcpus, cpus, cmdline, devices, on_stop, expect)"));
    assert!(one("memory = 4\nmemory = 6").ends_with("line 5: duplicate key \"memory\""));
    assert!(
        err("timeslice_us = 5\n[[partition]]\nname=\"a\"\nimage=\"b\"")
            .contains("line 1: field timeslice_us: 5 is outside")
    );
    assert!(err("name = 3\n").contains("line 1: field name: expected a string, found an integer"));
    assert!(err("name = \"\"\n").contains("field name: \"\" is not 1..=63 printable characters"));
    assert!(
        parse(&format!("[[partition]]\nname=\"a\"\nimage=\"b\"\ncmdline=\"{}\"", "c".repeat(255)))
            .is_ok()
    );
}

#[test]
fn linux_partitions_initrd_and_cmdline_limits() {
    let linux = |body: &str| {
        format!("[[partition]]\nname = \"l\"\nformat = \"linux\"\nimage = \"k/vmlinuz\"\n{body}\n")
    };
    assert!(parse(&linux("initrd = \"k/initrd\"")).is_ok());
    let long = format!("cmdline = \"{}\"", "a".repeat(LINUX_CMDLINE_MAX));
    assert_eq!(parse(&linux(&long)).map(|m| m.partitions[0].cmdline.len()), Ok(2047));
    let longer = format!("cmdline = \"{}\"", "a".repeat(LINUX_CMDLINE_MAX + 1));
    assert_eq!(
        parse(&linux(&longer)).unwrap_err().to_string(),
        "manifest line 5: partition \"l\": field cmdline: 2048 bytes long; at most 2047"
    );
    // A longer line than 255 for a format that is not linux, in either order of the keys.
    let text = format!(
        "[[partition]]\nname = \"m\"\ncmdline = \"{}\"\nimage = \"x\"\nformat = \"multiboot\"\n",
        "a".repeat(300)
    );
    assert_eq!(
        err(&text),
        "manifest line 3: partition \"m\": field cmdline: 300 bytes long; at most 255 for format multiboot (2047 for linux)"
    );
    assert_eq!(
        one("initrd = \"k/initrd\""),
        "manifest line 4: partition \"p\": field initrd: an initrd is for Linux images (format = \"linux\"); this one is elf64"
    );
    assert!(
        one("format = \"linux\"\ninitrd = 3")
            .contains("field initrd: expected a string, found an integer")
    );
    assert!(
        one("format = \"linux\"\ninitrd = \"a b\"")
            .contains("field initrd: \"a b\" is not 1..=255 printable")
    );
}

#[test]
fn multiboot_modules_name_their_file_and_keep_their_string() {
    let mb = |body: &str| {
        format!(
            "[[partition]]\nname = \"m\"\nformat = \"multiboot\"\nimage = \"k/kernel\"\n{body}\n"
        )
    };
    let m = parse(&mb("modules = [\"d/env NR_CPUS=1  X=2\", \" initrd \"]")).expect("valid");
    let mods = &m.partitions[0].modules;
    assert_eq!(mods.len(), 2);
    assert_eq!(
        (mods[0].image.as_str(), mods[0].string.as_str()),
        ("d/env", "d/env NR_CPUS=1  X=2")
    );
    assert_eq!(mods[0].args(), "NR_CPUS=1  X=2");
    assert_eq!(
        (mods[1].image.as_str(), mods[1].string.as_str(), mods[1].args()),
        ("initrd", "initrd", "")
    );
    assert_eq!(m.partitions[0].modules_at.line, 5);
    // The same file under two module names is fine; one name for two files is not.
    assert!(parse(&mb("modules = [\"a/env\", \"a/env 2\"]")).is_ok());
    assert_eq!(
        err(&mb("modules = [\"a/env\", \"b/env\"]")),
        "manifest line 5: partition \"m\": field modules: module name \"env\" is already taken by \"a/env\" (line 5)"
    );
    assert_eq!(
        err(&mb("modules = [\"kernel\"]")),
        "manifest line 5: partition \"m\": field modules: module name \"kernel\" is already taken by \"k/kernel\" (line 4)"
    );
    assert!(err(&mb("modules = [\"\"]")).contains("field modules: \"\" is not 1..=255 printable"));
    assert!(
        err(&mb("modules = [\"manifest x\"]")).contains("field modules: module name \"manifest\"")
    );
    assert!(err(&mb("modules = [1]")).contains("field modules: arrays may hold only strings"));
    assert!(
        err(&mb("modules = \"env\""))
            .contains("field modules: expected an array of strings, found a string")
    );
    let many = ["\"e\""; MODULES_MAX + 1].join(", ");
    assert_eq!(
        err(&mb(&format!("modules = [{many}]"))),
        "manifest line 5: partition \"m\": field modules: 9 modules; at most 8"
    );
    let long = format!("modules = [\"e {}\"]", "a".repeat(MODULE_STRING_MAX - 1));
    assert!(err(&mb(&long)).contains("is not 1..=255 characters"));
    let fits = format!("modules = [\"e {}\"]", "a".repeat(MODULE_STRING_MAX - 2));
    assert!(parse(&mb(&fits)).is_ok());
    assert!(err(&mb("modules = [\"e \\u0001\"]")).contains("without control characters"));
    // Only multiboot kernels take modules.
    assert_eq!(
        one("modules = [\"env\"]"),
        "manifest line 4: partition \"p\": field modules: boot modules are for multiboot images (format = \"multiboot\"); this one is elf64"
    );
}

#[test]
fn image_references_and_module_names() {
    assert_eq!(module_name("probe"), Ok("probe"));
    assert_eq!(module_name("target/linux/vmlinuz"), Ok("vmlinuz"));
    for bad in ["", "dir/", "manifest", "x/cmdline", "a:b", "..", &"m".repeat(IMAGE_MAX + 1)] {
        assert!(module_name(bad).is_err(), "{bad}");
    }
    assert!(module_name(&"m".repeat(IMAGE_MAX)).is_ok());
    assert!(
        imaged("image = \"manifest\"")
            .contains("field image: module name \"manifest\": want 1..=47")
    );
    assert!(
        imaged(&format!("image = \"{}\"", "d/".repeat(128))).contains("is not 1..=255 printable")
    );
    // Two files may not travel under one module name.
    let clash = "[[partition]]\nname = \"a\"\nimage = \"dir/guest.elf\"\n\
                 [[partition]]\nname = \"b\"\nimage = \"other/guest.elf\"\n";
    assert_eq!(
        err(clash),
        "manifest line 6: partition \"b\": field image: module name \"guest.elf\" is already taken by \"dir/guest.elf\" (line 3)"
    );
    let same = "[[partition]]\nname = \"a\"\nimage = \"dir/guest.elf\"\n\
                [[partition]]\nname = \"b\"\nimage = \"dir/guest.elf\"\n";
    assert!(parse(same).is_ok());
    assert!(
        err("images = [\"a/probe\"]\n[[partition]]\nname = \"a\"\nimage = \"probe\"\n").contains(
            "line 4: partition \"a\": field image: module name \"probe\" is already taken"
        )
    );
    assert!(
        err("images = \"probe\"\n")
            .contains("line 1: field images: expected an array of strings, found a string")
    );
    assert!(err("images = [3]\n").contains("line 1: field images: arrays may hold only strings"));
    assert!(err("images = [\"cmdline\"]\n").contains("field images: module name \"cmdline\""));
}

#[test]
fn long_values_are_cut_in_messages() {
    let long = "x".repeat(5 << 20);
    for text in [
        format!("[[partition]]\nname = \"{long}\"\nimage = \"probe\"\n"),
        format!("[[partition]]\nname = \"p\"\nimage = \"probe\"\nexpect = \"{long}\"\n"),
        format!("[[partition]]\nname = \"p\"\nimage = \"probe\"\n{long} = 1\n"),
        format!("{long} = 1\n"),
        format!("[[partition]]\nname = \"p\"\nimage = \"{long}\"\n"),
        format!(
            "[[partition]]\nname = \"p\"\nimage = \"probe\"\nrole = \"management\"\ndevices = [\"{long}\"]\n"
        ),
    ] {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.len() < 300, "{} bytes: {}", e.len(), &e[..300]);
        assert!(e.contains("(5242880 bytes)"), "{e}");
    }
    assert_eq!(
        parse(&format!("partition = \"{long}\"\n")).unwrap_err().to_string(),
        "manifest line 1: field partition: want [[partition]] tables, found a string"
    );
    // A value of control characters is cut by its escaped length.
    let e = one(&format!("expect = \"{}\"", "\\u0001".repeat(1000)));
    assert!(e.len() < 200, "{e}");
    assert_eq!(shorten("abc"), "\"abc\"");
    assert!(shorten(&"é".repeat(100)).ends_with("... (200 bytes)"));
}

#[test]
fn syntax_errors_name_their_line() {
    let cases = [
        ("[[partition]]\nname = \"abc\n", "line 2: "),
        ("[[partition]]\nname = \"abc", "line 2: "),
        ("[[partition]]\nname = \"a\\qb\"", "line 2: "),
        ("[[partition]]\nname = \"\\u12\"", "line 2: "),
        ("[[partition]]\nname = \"\\uD800\"", "line 2: "),
        ("[[partition]]\nname = abc", "line 2: "),
        ("[[partition]]\nname =", "line 2: "),
        ("[[partition]]\nname", "line 2: "),
        (
            "[partition]\nname = \"a\"\nimage = \"b\"\n",
            "line 1: field partition: want [[partition]] tables",
        ),
        ("[[vm]]\n", "line 1: unknown field \"vm\""),
        ("[[partition]\n", "line 1: "),
        ("[[partition]] x\n", "line 1: "),
        ("\n\n= 3", "line 3: "),
        ("[[partition]]\ndevices = [\"a\",\n\"b\"\n", "line "),
        ("[[partition]]\ndevices = [\"a\" \"b\"]", "line 2: "),
        ("[[partition]]\nname = \"a\u{1}\"", "line 2: "),
        ("# \u{7f}\n", "line 1: "),
        ("a = 1\rb = 2", "line 1: "),
        ("[[partition]]\nmemory = 18446744073709551616", "line 2: "),
        ("[[partition]]\nmemory = 04", "line 2: "),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.starts_with("manifest ") && got.contains(want),
            "{text:?}: got {got:?}, want {want:?}"
        );
    }
    assert_eq!(
        parse_bytes(b"[[partition]]\nname = \"\xff\"").unwrap_err().to_string(),
        "manifest line 2: not UTF-8 text"
    );
}

#[test]
fn partition_count_is_bounded() {
    let mut text = String::new();
    for i in 0..=MAX_PARTITIONS {
        text.push_str(&format!("[[partition]]\nname = \"p{i}\"\nimage = \"i\"\n"));
    }
    assert_eq!(err(&text), "manifest line 193: more than 64 partitions");
}

#[test]
fn keyword_spellings_and_serde_agree() {
    for (all, parse_one) in [
        (
            Role::ALL,
            &(|s: &str| Role::from_text(s).map(|v| v.as_str()))
                as &dyn Fn(&str) -> Option<&'static str>,
        ),
        (ImageFormat::ALL, &|s| ImageFormat::from_text(s).map(|v| v.as_str())),
        (OnStop::ALL, &|s| OnStop::from_text(s).map(|v| v.as_str())),
        (Expect::ALL, &|s| Expect::from_text(s).map(|v| v.as_str())),
    ] {
        for s in all {
            assert_eq!(parse_one(s), Some(*s));
        }
        assert_eq!(parse_one("nope"), None);
    }
    // The derives spell the variants as the manifest does.
    #[derive(serde::Deserialize)]
    struct T {
        f: ImageFormat,
        o: OnStop,
    }
    let t: T = toml::from_str("f = \"linux\"\no = \"poweroff\"").unwrap();
    assert_eq!((t.f, t.o), (ImageFormat::Linux, OnStop::PowerOff));
}

#[test]
fn cpus_are_checked() {
    let spec = |body: &str| {
        let m = parse(&format!("[[partition]]\nname = \"p\"\nimage = \"probe\"\n{body}\n"))
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        m.partitions[0].cpus.clone()
    };
    assert_eq!(spec(""), None, "no cpus: time-sliced on CPU 0");
    assert_eq!(spec("cpus = 2"), Some(CpuRequest::Count(2)));
    assert_eq!(spec("cpus = [3, 1]"), Some(CpuRequest::List(alloc::vec![3, 1])));
    assert_eq!(spec("cpus = [63]"), Some(CpuRequest::List(alloc::vec![63])));
    assert!(one("cpus = 0").contains("line 4: partition \"p\": field cpus: 0 asks for no CPU"));
    assert!(one("cpus = -1").contains("field cpus: -1 asks for no CPU"));
    assert!(one("cpus = 64").contains("field cpus: 64 CPUs asked for; at most 63"));
    assert!(one("cpus = []").contains("field cpus: [] asks for no CPU"));
    assert!(one("cpus = [0]").contains("field cpus: CPU 0 runs the management partition"));
    assert!(one("cpus = [64]").contains("field cpus: CPU 64 does not exist"));
    assert!(one("cpus = [2, 2]").contains("field cpus: CPU 2 is listed twice"));
    assert!(one("cpus = [\"1\"]").contains("field cpus: arrays may hold only integers"));
    assert!(
        one("cpus = \"1\"")
            .contains("field cpus: expected an integer or an array of integers, found a string")
    );
    let two = |a: &str, b: &str| {
        err(&format!(
            "[[partition]]\nname = \"a\"\nimage = \"probe\"\n{a}\n[[partition]]\nname = \"b\"\nimage = \"probe\"\n{b}\n"
        ))
    };
    assert!(two("cpus = [1, 2]", "cpus = [2]").contains(
        "line 8: partition \"b\": field cpus: CPU 2 is already pinned to partition \"a\" (line 1)"
    ));
    assert!(
        two("cpus = 40", "cpus = 24")
            .contains("24 CPUs asked for here and 40 by the partitions before: at most 63")
    );
    assert!(
        err("[[partition]]\nname = \"m\"\nrole = \"management\"\nimage = \"mgmt\"\ncpus = 1\n")
            .contains(
                "line 5: partition \"m\": field cpus: the management partition runs on CPU 0"
            )
    );
    // Counts may overlap lists: which CPUs a count gets is decided at boot.
    let m = parse(
        "[[partition]]\nname = \"a\"\nimage = \"probe\"\ncpus = [1]\n[[partition]]\nname = \"b\"\nimage = \"probe\"\ncpus = 1\n",
    )
    .unwrap();
    assert_eq!(m.partitions[1].cpus, Some(CpuRequest::Count(1)));
}
