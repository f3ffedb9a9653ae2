//! The tests' side of zkmw's HTTP endpoint: a plain GET, the value of one
//! metric in a scrape, and a headless Chromium to load the status page as
//! a browser does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{describe, run_bounded, scratch_dir};

/// `GET path` from `127.0.0.1:port`: the status code and the body; `None`
/// when nothing answers (within 10 s).
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The status code of `GET path`, 0 when nothing answers.
pub fn status_of(port: u16, path: &str) -> u16 {
    get(port, path).map_or(0, |(status, _)| status)
}

/// A scrape of `/metrics`; it must answer 200.
pub fn scrape(port: u16) -> String {
    match get(port, "/metrics") {
        Some((200, body)) => body,
        other => panic!("GET /metrics on port {port}: {other:?}"),
    }
}

/// The value of the sample `series` (a name with its labels, exactly as
/// the text writes them) in a scrape; 0 when absent (a counter never
/// incremented has no sample).
pub fn sample(scrape: &str, series: &str) -> f64 {
    sample_opt(scrape, series).unwrap_or(0.0)
}

/// The value of the sample `series` in a scrape, `None` when absent (for
/// a gauge that must be there, at whatever value).
pub fn sample_opt(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

/// The browser: Debian's `chromium`. A machine without it fails the test
/// that needs it, saying how to install it (CI does, in `.ci/run`).
fn chromium() -> PathBuf {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: this test loads the status page in a real browser; \
             install it with `DEBIAN_FRONTEND=noninteractive apt-get install -y chromium` \
             (.ci/run does)"
        )
    })
}

/// Headless Chromium with a fresh profile, ready for one more argument and
/// the URL; the profile folder is removed when the returned value drops.
fn browser(args: &[String]) -> (Command, Profile) {
    let profile = Profile(scratch_dir("chromium"));
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()))
    .args(args);
    (cmd, profile)
}

/// A browser profile folder, removed on drop.
struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs Chromium with `args` on `url`; its stdout.
fn run_browser(args: &[String], url: &str) -> String {
    let (mut cmd, _profile) = browser(args);
    cmd.arg(url);
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The document Chromium renders for `url`.
pub fn rendered(url: &str) -> String {
    run_browser(&["--dump-dom".into()], url)
}

/// Chromium's screenshot of `url` in a window of `width` × `height`, as
/// `file`.
pub fn screenshot(url: &str, file: &Path, width: u32, height: u32) {
    let args = [
        format!("--screenshot={}", file.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".into(),
    ];
    run_browser(&args, url);
}
