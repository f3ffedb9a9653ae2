//! The search behind "submit is exact": after a create whose outcome is
//! unknown, `submit` looks for its task by token before it creates it
//! again. Tasks move while it looks (assigned, moved between workers,
//! requeued, finished); a search that misses a moving task makes the
//! submit store it a second time.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use common::{Background, Namespace};
use zkmw::model::{self, Task};
use zkmw::submit::find_by_tokens;
use zkmw::zk::Op;

/// A mover keeps one task going round `/tasks` → `/assign/w1` →
/// `/assign/w2` → `/tasks` (each step one transaction, as the master makes
/// them) while the search runs again and again: every search finds it.
#[test]
fn a_task_that_moves_during_the_search_for_its_token_is_found_every_time() {
    let ns = Namespace::new("exact-search");
    let layout = ns.layout();
    let zk = ns.connect_prepared();
    for worker in ["w1", "w2"] {
        zk.ensure(&layout.assign_dir(worker))
            .expect("assign folder");
    }
    let task = Task {
        job: "true".into(),
        token: "the-token".into(),
        ..Task::default()
    };
    let data = model::encode(&task);
    let name = zk
        .create_sequential_many(&layout.task_prefix(), std::slice::from_ref(&data))
        .remove(0)
        .expect("task");
    let places = [
        layout.task(&name),
        layout.assignment("w1", &name),
        layout.assignment("w2", &name),
    ];
    let mover = {
        let (places, data) = (places.clone(), data.clone());
        let zk = ns.connect();
        Background::spawn(move |stop| {
            let mut moves = 0u64;
            for at in (0..places.len()).cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let to = &places[(at + 1) % places.len()];
                zk.multi(&[
                    Op::Delete {
                        path: places[at].clone(),
                        version: None,
                    },
                    Op::Create {
                        path: to.clone(),
                        data: data.clone(),
                    },
                ])
                .expect("move");
                moves += 1;
            }
            moves
        })
    };
    let tokens = HashMap::from([("the-token", 0usize)]);
    let mut missed = 0;
    let searches = 300;
    for _ in 0..searches {
        match find_by_tokens(&zk, &layout, &tokens, 0) {
            Ok(found) if found.get(&0) == Some(&name) => {}
            Ok(_) => missed += 1,
            Err(err) => panic!("search failed: {err}"),
        }
    }
    let moves = mover.stop().expect("mover");
    assert!(moves > 100, "the task moved only {moves} times");
    assert_eq!(
        missed, 0,
        "{missed} of {searches} searches missed a task moved {moves} times"
    );
}
