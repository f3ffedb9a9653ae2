//! The master's status page in a real browser (headless Chromium): it
//! lists the masters, the workers, what runs and the recent failures with
//! their reason, keeps job output off with `--http-no-output`, renders at
//! a laptop's and a phone's size; `/api/status` and `/api/tasks` are what
//! `zkmw status --json` and `zkmw tasks --json` print.

mod common;

use std::fs;

use common::http::{get, rendered, screenshot};
use common::{Namespace, free_port, parse_json, scratch_dir, secs, wait_until};
use serde_json::Value;

/// A line only the failing job's stderr has (its command line computes it).
const STDERR_LINE: &str = "disk-full-on-volume-7";
const FAILING_JOB: &str = "echo disk-full-on-volume-$((3 + 4)) >&2; exit 3";

#[test]
fn the_status_page_shows_the_cluster_in_a_browser() {
    let ns = Namespace::new("status-page");
    let (port, quiet_port) = (free_port(), free_port());
    let (p, q) = (port.to_string(), quiet_port.to_string());
    let _m1 = ns.spawn("m1", &["master", "--id", "m1", "--http", &p]);
    ns.wait_for_master("m1", secs(15));
    let _m2 = ns.spawn(
        "m2",
        &["master", "--id", "m2", "--http", &q, "--http-no-output"],
    );
    let _w1 = ns.spawn_worker("w1", 2);
    let _w2 = ns.spawn_worker("w2", 1);
    ns.wait_for_workers(&["w1", "w2"], secs(15));
    let failed = ns.submit(FAILING_JOB);
    let running = ns.submit("sleep 60");
    ns.wait_task_state(&failed, "done", secs(15));
    ns.wait_task_state(&running, "running", secs(15));

    let url = format!("http://127.0.0.1:{port}/");
    let page = rendered(&url);
    for needle in [
        "<b>w1</b>",
        "<b>w2</b>",
        "<b>m1</b>",
        "Standby: m2",
        running.as_str(),
        failed.as_str(),
        "exit 3",
        STDERR_LINE,
        "<svg class=\"chart\"",
    ] {
        assert!(page.contains(needle), "the page shows {needle}:\n{page}");
    }
    assert!(!page.contains("<script"), "the page needs no script");
    let quiet = rendered(&format!("http://127.0.0.1:{quiet_port}/"));
    assert!(
        quiet.contains(failed.as_str()) && quiet.contains("exit 3"),
        "{quiet}"
    );
    assert!(
        !quiet.contains(STDERR_LINE),
        "--http-no-output shows no output: {quiet}"
    );

    let shots = scratch_dir("status-page-shots");
    for (name, width, height) in [("laptop", 1280, 900), ("phone", 390, 844)] {
        let file = shots.join(format!("{name}.png"));
        screenshot(&url, &file, width, height);
        let png = fs::read(&file).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: no screenshot in {} ({} bytes)",
            file.display(),
            png.len()
        );
    }
    let _ = fs::remove_dir_all(&shots);

    // The API serves what the commands print (cached for a second at most).
    for (path, args) in [
        ("/api/status", ["status", "--json"]),
        ("/api/tasks", ["tasks", "--json"]),
    ] {
        let mut last = (Value::Null, Value::Null);
        let same = wait_until(secs(10), || {
            let served = get(port, path).map_or(Value::Null, |(_, body)| {
                serde_json::from_str(&body).unwrap_or(Value::Null)
            });
            last = (served, parse_json(&ns.run(&args), &args.join(" ")));
            last.0 == last.1
        });
        assert!(
            same,
            "{path} differs from zkmw {}: {last:?}",
            args.join(" ")
        );
    }
}
