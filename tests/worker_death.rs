//! A worker killed with SIGKILL takes its jobs' shells with it: the run is
//! re-run elsewhere, and the interrupted one must not go on beside it.

mod common;

use common::{Namespace, pid_alive, secs, wait_until};

#[test]
fn job_shell_dies_with_a_killed_worker() {
    let ns = Namespace::new("worker-death");
    let _master = ns.spawn_master("m1");
    let mut worker = ns.spawn_worker("w1", 1);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));

    let pidfile = std::env::temp_dir().join(format!("zkmw-worker-death-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    ns.submit(&format!("echo $$ > {}; sleep 60", pidfile.display()));
    assert!(
        wait_until(secs(15), || std::fs::read_to_string(&pidfile)
            .is_ok_and(|s| s.ends_with('\n'))),
        "the job never started"
    );
    let shell: i32 = std::fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        shell > 0 && pid_alive(shell),
        "the job's shell {shell} should be running"
    );

    worker.kill9();
    assert!(
        wait_until(secs(5), || !pid_alive(shell)),
        "the job's shell {shell} outlived its SIGKILLed worker"
    );
    let _ = std::fs::remove_file(&pidfile);
}
