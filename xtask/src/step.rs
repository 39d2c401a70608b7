//! Progress output (`[xtask] building kernels ... 3.2 s`) and the commands the xtask runs.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// True while a step's `[xtask] ... ...` line waits for its time.
static LINE_OPEN: AtomicBool = AtomicBool::new(false);
/// Serializes writes from the threads that forward child output.
static OUTPUT: Mutex<()> = Mutex::new(());

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the xtask lives one level below the workspace root")
}

/// Where the xtask keeps what it makes (boot images, run folders), inside the ignored `target/`.
pub fn work_dir() -> PathBuf {
    root().join("target").join("xtask")
}

/// Ends an open step line, so that what follows starts on a line of its own.
pub fn close_line() {
    if LINE_OPEN.swap(false, Ordering::SeqCst) {
        eprintln!();
    }
}

/// Prints one `[xtask] ...` line.
pub fn note(msg: impl std::fmt::Display) {
    let _guard = OUTPUT.lock();
    close_line();
    eprintln!("[xtask] {msg}");
}

/// Seconds with one decimal, as every timing is printed.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Runs `f` as a visible step: `[xtask] WHAT ... 1.2 s`.
pub fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    {
        let _guard = OUTPUT.lock();
        close_line();
        eprint!("[xtask] {what} ...");
        let _ = std::io::stderr().flush();
        LINE_OPEN.store(true, Ordering::SeqCst);
    }
    let start = Instant::now();
    let result = f();
    let took = secs(start.elapsed());
    let _guard = OUTPUT.lock();
    match (&result, LINE_OPEN.swap(false, Ordering::SeqCst)) {
        (Ok(_), true) => eprintln!(" {took}"),
        (Ok(_), false) => eprintln!("[xtask] {what} ... {took}"),
        (Err(_), true) => eprintln!(" failed after {took}"),
        (Err(_), false) => eprintln!("[xtask] {what} ... failed after {took}"),
    }
    result
}

/// A `cargo` command for a nested build. Cargo and rustc variables inherited from the outer
/// `cargo run` (CARGO_*, RUSTC*, RUSTFLAGS, RUSTUP_TOOLCHAIN, ...) are cleared so the nested build
/// sees the workspace's own configuration; only the homes and the rustup settings stay.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = key == "CARGO_HOME"
            || (key.starts_with("RUSTUP_") && key != "RUSTUP_TOOLCHAIN")
            || !(key.starts_with("CARGO") || key.starts_with("RUST"));
        if !keep {
            cmd.env_remove(key);
        }
    }
    if std::io::stderr().is_terminal() {
        cmd.arg("--color=always");
    }
    cmd
}

/// How a command line reads in an error message.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; its output goes to the terminal (after ending an open step line).
/// A non-zero status is an error that names the command.
pub fn run(cmd: &mut Command) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    let out = child.stdout.take().map(forward);
    let err = child.stderr.take().map(forward);
    let status = child.wait()?;
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Copies a child's output stream to our stderr, closing an open step line first.
fn forward(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let _guard = OUTPUT.lock();
            close_line();
            let _ = std::io::stderr().write_all(&buf[..n]);
        }
    })
}

/// Where [`run_logged`] keeps the output of command `name`: `target/xtask/logs/NAME.log`.
pub fn log_file(name: &str) -> PathBuf {
    work_dir().join("logs").join(format!("{name}.log"))
}

/// A path as messages show it: relative to the workspace root where it is inside.
pub fn shown(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Lines of a failed command's log that its error shows.
const LOG_TAIL: usize = 40;

/// Runs `cmd` to completion with its output (stdout and stderr) in the file `log`, not on the
/// terminal: for installers, whose hundreds of lines matter only when they fail. A failure is
/// an error that names the log and shows its last lines.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
        bail!(
            "`{}` failed ({status}); its whole output is in {}, the last {} lines:\n{}",
            show(cmd),
            shown(log),
            tail.len(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; for queries such as `rustup target list --installed`.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", show(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its output held back; a failure is an error that carries the output. For
/// tools that chat on success (grub-mkrescue, xorriso).
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Holds `<path>.lock` (an advisory file lock) until dropped, so that two xtask runs in one
/// checkout do not make the same image or use the same run folder at once. Waits, saying so,
/// while another process holds it.
pub fn lock(path: &Path) -> Result<std::fs::File> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    if file.try_lock().is_err() {
        note(format!("waiting for another xtask using {}", path.display()));
        file.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_output_stays_in_the_log_until_a_failure() {
        let log = std::env::temp_dir().join(format!("xtask-run-logged-{}.log", std::process::id()));
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo chatty; echo more >&2"]);
        run_logged(&mut ok, &log).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "chatty\nmore\n");
        let mut bad = Command::new("sh");
        bad.args(["-c", "for i in $(seq 1 100); do echo line $i; done; echo why >&2; exit 3"]);
        let e = format!("{:#}", run_logged(&mut bad, &log).unwrap_err());
        assert!(e.starts_with("`sh -c for i in"), "{e}");
        assert!(
            e.contains(&format!("its whole output is in {}, the last 40 lines:", log.display()))
        );
        assert!(e.ends_with("line 99\nline 100\nwhy") && !e.contains("line 61\n"), "{e}");
        assert!(std::fs::read_to_string(&log).unwrap().starts_with("line 1\n"));
        let _ = std::fs::remove_file(&log);
    }
}
