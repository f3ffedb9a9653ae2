//! Starting a job's shell: cheaply, in its own process group, and bound to
//! the life of the thread that starts it.
//!
//! `std::process::Command` forks as soon as it must run code in the child
//! (here: arming the death signal), and a fork of a busy multi-threaded
//! worker copies its page tables, then takes a copy-on-write fault for
//! every page either side touches, with TLB shootdowns across threads:
//! measured, that was the largest single cost of a no-op job. So the shell
//! is started the way `posix_spawn` starts programs, with
//! `clone(CLONE_VM | CLONE_VFORK)`: the child borrows the worker's memory
//! until its `execve`, and only the calling thread waits meanwhile.
//!
//! In the child, in order: every signal goes back to its default action
//! (handled and ignored ones alike); the signal mask is emptied; the child
//! leads a new process group; `PR_SET_PDEATHSIG` is armed (then the child
//! checks the worker is still its parent); stdin, stdout and stderr are
//! set; the kept descriptor, if any, is put at [`KEPT_FD`]; every other
//! descriptor is closed (the worker's own, and any it inherited without
//! close-on-exec, such as a shell's fds 10 and 251); then `execve`. The
//! child runs only system calls, never allocates or locks (the memory is
//! the worker's), and reports a failure through a slot the parent reads
//! once it runs again.
//!
//! The death signal fires when the *thread* that started the child exits,
//! not only when the worker's process does: the caller of [`spawn`] must
//! outlive the job (in `exec::run` one thread spawns, supervises and reaps
//! it).
//!
//! `unsafe` is kept to the clone (with the signal mask around it) and the
//! child's code before `execve`, raw system calls that no crate wraps for
//! this use; every other system call goes through `rustix`. That code is
//! written for Linux on x86_64 and aarch64 (`mod.rs` refuses to build
//! elsewhere): there the stack grows down and the kernel's `sigaction`
//! layout is the one `child_main` hands to `rt_sigaction`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, PidfdFlags, Resource, Signal, WaitOptions, WaitStatus};

/// A started shell: its pid (also its process group id), a pidfd that turns
/// readable when it exits, and the read ends of its stdout and stderr.
#[derive(Debug)]
pub struct Spawned {
    /// The shell's pid, which is also the job's process group id.
    pub pid: Pid,
    /// Readable once the shell has exited; it is not reaped by this.
    pub pidfd: OwnedFd,
    /// Read end of the job's stdout.
    pub stdout: OwnedFd,
    /// Read end of the job's stderr.
    pub stderr: OwnedFd,
}

/// Stack for the child until it calls `execve`; it only makes system calls.
const CHILD_STACK: usize = 64 * 1024;

/// Signals are numbered 1 to NSIG - 1 on Linux.
const NSIG: libc::c_int = 65;

/// The number a job finds the descriptor it was given to keep at.
pub const KEPT_FD: RawFd = 3;

/// Highest descriptor count the child closes one by one when the kernel
/// has no `close_range` (before Linux 5.9), whatever `RLIMIT_NOFILE` says.
const MAX_CLOSE: u64 = 1 << 20;

/// What the child needs, prepared by the parent before the clone.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// (source, target) pairs for stdin, stdout, stderr; sources are >= 3.
    stdio: [(RawFd, RawFd); 3],
    /// -1, or the (close-on-exec) source of the descriptor to put at
    /// [`KEPT_FD`]; it is above `KEPT_FD`.
    keep: RawFd,
    /// The lowest descriptor the child closes.
    close_from: libc::c_uint,
    /// The end of what the child closes one by one without `close_range`:
    /// the soft `RLIMIT_NOFILE`, at most [`MAX_CLOSE`].
    fd_limit: libc::c_uint,
    /// The worker's pid: the child must still be its child once the death
    /// signal is armed.
    parent: libc::pid_t,
    /// 0, or the errno of the step that failed in the child.
    error: AtomicI32,
}

/// Starts `program` with `argv` and `envp` (each `NAME=value`) in a new
/// process group, stdin from /dev/null, stdout and stderr into new pipes,
/// `keep` (if given) at [`KEPT_FD`] and no other descriptor open. The
/// process gets SIGKILL when the calling thread exits, as it does when the
/// worker dies (`PR_SET_PDEATHSIG`): that thread must outlive it.
///
/// Notable errors: `ENOENT`/`EACCES` when `program` cannot be executed
/// (the child is reaped before returning).
pub fn spawn(
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    keep: Option<BorrowedFd>,
) -> io::Result<Spawned> {
    let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let null = above_stdio(null)?;
    // A copy above KEPT_FD, so that the child's dup2 onto KEPT_FD always
    // makes a new descriptor, without close-on-exec.
    let keep = keep
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, KEPT_FD + 1))
        .transpose()?;
    let (stdout, stdout_w) = pipe()?;
    let (stderr, stderr_w) = pipe()?;
    let argv_ptrs = null_terminated(argv);
    let envp_ptrs = null_terminated(envp);
    let args = ChildArgs {
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        stdio: [
            (null.as_raw_fd(), 0),
            (stdout_w.as_raw_fd(), 1),
            (stderr_w.as_raw_fd(), 2),
        ],
        keep: keep.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        // Above the stdio, and above KEPT_FD when one is kept.
        close_from: if keep.is_some() { 4 } else { 3 },
        fd_limit: fd_limit(),
        parent: rustix::process::getpid().as_raw_pid(),
        error: AtomicI32::new(0),
    };
    let pid = clone_vfork(&args)?;
    drop((null, stdout_w, stderr_w, keep));
    let pidfd = watch(pid, args.error.load(Ordering::SeqCst))?;
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
    })
}

