//! The guest's COM1 over a socket, for runs whose console is not the terminal.
//!
//! The xtask listens and the emulator connects at start-up as a client: QEMU to a Unix socket
//! (`-chardev socket,path=...`, server off), Bochs to a TCP port on 127.0.0.1
//! (`com1: mode=socket-client`; Bochs has no Unix sockets). Listening first leaves no race: the
//! socket exists before the emulator starts, and port 0 gives a free TCP port. Both emulators
//! take received bytes only as their UART has room (QEMU asks the 16550 model for FIFO space;
//! Bochs reads the socket one byte at a time, when the receive register is empty), so nothing
//! typed is lost on the way in.
//!
//! One thread copies what the guest writes into the run's `serial.log` (which `watch` follows,
//! as ever); another writes queued input one byte at a time with [`BYTE_DELAY`] between bytes,
//! noting each in `typed.log` (milliseconds since the connection, the byte in hex, and as a
//! character where it is printable), so a run's input can be set against what the guest read.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Pause after each byte typed: the hypervisor passes a typed byte on only when the focused
/// partition's UART has room, and Bochs runs guests slowly.
pub const BYTE_DELAY: Duration = Duration::from_millis(5);

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const UNIX_PATH_MAX: usize = 107;

/// Which kind of socket an emulator connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Unix,
    Tcp,
}

/// Where the emulator connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// A port on 127.0.0.1.
    Tcp(u16),
}

enum Inner {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A listening socket for one run; a Unix socket file is removed when it is dropped.
pub struct Listener {
    inner: Inner,
    endpoint: Endpoint,
}

impl Listener {
    /// Listens for the emulator: a Unix socket `com1.sock` in `run_dir` (or in the temporary
    /// folder when that path is too long for a socket address), or a free TCP port.
    pub fn bind(kind: Kind, run_dir: &Path) -> Result<Self> {
        let (inner, endpoint) = match kind {
            Kind::Unix => {
                let mut path = run_dir.join("com1.sock");
                if path.as_os_str().len() > UNIX_PATH_MAX {
                    let label = run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
                    path = std::env::temp_dir()
                        .join(format!("microhv-{}-{label}.sock", std::process::id()));
                }
                let _ = std::fs::remove_file(&path);
                let l = UnixListener::bind(&path)
                    .with_context(|| format!("listening on {}", path.display()))?;
                (Inner::Unix(l), Endpoint::Unix(path))
            }
            Kind::Tcp => {
                let l = TcpListener::bind(("127.0.0.1", 0)).context("listening on 127.0.0.1")?;
                let port = l.local_addr()?.port();
                (Inner::Tcp(l), Endpoint::Tcp(port))
            }
        };
        match &inner {
            Inner::Unix(l) => l.set_nonblocking(true)?,
            Inner::Tcp(l) => l.set_nonblocking(true)?,
        }
        Ok(Listener { inner, endpoint })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Waits for the emulator to connect. `None` when it exited first (its status says why);
    /// an error when it neither connected nor exited within `within`.
    pub fn accept(&self, child: &mut Child, within: Duration) -> Result<Option<Stream>> {
        let start = Instant::now();
        loop {
            let got = match &self.inner {
                Inner::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
                Inner::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            };
            match got {
                Ok(s) => {
                    s.prepare()?;
                    return Ok(Some(s));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("accepting the emulator's COM1 connection"),
            }
            if child.try_wait()?.is_some() {
                return Ok(None);
            }
            if start.elapsed() > within {
                bail!(
                    "the emulator did not connect its COM1 to {:?} within {} s",
                    self.endpoint,
                    within.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Endpoint::Unix(path) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The emulator's end of COM1, connected.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Blocking I/O; for TCP no Nagle delay (input goes out one byte at a time).
    fn prepare(&self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(false),
            Stream::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)
            }
        }
    }

    fn halves(&self) -> std::io::Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
        Ok(match self {
            Stream::Unix(s) => (Box::new(s.try_clone()?), Box::new(s.try_clone()?)),
            Stream::Tcp(s) => (Box::new(s.try_clone()?), Box::new(s.try_clone()?)),
        })
    }
}

/// A connected COM1: the thread copying output to the log and the one typing input.
pub struct Connection {
    reader: JoinHandle<()>,
    input: Option<Sender<Vec<u8>>>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Starts copying `stream`'s output into `log` (already created, empty) and a writer for
    /// [`send`](Self::send) that notes each byte it writes in `typed`.
    pub fn start(stream: Stream, mut log: File, typed: File) -> Result<Self> {
        let (mut from, mut to) = stream.halves().context("cloning the COM1 socket")?;
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if log.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let writer = std::thread::spawn(move || {
            let start = Instant::now();
            let mut typed = std::io::BufWriter::new(typed);
            for chunk in rx {
                for b in chunk {
                    if to.write_all(&[b]).and_then(|()| to.flush()).is_err() {
                        return;
                    }
                    let _ = writeln!(typed, "{}", typed_line(start.elapsed(), b));
                    let _ = typed.flush();
                    std::thread::sleep(BYTE_DELAY);
                }
            }
        });
        Ok(Connection { reader, input: Some(tx), writer })
    }

    /// Queues bytes for the guest.
    pub fn send(&self, bytes: Vec<u8>) {
        if let Some(tx) = &self.input {
            let _ = tx.send(bytes);
        }
    }

    /// After the emulator has exited: waits until its last output is in the log.
    pub fn finish(mut self) {
        self.input = None;
        let _ = self.reader.join();
        // The writer ends at its next write to the closed socket, or now with nothing queued.
        if self.writer.is_finished() {
            let _ = self.writer.join();
        }
    }
}

/// One line of `typed.log`: `12.345 0x6c 'l'` (milliseconds since the connection).
fn typed_line(at: Duration, byte: u8) -> String {
    let ms = at.as_secs_f64() * 1000.0;
    if byte.is_ascii_graphic() || byte == b' ' {
        format!("{ms:.3} {byte:#04x} '{}'", byte as char)
    } else {
        format!("{ms:.3} {byte:#04x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lines_show_time_hex_and_printable_characters() {
        assert_eq!(typed_line(Duration::from_micros(12_345), b'l'), "12.345 0x6c 'l'");
        assert_eq!(typed_line(Duration::from_millis(2), b'\r'), "2.000 0x0d");
        assert_eq!(typed_line(Duration::ZERO, b' '), "0.000 0x20 ' '");
    }
}
