#!/usr/bin/env python3
"""zkmw's benchmark driver (run through scripts/bench.sh, which builds the
binaries and starts a ZooKeeper of its own).

Every figure is printed next to a baseline measured in the same run, as a
ratio: these machines are shared and noisy, absolute times are not.

  local         the same jobs run on this machine alone, through `xargs -P`
                with as many slots as the cluster has job threads: the
                baseline of every throughput figure
  ceiling       pipelined small transactions per second, same client crate,
                same number of threads zkmw runs (examples/ceiling.rs)
  grouping      what grouping saves ZooKeeper: its CPU per operation for
                pipelined one-operation transactions and reads against
                transactions and multi-reads of several (examples/group_cost.rs)
  throughput    N no-op jobs (`true`) submitted in bulk, from the first
                submit until every result is stored; 1 master, 2 workers x 4
                threads; the server's counters (mntr) give its transactions,
                write and read requests per task
  scale         the same with 1, 10 and 50 worker processes, and the master's
                CPU per task for each
  ensemble      the same against a three-node ensemble on loopback
  latency       `zkmw submit --wait true`, one at a time, whole process
  backlog       a queue of many pending tasks drained by the same cluster
  against       (ZKMW_BENCH_AGAINST=PATH) the throughput of another build
                of zkmw and of this one, taking turns, several rounds, each
                with its own local baseline; medians
"""

import argparse
import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZKMW = os.environ.get("ZKMW_BENCH_ZKMW") or os.path.join(ROOT_DIR, "target", "release", "zkmw")
AGAINST = os.environ.get("ZKMW_BENCH_AGAINST")
EXAMPLES = os.path.join(ROOT_DIR, "target", "release", "examples")
CEILING = os.path.join(EXAMPLES, "ceiling")
AWAIT = os.path.join(EXAMPLES, "await_results")
ROUND_TRIPS = os.path.join(EXAMPLES, "round_trips")
GROUP_COST = os.path.join(EXAMPLES, "group_cost")
WORKERS = 2
THREADS = 4
# The scale curve: (worker processes, threads each); 8 threads in all where
# the processes allow it, one each beyond.
SCALE = [(1, 8), (10, 1), (50, 1)]


