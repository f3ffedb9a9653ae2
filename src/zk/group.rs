//! Group commit: many steps, each all-or-nothing on its own (one task's
//! assignment, claim or result), sent as few ZooKeeper transactions as
//! possible. ZooKeeper's cost is paid per request and per transaction
//! (a log record, a proposal, a reply), so steps that are ready at the same
//! moment share one, bounded by [`GROUP_BYTES`].
//!
//! A transaction is all-or-nothing too, so one step that fails (an
//! assignment gone, a version moved) would take the others down with it.
//! The server names the first failing operation; [`settle`] maps that index
//! back to its step, which gets the error it would have got alone, and the
//! others go again at once without it. So each step's outcome is the one
//! it would have had as a transaction of its own: the rules that read a
//! step's error by index need not know about grouping.
//!
//! Steps that touch the same node (or one creates or deletes under a node
//! another writes) never share a wave: they go in order, one wave after
//! the other, exactly as if each were sent alone. Everything here is
//! plain data, unit-tested without a server; [`commit`] takes the sending
//! as a function.

use std::collections::HashSet;

use super::{Op, ZkError, txn};

/// Steps share a transaction only up to this many bytes (as estimated by
/// [`txn::request_bytes`]): a quarter of the server's 1 MiB request limit,
/// so a transaction stays quick to log and to answer. A step larger than
/// this goes alone (up to [`super::MAX_REQUEST_BYTES`]).
pub const GROUP_BYTES: usize = 256 * 1024;

/// What the creates of one step named (per operation, the last segment of
/// the node a create made), when the step went through.
pub type Created = Vec<Option<String>>;

/// One transaction of a wave: the shared prefix, then its steps' operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// What is sent.
    pub ops: Vec<Op>,
    /// Which steps it carries, in order.
    parts: Vec<Part>,
}

/// Where one step's operations are in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    /// The step's index in the caller's list.
    step: usize,
    /// Its first operation's index in the transaction.
    start: usize,
    /// How many operations it has.
    len: usize,
}

impl Txn {
    /// The steps it carries, in order.
    pub fn steps(&self) -> Vec<usize> {
        self.parts.iter().map(|p| p.step).collect()
    }

    /// Its operations, moved out for sending (what they were is not needed
    /// to settle its outcome: only where each step's are).
    pub fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }
}

/// The nodes a step writes (`own`) and the folders whose children it
/// changes or needs (`under`): two steps conflict when one writes what
/// the other writes or lists under.
#[derive(Debug, Default)]
struct Footprint<'a> {
    own: HashSet<&'a str>,
    under: HashSet<&'a str>,
}

impl<'a> Footprint<'a> {
    fn of(ops: &'a [Op]) -> Self {
        let mut print = Footprint::default();
        for op in ops {
            match op {
                // A new sequential name touches no existing node.
                Op::CreateSequential { prefix, .. } => {
                    print.under.insert(parent(prefix));
                }
                Op::Create { path, .. }
                | Op::CreateEphemeral { path, .. }
                | Op::Delete { path, .. } => {
                    print.own.insert(path);
                    print.under.insert(parent(path));
                }
                Op::SetData { path, .. } | Op::Check { path, .. } => {
                    print.own.insert(path);
                }
            }
        }
        print
    }

    /// Whether the two conflict (symmetric).
    fn meets(&self, other: &Footprint<'_>) -> bool {
        self.own
            .iter()
            .any(|p| other.own.contains(p) || other.under.contains(p))
            || self.under.iter().any(|p| other.own.contains(p))
    }

    fn add(&mut self, other: Footprint<'a>) {
        self.own.extend(other.own);
        self.under.extend(other.under);
    }
}

/// The folder a node is in.
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => path,
    }
}

