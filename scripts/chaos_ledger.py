#!/usr/bin/env python3
"""scripts/chaos_ledger.py: the bookkeeping of scripts/chaos.sh.

Usage: chaos_ledger.py RUN_DIR BIN DURATION_SECONDS [ANOMALIES]

Reads, in RUN_DIR (written by chaos.sh):
  acked-*.txt            "task-id marker" per acknowledged submit
  submit-failures-*.txt  one line per submit that exited non-zero
  ledger                 one line per job start: "task attempt pid worker-dir unix-time marker",
                         and "end task attempt pid unix-time" when the job was not killed
  chaos.log              the chaos actions, with unix times (for the report)
asks `BIN status TASK --json` (ZKMW_ZK / ZKMW_ROOT from the environment) for
every acknowledged task and every task seen in the ledger, writes
results.jsonl and report.txt, prints ONE summary line and exits 0 when
lost = unexplained = phantom = bad_failed = odd = dup_ack = anomalies = 0,
else 1. ANOMALIES is chaos.sh's count of unexpected events (ANOMALY in chaos.log).
"""

import glob
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

TASK_RE = re.compile(r"^task-\d{10}$")
# `worker lost` is legitimate once the runs exceeded 1 + retries (default 2).
RETRIES = int(os.environ.get("ZKMW_CHAOS_RETRIES", "2"))


def read_lines(pattern):
    lines = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines.extend(line.rstrip("\n") for line in f if line.strip())
    return lines


def query(binary, task):
    """(task, view or None, error text) from `zkmw status TASK --json`."""
    try:
        p = subprocess.run([binary, "status", task, "--json"], capture_output=True,
                           text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return task, None, "status timed out after 30s"
    if p.returncode != 0:
        return task, None, f"rc={p.returncode} {p.stderr.strip()}"
    try:
        return task, json.loads(p.stdout), ""
    except ValueError as err:
        return task, None, f"unparsable status output: {err}: {p.stdout[:200]!r}"


def load_chaos(run):
    """[(unix_time, line)] of chaos.log, for the events near a suspicious run."""
    events = []
    path = os.path.join(run, "chaos.log")
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=2)
                try:
                    events.append((float(parts[1]), line.rstrip("\n")))
                except (IndexError, ValueError):
                    pass
    return events


def worker_actions(chaos):
    """[(unix_time, 'kill -9'|'SIGSTOP', worker)] of the chaos actions on workers."""
    found = []
    for t, line in chaos:
        m = re.search(r"CHAOS (kill -9|SIGSTOP) worker (\S+)", line)
        if m:
            found.append((t, m.group(1), m.group(2)))
    return found