def four_letters(port, word):
    """A four-letter-word command's answer from the server on port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(word)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def counters(ports):
    """The servers' counters, summed over ports: transactions (the last
    zxid's low 32 bits, from the first), write requests, read requests
    and packets received (mntr)."""
    total = {"txns": 0, "writes": 0, "reads": 0, "packets": 0}
    for i, port in enumerate(ports):
        if i == 0:
            for line in four_letters(port, b"srvr").splitlines():
                if line.startswith("Zxid:"):
                    total["txns"] = int(line.split()[1], 16) & 0xFFFFFFFF
        mntr = dict(line.split("\t", 1) for line in four_letters(port, b"mntr").splitlines() if "\t" in line)
        total["writes"] += int(mntr.get("zk_cnt_updatelatency", 0))
        total["reads"] += int(mntr.get("zk_cnt_readlatency", 0))
        total["packets"] += int(mntr.get("zk_packets_received", 0))
    return total


def local_baseline(n, slots):
    """Tasks per second running the jobs here alone: n `sh -c true`
    through `xargs -P slots`, one job per process, as the workers run them."""
    t0 = time.monotonic()
    subprocess.run(["xargs", "-d", "\n", "-P", str(slots), "-n", "1", "sh", "-c"],
                   input=b"true\n" * n, check=True)
    return n / (time.monotonic() - t0)


class Cluster:
    """One master and the workers, in a namespace of their own."""

    def __init__(self, zk, root, log_dir, workers=WORKERS, threads=THREADS, zkmw=None):
        self.env = dict(os.environ, ZKMW_ZK=zk, ZKMW_ROOT=root, RUST_LOG="warn")
        self.procs = []
        self.log_dir = log_dir
        self.bin = zkmw or ZKMW
        self.spawn("master", ["master", "--id", "m1"])
        for i in range(workers):
            self.spawn(f"w{i + 1}", ["worker", "--id", f"w{i + 1}", "--threads", str(threads)])
        self.wait(lambda s: s["master"] is not None and len(s["workers"]) == workers, 60, "cluster up")

    def spawn(self, name, args):
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        self.procs.append(subprocess.Popen([self.bin, *args], env=self.env, stdout=log, stderr=log))

    def zkmw(self, *args, stdin=None):
        return subprocess.run([self.bin, *args], env=self.env, input=stdin, capture_output=True, check=False)

    def status(self):
        out = self.zkmw("status", "--json")
        return json.loads(out.stdout) if out.returncode == 0 else None

    def wait(self, cond, seconds, what, every=0.05):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            s = self.status()
            if s is not None and cond(s):
                return s
            time.sleep(every)
        raise RuntimeError(f"timed out waiting for {what}")

    def await_results(self, n, seconds):
        """Returns once n results are stored (the count of /status, read
        every 5 ms: it costs ZooKeeper next to nothing), with how many
        reads that took (not zkmw's: taken out of its counts)."""
        out = subprocess.run([AWAIT, self.env["ZKMW_ZK"], self.env["ZKMW_ROOT"], str(n), str(seconds)],
                             check=True, capture_output=True, text=True)
        return int(out.stdout.strip().split("=")[1])

    def master_pid(self):
        return self.procs[0].pid

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_seconds(pid):
    """(own, reaped children's) CPU seconds of a process, user + system."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) / tick for x in fields[11:15])
    return utime + stime, cutime + cstime


def ceiling(zk, seconds, threads, in_flight):
    out = subprocess.run(
        [CEILING, zk, f"/bench-ceiling-{os.getpid()}-{threads}", str(seconds), str(threads), str(in_flight)],
        capture_output=True, text=True, check=True,
    )
    return float(out.stdout.strip().split("=")[1])


def zk_threads(pid):
    """CPU seconds of each of a JVM's threads, by name (numbers folded:
    "NIOWorkerThread-3" counts as "NIOWorkerThread-#")."""
    tick = os.sysconf("SC_CLK_TCK")
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        threads[tid] = ("".join("#" if c.isdigit() else c for c in name).replace("##", "#"),
                        (int(fields[11]) + int(fields[12])) / tick)
    return threads


def by_thread(before, after, n):
    """ZooKeeper's CPU milliseconds per task by thread name, largest first."""
    spent = collections.Counter()
    for tid, (name, cpu) in after.items():
        spent[name] += cpu - before.get(tid, (name, 0.0))[1]
    return [(name, s * 1000 / n) for name, s in spent.most_common() if s > 0]


def throughput(zk, ports, n, log_dir, tag, zk_pids, workers=WORKERS, threads=THREADS, zkmw=None):
    """For n no-op jobs: tasks per second; per task the server's
    transactions, write requests, read requests and packets; the bulk
    submit rate; and CPU milliseconds per task of ZooKeeper (all its
    servers; for one server, also by thread under "zk_threads"), the
    master, the workers and the jobs (the workers' reaped children)."""
    cluster = Cluster(zk, f"/bench-{os.getpid()}-{tag}", log_dir, workers, threads, zkmw)
    try:
        jobs = b"true\n" * n
        pids = [cluster.procs[0].pid] + [p.pid for p in cluster.procs[1:]]
        threads0 = zk_threads(zk_pids[0]) if len(zk_pids) == 1 else None
        zk0 = [cpu_seconds(pid) for pid in zk_pids]
        cpu0 = [cpu_seconds(pid) for pid in pids]
        c0 = counters(ports)
        t0 = time.monotonic()
        out = cluster.zkmw("submit", "--stdin", "--max-pending", str(n + 1), stdin=jobs)
        if out.returncode != 0:
            raise RuntimeError(f"submit --stdin failed: {out.stderr.decode()}")
        submitted = time.monotonic() - t0
        own_reads = cluster.await_results(n, 900)
        elapsed = time.monotonic() - t0
        c1 = counters(ports)
        c1["reads"] -= own_reads
        c1["packets"] -= own_reads
        zk_cpu = sum(cpu_seconds(pid)[0] - before[0] for pid, before in zip(zk_pids, zk0))
        if threads0 is not None:
            per_thread = by_thread(threads0, zk_threads(zk_pids[0]), n)
        cpu = [(a1 - a0, c1_ - c0_) for (a0, c0_), (a1, c1_) in zip(cpu0, (cpu_seconds(p) for p in pids))]
        per_task = lambda s: s * 1000 / n  # noqa: E731
        cost = {
            "zookeeper": per_task(zk_cpu),
            "master": per_task(cpu[0][0]),
            "workers": per_task(sum(own for own, _ in cpu[1:])),
            "jobs": per_task(sum(children for _, children in cpu[1:])),
        }
        per = {k: (c1[k] - c0[k]) / n for k in c0}
        if threads0 is not None:
            per["zk_threads"] = per_thread
        return n / elapsed, per, n / submitted, cost
    finally:
        cluster.stop()