/// Packs the steps `todo` (indices into `steps`, in order) into one wave:
/// transactions that each start with `prefix` and carry steps up to
/// `limit` bytes in all (a step too large to share goes alone). The steps
/// of a wave touch disjoint nodes, so its transactions are independent and
/// may be in flight at once. Returns the wave and the steps left for a
/// later one: those that meet a step of this wave or a step left before
/// them (so steps on the same node keep their order).
pub fn wave(
    prefix: &[Op],
    steps: &[Vec<Op>],
    todo: &[usize],
    limit: usize,
) -> (Vec<Txn>, Vec<usize>) {
    let prefix_bytes = txn::request_bytes(prefix);
    let mut txns: Vec<Txn> = Vec::new();
    let mut bytes = 0;
    let mut taken = Footprint::default();
    let mut blocked = Footprint::default();
    let mut later = Vec::new();
    for &step in todo {
        let ops = &steps[step];
        let print = Footprint::of(ops);
        if print.meets(&taken) || print.meets(&blocked) {
            blocked.add(print);
            later.push(step);
            continue;
        }
        taken.add(print);
        let size = txn::request_bytes(ops);
        if txns.is_empty() || bytes + size > limit {
            txns.push(Txn {
                ops: prefix.to_vec(),
                parts: Vec::new(),
            });
            bytes = prefix_bytes;
        }
        let current = txns.last_mut().expect("just pushed");
        current.parts.push(Part {
            step,
            start: current.ops.len(),
            len: ops.len(),
        });
        current.ops.extend(ops.iter().cloned());
        bytes += size;
    }
    (txns, later)
}

/// What a transaction's outcome means for the steps it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Steps with their final outcome, as if each had been sent alone
    /// (after the same prefix): a failing operation's index is the one
    /// it has in that transaction of its own.
    pub decided: Vec<(usize, Result<Created, ZkError>)>,
    /// Steps that were not applied only because another step of the
    /// transaction failed: to send again, without it.
    pub again: Vec<usize>,
}

/// Reads a transaction's outcome (`created`: for each of its operations,
/// the name of the node it created, if any) step by step. A failure inside
/// a step decides that step alone; a failure of the prefix (the master's
/// epoch check), or of the whole request (connection lost, too large),
/// decides every step the same way.
fn settle(txn: &Txn, prefix_len: usize, result: &Result<Created, ZkError>) -> Settled {
    let all = |outcome: &dyn Fn(&Part) -> Result<Created, ZkError>| Settled {
        decided: txn.parts.iter().map(|p| (p.step, outcome(p))).collect(),
        again: Vec::new(),
    };
    let err = match result {
        Ok(created) => {
            return all(&|p| {
                Ok((p.start..p.start + p.len)
                    .map(|i| created.get(i).cloned().flatten())
                    .collect())
            });
        }
        Err(err) => err,
    };
    let (Some(index), cause) = err.txn_cause() else {
        return all(&|_| Err(err.clone()));
    };
    let Some(failed) = txn
        .parts
        .iter()
        .find(|p| p.start <= index && index < p.start + p.len)
    else {
        // In the prefix (or nowhere, if the server is confused): all alike.
        return all(&|_| Err(err.clone()));
    };
    let own = ZkError::TxnFailed {
        index: prefix_len + index - failed.start,
        cause: Box::new(cause.clone()),
    };
    Settled {
        decided: vec![(failed.step, Err(own))],
        again: txn
            .parts
            .iter()
            .filter(|p| p.step != failed.step)
            .map(|p| p.step)
            .collect(),
    }
}

/// Applies every step, each after `prefix` and all-or-nothing, in as few
/// transactions as the rules above allow; returns each step's outcome, in
/// order. `send` sends one wave's transactions (all in flight at once) and
/// answers each one's outcome, in order.
pub fn commit(
    prefix: &[Op],
    steps: &[Vec<Op>],
    limit: usize,
    mut send: impl FnMut(&[Vec<Op>]) -> Vec<Result<Created, ZkError>>,
) -> Vec<Result<Created, ZkError>> {
    let mut outcomes: Vec<Option<Result<Created, ZkError>>> = vec![None; steps.len()];
    let mut todo: Vec<usize> = (0..steps.len()).collect();
    while !todo.is_empty() {
        let (mut txns, later) = wave(prefix, steps, &todo, limit);
        let ops: Vec<Vec<Op>> = txns.iter_mut().map(Txn::take_ops).collect();
        let mut results = send(&ops).into_iter();
        let mut next = later;
        for txn in &txns {
            let result = results
                .next()
                .unwrap_or_else(|| Err(ZkError::Other("no answer for a transaction".into())));
            let settled = settle(txn, prefix.len(), &result);
            for (step, outcome) in settled.decided {
                outcomes[step] = Some(outcome);
            }
            next.extend(settled.again);
        }
        next.sort_unstable();
        todo = next;
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(ZkError::Other("step left unsent".into()))))
        .collect()
}

