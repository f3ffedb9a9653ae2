//! From parsed command line to a running role and an exit code: builds each
//! role's configuration, wires signals into its channel, and turns its error
//! into the documented exit code and a one-line message.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::CommandFactory;
use log::info;

use crate::cli::{
    self, CancelArgs, Cli, Command, GlobalArgs, MasterArgs, Parsed, ProgressArgs, PurgeArgs,
    StatusArgs, SubmitArgs, TasksArgs, WaitArgs, WorkerArgs,
};
use crate::error::Error;
use crate::layout::Layout;
use crate::obs::metrics::Role;
use crate::obs::{self, Obs};
use crate::settings::{self, Given, Key, Source, Value};
use crate::zk::{ConnectOptions, TlsFiles, ZkError};
use crate::{
    exec, http, master, model, output, retention, session, shutdown, status, submit, worker,
};

/// Runs the command and returns the process exit code.
pub fn run(parsed: &Parsed) -> i32 {
    let (global, env) = (&parsed.cli.global, &parsed.from_env);
    let outcome = match &parsed.cli.command {
        Command::Master(args) => run_master(global, args, env).map(|()| 0),
        Command::Worker(args) => run_worker(global, args, env).map(|()| 0),
        Command::Submit(args) => run_submit(global, args, env),
        Command::Wait(args) => run_wait(global, args),
        Command::Progress(args) => report_progress(args).map(|()| 0),
        Command::Cancel(args) => run_cancel(global, args),
        Command::Tasks(args) => run_tasks(global, args).map(|()| 0),
        Command::Status(args) => run_status(global, args).map(|()| 0),
        Command::Purge(args) => run_purge(global, args).map(|()| 0),
        Command::Config(args) => connect_options(global, false)
            .and_then(|connect| {
                settings::run_command(&connect, &Layout::new(&global.root), &args.action)
            })
            .map(|()| 0),
        Command::Completions(args) => completions(&args.shell).map(|()| 0),
        Command::Man(args) => manual(args.command.as_deref()).map(|()| 0),
    };
    outcome.unwrap_or_else(|err| {
        let err = match err {
            Error::Zk {
                err: ZkError::NoAuth,
                ..
            } => Error::NotAuthorized(global.root.clone()),
            other => other,
        };
        eprintln!("zkmw: {err}");
        err.exit_code()
    })
}

/// Connection settings; services retry forever, commands give up in time.
fn connect_options(global: &GlobalArgs, service: bool) -> Result<ConnectOptions, Error> {
    let auth = match (&global.auth, &global.auth_file) {
        (Some(auth), _) => Some(auth.clone()),
        (None, Some(path)) => Some(cli::read_auth_file(path).map_err(Error::BadInput)?),
        (None, None) => None,
    };
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .map_err(|err| Error::BadInput(format!("cannot read {what} {}: {err}", path.display())))
    };
    let tls = match &global.tls_ca {
        None => None,
        Some(ca) => Some(TlsFiles {
            ca: read(ca, "--tls-ca")?,
            identity: match (&global.tls_cert, &global.tls_key) {
                (Some(cert), Some(key)) => {
                    Some((read(cert, "--tls-cert")?, read(key, "--tls-key")?))
                }
                _ => None,
            },
        }),
    };
    Ok(ConnectOptions {
        hosts: global.zk.clone(),
        session_timeout: global.session_timeout,
        call_timeout: global
            .session_timeout
            .max(std::time::Duration::from_secs(2)),
        connect_timeout: (!service).then_some(global.connect_timeout),
        service,
        auth,
        tls,
    })
}

