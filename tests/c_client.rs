//! The C client library from C (issue 15): `examples/c/*.c` are compiled with the system C
//! compiler against `libzonehost_ffi` (built by cargo: `zonehost-client-ffi` is a
//! dev-dependency), and run against a real `zonehost serve` on 127.0.0.1 — natively, and
//! under `valgrind --leak-check=full --error-exitcode=1`.
//!
//! * `c_example_is_acknowledged_and_as_fast_as_rust`: the C example connects, drops and
//!   picks up a potion, walks for two seconds; a snapshot read through the C accessors
//!   acknowledges its inputs, and its mean action latency is within 20 % of the Rust
//!   `minimal_client`'s against the same server.
//! * `c_hostile_use_returns_error_codes`: NULL pointers, unknown and freed handles, buffers
//!   too small, calls after close (`examples/c/hostile.c`), each its error code.
//! * `c_client_follows_a_redirect`: in a two-server dev cluster, a login on the server that
//!   does not own the player is redirected to the owner; the C API reports
//!   `ZH_EVENT_REDIRECTED`, follows it, and the first session ends with close code 4
//!   (`examples/c/redirect.c`).
//! * `c_programs_are_valgrind_clean`: both programs under valgrind (with
//!   `examples/c/valgrind.supp`, two reports inside ring / quinn-udp, explained there).
//!   Without valgrind it is skipped loudly, unless `ZONEHOST_VALGRIND_REQUIRED=1`: then it
//!   fails. `scripts/test.sh` (CI) installs valgrind when missing and runs this test again
//!   with it required, so CI never skips it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::serve::ServeProcess;

/// Bound on one run of a C program (valgrind makes them about 5x slower).
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Bound on the server's start.
const PHASE: Duration = Duration::from_secs(60);