/// A pidfd of the child `pid`, which has exec'd unless `failed` (then its
/// errno). A child that failed, or whose pidfd cannot be had, is reaped.
fn watch(pid: Pid, failed: i32) -> io::Result<OwnedFd> {
    if failed != 0 {
        let _ = reap(pid);
        return Err(io::Error::from_raw_os_error(failed));
    }
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|err| {
        // `pid` is our unreaped child, so it names our job's group.
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let _ = reap(pid);
        err.into()
    })
}

/// Reaps `pid`, waiting for it to exit.
pub fn reap(pid: Pid) -> io::Result<WaitStatus> {
    let reaped =
        rustix::io::retry_on_intr(|| rustix::process::waitpid(Some(pid), WaitOptions::empty()))?;
    // Without WNOHANG, waitpid returns only with a status.
    reaped
        .map(|(_, status)| status)
        .ok_or_else(|| io::Error::other("waitpid returned no status"))
}

/// Clones a child that shares our memory and runs [`child_main`]; returns
/// once it has called `execve` or exited.
fn clone_vfork(args: &ChildArgs) -> io::Result<Pid> {
    // Never read by us, so left uninitialised.
    let mut stack = Vec::<u8>::with_capacity(CHILD_STACK);
    // The stack grows down: hand over its top, 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // No signal handler of the worker may run in the child while it shares
    // the worker's memory: block every signal around the clone (the child
    // sets its own mask before execve).
    let old = block_all_signals();
    // SAFETY: `child_main` only reads `args` and makes system calls; `top`
    // is the top of a live stack that outlives the child's use of it
    // (CLONE_VFORK: we resume only after its execve or exit).
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            args as *const ChildArgs as *mut libc::c_void,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(err);
    }
    Pid::from_raw(pid).ok_or(err)
}

/// Blocks every signal on this thread; returns the mask it had.
fn block_all_signals() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is a valid (empty) set; sigfillset and
    // pthread_sigmask only write to the two sets, which are ours.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// The child, between clone and execve. Only system calls: it runs on the
/// worker's memory with the worker's other threads still running.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent keeps alive until we exec
    // or exit; every pointer in it is valid and null-terminated.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        let fail = |errno: libc::c_int| -> ! {
            args.error.store(errno.max(1), Ordering::SeqCst);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        // Every signal to its default action, ignored ones included (a
        // worker started under nohup must not pass SIGHUP's SIG_IGN on).
        // The raw system call, because libc's refuses the signals it uses
        // itself. An all-zero kernel sigaction is SIG_DFL with no flags.
        let default = [0u64; 4];
        for sig in 1..NSIG {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8,
            );
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0
            || libc::setpgid(0, 0) != 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
        {
            fail(errno());
        }
        // The worker died before the death signal was armed.
        if libc::getppid() != args.parent {
            fail(libc::ESRCH);
        }
        for (from, to) in args.stdio {
            if libc::dup2(from, to) < 0 {
                fail(errno());
            }
        }
        // After the stdio: a stdio source may have been KEPT_FD's number.
        if args.keep >= 0 && libc::dup2(args.keep, KEPT_FD) < 0 {
            fail(errno());
        }
        // Any failure (ENOSYS before Linux 5.9, or a seccomp filter's
        // refusal): close them one by one.
        let all = libc::c_uint::MAX;
        if libc::syscall(libc::SYS_close_range, args.close_from, all, 0) != 0 {
            for fd in args.close_from..args.fd_limit {
                libc::close(fd as libc::c_int);
            }
        }
        libc::execve(args.program, args.argv, args.envp);
        fail(errno())
    }
}

/// A pipe, as (read end, write end), both close-on-exec and above 2.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd`, moved above 2 if it is a standard stream's number (a worker
/// started with one of them closed), so the child's `dup2`s onto 0, 1 and
/// 2 can never overwrite each other's source.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// The soft `RLIMIT_NOFILE`, at most [`MAX_CLOSE`]: where the child stops
/// closing descriptors one by one. Only a descriptor opened before the
/// limit was lowered can lie beyond it.
fn fd_limit() -> libc::c_uint {
    let soft = rustix::process::getrlimit(Resource::Nofile).current;
    soft.map_or(MAX_CLOSE, |n| n.min(MAX_CLOSE)) as libc::c_uint
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}
