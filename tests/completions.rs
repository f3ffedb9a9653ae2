//! Shell completions, the manual pages and `--help` come from the same
//! definitions: each names the commands and options the binary takes, and
//! the connection options stand under a heading of their own. No
//! ZooKeeper is needed.

mod common;

use std::process::{Command, Output, Stdio};

use common::{BIN, COMMAND_LIMIT, describe, run_bounded, stdout};

/// `zkmw ARGS...` with no ZooKeeper settings; must exit 0.
fn zkmw(args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).env_remove("ZKMW_ZK");
    let out: Output = run_bounded(cmd, COMMAND_LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "zkmw {args:?}: {}",
        describe(&out)
    );
    stdout(&out)
}

#[test]
fn completions_name_the_commands_and_their_options() {
    for shell in ["bash", "zsh", "fish"] {
        let script = zkmw(&["completions", shell]);
        for word in ["submit", "worker", "config", "drain-timeout", "tls-ca"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let bash = zkmw(&["completions", "bash"]);
    assert!(bash.contains("complete -F _zkmw"), "{}", &bash[..200]);
}

#[test]
fn the_manual_pages_are_generated_for_each_command() {
    let page = zkmw(&["man"]);
    assert!(
        page.starts_with(".ie") && page.contains(".TH zkmw 1"),
        "{}",
        &page[..200]
    );
    for command in ["master", "worker", "submit", "config", "status"] {
        assert!(page.contains(&format!("zkmw\\-{command}(1)")), "{command}");
    }
    assert!(page.contains(".SH CONNECTION"), "no Connection section");
    let worker = zkmw(&["man", "worker"]);
    assert!(worker.contains(".TH zkmw-worker 1"), "{}", &worker[..200]);
    assert!(worker.contains("\\-\\-drain\\-timeout") && worker.contains("\\-\\-zk"));
    let mut cmd = Command::new(BIN);
    cmd.args(["man", "nosuch"]);
    let out = run_bounded(cmd, COMMAND_LIMIT);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
}

/// A command's own options come first; the connection options follow
/// under "Connection:", not interleaved with them.
#[test]
fn help_puts_the_connection_options_under_their_own_heading() {
    let help = zkmw(&["submit", "--help"]);
    let heading = help.find("\nConnection:\n").expect("a Connection heading");
    let (own, connection) = help.split_at(heading);
    for flag in ["--retries", "--max-pending", "--wait"] {
        assert!(
            own.contains(flag) && !connection.contains(flag),
            "{flag}: {help}"
        );
    }
    for flag in ["--zk", "--root", "--auth", "--tls-ca", "--session-timeout"] {
        assert!(
            connection.contains(flag) && !own.contains(flag),
            "{flag}: {help}"
        );
    }
}