/// A ZooKeeper in memory for unit tests of the roles' batched writes:
/// nodes with data versions, each transaction applied all-or-nothing and
/// failing at its first failing operation, as the server does.
#[cfg(test)]
pub mod fake {
    use std::collections::BTreeMap;

    use super::{Created, Op, ZkError};

    /// The nodes (path to data version) and every transaction sent.
    #[derive(Debug, Default)]
    pub struct FakeZk {
        /// Each node's data version.
        pub nodes: BTreeMap<String, i32>,
        /// Every transaction sent, in order.
        pub sent: Vec<Vec<Op>>,
        sequence: u32,
    }

    impl FakeZk {
        /// A server holding `paths`, each at version 0.
        pub fn with(paths: &[&str]) -> Self {
            FakeZk {
                nodes: paths.iter().map(|p| (p.to_string(), 0)).collect(),
                ..FakeZk::default()
            }
        }

        /// Whether `path` is there.
        pub fn has(&self, path: &str) -> bool {
            self.nodes.contains_key(path)
        }

        /// Applies each transaction in turn, as `Zk::multi_many_created`.
        pub fn send(&mut self, txns: &[Vec<Op>]) -> Vec<Result<Created, ZkError>> {
            self.sent.extend(txns.iter().cloned());
            txns.iter().map(|ops| self.apply(ops)).collect()
        }

