//! Postfix's test tools as a benchmark's peers: `smtp-sink` counting what it receives
//! (`-c`) on a free loopback port, and `smtp-source` as the reference load generator.
//!
//! `scripts/postfix-tools.sh` installs both.

use crate::measure::{Run, Stopwatch, cpu_time};
use anyhow::{Context, Result, bail, ensure};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The two programs, found once.
#[derive(Debug, Clone)]
pub struct PostfixTools {
    pub sink: PathBuf,
    pub source: PathBuf,
}

impl PostfixTools {
    /// Finds `smtp-sink` and `smtp-source` by these names (see [`find_tool`]).
    pub fn find(sink: &str, source: &str) -> Result<PostfixTools> {
        Ok(PostfixTools {
            sink: find_tool(sink)?,
            source: find_tool(source)?,
        })
    }
}

/// `name` itself when it is a path, else found in PATH or /usr/sbin.
pub fn find_tool(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        ensure!(path.is_file(), "{name} does not exist");
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("{name} not found in PATH or /usr/sbin; run scripts/postfix-tools.sh")
        })
}

/// A loopback port nothing listens on (the kernel's pick).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// A running `smtp-sink -c` on a free loopback port, offering PIPELINING and accepting
/// everything, with a backlog of 1024.
pub struct Sink {
    child: Option<Child>,
    pub port: u16,
    counts: PathBuf,
    errors: PathBuf,
}

impl Sink {
    /// Starts `tool` and waits until it listens; its counters and errors go to files
    /// in `dir`.
    pub fn start(tool: &Path, dir: &Path) -> Result<Sink> {
        let port = free_port()?;
        let counts = dir.join(format!("sink-{port}.out"));
        let errors = dir.join(format!("sink-{port}.err"));
        let mut command = Command::new(tool);
        command.arg("-c");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // smtp-sink refuses to run as root without -u.
            command.args(["-u", "root"]);
        }
        command
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdin(Stdio::null())
            .stdout(
                File::create(&counts).with_context(|| format!("creating {}", counts.display()))?,
            )
            .stderr(
                File::create(&errors).with_context(|| format!("creating {}", errors.display()))?,
            );
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", tool.display()))?;
        let mut sink = Sink {
            child: Some(child),
            port,
            counts,
            errors,
        };
        sink.wait_listening()?;
        Ok(sink)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("smtp-sink exited ({status}): {}", self.stderr());
            }
            ensure!(
                Instant::now() < deadline,
                "smtp-sink is not listening on 127.0.0.1:{} after 10 s: {}",
                self.port,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.errors)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The `mesg=` count of the sink's last counter line (`sess=N quit=N mesg=N`, each
    /// update ending in a carriage return).
    pub fn received(&self) -> Result<u64> {
        let text = std::fs::read_to_string(&self.counts)
            .with_context(|| format!("reading {}", self.counts.display()))?;
        let Some(last) = text.split(['\r', '\n']).rfind(|l| !l.trim().is_empty()) else {
            return Ok(0);
        };
        let count = last
            .split_whitespace()
            .find_map(|field| field.strip_prefix("mesg="))
            .with_context(|| format!("no mesg= in smtp-sink's counters {last:?}"))?;
        count
            .parse()
            .with_context(|| format!("smtp-sink's mesg= count {count:?}"))
    }

    /// Stops the sink once it counted `expected` messages (or after a second); returns
    /// what it counted and the CPU time it used.
    pub fn stop(mut self, expected: u64) -> Result<(u64, Duration)> {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.received()? < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut child = self.child.take().context("the sink was already stopped")?;
        let before = cpu_time(libc::RUSAGE_CHILDREN)?;
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().context("waiting for smtp-sink to stop")?;
        let cpu = cpu_time(libc::RUSAGE_CHILDREN)?.saturating_sub(before);
        Ok((self.received()?, cpu))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One timed run into a fresh sink: `send(port)` delivers `n` messages to the sink on
/// `port` and returns its wall and CPU time; fails unless the sink counted exactly `n`.
pub fn run_into_sink(
    sink_tool: &Path,
    dir: &Path,
    n: usize,
    who: &str,
    send: impl FnOnce(u16) -> Result<(Duration, Duration)>,
) -> Result<Run> {
    let sink = Sink::start(sink_tool, dir)?;
    let port = sink.port;
    let (wall, cpu) = send(port)
        .with_context(|| format!("{who} sending {n} messages into smtp-sink on port {port}"))?;
    let (accepted, sink_cpu) = sink.stop(n as u64)?;
    ensure!(
        accepted == n as u64,
        "{who}: smtp-sink counted {accepted} messages, {n} were sent"
    );
    Ok(Run {
        messages: n,
        wall,
        cpu,
        sink_cpu,
        accepted,
    })
}

/// What `smtp-source` sends.
pub struct SourceJob<'a> {
    /// Parallel sessions (`-s`), each reusing its connection (`-d`).
    pub sessions: usize,
    /// Messages in all (`-m`).
    pub messages: usize,
    /// The message, LF line ends (`-F`; smtp-source sends each line with CRLF).
    pub message_file: &'a Path,
    /// Envelope sender (`-f`) and recipient (`-t`; `-N` makes each one distinct).
    pub from: &'a str,
    pub to: &'a str,
    pub port: u16,
}

/// Runs `smtp-source` to the end; returns its wall time and CPU time (`RUSAGE_CHILDREN`).
pub fn smtp_source(tool: &Path, job: &SourceJob<'_>) -> Result<(Duration, Duration)> {
    let mut command = Command::new(tool);
    command
        .arg("-d")
        .args(["-s", &job.sessions.to_string()])
        .args(["-m", &job.messages.to_string()])
        .arg("-F")
        .arg(job.message_file)
        .args(["-f", job.from, "-t", job.to, "-N", "-M", "localhost"])
        .arg(format!("127.0.0.1:{}", job.port))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let watch = Stopwatch::start(libc::RUSAGE_CHILDREN)?;
    let output = command
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    let times = watch.stop()?;
    ensure!(
        output.status.success(),
        "smtp-source failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(times)
}

/// Writes `message` (CRLF line ends) to `path` with LF line ends, for
/// [`SourceJob::message_file`].
pub fn write_source_file(path: &Path, message: &[u8]) -> Result<()> {
    let lf = String::from_utf8(message.to_vec())
        .context("the message is not UTF-8")?
        .replace("\r\n", "\n");
    std::fs::write(path, lf).with_context(|| format!("writing {}", path.display()))
}
