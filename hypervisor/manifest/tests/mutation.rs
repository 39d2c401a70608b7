//! Property and mutation test: random valid manifests parse to what was written; random
//! mutations of them, of the repository's scenarios and of junk never panic, and every error
//! is one short line that names a real line, partition and field.
//!
//! `MANIFEST_MUTATIONS=N cargo test -p hvmanifest --test mutation` runs N mutated inputs
//! (default 20,000); `MANIFEST_SEED=S` starts from another seed. A failure prints its seed and
//! input, so it replays.

use std::fmt::Write as _;

use hvmanifest::*;

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T: ?Sized>(&mut self, from: &[&'a T]) -> &'a T {
        from[self.below(from.len())]
    }
}

/// What a generated partition must parse to.
#[derive(Debug)]
struct Want {
    name: String,
    image: String,
    memory_mib: u64,
    format: ImageFormat,
    role: Role,
    cmdline: String,
}

/// A valid manifest and what each partition must parse to.
fn valid(rng: &mut Rng) -> (String, Vec<Want>) {
    let mut text = String::new();
    if rng.chance(2) {
        text.push_str("# generated\nname = \"gen\"\n");
    }
    if rng.chance(2) {
        let _ = writeln!(text, "timeslice_us = {}", 10 + rng.below(1_000_000 - 10));
    }
    if rng.chance(3) {
        text.push_str("images = [\n  \"probe\", # a comment\n  'dir/extra.elf',\n]\n");
    }
    let count = 1 + rng.below(6);
    let management = if rng.chance(2) { Some(rng.below(count)) } else { None };
    let mut wants = Vec::new();
    for i in 0..count {
        text.push_str(if rng.chance(4) {
            "\n[[ partition ]]   # table\n"
        } else {
            "\n[[partition]]\n"
        });
        let name = format!("p{i}-{}", rng.below(1000));
        let image = rng.pick(&["probe", "attack", "chan", "dir/guest.elf", "k.bin"]).to_string();
        let role = if management == Some(i) { Role::Management } else { Role::Guest };
        let format = if role == Role::Guest {
            *rng.pick(&[&ImageFormat::Elf64, &ImageFormat::Multiboot, &ImageFormat::Linux])
        } else {
            ImageFormat::Elf64
        };
        let memory_given = rng.chance(2);
        let memory = 2 * (1 + rng.below(512)) as u64;
        let cmd_len = rng.below(if format == ImageFormat::Linux { 2047 } else { 255 } + 1);
        let cmdline: String = (0..cmd_len).map(|j| (b'a' + (j % 26) as u8) as char).collect();
        // The keys in a random order, spelt in several TOML ways.
        let mut lines = vec![
            format!("name = \"{name}\""),
            if rng.chance(2) {
                format!("image = '{image}'")
            } else {
                format!("image = \"{image}\"")
            },
        ];
        if memory_given {
            lines.push(match rng.below(3) {
                0 => format!("memory = {memory}"),
                1 => format!("memory = {memory:#x}"),
                _ => format!("memory = +{memory}"),
            });
        }
        if role == Role::Management {
            lines.push("role = \"management\"".into());
            lines.push("devices = [\"serial0\", 'pci:00:1f.2',]".into());
        } else if rng.chance(2) {
            lines.push("role = \"guest\"".into());
        }
        if format != ImageFormat::Elf64 || rng.chance(2) {
            lines.push(format!("format = \"{}\"", format.as_str()));
        }
        if format == ImageFormat::Linux {
            lines.push("initrd = \"k/initrd.gz\"".into());
        }
        if !cmdline.is_empty() {
            lines.push(format!("cmdline = \"{cmdline}\" # trailing comment"));
        }
        lines.push(format!("on_stop = \"{}\"", rng.pick(OnStop::ALL)));
        lines.push(format!("expect = \"{}\"", rng.pick(Expect::ALL)));
        for k in (1..lines.len()).rev() {
            lines.swap(k, rng.below(k + 1));
        }
        for l in lines {
            text.push_str(&l);
            text.push_str(if rng.chance(8) { "\r\n" } else { "\n" });
        }
        let memory_mib = match (memory_given, role) {
            (true, _) => memory,
            (false, Role::Management) => 0,
            (false, Role::Guest) => MEMORY_DEFAULT_MIB,
        };
        wants.push(Want { name, image, memory_mib, format, role, cmdline });
    }
    (text, wants)
}

/// Tokens a mutation inserts: the syntax that matters, and values of every kind and size.
const TOKENS: &[&str] = &[
    "[[partition]]\n",
    "[partition]\n",
    "[[",
    "]]",
    "[",
    "]",
    "{",
    "}",
    "=",
    " = ",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "\\",
    "\\u",
    "\\uD800",
    "#",
    "\n",
    "\r",
    "\r\n",
    "\t",
    ",",
    ".",
    "0x",
    "-",
    "+",
    "_",
    "1e9",
    "inf",
    "nan",
    "true",
    "1979-05-27T07:32:00Z",
    "18446744073709551616",
    "-9223372036854775808",
    "name = \"p\"\n",
    "name = \"p\"\n",
    "image = \"probe\"\n",
    "memory = ",
    "role = \"management\"\n",
    "format = \"linux\"\n",
    "initrd = \"x\"\n",
    "devices = [\"a\"]\n",
    "vcpus = 2\n",
    "vcpus = 9\n",
    "cmdline = ",
    "expect = \"halt\"\n",
    "on_stop = ",
    "timeslice_us = ",
    "images = ",
    "partition = 1\n",
    "é",
    "\u{1}",
    "\u{7f}",
    "\u{feff}",
    "a.b = 1\n",
    "x = { y = [1, [2, [3]]] }\n",
];

fn mutate(rng: &mut Rng, text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = rng.next() as u8;
            }
            1 => {
                let t = rng.pick(TOKENS).as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            2 => {
                let end = (at + rng.below(32)).min(v.len());
                v.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(64)).min(v.len());
                let copy = v[at..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, copy);
            }
            4 => {
                // A long value where one stands.
                let long = "x".repeat(rng.below(1 << 16));
                let t = format!("\"{long}\"");
                v.splice(at..at, t.bytes());
            }
            5 => {
                // Swap two lines.
                let s = String::from_utf8_lossy(&v).into_owned();
                let mut lines: Vec<&str> = s.split('\n').collect();
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(a, b);
                v = lines.join("\n").into_bytes();
            }
            _ => {
                let t = rng.pick(TOKENS).as_bytes();
                let end = (at + t.len()).min(v.len());
                v.splice(at..end, t.iter().copied());
            }
        }
    }
    v
}