        fn apply(&mut self, ops: &[Op]) -> Result<Created, ZkError> {
            let mut nodes = self.nodes.clone();
            let mut sequence = self.sequence;
            let mut created = Vec::new();
            for (index, op) in ops.iter().enumerate() {
                let failed = |cause| ZkError::TxnFailed {
                    index,
                    cause: Box::new(cause),
                };
                let at =
                    |nodes: &BTreeMap<String, i32>, path: &str, version: Option<i32>| match nodes
                        .get(path)
                    {
                        None => Err(ZkError::NoNode),
                        Some(v) if version.is_some_and(|want| want != *v) => {
                            Err(ZkError::BadVersion)
                        }
                        Some(v) => Ok(*v),
                    };
                let mut name = None;
                match op {
                    Op::Create { path, .. } | Op::CreateEphemeral { path, .. } => {
                        if nodes.contains_key(path) {
                            return Err(failed(ZkError::NodeExists));
                        }
                        nodes.insert(path.clone(), 0);
                        name = path.rsplit('/').next().map(str::to_string);
                    }
                    Op::CreateSequential { prefix, .. } => {
                        let path = format!("{prefix}{sequence:010}");
                        sequence += 1;
                        name = path.rsplit('/').next().map(str::to_string);
                        nodes.insert(path, 0);
                    }
                    Op::Delete { path, version } => {
                        at(&nodes, path, *version).map_err(failed)?;
                        nodes.remove(path);
                    }
                    Op::SetData { path, version, .. } => {
                        let v = at(&nodes, path, *version).map_err(failed)?;
                        nodes.insert(path.clone(), v + 1);
                    }
                    Op::Check { path, version } => {
                        at(&nodes, path, Some(*version)).map_err(failed)?;
                    }
                }
                created.push(name);
            }
            self.nodes = nodes;
            self.sequence = sequence;
            Ok(created)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeZk;
    use super::*;

    fn create(path: &str) -> Op {
        Op::Create {
            path: path.into(),
            data: Vec::new(),
        }
    }

    fn delete(path: &str) -> Op {
        Op::Delete {
            path: path.into(),
            version: Some(0),
        }
    }

    fn fence() -> Op {
        Op::Check {
            path: "/r/epoch".into(),
            version: 3,
        }
    }

    /// An assignment of task `n`: create it under w, delete it from /tasks.
    fn assign(n: u32) -> Vec<Op> {
        vec![
            create(&format!("/r/assign/w/t{n}")),
            delete(&format!("/r/tasks/t{n}")),
        ]
    }

    fn failed_at(index: usize, cause: ZkError) -> ZkError {
        ZkError::TxnFailed {
            index,
            cause: Box::new(cause),
        }
    }

    /// A server with the epoch at version 3 and pending tasks `tasks`.
    fn server(tasks: &[u32]) -> FakeZk {
        let mut zk = FakeZk::with(&[]);
        zk.nodes.insert("/r/epoch".into(), 3);
        for n in tasks {
            zk.nodes.insert(format!("/r/tasks/t{n}"), 0);
        }
        zk
    }

    #[test]
    fn steps_ready_together_share_one_fenced_transaction() {
        let steps: Vec<Vec<Op>> = (1..=5).map(assign).collect();
        let mut server = server(&[1, 2, 3, 4, 5]);
        let got = commit(&[fence()], &steps, GROUP_BYTES, |t| server.send(t));
        assert!(got.iter().all(Result::is_ok), "{got:?}");
        assert!(server.has("/r/assign/w/t5") && !server.has("/r/tasks/t5"));
        assert_eq!(server.sent.len(), 1, "one transaction");
        assert_eq!(server.sent[0].len(), 1 + 5 * 2);
        assert_eq!(server.sent[0][0], fence(), "one epoch check, first");
        assert_eq!(
            server.sent[0].iter().filter(|op| **op == fence()).count(),
            1
        );
    }

    /// The rule that makes grouping safe: a failing step is found by the
    /// error's index, gets the error it would have got alone, and every
    /// other step goes again without it and goes through.
    #[test]
    fn a_failing_step_is_found_by_index_and_the_rest_go_again() {
        let steps: Vec<Vec<Op>> = (1..=5).map(assign).collect();
        // Task 3's pending node is gone (cancelled under the master).
        let mut server = server(&[1, 2, 4, 5]);
        let got = commit(&[fence()], &steps, GROUP_BYTES, |t| server.send(t));
        for (i, outcome) in got.iter().enumerate() {
            if i == 2 {
                // Operation 2 of its own [check, create, delete].
                assert_eq!(outcome, &Err(failed_at(2, ZkError::NoNode)));
            } else {
                assert!(outcome.is_ok(), "step {i}: {outcome:?}");
            }
        }
        assert_eq!(server.sent.len(), 2, "once with it, once without");
        for n in [1, 2, 4, 5] {
            assert!(server.has(&format!("/r/assign/w/t{n}")), "task {n}");
        }
        assert_eq!(server.sent[1].len(), 1 + 4 * 2);
        assert_eq!(server.sent[1][0], fence(), "the retry is fenced too");
    }

    #[test]
    fn every_failing_step_is_found_in_turn() {
        let steps: Vec<Vec<Op>> = (1..=6).map(assign).collect();
        // Task 2 and 6 gone; task 5 assigned already (a stray node).
        let mut server = server(&[1, 3, 4, 5]);
        server.nodes.insert("/r/assign/w/t5".into(), 0);
        let got = commit(&[fence()], &steps, GROUP_BYTES, |t| server.send(t));
        let ok: Vec<bool> = got.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, true, false, false]);
        assert_eq!(got[4], Err(failed_at(1, ZkError::NodeExists)));
        assert_eq!(server.sent.len(), 4);
    }

