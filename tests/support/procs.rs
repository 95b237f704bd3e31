//! Processes a test starts (chromedriver and its Chromium, app servers): each in a process
//! group of its own and tagged in its environment, stopped when dropped, also on panic: the
//! whole group (SIGTERM, then SIGKILL), then any tagged descendant that left the group (a
//! Jupyter kernel runs in a session of its own).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable every spawned process (and so every descendant) carries.
pub const TAG_VAR: &str = "AUTHGATE_TEST_PROC";

/// A unique tag for one test's processes.
pub fn new_tag(what: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pids of live processes carrying `TAG_VAR=tag` (zombies have no readable environment).
pub fn tagged(tag: &str) -> Vec<u32> {
    let want = format!("{TAG_VAR}={tag}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        })
        .collect()
}

fn signal(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One started process (and its group).
pub struct Proc {
    pub name: String,
    tag: String,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Proc {
    /// Starts `cmd` in a new process group, stdin closed, stdout and stderr into
    /// `<log_dir>/<name>.log`, tagged with `tag`.
    pub fn spawn(tag: &str, name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        cmd.process_group(0)
            .env(TAG_VAR, tag)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            tag: tag.to_owned(),
            child,
            log,
            stopped: false,
        }
    }

    /// The tag in its environment (and its descendants').
    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far (the last 6000 bytes), for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let from = text.len().saturating_sub(6000);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Panics (with its log) when it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Stops the group and every tagged straggler; waits (bounded) until they are gone.
    /// Returns the pids still alive afterwards (none, normally).
    pub fn stop(&mut self) -> Vec<u32> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let group = format!("-{}", self.child.id());
        if self.child.try_wait().ok().flatten().is_none() {
            signal("-TERM", &group);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The leader is gone or late: whatever is left of its group goes now.
        signal("-KILL", &group);
        let _ = self.child.wait();
        // Descendants in other groups or sessions (Jupyter's kernels) still carry the tag.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = tagged(&self.tag);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            for pid in &left {
                signal("-KILL", &pid.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let left = self.stop();
        if !left.is_empty() {
            eprintln!("{}: processes still alive after stop: {left:?}", self.name);
        }
    }
}

/// A free loopback port (bound, then released for the app to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET on a fresh connection; `None` when the connection or exchange fails.
pub async fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<(http::StatusCode, String)> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(super::empty())
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `http://addr{path}` until it answers `want` (bounded by `within`), failing early
/// with the process's log when the process exits.
pub async fn wait_ready(
    proc: &mut Proc,
    addr: std::net::SocketAddr,
    path: &str,
    want: http::StatusCode,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        proc.assert_running();
        match try_get(addr, path).await {
            Some((status, _)) if status == want => return,
            last if Instant::now() > deadline => panic!(
                "{} did not answer {want} on http://{addr}{path} within {within:?} (last: {last:?}); its log:\n{}",
                proc.name,
                proc.log_tail()
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