/// Everything that must hold of a verdict, whatever the input.
fn check_verdict(input: &[u8], seed: u64) {
    let result = parse_bytes(input);
    let replay = || {
        format!("seed {seed}, input {:?}", String::from_utf8_lossy(&input[..input.len().min(2000)]))
    };
    assert_eq!(result, parse_bytes(input), "not deterministic: {}", replay());
    match result {
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("manifest"), "{shown}: {}", replay());
            assert!(!shown.contains(['\n', '\r']), "not one line: {shown:?}: {}", replay());
            assert!(shown.len() <= 400, "{} bytes: {}: {}", shown.len(), &shown[..400], replay());
            assert!(!e.message.is_empty(), "{}", replay());
            let lines = 1 + input.iter().filter(|&&b| b == b'\n').count();
            assert!(e.line <= lines, "line {} of {lines}: {shown}: {}", e.line, replay());
            if let Some(f) = e.field {
                assert!(PARTITION_KEYS.contains(&f) || TOP_KEYS.contains(&f), "{shown}");
            }
            if let Some(p) = &e.partition {
                let named = p.starts_with('"') && valid_name(p.trim_matches('"'));
                let indexed = p
                    .strip_prefix('#')
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| (1..=MAX_PARTITIONS).contains(&n));
                assert!(named || indexed, "partition {p}: {}", replay());
            }
            let located = e.located("scenarios/x.toml").to_string();
            assert_eq!(located.strip_prefix("scenarios/x.toml"), shown.strip_prefix("manifest"));
        }
        Ok(m) => invariants(&m).unwrap_or_else(|why| panic!("accepted but {why}: {}", replay())),
    }
}