/// The tests share the two CPU cores; latencies are only comparable one run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// `target/<profile>`, where cargo put the server binary, the examples and (in `deps/`) the
/// C libraries.
fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_zonehost"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// A fresh directory for this test's build outputs.
fn work_dir(tag: &str) -> PathBuf {
    let dir = common::temp_data_dir(&format!("c-ffi-{tag}"));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// Copies the shared library next to the programs (so a concurrent rebuild cannot swap it
/// mid-run) and compiles `examples/c/<name>.c` against it with `cc`.
fn compile(name: &str, dir: &Path) -> PathBuf {
    let profile = profile_dir();
    let lib = [profile.join("deps"), profile.clone()]
        .iter()
        .map(|d| d.join("libzonehost_ffi.so"))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("libzonehost_ffi.so built by cargo (zonehost-client-ffi is a dev-dependency)");
    std::fs::copy(&lib, dir.join("libzonehost_ffi.so")).expect("copy the library");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join(name);
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-I"])
        .arg(root.join("client-ffi/include"))
        .arg(root.join(format!("examples/c/{name}.c")))
        .arg("-L")
        .arg(dir)
        .args(["-lzonehost_ffi", "-lm"])
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C compiler (cc)");
    assert!(
        out.status.success(),
        "cc {name}.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A server whose ticks are not a multiple of the clients' 60 Hz inputs (see
/// `c_example_is_acknowledged_and_as_fast_as_rust`), its address and data directory.
struct Server {
    _proc: ServeProcess,
    addr: String,
    data_dir: PathBuf,
}

impl Server {
    fn start(tick_rate_hz: u16) -> Self {
        let data_dir = common::temp_data_dir("c-ffi-server");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let config = data_dir.join("zonehost.toml");
        std::fs::write(
            &config,
            format!("tick_rate_hz = {tick_rate_hz}\nsnapshot_rate_hz = {tick_rate_hz}\n"),
        )
        .expect("config");
        let proc = ServeProcess::start_on_loopback("the server", &config, &data_dir, PHASE);
        let addr = proc.listening_addr().to_string();
        Self {
            _proc: proc,
            addr,
            data_dir,
        }
    }

    fn cert(&self) -> PathBuf {
        self.data_dir.join("cert.der")
    }

    /// A dev token for `player` (`zonehost token`).
    fn token(&self, player: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_zonehost"))
            .args(["token", "--player", player, "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .expect("run zonehost token");
        assert!(out.status.success(), "zonehost token failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The arguments of the C programs and of `minimal_client` for `player`.
    fn args(&self, player: &str) -> Vec<String> {
        vec![
            self.addr.clone(),
            self.cert().display().to_string(),
            self.token(player),
        ]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Runs `program ARGS` to completion (killed after [`RUN_LIMIT`]); returns the exit code
/// and stdout + stderr.
fn run(program: &Path, prefix: &[&str], args: &[String], dir: &Path) -> (Option<i32>, String) {
    let out_path = dir.join(format!(
        "{}.out",
        program
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("run")
    ));
    let out = std::fs::File::create(&out_path).expect("output file");
    let err = out.try_clone().expect("output file");
    let (exe, rest): (&Path, Vec<&str>) = match prefix.split_first() {
        Some((first, rest)) => (Path::new(first), rest.to_vec()),
        None => (program, Vec::new()),
    };
    let mut cmd = Command::new(exe);
    cmd.args(rest);
    if !prefix.is_empty() {
        cmd.arg(program);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not finish in {RUN_LIMIT:?}:\n{}",
                program.display(),
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status.code(), text)
}

/// The value of a `key=value` line.
fn value(output: &str, key: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}= line in:\n{output}"))
}

/// The Rust example `minimal_client`, built by cargo every time (a no-op when it is fresh:
/// `--all-targets` builds examples as tests elsewhere, so a binary already at this path
/// may be from an older checkout).
fn minimal_client() -> PathBuf {
    let profile = profile_dir();
    let exe = profile.join("examples/minimal_client");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "--example", "minimal_client"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile.ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example minimal_client");
    exe
}

/// `valgrind --leak-check=full --error-exitcode=1` with the suppressions of
/// `examples/c/valgrind.supp`, or `None` (loudly) when valgrind is missing and not required.
fn valgrind() -> Option<Vec<String>> {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var("ZONEHOST_VALGRIND_REQUIRED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "valgrind is required (ZONEHOST_VALGRIND_REQUIRED=1): apt-get install -y valgrind"
        );
        eprintln!("==================================================================");
        eprintln!("SKIPPED: valgrind runs of the C examples (no valgrind; scripts/test.sh");
        eprintln!("         installs it and runs this test again with it required)");
        eprintln!("==================================================================");
        return None;
    }
    let supp = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/valgrind.supp");
    Some(vec![
        "valgrind".into(),
        "--leak-check=full".into(),
        "--error-exitcode=1".into(),
        format!("--suppressions={}", supp.display()),
    ])
}

/// Runs of each client in `c_example_is_acknowledged_and_as_fast_as_rust`.
const ROUNDS: u32 = 3;

/// Runs the C example once, checks what it read through the C API, returns its mean action
/// latency in ms.
fn run_c_demo(demo: &Path, server: &Server, dir: &Path, round: u32) -> f64 {
    let (code, c_out) = run(demo, &[], &server.args(&format!("c_demo_{round}")), dir);
    assert_eq!(code, Some(0), "the C example failed:\n{c_out}");
    let acked = value(&c_out, "acked_inputs");
    let last_sent = value(&c_out, "last_sent_input");
    let snapshot_acked = value(&c_out, "snapshot_acked_input");
    assert!(acked > 0.0, "no input acknowledged:\n{c_out}");
    assert!(
        snapshot_acked > 0.0 && snapshot_acked <= last_sent,
        "a snapshot read through the C accessors acknowledges a sent input:\n{c_out}"
    );
    assert!(
        value(&c_out, "moved_mm") > 1000.0,
        "the C example's entity (read through zh_snapshot_entities) moved:\n{c_out}"
    );
    assert_eq!(value(&c_out, "picked_up"), 1.0, "item round trip:\n{c_out}");
    value(&c_out, "mean_latency_ms")
}

/// Runs `minimal_client` once and returns the mean action latency it printed, in ms.
fn run_minimal_client(rust: &Path, server: &Server, dir: &Path, round: u32) -> f64 {
    let a = server.args(&format!("rust_demo_{round}"));
    let args: Vec<String> = vec![
        "--server".into(),
        a[0].clone(),
        "--cert".into(),
        a[1].clone(),
        "--token".into(),
        a[2].clone(),
    ];
    let (code, rust_out) = run(rust, &[], &args, dir);
    assert_eq!(code, Some(0), "minimal_client failed:\n{rust_out}");
    rust_out
        .lines()
        .find_map(|l| l.split("mean action latency ").nth(1))
        .and_then(|v| v.trim_end_matches(" ms").trim().parse().ok())
        .unwrap_or_else(|| panic!("no mean latency in:\n{rust_out}"))
}

#[test]
fn c_example_is_acknowledged_and_as_fast_as_rust() {
    let _serial = serial();
    let dir = work_dir("demo");
    let demo = compile("zonehost_demo", &dir);
    let rust = minimal_client();
    // 50 Hz ticks against 60 Hz inputs: every input meets the tick at another phase, so a
    // run's mean latency is the mean over all phases. At 60/60 each run keeps one random
    // phase for its whole duration (means of 10-16 ms measured for both clients), which
    // would compare luck, not the library.
    let server = Server::start(50);

    // The two clients run in turns, and each keeps its best mean: the latency the library
    // allows. Other work on the machine (CI runs a Cassandra node beside the tests) only
    // ever adds latency to a run, which one run each turned into a 2 ms gap (11.7 vs 9.7
    // ms) with nothing wrong in either client.
    let (mut c_best, mut rust_best) = (f64::INFINITY, f64::INFINITY);
    for round in 0..ROUNDS {
        let c_ms = run_c_demo(&demo, &server, &dir, round);
        let rust_ms = run_minimal_client(&rust, &server, &dir, round);
        eprintln!(
            "round {round}: mean action latency C example {c_ms:.2} ms, Rust minimal_client {rust_ms:.2} ms"
        );
        c_best = c_best.min(c_ms);
        rust_best = rust_best.min(rust_ms);
    }
    eprintln!("best of {ROUNDS}: C example {c_best:.2} ms, Rust minimal_client {rust_best:.2} ms");
    assert!(
        (c_best - rust_best).abs() <= 0.2 * rust_best,
        "C {c_best:.2} ms is not within 20 % of Rust {rust_best:.2} ms (best of {ROUNDS} runs each)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn c_hostile_use_returns_error_codes() {
    let _serial = serial();
    let dir = work_dir("hostile");
    let hostile = compile("hostile", &dir);
    let server = Server::start(60);
    let (code, out) = run(&hostile, &[], &server.args("c_hostile"), &dir);
    assert_eq!(code, Some(0), "hostile use:\n{out}");
    assert_eq!(value(&out, "hostile_failures"), 0.0, "{out}");
    assert!(
        out.lines().filter(|l| l.starts_with("ok ")).count() > 60,
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn c_programs_are_valgrind_clean() {
    let _serial = serial();
    let Some(valgrind) = valgrind() else {
        return;
    };
    let prefix: Vec<&str> = valgrind.iter().map(String::as_str).collect();
    let dir = work_dir("valgrind");
    let demo = compile("zonehost_demo", &dir);
    let hostile = compile("hostile", &dir);
    let server = Server::start(60);
    for (program, player) in [(&demo, "vg_demo"), (&hostile, "vg_hostile")] {
        let (code, out) = run(program, &prefix, &server.args(player), &dir);
        assert_eq!(
            code,
            Some(0),
            "{} under valgrind:\n{out}",
            program.display()
        );
        assert!(
            out.contains("ERROR SUMMARY: 0 errors")
                && (out.contains("definitely lost: 0 bytes")
                    || out.contains("All heap blocks were freed")),
            "{out}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two consecutive free UDP ports on 127.0.0.1 (for a dev cluster's fixed ports).
fn two_free_ports() -> u16 {
    for _ in 0..50 {
        let first = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port < u16::MAX && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

#[test]
fn c_client_follows_a_redirect() {
    let _serial = serial();
    let dir = work_dir("redirect");
    let redirect = compile("redirect", &dir);
    let data_dir = common::temp_data_dir("c-ffi-cluster");
    let port = two_free_ports();
    let listen = format!("127.0.0.1:{port}");
    let proc = ServeProcess::start(
        "the dev cluster",
        [
            "--listen".as_ref(),
            listen.as_ref(),
            "--dev-cluster".as_ref(),
            "2".as_ref(),
            "--second-login".as_ref(),
            "take-over".as_ref(),
            "--metrics-listen".as_ref(),
            "off".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
        ],
        PHASE,
    );
    let deadline = Instant::now() + PHASE;
    while proc.log_text().matches("zonehost listening").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "cluster start:\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = || {
        let out = Command::new(env!("CARGO_BIN_EXE_zonehost"))
            .args(["token", "--player", "c_redirect", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("run zonehost token");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let args = vec![
        listen.clone(),
        format!("127.0.0.1:{}", port + 1),
        data_dir.join("cert.der").display().to_string(),
        token(),
        token(),
    ];
    let (code, out) = run(&redirect, &[], &args, &dir);
    assert_eq!(code, Some(0), "redirect through the C API:\n{out}");
    assert!(
        out.contains(&format!("redirected_to={listen} after_welcome=0")),
        "{out}"
    );
    assert!(out.contains("second_redirects=1"), "{out}");
    assert!(out.contains("first_disconnect_code=4"), "{out}");
    drop(proc);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&dir);
}