def timed(cmd, env, runs):
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        times.append((time.monotonic() - t0) * 1000)
    return times


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def round_trips(zk, runs):
    """Median milliseconds to open a session, to read, and to write one node."""
    out = subprocess.run([ROUND_TRIPS, zk, f"/bench-rtt-{os.getpid()}", str(runs)],
                         capture_output=True, text=True, check=True)
    return {k: float(v) for k, v in (kv.split("=") for kv in out.stdout.split())}


# The round trips `submit --wait` cannot avoid, in order: the submitter
# checks the queue's size (--max-pending) and creates the task, then arms
# its watch on the result; the master lists what is new and reads the task,
# then assigns it; the worker reads the task its persistent watch named,
# then claims it; runs it; stores the result; the submitter reads it. The
# master's and the submitter's one-shot watches say only "something
# changed", hence their list and reads.
CHAIN_READS = 6
CHAIN_WRITES = 4


def latency(zk, runs, log_dir):
    cluster = Cluster(zk, f"/bench-{os.getpid()}-latency", log_dir, workers=1)
    try:
        waits = timed([ZKMW, "submit", "--wait", "true"], cluster.env, runs)
        # Baselines measured now: starting the binary, starting `sh -c true`,
        # and each kind of round trip.
        spawn_zkmw = statistics.median(timed([ZKMW, "--version"], cluster.env, 50))
        spawn_sh = statistics.median(timed(["sh", "-c", "true"], cluster.env, 50))
        rtt = round_trips(zk, 200)
    finally:
        cluster.stop()
    fixed = spawn_zkmw + rtt["connect_ms"] + spawn_sh
    floor = fixed + CHAIN_READS * rtt["read_ms"] + CHAIN_WRITES * rtt["write_ms"]
    busy_floor = fixed + CHAIN_READS * rtt["read_busy_ms"] + CHAIN_WRITES * rtt["write_busy_ms"]
    return pct(waits, 50), pct(waits, 99), floor, busy_floor, rtt, spawn_zkmw, spawn_sh


