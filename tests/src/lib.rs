//! Test harness for the end-to-end tests: builds and starts the real `ekms` and `ekms-enclave`
//! binaries on `127.0.0.1:0` in simulation mode, reads the credential they create, and kills
//! every process it started when dropped. Also home of the `ekms-bench` binary.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

/// Directory holding the built `ekms` and `ekms-enclave` binaries, built once per test process.
///
/// # Panics
/// When the build fails (a test harness may panic).
#[must_use]
#[allow(clippy::panic, clippy::expect_used)]
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test> -> target/<profile>
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        // The same selection as the README's `cargo test --workspace`, so that Cargo resolves
        // the same features and finds every artifact fresh. Building only the two packages
        // unifies features differently and compiles some 20 crates (and all that depend on
        // them) a second time.
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--workspace", "--bins", "--tests"]);
        // Without the variables `cargo test` set for this test crate: build scripts that
        // watch them (ring's watches CARGO_PKG_NAME and CARGO_MANIFEST_DIR) would otherwise
        // see them change and rebuild, and with them the AWS SDK's TLS stack.
        for (name, _) in std::env::vars_os() {
            let is_crate_var = name.to_str().is_some_and(|n| {
                n == "OUT_DIR"
                    || ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_", "CARGO_CFG_"]
                        .iter()
                        .any(|p| n.starts_with(p))
                    || [
                        "CARGO_CRATE_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                    ]
                    .contains(&n)
            });
            if is_crate_var {
                cmd.env_remove(name);
            }
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the ekms binaries failed");
        dir
    })
}

/// A running appliance (`ekms serve --sim`) with its own data dir.
#[derive(Debug)]
pub struct Appliance {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The data dir.
    pub data_dir: PathBuf,
    /// Admin access key id.
    pub access_key: String,
    /// Admin secret.
    pub secret_key: String,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Appliance {
    /// Starts an appliance on `data_dir` (created if missing).
    ///
    /// # Panics
    /// When it does not come up within 60 seconds.
    #[must_use]
    #[allow(clippy::panic, clippy::expect_used)]
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Starts `ekms serve --sim` with extra arguments (e.g. `--no-dev-custodian`, `--peer`).
    /// The credential fields are empty when the data dir has no credential yet.
    #[must_use]
    #[allow(clippy::panic, clippy::expect_used)]
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts `ekms serve --sim` listening on `listen` (for appliances that must know each
    /// other's URLs before they start, like a writer and its witnesses).
    #[must_use]
    #[allow(clippy::panic, clippy::expect_used)]
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(bin_dir().join("ekms"))
            .args(["serve", "--sim", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ekms");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut o) = out.lock() {
                    o.extend_from_slice(line.as_bytes());
                    o.push(b'\n');
                }
                if let Some(ep) = line.strip_prefix("ekms: listening on ") {
                    let _ = tx.send(ep.to_owned());
                }
            }
        });
        // stderr is shown as before, and kept for tests that check what the host printed.
        let out = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                eprint!("{}", String::from_utf8_lossy(&line));
                if let Ok(mut o) = out.lock() {
                    o.extend_from_slice(&line);
                }
                line.clear();
            }
        });
        let Ok(endpoint) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("ekms did not start listening");
        };
        let creds = data_dir.join("credentials");
        let (access_key, secret_key) = if creds.exists() {
            read_credentials(&creds)
        } else {
            (String::new(), String::new())
        };
        Self {
            child: Some(child),
            endpoint,
            data_dir: data_dir.to_path_buf(),
            access_key,
            secret_key,
            output,
        }
    }

    /// Everything the `ekms serve` process (and the enclave it started) wrote to stdout and
    /// stderr so far.
    #[must_use]
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Pid of the `ekms serve` process.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Pids of the enclave processes serving this data dir.
    #[must_use]
    pub fn enclave_pids(&self) -> Vec<u32> {
        processes_with(&format!("{}/run", self.data_dir.display()), "ekms-enclave")
    }

    /// Sends SIGTERM and waits for the host to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the host with SIGKILL (no chance to clean up).
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the host and its enclave together with SIGKILL, as a crash of the machine would:
    /// neither gets a chance to finish what it was doing.
    pub fn kill_all_hard(&mut self) {
        let enclaves = self.enclave_pids();
        let mut kill = Command::new("kill");
        kill.arg("-KILL");
        kill.args(enclaves.iter().map(ToString::to_string));
        if let Some(child) = &self.child {
            kill.arg(child.id().to_string());
        }
        let _ = kill.status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let enclaves = self.enclave_pids();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in enclaves {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A local TCP port that was free a moment ago, below the kernel's ephemeral range: an
/// appliance restarted on it (a witness, in `tests/witnesses.rs`) cannot find it taken by some
/// process's outgoing connection in the meantime, which a port the kernel handed out (bind to
/// port 0) could be (seen once: "Address already in use" on a witness's restart).
///
/// # Panics
/// When no port can be bound.
#[must_use]
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    // Linux's default range starts at 32768; read it where it can be read.
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low);
    if high > low {
        for _ in 0..200 {
            let mut r = [0u8; 4];
            aws_lc_rs::rand::fill(&mut r).expect("random bytes");
            let n = u32::from_le_bytes(r) % u32::from(high - low);
            let port = low + u16::try_from(n).expect("below the range's width");
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Reads the `[ekms]` profile of a shared-credentials file.
///
/// # Panics
/// When the file is missing or lacks the keys.
#[must_use]
#[allow(clippy::expect_used)]
pub fn read_credentials(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).expect("credentials file");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(k)
                    .map(|v| v.trim_start_matches([' ', '=']).trim().to_owned())
            })
            .expect("credential key")
    };
    (get("aws_access_key_id"), get("aws_secret_access_key"))
}

/// Pids of processes whose command line contains `needle` and whose executable name is `name`.
#[must_use]
pub fn processes_with(needle: &str, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let cmd = String::from_utf8_lossy(&c).replace('\0', " ");
                let exe = cmd.split(' ').next().unwrap_or_default().to_owned();
                exe.ends_with(name) && cmd.contains(needle)
            })
        })
        .collect()
}

/// Whether a process is alive (and not a zombie).
#[must_use]
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'))
    })
}

/// Waits until `f` is true or the timeout passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Whether the external client tools must be present (in CI they must; locally a missing tool
/// skips its test with a note).
#[must_use]
pub fn tools_required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// Whether `cmd args` runs and succeeds (a tool, or a Python module import); in CI
/// ([`tools_required`]) it must, elsewhere a missing one skips its test with a note.
///
/// # Panics
/// In CI, when the tool is missing.
#[must_use]
#[allow(clippy::panic)]
pub fn have(cmd: &str, args: &[&str]) -> bool {
    let ok = Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !tools_required(),
        "{cmd} {args:?} is required in CI but does not run"
    );
    if !ok {
        eprintln!("SKIP: {cmd} {args:?} does not run here");
    }
    ok
}