def main():
    run, binary, duration = sys.argv[1], sys.argv[2], sys.argv[3]
    anomalies = int(sys.argv[4]) if len(sys.argv) > 4 else 0

    # Acknowledged submits: id -> marker; an id printed twice is a bug too.
    acked, dup_ack = {}, []
    marker_of_ack = {}
    for line in read_lines(os.path.join(run, "acked-*.txt")):
        task, _, marker = line.partition(" ")
        if task in acked:
            dup_ack.append(f"{task} printed for {acked[task]} and {marker}")
        acked[task] = marker
        marker_of_ack[marker] = task
    failures = read_lines(os.path.join(run, "submit-failures-*.txt"))
    warned = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(run, "submit", "*.warn")))
    failed_markers = {f.split()[1] for f in failures if len(f.split()) > 1}

    # The ledger: every run of every job.
    runs = defaultdict(list)  # task -> [(attempt, pid, worker, time, marker)]
    ends = {}  # (task, attempt, pid) -> unix time the job ended
    bad_lines = []
    ledger_path = os.path.join(run, "ledger")
    if os.path.exists(ledger_path):
        with open(ledger_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 5 and parts[0] == "end" and TASK_RE.match(parts[1]):
                    ends[(parts[1], parts[2], parts[3])] = float(parts[4])
                    continue
                if len(parts) < 3 or not TASK_RE.match(parts[0]) or not parts[1].isdigit():
                    bad_lines.append(line.rstrip("\n"))
                    continue
                parts += [""] * (6 - len(parts))
                runs[parts[0]].append((int(parts[1]), parts[2], parts[3], parts[4], parts[5]))

    # One status per task we know of, 4 at a time (2-core machine).
    wanted = sorted(set(acked) | set(runs))
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda t: query(binary, t), wanted))
    views = {}
    with open(os.path.join(run, "results.jsonl"), "w", encoding="utf-8") as out:
        for task, view, err in answers:
            views[task] = (view, err)
            out.write(json.dumps({"task": task, "view": view, "error": err}) + "\n")

    report = []
    chaos = load_chaos(run)

    def chaos_near(times):
        """The chaos actions from just before the first run to just after the last."""
        ts = [float(t) for t in times if t]
        if not ts:
            return []
        lo, hi = min(ts) - 6.0, max(ts) + 1.0
        return [line for (t, line) in chaos
                if lo <= t <= hi and (" CHAOS " in line or " ANOMALY " in line)]

    def describe(task):
        view, err = views.get(task, (None, "not queried"))
        lines = [f"  {task}: marker={acked.get(task, '?')}"]
        if view is None:
            lines.append(f"    status: {err}")
        else:
            keep = {k: view.get(k) for k in ("state", "worker", "attempts", "exit_code",
                                               "signal", "reason", "submitted_ms",
                                               "started_ms", "finished_ms")}
            lines.append(f"    status: {json.dumps(keep)}")
        for r in runs.get(task, []):
            lines.append(f"    ledger: attempt={r[0]} pid={r[1]} worker={r[2]} t={r[3]} marker={r[4]}")
        near = chaos_near([r[3] for r in runs.get(task, [])])
        for line in near:
            lines.append(f"    chaos near: {line}")
        return lines

    # lost: acknowledged, but no result (pending/assigned/running/unknown).
    finished, lost, failed, bad_failed, odd = [], [], [], [], []
    for task in sorted(acked):
        view, _ = views[task]
        state = view.get("state") if view else None
        if state not in ("done", "failed"):
            lost.append(task)
            continue
        finished.append(task)
        if state == "failed":
            failed.append(task)
            reason = view.get("reason") or ""
            attempts = view.get("attempts") or 0
            if not (reason == "worker lost" and attempts > RETRIES):
                bad_failed.append(task)
        elif view.get("exit_code") != 0:
            # Our jobs exit 0; a signal here means a killed run's result was kept.
            odd.append(task)
        elif not runs.get(task):
            # done, but the job never wrote its ledger line.
            odd.append(task)

    # Repeats: explained when every run was a new attempt counted by zkmw.
    run_twice, explained, unexplained = [], [], []
    for task in sorted(runs):
        if task not in acked or len(runs[task]) < 2:
            continue
        run_twice.append(task)
        view, _ = views[task]
        attempts = (view or {}).get("attempts") or 0
        numbers = [r[0] for r in runs[task]]
        if attempts >= len(numbers) and len(set(numbers)) == len(numbers):
            explained.append(task)
        else:
            unexplained.append(task)

    # Overlaps (for information): a run that was still going when the next run
    # of the same task started, e.g. the job of a worker killed with SIGKILL or
    # frozen, which zkmw cannot stop, while the task was re-run elsewhere.
    overlaps, overlap_lines = [], []
    hits = worker_actions(chaos)
    for task in run_twice:
        rs = sorted(runs[task], key=lambda r: float(r[3] or 0))
        for a, b in zip(rs, rs[1:]):
            end = ends.get((task, str(a[0]), a[1]))
            if end is not None and b[3] and end > float(b[3]):
                overlaps.append(task)
                # What hit the first run's worker between its start and the re-run.
                cause = [f"{what} {w} {t - float(a[3]):+.1f} s after it started"
                         for (t, what, w) in hits
                         if w == a[2] and float(a[3]) - 0.5 <= t <= float(b[3])]
                overlap_lines.append(
                    f"  {task}: attempt {a[0]} on {a[2]} ran {a[3]}..{end:.3f}, attempt {b[0]} on {b[2]} "
                    f"started {b[3]} ({end - float(b[3]):.2f} s of overlap); "
                    f"cause: {', '.join(cause) or 'no kill/freeze of ' + a[2] + ' found'}")
                break
    killed_runs = sum(1 for t, rs in runs.items() for r in rs if (t, str(r[0]), r[1]) not in ends)

    # Phantoms: ran, but their id was never acknowledged.
    phantom = sorted(t for t in runs if t not in acked)
    phantom_dup, phantom_failed_submit = [], []
    for task in phantom:
        marker = runs[task][0][4]
        if marker in marker_of_ack:
            phantom_dup.append(f"{task} (duplicate of {marker_of_ack[marker]}, marker {marker})")
        elif marker in failed_markers:
            phantom_failed_submit.append(f"{task} (marker {marker}: that submit exited non-zero)")

    summary = (
        f"chaos: submitted={len(acked)} submit_failures={len(failures)} "
        f"finished={len(finished)} lost={len(lost)} run_twice={len(run_twice)} "
        f"explained={len(explained)} unexplained={len(unexplained)} failed={len(failed)} "
        f"bad_failed={len(bad_failed)} odd={len(odd)} phantom={len(phantom)} "
        f"anomalies={anomalies} overlap={len(overlaps)} duration={duration}s"
    )
    ok = not (lost or unexplained or phantom or bad_failed or odd or dup_ack or anomalies)

    report.append(summary)
    report.append(f"verdict: {'PASS' if ok else 'FAIL'}")
    report.append(f"runs in the ledger: {sum(len(v) for v in runs.values())}, of which without an end "
                  f"line (killed, or still running): {killed_runs}; malformed lines: {len(bad_lines)}")
    report.append("overlap (informational, does not fail the run): runs of one task that were "
                  "running at the same time")
    reasons = defaultdict(int)
    for task in failed:
        view, _ = views[task]
        reasons[f"{view.get('reason')} (attempts={view.get('attempts')})"] += 1
    if anomalies:
        report.append(f"anomalies: {anomalies} (grep ANOMALY chaos.log)")
    report.append("failed reasons: " + (json.dumps(reasons) if reasons else "none"))
    for title, items, detailed in (
        ("LOST (acknowledged, no result)", lost, True),
        ("UNEXPLAINED repeats", unexplained, True),
        ("BAD failures (reason not acceptable)", bad_failed, True),
        ("ODD results (done but not exit 0, or no ledger line)", odd, True),
        ("PHANTOMS (ran, never acknowledged)", phantom, True),
        ("  phantoms that duplicate an acknowledged submit", phantom_dup, False),
        ("  phantoms from a submit that exited non-zero", phantom_failed_submit, False),
        ("DUPLICATE acknowledgements", dup_ack, False),
        ("OVERLAPPING runs (informational)", overlap_lines, False),
        ("failed tasks", failed, True),
        ("explained repeats", explained, True),
        ("submit failures", failures, False),
        ("acknowledged submits that warned (see submit/<marker>.warn)", warned, False),
        ("malformed ledger lines", bad_lines, False),
    ):
        if not items:
            continue
        report.append(f"\n== {title}: {len(items)}")
        for item in items:
            report.extend(describe(item) if detailed else [f"  {item}"])
    with open(os.path.join(run, "report.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(report) + "\n")
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
