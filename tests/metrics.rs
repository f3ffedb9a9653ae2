//! What a Prometheus scrape shows follows the work: a worker counts its
//! results by outcome and times its jobs, the active master shows the
//! queue, the assigned and the running tasks, and the gauge of the active
//! master flips to the standby when the active one dies.

mod common;

use common::http::{sample, sample_opt, scrape, status_of};
use common::{Namespace, free_port, now_ms, secs, wait_until};
use zkmw::master::plan::window;

const DONE_OK: &str = r#"zkmw_tasks_finished_total{outcome="done",exit_class="0",reason="none"}"#;
const DONE_3: &str =
    r#"zkmw_tasks_finished_total{outcome="done",exit_class="1-125",reason="none"}"#;
const TIMED_OUT: &str =
    r#"zkmw_tasks_finished_total{outcome="failed",exit_class="none",reason="timed_out"}"#;

/// Waits until the scrape of `port` has `series` at `value`; the last
/// scrape.
fn wait_for_sample(port: u16, series: &str, value: f64) -> String {
    let mut last = String::new();
    let ok = wait_until(secs(30), || {
        last = scrape(port);
        sample(&last, series) == value
    });
    assert!(ok, "{series} never reached {value} on port {port}:\n{last}");
    last
}

#[test]
fn metrics_follow_the_tasks_and_the_active_master() {
    let ns = Namespace::new("metrics");
    let (port_a, port_b, port_w) = (free_port(), free_port(), free_port());
    let http = |port: u16| port.to_string();
    let mut master_a = ns.spawn("m-a", &["master", "--id", "m-a", "--http", &http(port_a)]);
    ns.wait_for_master("m-a", secs(15));
    let _master_b = ns.spawn("m-b", &["master", "--id", "m-b", "--http", &http(port_b)]);
    let worker = [
        "worker",
        "--id",
        "w1",
        "--threads",
        "2",
        "--http",
        &http(port_w),
    ];
    let _worker = ns.spawn("w1", &worker);
    ns.wait_for_workers(&["w1"], secs(15));
    assert!(
        wait_until(secs(15), || status_of(port_b, "/readyz") == 200),
        "the standby never got ready"
    );

    // Results by outcome, and the job run time.
    let before = scrape(port_w);
    assert_eq!(sample(&before, DONE_OK), 0.0, "{before}");
    let started_s = now_ms() as f64 / 1000.0;
    for _ in 0..3 {
        ns.submit("true");
    }
    ns.submit("exit 3");
    let out = ns.run(&["submit", "--timeout", "1s", "sleep 30"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    wait_for_sample(port_w, DONE_OK, 3.0);
    wait_for_sample(port_w, DONE_3, 1.0);
    let after = wait_for_sample(port_w, TIMED_OUT, 1.0);
    assert_eq!(
        sample(&after, "zkmw_task_run_seconds_count"),
        5.0,
        "{after}"
    );
    assert!(
        sample(&after, "zkmw_task_run_seconds_sum") >= 1.0,
        "the timed-out job ran a second: {after}"
    );
    let last_success = sample(&after, "zkmw_last_success_timestamp_seconds");
    assert!(
        last_success >= started_s - 1.0,
        "{last_success} vs {started_s}"
    );
    assert_eq!(
        sample(&after, r#"zkmw_transactions_sent_total{kind="claim"}"#),
        5.0
    );
    assert_eq!(sample(&after, "zkmw_worker_threads"), 2.0, "{after}");

    // The active master's gauges: two jobs run, the rest of the worker's
    // window waits on it, four more are queued.
    let active = scrape(port_a);
    assert_eq!(sample(&active, "zkmw_master_active"), 1.0, "{active}");
    assert!(sample(&active, r#"zkmw_transactions_sent_total{kind="assign"}"#) >= 5.0);
    let epoch = sample(&active, "zkmw_master_epoch");
    assert!(epoch >= 1.0, "{active}");
    let standby = scrape(port_b);
    assert_eq!(
        sample_opt(&standby, "zkmw_master_active"),
        Some(0.0),
        "{standby}"
    );
    for _ in 0..2 {
        ns.submit("sleep 60");
    }
    wait_for_sample(port_w, "zkmw_worker_jobs_running", 2.0);
    let waiting = window(2) - 2;
    for _ in 0..waiting + 4 {
        ns.submit("true");
    }
    wait_for_sample(port_a, "zkmw_queue_depth", 4.0);
    let load = wait_for_sample(port_a, "zkmw_tasks_assigned", waiting as f64);
    assert_eq!(sample(&load, "zkmw_tasks_running"), 2.0, "{load}");
    assert_eq!(sample(&load, "zkmw_workers_live"), 1.0, "{load}");

    // Failover: the standby's gauge flips, under a newer epoch.
    master_a.kill9();
    let taken = wait_for_sample(port_b, "zkmw_master_active", 1.0);
    assert!(sample(&taken, "zkmw_master_epoch") > epoch, "{taken}");
    wait_for_sample(port_b, "zkmw_queue_depth", 4.0);
}
