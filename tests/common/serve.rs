//! The real `zonehost serve` binary as a child process, its stderr log lines collected, for
//! tests that need a separate process (SIGKILL, SIGTERM, several servers on one store).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `zonehost serve`, killed when dropped if still running.
pub struct ServeProcess {
    /// Name in panic messages.
    pub name: String,
    /// The child.
    pub child: Child,
    /// Its "zonehost listening" log line (JSON).
    pub listening: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Bound on start-up and on a drain.
    phase: Duration,
}

impl ServeProcess {
    /// Spawns `zonehost serve ARGS --log-format json` (RUST_LOG=info; `ZONEHOST_LISTEN` and
    /// `ZONEHOST_SERVER_ID` from the environment removed) and waits up to `phase` for its
    /// "zonehost listening" line; panics with the log otherwise.
    pub fn start<I, S>(name: &str, args: I, phase: Duration) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zonehost"))
            .arg("serve")
            .args(args)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .env_remove("ZONEHOST_LISTEN")
            .env_remove("ZONEHOST_SERVER_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zonehost");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("zonehost listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut p = Self {
            name: name.to_owned(),
            child,
            listening: String::new(),
            log,
            phase,
        };
        match rx.recv_timeout(phase) {
            Ok(line) => p.listening = line,
            Err(_) => {
                let _ = p.child.kill();
                panic!("{name} did not start:\n{}", p.log_text());
            }
        }
        p
    }

    /// Starts `zonehost serve` on an ephemeral UDP port of 127.0.0.1 with `config` and
    /// `data_dir`, metrics off (see [`ServeProcess::start`]).
    pub fn start_on_loopback(name: &str, config: &Path, data_dir: &Path, phase: Duration) -> Self {
        Self::start(
            name,
            [
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--metrics-listen".as_ref(),
                "off".as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
                "--data-dir".as_ref(),
                data_dir.as_os_str(),
            ],
            phase,
        )
    }

    /// The UDP address its "zonehost listening" line names; panics without one.
    pub fn listening_addr(&self) -> SocketAddr {
        json_field(&self.listening, "addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: no address in {}", self.name, self.listening))
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// SIGTERM (a drain) without waiting.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.name);
    }

    /// Waits (bounded) for a clean exit after [`ServeProcess::sigterm`].
    pub fn wait_exit(&mut self) {
        let deadline = Instant::now() + self.phase;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "{} exited with {status}:\n{}",
                    self.name,
                    self.log_text()
                );
                return;
            }
            assert!(Instant::now() < deadline, "{} did not drain", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, no destructor, no final checkpoint.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The string value of `"key":"..."` in a JSON log line.
pub fn json_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_owned())
}