def memory_kib(pid, field="VmHWM"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def idle(zk, seconds, log_dir):
    """CPU milliseconds per minute and resident memory of an idle master
    and worker, and how long the short commands take (timed first, with no
    master or worker running, so that no task's run competes with them)."""
    root = f"/bench-{os.getpid()}-idle"
    env = dict(os.environ, ZKMW_ZK=zk, ZKMW_ROOT=root, RUST_LOG="warn")
    submit_ms = statistics.median(timed([ZKMW, "submit", "true"], env, 30))
    status_ms = statistics.median(timed([ZKMW, "status"], env, 30))
    cluster = Cluster(zk, root, log_dir, workers=1)
    try:
        cluster.await_results(30, 60)
        pids = {"master": cluster.procs[0].pid, "worker": cluster.procs[1].pid}
        before = {name: cpu_seconds(pid)[0] for name, pid in pids.items()}
        time.sleep(seconds)  # the measurement itself: what idling costs
        cost = {name: (cpu_seconds(pid)[0] - before[name]) * 1000 * 60 / seconds
                for name, pid in pids.items()}
        rss = {name: memory_kib(pid, "VmRSS") / 1024 for name, pid in pids.items()}
    finally:
        cluster.stop()
    return cost, rss, status_ms, submit_ms


def backlog(zk, n, log_dir):
    """Queue n tasks with no worker, then drain them."""
    root = f"/bench-{os.getpid()}-backlog"
    env = dict(os.environ, ZKMW_ZK=zk, ZKMW_ROOT=root, RUST_LOG="warn")
    t0 = time.monotonic()
    out = subprocess.run([ZKMW, "submit", "--stdin", "--max-pending", str(n + 1)], env=env,
                         input=b"true\n" * n, capture_output=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"submit --stdin failed: {out.stderr.decode()}")
    queued = n / (time.monotonic() - t0)
    t0 = time.monotonic()
    out = subprocess.run([ZKMW, "status", "--json"], env=env, capture_output=True, check=True)
    status_ms = (time.monotonic() - t0) * 1000
    pending = json.loads(out.stdout)["tasks"]["pending"]
    cluster = Cluster(zk, root, log_dir)
    try:
        t0 = time.monotonic()
        cluster.await_results(n, 1800)
        drained = n / (time.monotonic() - t0)
        master_kib = memory_kib(cluster.master_pid())
    finally:
        cluster.stop()
    return queued, drained, pending, status_ms, master_kib


def print_throughput(label, n, rate, per, cost, local, slots):
    total = sum(cost.values())
    print(f"{label} N={n}: {rate:,.0f} tasks/s = {rate / local:.2f} x local ({local:,.0f} tasks/s, "
          f"xargs -P {slots}); per task: {per['txns']:.2f} transactions, {per['writes']:.2f} write "
          f"requests, {per['reads']:.2f} read requests, {per['packets']:.2f} packets")
    print(f"  CPU per task: {total:.2f} ms = " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items())
          + f"; {os.cpu_count()} cores / {total:.2f} ms = {os.cpu_count() * 1000 / total:,.0f} tasks/s at most")
    if per.get("zk_threads"):
        print("  ZooKeeper's CPU per task by thread: "
              + ", ".join(f"{name} {ms:.3f}" for name, ms in per["zk_threads"][:6]) + " ms")


def against(a, other, rounds, n, slots):
    """The throughput of the build `other` and of this one, taking turns
    for `rounds` rounds, each run next to a local baseline of its own:
    per build, the median ratio to local and ZooKeeper CPU per task."""
    builds = [("other", other), ("this", ZKMW)]
    seen = {name: [] for name, _ in builds}
    for r in range(rounds):
        for name, path in builds:
            local = local_baseline(n, slots)
            rate, per, _, cost = throughput(a.zk, [a.port], n, a.log_dir, f"against-{name}-{r}", [a.zk_pid],
                                            zkmw=path)
            seen[name].append((rate / local, cost["zookeeper"], per["txns"], per["reads"]))
            print(f"  round {r + 1}, {name} build: {rate / local:.2f} x local ({rate:,.0f} of {local:,.0f}); "
                  f"ZooKeeper {cost['zookeeper']:.2f} ms per task; {per['txns']:.2f} transactions, "
                  f"{per['reads']:.2f} reads per task")
    med = {name: [statistics.median(v[i] for v in runs) for i in range(4)] for name, runs in seen.items()}
    for name, (ratio, zk_ms, txns, reads) in med.items():
        print(f"  median, {name} build: {ratio:.2f} x local; ZooKeeper {zk_ms:.2f} ms per task; "
              f"{txns:.2f} transactions, {reads:.2f} reads per task")
    return med