    #[test]
    fn a_failed_fence_or_a_lost_request_decides_every_step_alike() {
        let steps: Vec<Vec<Op>> = (1..=3).map(assign).collect();
        let mut server = server(&[1, 2, 3]);
        server.nodes.insert("/r/epoch".into(), 4);
        let got = commit(&[fence()], &steps, GROUP_BYTES, |t| server.send(t));
        assert_eq!(got, vec![Err(failed_at(0, ZkError::BadVersion)); 3]);
        assert_eq!(server.sent.len(), 1, "not sent again");
        assert!(!server.has("/r/assign/w/t1"));
        let got = commit(&[fence()], &steps, GROUP_BYTES, |t| {
            vec![Err(ZkError::ConnectionLoss); t.len()]
        });
        assert_eq!(got, vec![Err(ZkError::ConnectionLoss); 3]);
    }

    #[test]
    fn steps_on_the_same_node_go_in_order_in_separate_waves() {
        // A finish releasing lock L, then a claim taking it: the claim
        // waits a wave; a step on other nodes goes at once; one on the
        // claim's node waits behind the claim.
        let steps = vec![
            vec![delete("/r/locks/L"), delete("/r/running/t1")],
            vec![create("/r/locks/L"), create("/r/running/t2")],
            vec![create("/r/running/t3")],
            vec![delete("/r/running/t2")],
        ];
        let (first, later) = wave(&[], &steps, &[0, 1, 2, 3], GROUP_BYTES);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].steps(), [0, 2]);
        assert_eq!(later, [1, 3]);
        let (second, later) = wave(&[], &steps, &later, GROUP_BYTES);
        assert_eq!(second[0].steps(), [1]);
        assert_eq!(later, [3]);
    }

    #[test]
    fn a_create_under_a_folder_waits_for_the_folders_removal() {
        let steps = vec![vec![delete("/r/assign/w")], vec![create("/r/assign/w/t1")]];
        let (first, later) = wave(&[], &steps, &[0, 1], GROUP_BYTES);
        assert_eq!(first[0].steps(), [0]);
        assert_eq!(later, [1]);
        // Two creates in one folder do not conflict.
        let steps = vec![
            vec![create("/r/assign/w/t1")],
            vec![create("/r/assign/w/t2")],
            vec![Op::CreateSequential {
                prefix: "/r/tasks/task-".into(),
                data: Vec::new(),
            }],
            vec![Op::CreateSequential {
                prefix: "/r/tasks/task-".into(),
                data: Vec::new(),
            }],
        ];
        let (first, later) = wave(&[], &steps, &[0, 1, 2, 3], GROUP_BYTES);
        assert_eq!(first.len(), 1);
        assert!(later.is_empty());
    }

    #[test]
    fn transactions_stay_within_the_bound_and_a_large_step_goes_alone() {
        let big = |n: u32, bytes: usize| {
            vec![Op::Create {
                path: format!("/r/status/t{n}"),
                data: vec![b'x'; bytes],
            }]
        };
        let steps = vec![
            big(1, 100),
            big(2, 600),
            big(3, 100),
            big(4, 2000),
            big(5, 100),
        ];
        let (txns, later) = wave(&[fence()], &steps, &[0, 1, 2, 3, 4], 1000);
        assert!(later.is_empty());
        let packed: Vec<Vec<usize>> = txns.iter().map(Txn::steps).collect();
        assert_eq!(packed, [vec![0, 1], vec![2], vec![3], vec![4]]);
        for t in &txns[..2] {
            assert!(txn::request_bytes(&t.ops) <= 1000);
            assert_eq!(t.ops[0], fence());
        }
    }

    #[test]
    fn created_names_go_to_their_steps() {
        let seq = || Op::CreateSequential {
            prefix: "/r/tasks/task-".into(),
            data: Vec::new(),
        };
        let steps = vec![vec![seq()], vec![seq()], vec![seq()]];
        let mut server = FakeZk::default();
        let got = commit(&[], &steps, GROUP_BYTES, |t| server.send(t));
        let names: Vec<Created> = got.into_iter().map(Result::unwrap).collect();
        let name = |n: u32| vec![Some(format!("task-{n:010}"))];
        assert_eq!(names, [name(0), name(1), name(2)]);
        assert_eq!(server.sent.len(), 1);
    }
}
