//! What a job leaves behind: huge output is cut at the cap and marked,
//! bytes that are not UTF-8 come back as U+FFFD, a worker whose shell is
//! missing does not start, one whose jobs stop starting pauses, and no
//! job process is left as a zombie of the worker.

mod common;

use common::{Namespace, describe, secs, stderr, stdout, wait_until};

#[test]
fn huge_output_is_capped_and_marked() {
    let ns = Namespace::new("job-output-huge");
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn("w1", &["worker", "--id", "w1", "--output-cap", "1000"]);
    ns.wait_for_workers(&["w1"], secs(15));

    // 5 MB on stdout, a little on stderr.
    let out = ns.submit_wait(&["head -c 5000000 /dev/zero | tr '\\0' x; echo small >&2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "x".repeat(1000),
        "stdout should be cut at the cap"
    );
    assert!(stderr(&out).starts_with("small\n"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("cut at"),
        "the cut should be said: {}",
        describe(&out)
    );
    let zk = ns.connect();
    let task = ns
        .children(&zk, &ns.layout().status())
        .pop()
        .expect("one result");
    let t = ns.task_json(&task);
    assert_eq!(t["stdout_truncated"], true, "{t}");
    assert_eq!(t["stderr_truncated"], false, "{t}");
}

/// 400,000 control bytes grow sixfold in JSON, past ZooKeeper's 1 MiB:
/// the result is cut to fit (marked truncated) instead of jamming the
/// worker, which serves the next task.
#[test]
fn output_too_large_once_encoded_is_cut_to_fit_and_the_worker_goes_on() {
    let ns = Namespace::new("job-output-encoded");
    let _master = ns.spawn_master("m1");
    let worker = ns.spawn("w1", &["worker", "--id", "w1", "--output-cap", "400000"]);
    ns.wait_for_workers(&["w1"], secs(15));
    let out = ns.submit_wait(&["head -c 400000 /dev/zero | tr '\\0' '\\001'"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let kept = out.stdout.len();
    assert!(kept > 100_000 && kept < 400_000, "kept {kept} bytes");
    assert!(out.stdout.iter().all(|b| *b == 1), "only the job's bytes");
    assert!(stderr(&out).contains("cut"), "{}", describe(&out));
    let out = ns.submit_wait(&["echo next"]);
    assert_eq!(stdout(&out), "next\n", "{}", describe(&out));
    assert!(worker.log().contains("cut to fit"), "{}", worker.log());
}

#[test]
fn output_that_is_not_utf8_comes_back_replaced() {
    let ns = Namespace::new("job-output-bytes");
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn_worker("w1", 1);
    ns.wait_for_workers(&["w1"], secs(15));
    let out = ns.submit_wait(&["printf 'a\\377b'"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\u{FFFD}b");
}

#[test]
fn worker_whose_shell_is_missing_is_refused_at_start() {
    let ns = Namespace::new("job-output-noshell");
    let out = ns.run(&["worker", "--id", "w1", "--shell", "/nonexistent/sh"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("zkmw: ") && err.contains("/nonexistent/sh") && err.lines().count() == 1,
        "{}",
        describe(&out)
    );
    assert!(ns.status_json()["workers"].as_array().unwrap().is_empty());
}

/// A worker whose jobs stop starting (its shell deleted under it) fails
/// a few, then takes no work for a while: the rest of the queue runs on the
/// other worker instead of failing on this one.
#[test]
fn worker_whose_jobs_cannot_start_pauses_and_the_queue_runs_elsewhere() {
    let ns = Namespace::new("job-output-pause");
    let shell = ns.dir.join("vanishing-sh");
    std::fs::write(&shell, "#!/bin/sh\nexec /bin/sh \"$@\"\n").unwrap();
    std::fs::set_permissions(&shell, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _master = ns.spawn_master("m1");
    let shell_arg = shell.to_string_lossy().into_owned();
    let mut broken = ns.spawn(
        "w1",
        &[
            "worker",
            "--id",
            "w1",
            "--threads",
            "1",
            "--shell",
            &shell_arg,
        ],
    );
    ns.wait_for_workers(&["w1"], secs(15));
    std::fs::remove_file(&shell).unwrap();
    // The queue goes to w1 alone until it pauses, then to w2 (with both
    // live from the start, w2 could take all but two, and w1 never pause).
    let ids: Vec<String> = (0..20).map(|i| ns.submit(&format!("echo {i}"))).collect();
    let zk = ns.connect();
    let away = format!("{}/away/w1", ns.root);
    let paused = wait_until(secs(30), || zk.get(&away).is_ok_and(|a| a.is_some()));
    assert!(paused, "w1 never paused:\n{}", broken.log());
    let _good = ns.spawn_worker("w2", 2);
    ns.wait_finished(ids.len() as u64, secs(60));
    let mut could_not_start = 0;
    for id in &ids {
        let t = ns.task_json(id);
        if t["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("could not start"))
        {
            assert_eq!(t["worker"], "w1", "{t}");
            could_not_start += 1;
        } else {
            assert_eq!(
                (t["exit_code"].as_i64(), t["worker"].as_str()),
                (Some(0), Some("w2")),
                "{t}"
            );
        }
    }
    // Three in a row pause it; its one thread may have claimed one more.
    assert!(
        (3..=4).contains(&could_not_start),
        "{could_not_start} failed on w1"
    );
    assert!(broken.is_running(), "the paused worker keeps running");
    let away = zk.get(&away).unwrap();
    let away = String::from_utf8_lossy(&away.expect("w1 is away").0).into_owned();
    assert!(away.contains("paused"), "{away}");
}

#[test]
fn finished_jobs_leave_no_zombie() {
    let ns = Namespace::new("job-output-zombies");
    let _master = ns.spawn_master("m1");
    let worker = ns.spawn_worker("w1", 4);
    ns.wait_for_workers(&["w1"], secs(15));
    for i in 0..10 {
        let out = ns.submit_wait(&[&format!("echo {i} & true")]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    // Children of every thread of the worker (jobs start on pool threads).
    let zombies = || {
        let threads = std::fs::read_dir(format!("/proc/{}/task", worker.pid()));
        let children: Vec<String> = threads
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|t| {
                let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                list.split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        children
            .iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                })
            })
            .count()
    };
    assert!(
        wait_until(secs(5), || zombies() == 0),
        "the worker has {} zombie children",
        zombies()
    );
}