def grouping(zk, zk_pid, n, k):
    """ZooKeeper's CPU microseconds per operation, each way (see
    examples/group_cost.rs): pipelined against grouped writes and reads."""
    out = subprocess.run([GROUP_COST, zk, f"/bench-group-{os.getpid()}-{k}", str(zk_pid), str(n), str(k)],
                         capture_output=True, text=True, check=True)
    ways = {}
    for line in out.stdout.split("\n"):
        fields = dict(kv.split("=") for kv in line.split())
        if fields and not fields["way"].startswith("warmup"):
            ways[fields["way"]] = float(fields["zk_cpu_us_per_op"])
    return ways


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zk", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--zk-pid", type=int, required=True, help="the server's pid, for its CPU time")
    ap.add_argument("--ensemble", help="a three-node ensemble's connect string (loopback)")
    ap.add_argument("--ensemble-pids", help="its servers' pids, comma-separated")
    ap.add_argument("--short", action="store_true", help="small sizes, for CI's smoke run")
    a = ap.parse_args()
    sizes = [300] if a.short else [1000, 10000]
    scale_n = 300 if a.short else 10000
    runs = 30 if a.short else 200
    backlog_n = 0 if a.short else 100000
    threads = 1 + WORKERS * THREADS  # the master's loop and every job thread
    slots = WORKERS * THREADS

    print(f"bench: machine {os.cpu_count()} cpus; ZooKeeper {a.zk}; {WORKERS} workers x {THREADS} threads")
    # Warm the server up first (a cold JVM is slower): the figures that
    # follow all meet a warm one.
    ceiling(a.zk, 2, threads, 16)
    ceil = ceiling(a.zk, 3 if a.short else 5, threads, 16)
    one = ceiling(a.zk, 2, 1, 1)
    single_op_ms = 1000 / one
    print(f"ceiling: {ceil:,.0f} txn/s pipelined ({threads} threads x 16 in flight); "
          f"one at a time: {one:,.0f} txn/s ({single_op_ms:.2f} ms per transaction)")
    summary = [f"ceiling={ceil:.0f}txn/s"]

    for k in [4, 16]:
        ways = grouping(a.zk, a.zk_pid, 2000 if a.short else 10000, k)
        print(f"grouping by {k}: ZooKeeper CPU per operation: writes {ways['pipelined_writes']:.0f} us pipelined "
              f"one per transaction, {ways[f'grouped_writes_by_{k}']:.0f} us {k} per transaction; reads "
              f"{ways['pipelined_reads']:.0f} us pipelined, {ways[f'multi_reads_by_{k}']:.0f} us {k} per multi-read")

    # The server's JIT compiles the paths zkmw uses (multi, watches,
    # listings) only once they run: warm those up too, uncounted.
    warm_n = 300 if a.short else 10000
    throughput(a.zk, [a.port], warm_n, a.log_dir, "warmup", [a.zk_pid])
    print(f"warm-up: {warm_n:,} tasks end to end (not counted)")
    for n in sizes:
        local = local_baseline(n, slots)
        rate, per, submit_rate, cost = throughput(a.zk, [a.port], n, a.log_dir, n, [a.zk_pid])
        print_throughput("throughput", n, rate, per, cost, local, slots)
        print(f"  bulk submit {submit_rate:,.0f} tasks/s")
        summary.append(f"e2e_{n}={rate:.0f}tasks/s({rate / local:.2f}xlocal)")
    summary.append(f"txn_per_task={per['txns']:.2f} reads_per_task={per['reads']:.2f}")
    summary.append(f"zk_cpu_per_task={cost['zookeeper']:.2f}ms")
    master_cpu = {WORKERS: cost["master"]}

    for workers, each in SCALE:
        local = local_baseline(scale_n, workers * each)
        rate, per, _, cost = throughput(a.zk, [a.port], scale_n, a.log_dir, f"scale{workers}", [a.zk_pid],
                                        workers, each)
        print_throughput(f"scale {workers} workers x {each} threads:", scale_n, rate, per, cost, local,
                         workers * each)
        master_cpu[workers] = cost["master"]
        summary.append(f"scale{workers}={rate / local:.2f}xlocal")
    base = master_cpu[WORKERS]
    print("  master CPU per task: " + ", ".join(
        f"{w} workers {ms:.3f} ms ({ms / base:.2f} x {WORKERS} workers)" for w, ms in sorted(master_cpu.items())))
    summary.append(f"master_cpu_50/2={master_cpu[50] / base:.2f}")

    if a.ensemble:
        ports = [int(hp.rsplit(":", 1)[1]) for hp in a.ensemble.split(",")]
        pids = [int(p) for p in a.ensemble_pids.split(",")]
        throughput(a.ensemble, ports, warm_n, a.log_dir, "ensemble-warmup", pids)
        n = scale_n
        local = local_baseline(n, slots)
        rate, per, _, cost = throughput(a.ensemble, ports, n, a.log_dir, "ensemble", pids)
        print_throughput("ensemble of 3 (loopback, same 2 cores):", n, rate, per, cost, local, slots)
        summary.append(f"ensemble={rate / local:.2f}xlocal")

    p50, p99, floor, busy_floor, rtt, spawn_zkmw, spawn_sh = latency(a.zk, runs, a.log_dir)
    print(f"latency submit --wait true ({runs} runs): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"p99/p50 {p99 / p50:.2f}")
    print(f"  floor {floor:.1f} ms = start zkmw {spawn_zkmw:.2f} + session {rtt['connect_ms']:.2f} + "
          f"{CHAIN_READS} reads x {rtt['read_ms']:.2f} + {CHAIN_WRITES} writes x {rtt['write_ms']:.2f} + "
          f"start sh {spawn_sh:.2f} (each round trip timed alone); p50 - floor = {p50 - floor:+.1f} ms")
    print(f"  with round trips timed back to back ({rtt['read_busy_ms']:.2f} / {rtt['write_busy_ms']:.2f} ms): "
          f"floor {busy_floor:.1f} ms; p50 - floor = {p50 - busy_floor:+.1f} ms")
    summary.append(f"wait_p50={p50:.1f}ms(floor{p50 - floor:+.1f},busy_floor{p50 - busy_floor:+.1f})")
    summary.append(f"wait_p99/p50={p99 / p50:.2f}")

    cost, rss, status_ms, submit_ms = idle(a.zk, 10 if a.short else 30, a.log_dir)
    print(f"idle: master {cost['master']:.0f} ms CPU per minute, {rss['master']:.1f} MiB resident; "
          f"worker (4 threads) {cost['worker']:.0f} ms CPU per minute, {rss['worker']:.1f} MiB resident; "
          f"`zkmw status` {status_ms:.1f} ms, `zkmw submit true` {submit_ms:.1f} ms (whole process)")
    summary.append(f"idle_cpu_ms_per_min={cost['master']:.0f}+{cost['worker']:.0f}")

    if AGAINST:
        rounds = 2 if a.short else 4
        print(f"against {AGAINST} (N={scale_n}, {WORKERS} workers x {THREADS} threads, {rounds} rounds, "
              f"taking turns):")
        med = against(a, AGAINST, rounds, scale_n, slots)
        summary.append(f"against={med['other'][0]:.2f}/{med['this'][0]:.2f}xlocal,"
                       f"zk_cpu_ratio={med['this'][1] / med['other'][1]:.2f}")

    if backlog_n:
        queued, drained, pending, status_ms, master_kib = backlog(a.zk, backlog_n, a.log_dir)
        local = local_baseline(10000, slots)
        print(f"backlog {backlog_n:,}: queued at {queued:,.0f} tasks/s; `status` with {pending:,} pending "
              f"took {status_ms:.0f} ms; drained at {drained:,.0f} tasks/s ({drained / local:.2f} x local); "
              f"master peak memory {master_kib / 1024:.1f} MiB")
        summary.append(f"backlog_{backlog_n}={drained:.0f}tasks/s")
        summary.append(f"master_rss={master_kib / 1024:.0f}MiB")
    print("bench: " + " ".join(summary))


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", None) or b""
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        print(f"bench: failed: {err} {detail.strip()}", file=sys.stderr)
        sys.exit(1)
