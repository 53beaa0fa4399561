//! Browser harness for the integration tests: a throwaway network namespace with a veth pair
//! (Chromium gathers no ICE candidates on loopback), and real headless Chromium run inside it on
//! a local test page (`whip-publish.html`, `loopback-selftest.html`) with a fixture WAV as its
//! fake microphone. It owns the namespace's lifetime (deleted on drop, panics included), the
//! Chromium command line, the fixture conversion, and parsing the pages' `WHIP: ` console lines.
//!
//! It must never talk to or configure anything outside the namespace it created (no routes or
//! links in the host namespace, no external addresses in pages), leave a Chromium process or a
//! namespace behind, or wait on anything without a deadline. Test-only; allocates freely.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Prefix of every console line the pages emit for us.
const PREFIX: &str = "WHIP: ";
/// Namespace names start with this plus the owning process id, so a later run can tell which
/// namespaces were left by a test process that was killed before its guards ran.
const NS_PREFIX: &str = "tonewall-browser-";

/// The Chromium executable: `TONEWALL_CHROMIUM` if set, else Debian's `chromium` on PATH.
pub fn chromium_program() -> String {
    std::env::var("TONEWALL_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Whether Chromium can be started at all. Tests that need it fail (not skip) when this is
/// false: `.ci/run` installs it, so a missing Chromium is a broken machine, not an option.
pub fn chromium_available() -> bool {
    Command::new(chromium_program())
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The message a test should fail with when Chromium is missing.
pub const CHROMIUM_MISSING: &str = "Chromium is not installed: this test needs real headless \
     Chromium (`apt-get install -y --no-install-recommends chromium`; .ci/run installs it), \
     or TONEWALL_CHROMIUM=/path/to/chromium";

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with a veth pair whose two ends are both inside it, so a server on one
/// end and Chromium on the other talk over a real (non-loopback) interface. Deleted on drop.
pub struct Netns {
    name: String,
    server: Ipv4Addr,
    client: Ipv4Addr,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Create the namespace `tonewall-browser-PID-K` with `tw-srv` = 10.231.N.1/24 and
    /// `tw-cli` = 10.231.N.2/24, `lo` and both ends up. N varies with the process and K: the
    /// addresses live only inside the namespace, but distinct ones keep logs unambiguous.
    pub fn create() -> Result<Netns, String> {
        remove_orphans();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("{NS_PREFIX}{pid}-{k}");
        let n = (pid.wrapping_mul(31).wrapping_add(k) % 250 + 1) as u8;
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on the guard owns the namespace: any failure below drops (deletes) it.
        let ns = Netns {
            name,
            server: Ipv4Addr::new(10, 231, n, 1),
            client: Ipv4Addr::new(10, 231, n, 2),
        };
        let ip = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["-n", &ns.name]).args(args);
            run(&mut c)
        };
        ip(&[
            "link", "add", "tw-srv", "type", "veth", "peer", "name", "tw-cli",
        ])?;
        ip(&["addr", "add", &format!("{}/24", ns.server), "dev", "tw-srv"])?;
        ip(&["addr", "add", &format!("{}/24", ns.client), "dev", "tw-cli"])?;
        for dev in ["lo", "tw-srv", "tw-cli"] {
            ip(&["link", "set", dev, "up"])?;
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address a server in the namespace should listen on.
    pub fn addr_server(&self) -> Ipv4Addr {
        self.server
    }

    /// The other veth end (Chromium's side; it may use either, both are local to it).
    pub fn addr_client(&self) -> Ipv4Addr {
        self.client
    }

    /// Move the calling thread into the namespace. Sockets it opens afterwards, threads it
    /// spawns and processes it starts live there too (Linux keeps namespaces per task and a
    /// new task inherits its creator's), so a test can run its stand-in servers and the
    /// gateway next to Chromium with the ordinary helpers. Other test threads are unaffected.
    pub fn enter_current_thread(&self) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        extern "C" {
            fn setns(fd: i32, nstype: i32) -> i32;
        }
        const CLONE_NEWNET: i32 = 0x4000_0000;
        let path = format!("/var/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns takes a file descriptor that stays open for the call (f lives to the
        // end of this function) and a namespace type constant; it touches no Rust memory.
        let rc = unsafe { setns(f.as_raw_fd(), CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// `program` run inside the namespace (`ip netns exec NAME program`; `ip` execs it, so the
    /// child's pid is the program's own).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

/// SIGKILL every process inside namespace `name`: all of them were started there by a test
/// (nothing else runs in a namespace made here), and a namespace outlives `ip netns del` for
/// as long as a process holds it.
fn kill_inside(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Normally the tests' own guards have ended their processes by now; this catches a
        // server or browser whose guard was dropped after the namespace's.
        kill_inside(&self.name);
        // Deleting the namespace also destroys the veth pair inside it.
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("browser harness: could not delete namespace: {e}");
        }
    }
}

/// Delete namespaces (and end the processes in them) left by test processes that no longer
/// exist (killed with SIGKILL, so no Drop ran). Namespaces of live processes, ours or a
/// concurrent test binary's, are left alone.
fn remove_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_inside(name);
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

/// Convert a fixture into what Chromium's fake capture device plays faithfully: 16-bit PCM WAV
/// (mu-law, A-law and 24-bit files are refused by it and it captures silence instead), 48 kHz
/// mono, with `tail` of silence appended. The tail matters because with `%noloop` the device
/// keeps repeating its last buffer after the end of the file: silence there keeps it silent.
pub fn prepare_wav(src: &Path, dir: &Path, tail: Duration) -> Result<PathBuf, String> {
    let out = dir.join("fake-capture.wav");
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(src)
        .args(["-ac", "1", "-ar", "48000", "-c:a", "pcm_s16le", "-af"])
        .arg(format!("apad=pad_dur={:.3}", tail.as_secs_f64()))
        // No LIST/INFO chunk: a plain 44-byte header, the simplest thing for Chromium's reader.
        .args(["-bitexact", "-map_metadata", "-1"])
        .arg(&out))?;
    Ok(out)
}

/// What one Chromium run printed: the `WHIP: ` lines in order (prefix removed), and how it
/// ended.
#[derive(Debug, Default)]
pub struct ChromiumRun {
    pub lines: Vec<String>,
    /// The page logged `WHIP: done`.
    pub done: bool,
    /// The page logged `WHIP: error ...` (the reason), or the harness's deadline passed.
    pub error: Option<String>,
    pub elapsed: Duration,
    /// Chromium's other stderr lines (for failure messages).
    pub stderr: Vec<String>,
}

impl ChromiumRun {
    /// The lines that start with `word` (followed by a space or the end), without the word.
    pub fn with(&self, word: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix(word)?;
                if rest.is_empty() || rest.starts_with(' ') {
                    Some(rest.trim_start())
                } else {
                    None
                }
            })
            .collect()
    }

    /// The first JSON-string argument logged after `word` (`offer`, `answer`), decoded.
    pub fn json_string(&self, word: &str) -> Option<String> {
        let raw = self.with(word).into_iter().next()?;
        serde_json::from_str::<String>(raw).ok()
    }

    /// The offer SDP the page produced.
    pub fn offer(&self) -> Option<String> {
        self.json_string("offer")
    }

    /// A short account for assertion messages.
    pub fn summary(&self) -> String {
        let tail: Vec<&String> = self.stderr.iter().rev().take(15).collect();
        format!(
            "done={} error={:?} after {:?}\nWHIP lines:\n  {}\nlast stderr lines:\n  {}",
            self.done,
            self.error,
            self.elapsed,
            self.lines.join("\n  "),
            tail.into_iter()
                .rev()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    }
}

/// Percent-encode a query value (everything but RFC 3986 unreserved characters).
fn encode(v: &str) -> String {
    let mut s = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// A test page of this directory as a file:// URL with a query string. file:// pages are a
/// secure context in Chromium (getUserMedia works) and fetch with `Origin: null`.
pub fn page_url(page: &str, query: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(page);
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("file://{}?{}", path.display(), q.join("&"))
}

/// Chromium and every process it forked, killed on drop (SIGKILL to its process group).
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium was started as a process group leader: its zygote, renderer, GPU and
        // network processes are all in that group, and must not outlive the test (they would
        // also keep the namespace alive after `ip netns del`).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines in Chromium's stderr that mean the fake microphone is not playing the fixture.
const FAKE_CAPTURE_FAILURES: [&str; 2] = [
    "as input to the fake device",
    "WAV data could be read but is not valid",
];

/// Run headless Chromium inside `ns` on `url`, with `wav` (already prepared, see
/// [`prepare_wav`]) as its microphone, played once (`%noloop`). Returns when the page logs
/// `WHIP: done` or `WHIP: error`, or at `deadline`; Chromium is killed in every case.
/// Err only when the harness itself failed (Chromium did not start, the WAV was refused).
pub fn run_chromium(
    ns: &Netns,
    url: &str,
    wav: &Path,
    deadline: Duration,
) -> Result<ChromiumRun, String> {
    let start = Instant::now();
    let profile = scratch_dir("chromium-profile")?;
    let mut cmd = ns.command(chromium_program());
    cmd.args([
        // Headless new mode is the full browser (same WebRTC stack as headed Chromium).
        "--headless=new",
        // We are root; Chromium refuses to run as root with its sandbox ("Running as root
        // without --no-sandbox is not supported") and exits at once.
        "--no-sandbox",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        // A fake microphone and camera, permission granted without a prompt. The granted
        // permission is also what makes Chromium put the interfaces' real addresses in host
        // candidates: without this flag it gathers none here (mDNS names at best) and ICE never
        // starts.
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        // The self-test page plays the received track into an <audio> element and analyses it
        // with WebAudio; without a user gesture both stay suspended (level 0, no spectrum).
        "--autoplay-policy=no-user-gesture-required",
        // console.log lines go to stderr as `...:INFO:CONSOLE:N] "WHIP: ...", source: ...`.
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!(
        "--use-file-for-fake-audio-capture={}%noloop",
        wav.display()
    ))
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", chromium_program()))?;
    let mut browser = Browser { child };
    let stderr = browser.child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    // The reader ends by itself when Chromium dies (EOF), which the Browser guard ensures.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut result = ChromiumRun::default();
    let outcome = loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            result.error = Some(format!("harness deadline of {deadline:?} passed"));
            break Ok(());
        }
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                result.error = Some(format!(
                    "Chromium exited ({:?}) before the page finished",
                    browser.child.try_wait()
                ));
                break Ok(());
            }
        };
        if let Some(msg) = console_message(&line) {
            if msg == "done" {
                result.done = true;
            } else if let Some(reason) = msg.strip_prefix("error") {
                result.error = Some(reason.trim().to_string());
            }
            result.lines.push(msg);
            if result.done || result.error.is_some() {
                break Ok(());
            }
        } else {
            if let Some(bad) = FAKE_CAPTURE_FAILURES.iter().find(|f| line.contains(*f)) {
                result.stderr.push(line.clone());
                break Err(format!(
                    "Chromium's fake capture device refused {} ({bad}); use prepare_wav",
                    wav.display()
                ));
            }
            result.stderr.push(line);
        }
    };
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    result.elapsed = start.elapsed();
    outcome.map(|()| result)
}

/// The message of a `WHIP: ` console line, if `line` is one. Chromium 156 prints
/// `[pid:tid:date:INFO:CONSOLE:LINE] "MESSAGE", source: URL (LINE)`.
fn console_message(line: &str) -> Option<String> {
    if !line.contains(":CONSOLE") {
        return None;
    }
    let start = line.find(&format!("\"{PREFIX}"))? + 1 + PREFIX.len();
    let end = line.rfind("\", source: ").filter(|&e| e >= start)?;
    Some(line[start..end].to_string())
}

/// A fresh directory for one run's files.
pub fn scratch_dir(what: &str) -> Result<PathBuf, String> {
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("browser-{what}-{}-{k}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// The URL of `whip-publish.html` for one publication; `connect_ms` bounds ICE + DTLS
/// (the page's default is 10 s).
/// `dtmf` (may be empty) are keys the page presses with RTCDTMFSender after publishing.
pub fn whip_page_url(
    whip_url: &str,
    token: &str,
    seconds: u32,
    connect_ms: Option<u32>,
    dtmf: &str,
) -> String {
    let mut q = vec![
        ("whip", whip_url.to_string()),
        ("token", token.to_string()),
        ("seconds", seconds.to_string()),
    ];
    if let Some(ms) = connect_ms {
        q.push(("connect_ms", ms.to_string()));
    }
    if !dtmf.is_empty() {
        q.push(("dtmf", dtmf.to_string()));
    }
    page_url("whip-publish.html", &q)
}

/// Publish `wav` from headless Chromium in `ns` to the WHIP endpoint `whip_url` with bearer
/// `token` for `seconds`, then DELETE the session (`whip-publish.html`). The fixture is
/// converted for the fake microphone first; Chromium starts reading it when the page opens
/// the microphone, which it does only once the peer connection is up, so the fixture's start
/// is close to the first RTP packet. `deadline` bounds the whole run.
pub fn publish_with_chromium(
    ns: &Netns,
    whip_url: &str,
    token: &str,
    wav: &Path,
    seconds: u32,
    dtmf: &str,
    deadline: Duration,
) -> Result<ChromiumRun, String> {
    let dir = scratch_dir("whip")?;
    let fixture = prepare_wav(wav, &dir, Duration::from_secs(1))?;
    let url = whip_page_url(whip_url, token, seconds, None, dtmf);
    let run = run_chromium(ns, &url, &fixture, deadline);
    let _ = std::fs::remove_dir_all(&dir);
    run
}