fn run_master(global: &GlobalArgs, args: &MasterArgs, env: &[Key]) -> Result<(), Error> {
    let connect = connect_options(global, true)?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", session::host_name(), std::process::id()));
    let obs = Obs::new(Role::Master, args.tick, connect.call_timeout);
    obs::log::set_process(Role::Master.name(), &id);
    let layout = Layout::new(&global.root);
    if let Some(addr) = args.http.addr {
        let endpoint =
            http::Endpoint::master(obs.clone(), &id, layout.clone(), args.http.http_no_output);
        serve_http(addr, endpoint, &format!("master {id}"))?;
    }
    let cfg = master::MasterConfig {
        connect,
        layout,
        id,
        tick: args.tick,
        given: given(
            env,
            &[
                (Key::ResultTtl, args.result_ttl.map(Value::Duration)),
                (
                    Key::KeepResults,
                    args.keep_results.map(|n| Value::Count(n as u64)),
                ),
            ],
        ),
        obs,
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    shutdown::forward_signals(tx.clone());
    master::run(&cfg, &tx, &rx)
}

/// Starts the HTTP endpoint (a port it cannot listen on is bad input:
/// nothing else starts) and says where it is.
fn serve_http(addr: SocketAddr, endpoint: http::Endpoint, who: &str) -> Result<(), Error> {
    let bound = http::start(addr, endpoint).map_err(Error::BadInput)?;
    info!("{who}: HTTP endpoint at http://{bound}/ (metrics, healthz, readyz)");
    Ok(())
}

fn run_worker(global: &GlobalArgs, args: &WorkerArgs, env: &[Key]) -> Result<(), Error> {
    let connect = connect_options(global, true)?;
    let obs = Obs::new(Role::Worker, args.tick, connect.call_timeout);
    obs::log::set_process(Role::Worker.name(), &args.id);
    if let Some(addr) = args.http.addr {
        let endpoint = http::Endpoint::worker(obs.clone(), &args.id);
        serve_http(addr, endpoint, &format!("worker {}", args.id))?;
    }
    let cfg = worker::WorkerConfig {
        connect,
        layout: Layout::new(&global.root),
        id: args.id.clone(),
        threads: usize::from(args.threads),
        tick: args.tick,
        given: given(
            env,
            &[
                (
                    Key::OutputCap,
                    args.output_cap.map(|n| Value::Count(n.into())),
                ),
                (Key::DrainTimeout, args.drain_timeout.map(Value::Duration)),
            ],
        ),
        shell: PathBuf::from(&args.shell),
        labels: args.labels.clone(),
        obs,
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    shutdown::forward_signals(tx.clone());
    worker::run(&cfg, &tx, &rx)
}

fn run_submit(global: &GlobalArgs, args: &SubmitArgs, env: &[Key]) -> Result<i32, Error> {
    let cfg = submit::SubmitConfig {
        connect: connect_options(global, false)?,
        layout: Layout::new(&global.root),
        job: args.job.clone(),
        wait: args.wait,
        wait_timeout: args.wait_timeout,
        timeout: None,
        retries: 0,
        max_pending: 0,
        given: given(
            env,
            &[
                (Key::Timeout, args.timeout.map(Value::Duration)),
                (Key::Retries, args.retries.map(|n| Value::Count(n.into()))),
                (
                    Key::MaxPending,
                    args.max_pending.map(|n| Value::Count(n as u64)),
                ),
            ],
        ),
        options: submit::TaskOptions {
            lock: args.lock.clone(),
            skip_if_locked: args.skip_if_locked,
            unique: args.unique.clone(),
            retry_failed: args.retry_failed,
            retry_delay: args.retry_delay,
            on: args.on.clone(),
        },
    };
    submit::run(&cfg.settled(&settings::Values::new()))
}

/// The settings a role was given by its flags or environment (`env`: the
/// keys whose value is their environment variable's), each with where it
/// came from.
fn given(env: &[Key], values: &[(Key, Option<Value>)]) -> Given {
    let source = |key: &Key| {
        if env.contains(key) {
            Source::Env
        } else {
            Source::Flag
        }
    };
    values
        .iter()
        .filter_map(|(key, value)| value.map(|v| (*key, (v, source(key)))))
        .collect()
}

/// `zkmw completions SHELL`: the completion script, from the definitions
/// `--help` shows.
fn completions(shell: &str) -> Result<(), Error> {
    let shell = match shell {
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        _ => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "zkmw", &mut script);
    output::write(&script, None)
}

/// `zkmw man [COMMAND]`: zkmw(1), or zkmw-COMMAND(1), in roff, from the
/// same definitions as `--help`.
fn manual(command: Option<&str>) -> Result<(), Error> {
    let mut root = Cli::command();
    // Built, so that each command's page lists the connection options too.
    root.build();
    let man = match command {
        None => clap_mangen::Man::new(root),
        Some(name) => {
            let names: Vec<&str> = root
                .get_subcommands()
                .map(|c| c.get_name())
                .filter(|n| *n != "help")
                .collect();
            let sub = root.find_subcommand(name).filter(|_| name != "help");
            let sub = sub.ok_or_else(|| {
                Error::BadInput(format!("no command '{name}': one of {}", names.join(", ")))
            })?;
            let sub = sub
                .clone()
                .bin_name(format!("zkmw {name}"))
                .version(env!("CARGO_PKG_VERSION"));
            clap_mangen::Man::new(sub).title(format!("zkmw-{name}"))
        }
    };
    let mut page = Vec::new();
    man.render(&mut page)
        .map_err(|err| Error::BadInput(format!("rendering the manual page: {err}")))?;
    output::write(&page, None)
}

/// `zkmw progress`: one line into the job's progress channel, whose
/// descriptor `ZKMW_PROGRESS` names (the worker reads the other end).
fn report_progress(args: &ProgressArgs) -> Result<(), Error> {
    let report = exec::Progress {
        percent: exec::Progress::parse(&args.percent)
            .map_err(Error::BadInput)?
            .percent,
        message: args.message.join(" "),
    };
    if report.message.len() > exec::MAX_MESSAGE {
        return Err(Error::BadInput(format!(
            "the message is {} bytes; it can be at most {}",
            report.message.len(),
            exec::MAX_MESSAGE
        )));
    }
    let outside = || {
        Error::BadInput(
            "not inside a zkmw job: ZKMW_PROGRESS does not name its progress channel (zkmw progress reports a running job's progress)".into(),
        )
    };
    let fd: u32 = std::env::var("ZKMW_PROGRESS")
        .ok()
        .and_then(|fd| fd.parse().ok())
        .ok_or_else(outside)?;
    // Opened anew through /proc: the same pipe, without trusting the number.
    let path = format!("/proc/self/fd/{fd}");
    let is_pipe = std::fs::metadata(&path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
    if !is_pipe {
        return Err(outside());
    }
    let mut channel = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|_| outside())?;
    std::io::Write::write_all(&mut channel, report.line().as_bytes())
        .map_err(|err| Error::BadInput(format!("writing to the progress channel: {err}")))
}

fn run_cancel(global: &GlobalArgs, args: &CancelArgs) -> Result<i32, Error> {
    let connect = connect_options(global, false)?;
    let layout = Layout::new(&global.root);
    submit::cancel_tasks(
        &connect,
        &layout,
        &args.tasks,
        args.grace,
        args.wait_timeout,
        args.wait,
    )
}

fn run_wait(global: &GlobalArgs, args: &WaitArgs) -> Result<i32, Error> {
    let connect = connect_options(global, false)?;
    submit::wait_for(
        &connect,
        &Layout::new(&global.root),
        &args.task,
        args.wait_timeout,
    )
}

fn run_status(global: &GlobalArgs, args: &StatusArgs) -> Result<(), Error> {
    let layout = Layout::new(&global.root);
    if args.watch && output::terminal_width().is_none() {
        return Err(Error::BadInput(
            "status --watch redraws a terminal, and stdout is not one: use status --json in scripts".into(),
        ));
    }
    let zk = session::connect(&connect_options(global, false)?)?;
    let shown = if args.watch {
        let (tx, rx) = crossbeam_channel::unbounded();
        shutdown::forward_signals(tx);
        status::watch(&zk, &layout, args.interval, &rx).map(|()| String::new())
    } else {
        status_once(&zk, &layout, args)
    };
    zk.close(session::CLOSE_WAIT);
    output::write(shown?.as_bytes(), None)
}

/// One look at the cluster or a task, as JSON or for people.
fn status_once(zk: &crate::zk::Zk, layout: &Layout, args: &StatusArgs) -> Result<String, Error> {
    let now = model::now_ms();
    Ok(match &args.task {
        Some(name) => {
            let view = status::task(zk, layout, name)?;
            shown(&view, args.json, || status::render_task(&view, now))
        }
        None => {
            let view = status::cluster(zk, layout)?;
            shown(&view, args.json, || status::render_cluster(&view, now))
        }
    })
}

/// A view as one line of JSON, or rendered for people.
fn shown<T: serde::Serialize>(view: &T, json: bool, render: impl FnOnce() -> String) -> String {
    if json {
        // Serialising these plain structs cannot fail.
        format!("{}\n", serde_json::to_string(view).unwrap_or_default())
    } else {
        render()
    }
}

fn run_tasks(global: &GlobalArgs, args: &TasksArgs) -> Result<(), Error> {
    let layout = Layout::new(&global.root);
    let zk = session::connect(&connect_options(global, false)?)?;
    let query = status::Query {
        state: args.state.as_deref().and_then(status::TaskState::parse),
        worker: args.worker.clone(),
        limit: args.limit as usize,
    };
    let rows = status::tasks(&zk, &layout, &query);
    zk.close(session::CLOSE_WAIT);
    let rows = rows?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&rows).unwrap_or_default())
    } else {
        status::render_tasks(&rows, model::now_ms(), output::terminal_width())
    };
    output::write(text.as_bytes(), None)
}

fn run_purge(global: &GlobalArgs, args: &PurgeArgs) -> Result<(), Error> {
    let layout = Layout::new(&global.root);
    let zk = session::connect(&connect_options(global, false)?)?;
    let policy = retention::Policy {
        older_than: args.older_than,
        keep: args.keep,
    };
    let deleted = retention::purge(&zk, &layout, policy, None, &|_| {})
        .map_err(|err| Error::zk(format!("purging {}", layout.status()), err));
    zk.close(session::CLOSE_WAIT);
    let deleted = deleted?;
    output::line(
        &deleted.to_string(),
        Some(&format!("{deleted} results were deleted")),
    )
}
