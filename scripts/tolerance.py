#!/usr/bin/env python3
"""How long an outage zkmw rides out, and how long each failover takes,
with the settings given (the defaults unless ZKMW_SESSION_TIMEOUT and
ZKMW_TICK say otherwise). Run through scripts/tolerance.sh, which builds
the release binary and starts a ZooKeeper of its own.

  restart N     ZooKeeper stopped for N s (counting its own restart) under a
                running job: kept (the job ran once, no session was lost) or
                killed (the worker gave its job up, it ran again)
  failover      the time from the fault to the recovery, for: the active
                master SIGKILLed or SIGTERMed (until the standby is active),
                a worker SIGKILLed (until its unstarted task runs elsewhere,
                and until its running task starts again elsewhere)
"""

import argparse
import json
import os
import subprocess
import time

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZKMW = os.path.join(ROOT_DIR, "target", "release", "zkmw")
ZK_SH = os.path.join(ROOT_DIR, "scripts", "zk.sh")


class Namespace:
    """Masters and workers of one namespace; every process is stopped at the end."""

    def __init__(self, zk, name, log_dir):
        self.env = dict(os.environ, ZKMW_ZK=zk, ZKMW_ROOT=f"/tolerance/{name}-{os.getpid()}", RUST_LOG="info")
        self.log_dir = log_dir
        self.name = name
        self.procs = {}

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def spawn(self, who, args):
        log = open(os.path.join(self.log_dir, f"{self.name}-{who}.log"), "ab")
        self.procs[who] = subprocess.Popen([ZKMW, *args], env=self.env, stdout=log, stderr=log)

    def log(self, who):
        with open(os.path.join(self.log_dir, f"{self.name}-{who}.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def zkmw(self, *args):
        return subprocess.run([ZKMW, *args], env=self.env, capture_output=True, text=True, check=False)

    def status(self, *task):
        out = self.zkmw("status", *task, "--json")
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def submit(self, job):
        return self.zkmw("submit", job).stdout.strip()

    def wait(self, cond, seconds, what):
        """Seconds until cond() held, polling every 50 ms."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if cond():
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: timed out waiting for {what}")

    def live_workers(self):
        return sorted(w["id"] for w in self.status().get("workers", []) if w.get("state", "live") == "live")


def zk_sh(env, *args):
    subprocess.run([ZK_SH, *args], env=env, check=True, capture_output=True)


def restart(zk, zk_env, outage, start_takes, log_dir):
    """One restart of `outage` s (of which the server's own start takes
    about `start_takes`) under a running job: kept or killed."""
    with Namespace(zk, f"restart-{outage}", log_dir) as ns:
        ns.spawn("m1", ["master", "--id", "m1"])
        ns.spawn("w1", ["worker", "--id", "w1"])
        ns.wait(lambda: ns.live_workers() == ["w1"] and ns.status().get("master"), 30, "cluster up")
        task = ns.submit(f"sleep {outage + 8}")
        ns.wait(lambda: ns.status(task).get("state") == "running", 30, "the job running")
        down = time.monotonic()
        zk_sh(zk_env, "stop")
        time.sleep(max(0.0, outage - start_takes - (time.monotonic() - down)))
        zk_sh(zk_env, "start")
        real = time.monotonic() - down
        ns.wait(lambda: ns.status(task).get("state") == "done", outage + 60, "the task done")
        attempts = ns.status(task).get("attempts")
        lost = "session lost" in ns.log("w1") or "giving up" in ns.log("w1")
        verdict = "kept" if attempts == 1 and not lost else f"killed (attempts {attempts})"
        print(f"restart {outage:>2} s (down {real:.1f} s): {verdict}", flush=True)


def failover(zk, log_dir):
    """The failover times of masters and workers."""
    with Namespace(zk, "failover", log_dir) as ns:
        ns.spawn("m1", ["master", "--id", "m1"])
        ns.wait(lambda: ns.status().get("master", {}) and ns.status()["master"]["id"] == "m1", 30, "m1")
        ns.spawn("m2", ["master", "--id", "m2"])
        ns.wait(lambda: len(ns.status().get("standbys", [])) == 1, 30, "m2 standby")
        ns.procs["m1"].kill()
        t = ns.wait(lambda: (ns.status().get("master") or {}).get("id") == "m2", 60, "m2 active")
        print(f"failover master SIGKILL -> standby active: {t:.1f} s", flush=True)
        ns.spawn("m3", ["master", "--id", "m3"])
        ns.wait(lambda: len(ns.status().get("standbys", [])) == 1, 30, "m3 standby")
        ns.procs["m2"].terminate()
        ns.procs["m2"].wait()
        t = ns.wait(lambda: (ns.status().get("master") or {}).get("id") == "m3", 60, "m3 active")
        print(f"failover master SIGTERM -> standby active: {t:.1f} s", flush=True)
        ns.spawn("w1", ["worker", "--id", "w1", "--threads", "1"])
        ns.wait(lambda: ns.live_workers() == ["w1"], 30, "w1")
        running = ns.submit('if [ "$ZKMW_ATTEMPT" = 1 ]; then sleep 600; fi')
        ns.wait(lambda: ns.status(running).get("state") == "running", 30, "the job running")
        waiting = ns.submit("true")
        ns.wait(lambda: ns.status(waiting).get("state") == "assigned", 30, "a task waiting")
        ns.spawn("w2", ["worker", "--id", "w2", "--threads", "1"])
        ns.wait(lambda: ns.live_workers() == ["w1", "w2"], 30, "w2")
        # w1 is busy, so the waiting task may move to w2 before the kill:
        # measure only if it is still on w1.
        ns.procs["w1"].kill()
        start = time.monotonic()
        if ns.status(waiting).get("worker") == "w1":
            ns.wait(lambda: ns.status(waiting).get("state") == "done", 120, "the waiting task done")
            print(f"failover worker SIGKILL -> its unstarted task done elsewhere: {time.monotonic() - start:.1f} s", flush=True)
        ns.wait(lambda: ns.status(running).get("attempts") == 2, 120, "the running task started again")
        print(f"failover worker SIGKILL -> its running task started again: {time.monotonic() - start:.1f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zk", required=True)
    parser.add_argument("--zk-port", required=True)
    parser.add_argument("--zk-dir", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--outages", default="6,8,10,12,14,16")
    args = parser.parse_args()
    zk_env = dict(os.environ, ZKMW_ZK_PORT=args.zk_port, ZKMW_ZK_DIR=args.zk_dir)
    print(f"settings: session timeout {os.environ.get('ZKMW_SESSION_TIMEOUT', '5s')}, tick {os.environ.get('ZKMW_TICK', '2s')}")
    failover(args.zk, args.log_dir)
    zk_sh(zk_env, "stop")
    begin = time.monotonic()
    zk_sh(zk_env, "start")
    start_takes = time.monotonic() - begin
    for outage in [int(s) for s in args.outages.split(",")]:
        restart(args.zk, zk_env, outage, start_takes, args.log_dir)


if __name__ == "__main__":
    main()