/// What every accepted manifest satisfies, checked independently of the checker.
fn invariants(m: &Manifest) -> Result<(), String> {
    let n = m.partitions.len();
    if !(1..=MAX_PARTITIONS).contains(&n) {
        return Err(format!("{n} partitions"));
    }
    if m.partitions.iter().filter(|p| p.role == Role::Management).count() > 1 {
        return Err("two management partitions".into());
    }
    for (i, p) in m.partitions.iter().enumerate() {
        if !valid_name(&p.name) || m.partitions[..i].iter().any(|q| q.name == p.name) {
            return Err(format!("name {:?}", p.name));
        }
        let memory_ok =
            (MEMORY_MIN_MIB..=MEMORY_MAX_MIB).contains(&p.memory_mib) && p.memory_mib % 2 == 0;
        let all_free = p.memory_mib == 0 && p.role == Role::Management;
        if !(memory_ok || all_free) {
            return Err(format!("memory {}", p.memory_mib));
        }
        if module_name(&p.image).is_err()
            || p.initrd.as_deref().is_some_and(|i| module_name(i).is_err())
        {
            return Err(format!("image {:?} / {:?}", p.image, p.initrd));
        }
        if p.initrd.is_some() && p.format != ImageFormat::Linux {
            return Err("initrd without linux".into());
        }
        if p.cmdline.len() > p.cmdline_max() || p.cmdline.chars().any(char::is_control) {
            return Err(format!("cmdline of {} bytes", p.cmdline.len()));
        }
        if !p.devices.is_empty() && p.role != Role::Management {
            return Err("devices on a guest".into());
        }
        if !(1..=MAX_VCPUS).contains(&p.vcpus) {
            return Err("vcpus".into());
        }
    }
    Ok(())
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn generated_manifests_parse_to_what_was_written() {
    let mut rng = Rng(env("MANIFEST_SEED", 0x5eed) | 1);
    for _ in 0..2_000 {
        let (text, wants) = valid(&mut rng);
        let m = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(m.partitions.len(), wants.len());
        for (p, w) in m.partitions.iter().zip(&wants) {
            let got = (&p.name, &p.image, p.memory_mib, p.format, p.role, &p.cmdline);
            assert_eq!(
                got,
                (&w.name, &w.image, w.memory_mib, w.format, w.role, &w.cmdline),
                "{text}"
            );
            assert_eq!(&text[p.image_at.span.clone()].trim_matches(['"', '\'']), &w.image);
        }
        invariants(&m).unwrap();
    }
}

#[test]
fn mutated_manifests_never_panic_and_errors_are_clear() {
    let seed = env("MANIFEST_SEED", 0x5eed) | 1;
    let count = env("MANIFEST_MUTATIONS", 20_000);
    let mut rng = Rng(seed);
    let scenarios: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
    assert!(scenarios.len() >= 5);
    let (mut ok, mut refused) = (0u64, 0u64);
    for i in 0..count {
        let base = if i % 3 == 0 {
            scenarios[rng.below(scenarios.len())].clone()
        } else {
            valid(&mut rng).0
        };
        let input = mutate(&mut rng, &base);
        check_verdict(&input, seed);
        if parse_bytes(&input).is_ok() { ok += 1 } else { refused += 1 }
    }
    // Both outcomes happen: the mutations are neither all fatal nor all harmless.
    assert!(ok > count / 50 && refused > count / 2, "{ok} accepted, {refused} refused");
    eprintln!("mutation: {count} inputs from seed {seed}: {ok} accepted, {refused} refused");
}

#[test]
fn junk_and_pathological_inputs() {
    let mut rng = Rng(7);
    let raw: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
    check_verdict(&raw, 7);
    let toml_ish = b"[[]]partition=\"'\\#\n\r\t ,0x_1-+.abcuU{}";
    for seed in 1..64 {
        let mut rng = Rng(seed);
        let v: Vec<u8> = (0..1 << 12).map(|_| toml_ish[rng.below(toml_ish.len())]).collect();
        check_verdict(&v, seed);
    }
    for text in [
        "[".repeat(1 << 16),
        format!("[[partition]]\ndevices = [{}", "\"a\",".repeat(1 << 16)),
        format!("[[partition]]\ncmdline = \"{}\"", "a".repeat(1 << 20)),
        "a = 1\n".repeat(1 << 14),
        "[[partition]]\nname = \"a\"\nimage = \"b\"\n".repeat(1 << 12),
        "9".repeat(1 << 16),
        format!("x = {}1{}", "[".repeat(5000), "]".repeat(5000)),
        format!("x = {}1{}", "{a=".repeat(5000), "}".repeat(5000)),
        format!(
            "[[partition]]\nname = \"p\"\nimage = \"i\"\ncmdline = {}1{}",
            "[".repeat(79),
            "]".repeat(79)
        ),
        format!("[[partition]]\nname = \"p\"\nimage = \"i\"\n{} = 1", ["a"; 5000].join(".")),
    ] {
        check_verdict(text.as_bytes(), 0);
    }
}

/// The hypervisor parses on a 64 KiB boot stack: the deepest nesting the parser allows must fit
/// in much less (a quarter, in this unoptimised host build).
#[test]
fn deep_nesting_fits_a_small_stack() {
    let deepest = [
        format!(
            "[[partition]]\nname = \"p\"\nimage = \"i\"\ncmdline = {}1{}",
            "[".repeat(200),
            "]".repeat(200)
        ),
        format!(
            "[[partition]]\nname = \"p\"\nimage = \"i\"\ncmdline = {}1{}",
            "{a=".repeat(200),
            "}".repeat(200)
        ),
        format!(
            "[[partition]]\nname = \"p\"\nimage = \"i\"\ncmdline = {}1{}",
            "[{a=".repeat(100),
            "}]".repeat(100)
        ),
        format!("{} = 1", ["a"; 200].join(".")),
        // Dotted keys and headers nest tables without brackets, up to the parser's limit.
        format!("[[partition]]\nname = \"p\"\nimage = \"i\"\n{} = 1", ["a"; 79].join(".")),
        format!("{} = 1\n[[partition]]", ["a"; 79].join(".")),
        format!("[[partition]]\n[partition.{}]\nb = 1", ["a"; 78].join(".")),
        format!("[{}]\nb = 1", ["a"; 79].join(".")),
        // The deepest the nesting bound lets through.
        format!("x = {}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING)),
        "[[partition]]\nname = \"p\"\nimage = \"i\"\na.b.c.d.e.f = [1]".to_string(),
        "[a.b.c]\nd.e = {f = [[1]]}".to_string(),
    ];
    let stack = env("MANIFEST_STACK", 16 << 10) as usize;
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            for text in &deepest {
                assert!(parse(text).is_err(), "{text}");
            }
        })
        .unwrap()
        .join()
        .expect("parsing the deepest input within the stack");
}
