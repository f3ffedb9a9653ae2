//! Retention at scale: `zkmw purge` (and the master's retention, which
//! runs the same code) deletes results in grouped transactions, each with
//! its unique key, instead of one transaction per result.
//!
//! Alone in its test binary: it counts the server's transactions (the
//! zxid), which no other test of this run moves meanwhile.

mod common;

use common::ensemble::four_letter_word;
use common::{Namespace, describe, stdout};
use zkmw::layout::task_name;
use zkmw::model::{self, FailReason, TaskResult};

const RESULTS: i64 = 300;

/// The server's last zxid (its low 32 bits count transactions).
fn zxid(hosts: &str) -> u64 {
    let port: u16 = hosts
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let srvr = four_letter_word(port, "srvr");
    let line = srvr
        .lines()
        .find_map(|l| l.strip_prefix("Zxid: "))
        .unwrap_or_else(|| panic!("no zxid in: {srvr}"));
    u64::from_str_radix(line.trim().trim_start_matches("0x"), 16).expect("hex zxid") & 0xFFFF_FFFF
}

#[test]
fn purge_deletes_many_results_and_their_keys_in_a_few_transactions() {
    let ns = Namespace::new("retention-grouped");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    // 300 results, every tenth with a unique key that goes with it.
    for seq in 1..=RESULTS {
        let name = task_name(seq);
        let mut result = TaskResult::failed(None, FailReason::Malformed, Some("w1"), 0);
        if seq % 10 == 0 {
            let key = format!("nightly-{seq}");
            zk.create(&layout.unique_key(&key), name.as_bytes())
                .expect("a key");
            result.unique = Some(key);
        }
        zk.create(&layout.status_task(&name), &model::encode(&result))
            .expect("a result");
    }
    let before = zxid(ns.hosts());
    let out = ns.run(&["purge", "--keep", "0"]);
    let after = zxid(ns.hosts());
    assert_eq!(
        stdout(&out).trim(),
        RESULTS.to_string(),
        "{}",
        describe(&out)
    );
    assert!(
        ns.children(&zk, &layout.status()).is_empty(),
        "every result is gone"
    );
    assert!(
        ns.children(&zk, &layout.unique()).is_empty(),
        "every key went with its result"
    );
    // The session's start and end, the purge mark, and the deletions: a
    // transaction per result would be over 300.
    let txns = after - before;
    assert!(txns <= 10, "{txns} transactions for {RESULTS} results");
}
