//! Postfix's `smtp-sink` as a real, independent SMTP peer, with its fault options.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `smtp-sink` that dumps every accepted message into a folder of its own.
pub struct PostfixSink {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn smtp_sink_path() -> PathBuf {
    ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Postfix's smtp-sink is missing: run scripts/postfix-tools.sh")
}

impl PostfixSink {
    /// Starts `smtp-sink` with extra `options` (e.g. `["-f", "rcpt"]` to refuse every
    /// recipient with 5xx) on a free loopback port.
    pub fn start(options: &[&str]) -> PostfixSink {
        let dir = tempfile::tempdir().expect("temp dir");
        // smtp-sink drops to an unprivileged user, which must write the dumps.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("dump folder permissions");
        }
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("address")
        };
        let mut cmd = Command::new(smtp_sink_path());
        if running_as_root() {
            cmd.args(["-u", "nobody"]);
        }
        let template = format!("{}/%M.", dir.path().display());
        let child = cmd
            .args(["-d", &template])
            .args(options)
            .arg(addr.to_string())
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtp-sink never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PostfixSink { child, addr, dir }
    }

    /// The messages the sink accepted, each as its dump (the sink's `X-Mail-Args`
    /// and `X-Rcpt-Args` headers, then the message).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect(self.dir.path(), &mut out);
        out
    }
}

fn collect(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("dump folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push(text);
        }
    }
}

fn running_as_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
