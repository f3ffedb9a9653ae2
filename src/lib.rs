//! zkmw runs shell jobs across machines, coordinated by ZooKeeper: the
//! master-worker pattern, as one synchronous binary with four roles.
//!
//! Map of the crate, from the outside in:
//! - `main.rs` parses the command line and exits with [`app::run`]'s code.
//! - [`cli`]: clap definitions and validation of every value.
//! - [`app`]: builds a role's configuration, runs it, maps errors to exit codes ([`error`]).
//! - Roles, each one control loop over a crossbeam channel:
//!   [`master`] (election + assignment, decisions in [`master::plan`]),
//!   [`worker`] (assignments + thread pool, one task's life in [`worker::job`]),
//!   [`submit`] and [`status`] (short-lived commands).
//! - [`exec`]: running one job (`sh -c`) in its own process group.
//! - [`layout`]: every znode path; [`model`]: every record stored in a znode;
//!   [`locate`]: where one task is, for the commands that take a task id.
//! - [`session`]: opening a role's session; [`shutdown`]: signals as messages.
//! - [`retention`]: which results to delete, for the master and `zkmw purge`.
//! - [`settings`]: the cluster-wide settings (`zkmw config`), followed live.
//! - [`notify`]: telling systemd how a service stands (READY, STATUS, WATCHDOG).
//! - [`backoff`]: the pacing of every retry loop; [`output`]: checked writes to stdout.
//! - [`zk`]: the only module that touches zookeeper-client.

pub mod app;
pub mod backoff;
pub mod cli;
pub mod error;
pub mod exec;
pub mod http;
pub mod layout;
pub mod locate;
pub mod master;
pub mod model;
pub mod notify;
pub mod obs;
pub mod output;
pub mod retention;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod status;
pub mod submit;
pub mod worker;
pub mod zk;
