//! Many tasks through one master and three workers: each runs exactly once
//! and each has its result.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::{Namespace, secs};

const TASKS: usize = 200;
const SUBMITTERS: usize = 8;

#[test]
fn two_hundred_tasks_each_run_exactly_once() {
    let ns = Namespace::new("many-tasks");
    let ledger = ns.ledger();
    let _cluster = ns.spawn_cluster(&["w1", "w2", "w3"], 4);

    // Submit from several threads at once, as several users would.
    let job = ledger.record();
    let ids = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for k in 0..SUBMITTERS {
            let (ns, job, ids) = (&ns, &job, &ids);
            s.spawn(move || {
                for _ in (k..TASKS).step_by(SUBMITTERS) {
                    let id = ns.submit(job);
                    ids.lock().unwrap().push(id);
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        TASKS,
        "every submit should print its own task id"
    );

    ns.wait_finished(TASKS as u64, secs(45));
    ledger.assert_each_exactly_once(&ids);

    // Every task's own status says it is done, exit 0, by one of our workers.
    let workers = ["w1", "w2", "w3"];
    std::thread::scope(|s| {
        for chunk in ids.chunks(TASKS / SUBMITTERS) {
            let ns = &ns;
            s.spawn(move || {
                for id in chunk {
                    let t = ns.task_json(id);
                    assert_eq!(t["state"], "done", "{id}: {t}");
                    assert_eq!(t["exit_code"], 0, "{id}: {t}");
                    assert_eq!(t["attempts"], 1, "{id}: {t}");
                    assert!(
                        t["worker"].as_str().is_some_and(|w| workers.contains(&w)),
                        "{id} should name the worker that ran it: {t}"
                    );
                }
            });
        }
    });
}
