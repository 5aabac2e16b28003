#!/usr/bin/env python3
"""`make soak`: the fault suite's bank workload, without nemeses, for a long time (docs/faults.md
"Soak"), to find what only time shows: memory that grows, connections or file descriptors that
leak, throughput that decays.

Starts the fault suite's cluster (bank.Suite: a private PostgreSQL and Redis, SOAK_REPLICAS
`tally serve` replicas and one `tally worker`, here without the proxies) in
target/faults/soak-<time>-<suffix>/, sets up the same bank, and runs a steady closed-loop
workload for SOAK_MINUTES: SOAK_CLIENTS clients, each pausing up to SOAK_THINK_MS between calls,
making single transfers, batches of SOAK_BATCH_SIZE (a SOAK_BATCH_SHARE of the calls) and
statement reads (a SOAK_READ_SHARE: ListAccounts, a page of ListEntries, GetAccountBalance);
a sign-up every SOAK_SIGNUP_SECONDS (so the worker mails), and every customer's session
refreshed every SOAK_REFRESH_SECONDS (the access tokens live 15 minutes). Every
SOAK_SAMPLE_SECONDS it samples each tally process's RSS, open file descriptors and CPU, the
PostgreSQL backends of each (by application_name), Redis's connected_clients and the
transfers and reads completed, into target/soak-samples.csv.

Afterwards: the fault suite's checks (money conserved, balances equal entries, nothing
negative, every client told the truth, `tally verify`, mail, no panic), then the soak's
criteria, measured from the end of a warm-up (SOAK_WARMUP_SECONDS) on: each replica's RSS at
the end at most SOAK_RSS_GROWTH (0.20) above its RSS after the warm-up (the medians of the last
minute's samples and of the minute after the warm-up); no PostgreSQL backend,
Redis client or file descriptor count in the last window above its most in the first window
after the warm-up plus SOAK_CONN_SLACK; the transfers per second of the last window
(SOAK_WINDOW_SECONDS, 300) within SOAK_THROUGHPUT_TOLERANCE (0.10) of the first. The summary
(target/soak-summary.md) holds the fault suite's and the soak's tables. Exits 1 when a check or
criterion fails, 2 when the soak could not run. Standard library only.
"""

import csv
import os
import random
import statistics
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in scripts/faults/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bank  # noqa: E402
import checks  # noqa: E402
import cluster  # noqa: E402
import workload  # noqa: E402
from cluster import SetupError  # noqa: E402

SAMPLES_CSV = os.path.join(bank.ROOT, "target", "soak-samples.csv")


def number(env, name, default, kind=float, least=None, most=None):
    raw = env.get(name)
    try:
        value = kind(raw) if raw not in (None, "") else default
    except ValueError:
        raise SetupError(f"{name}={raw!r} is not a number") from None
    if (least is not None and value < least) or (most is not None and value > most):
        raise SetupError(f"{name}={value}: must be between {least} and {most}")
    return value


class Config(bank.Config):
    """The fault suite's configuration (TALLY_BIN, FAULTS_KEEP_DATA, the amounts), with the
    soak's SOAK_* knobs over it."""

    def __init__(self):
        super().__init__()
        env = os.environ
        self.minutes = number(env, "SOAK_MINUTES", 30.0, least=0.5)
        self.seconds = self.minutes * 60
        self.replicas = number(env, "SOAK_REPLICAS", 2, int, least=1, most=8)
        self.clients = number(env, "SOAK_CLIENTS", 4, int, least=1, most=64)
        self.customers = number(env, "SOAK_CUSTOMERS", 8, int, least=2, most=50)
        self.think = number(env, "SOAK_THINK_MS", 100.0, least=0) / 1000
        self.batch_share = number(env, "SOAK_BATCH_SHARE", 0.05, least=0, most=1)
        self.batch_size = number(env, "SOAK_BATCH_SIZE", 10, int, least=1, most=1000)
        self.read_share = number(env, "SOAK_READ_SHARE", 0.10, least=0, most=1)
        if self.batch_share + self.read_share > 1:
            raise SetupError("SOAK_BATCH_SHARE + SOAK_READ_SHARE must be at most 1")
        self.signup_interval = number(env, "SOAK_SIGNUP_SECONDS", 30.0, least=1)
        self.refresh_interval = number(env, "SOAK_REFRESH_SECONDS", 300.0, least=10, most=800)
        self.sample = number(env, "SOAK_SAMPLE_SECONDS", 10.0, least=1)
        self.warmup = number(env, "SOAK_WARMUP_SECONDS", 60.0, least=0)
        self.window = number(env, "SOAK_WINDOW_SECONDS", 300.0, least=self.sample)
        self.rss_growth = number(env, "SOAK_RSS_GROWTH", 0.20, least=0)
        self.tolerance = number(env, "SOAK_THROUGHPUT_TOLERANCE", 0.10, least=0)
        self.conn_slack = number(env, "SOAK_CONN_SLACK", 2, int, least=0)
        self.seed = number(env, "SOAK_SEED", random.randrange(1, 10**6), int)
        self.nemeses = []
        if self.warmup + 2 * self.window > self.seconds:
            raise SetupError(f"SOAK_MINUTES={self.minutes:g} is shorter than the warm-up "
                             f"({self.warmup:g} s) and two windows of {self.window:g} s: lengthen it, "
                             f"or shorten SOAK_WARMUP_SECONDS / SOAK_WINDOW_SECONDS")


class Sampler(threading.Thread):
    """Every `cfg.sample` seconds, one row: per tally process its RSS (KiB), open fds, CPU share
    of one core (%) and PostgreSQL backends; Redis's connected_clients (this sampler's own
    connection included); the transfers and reads completed since the last row, and the
    median and 99th percentile of the transfer calls' latency. Rows are appended to the CSV as
    they come, so an interrupted soak keeps them."""

    def __init__(self, suite, path):
        super().__init__(name="sampler", daemon=True)
        self.suite = suite
        self.path = path
        self.rows = []
        self.stop = threading.Event()
        self.cpu = {}
        self.columns = ["t", "time", "interval_s", "transfers", "transfers_per_s", "reads", "transfer_p50_ms", "transfer_p99_ms"]
        for p in suite.processes:
            self.columns += [f"{p.name}_{k}" for k in ("rss_kb", "fds", "cpu_pct", "pg")]
        self.columns += ["pg_backends", "redis_clients", "load1"]

    def run(self):
        with open(self.path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=self.columns)
            out.writeheader()
            t0 = self.suite.history.t0
            last = t0
            self.suite.history.meter.take()  # the setup's calls are not the workload's
            while not self.stop.wait(max(0.0, last + self.suite.cfg.sample - time.monotonic())):
                now = time.monotonic()
                row = self.sample(now - t0, now - last)
                last = now
                self.rows.append(row)
                out.writerow(row)
                f.flush()

    def sample(self, t, dt):
        suite = self.suite
        counts, seconds = suite.history.meter.take()
        transfers = counts["transfer"] + counts["batch"]
        calls = sorted(seconds["transfer"])
        row = {"t": round(t, 1), "time": time.strftime("%H:%M:%S"), "interval_s": round(dt, 2), "transfers": transfers,
               "transfers_per_s": round(transfers / dt, 1) if dt > 0 else 0, "reads": counts["read"],
               "transfer_p50_ms": round(1000 * statistics.median(calls), 1) if calls else "",
               "transfer_p99_ms": round(1000 * calls[min(len(calls) - 1, int(0.99 * len(calls)))], 1) if calls else ""}
        try:
            backends = dict(suite.pg.psql(
                "select coalesce(nullif(application_name, ''), '(none)'), count(*) from pg_stat_activity "
                "where backend_type = 'client backend' and pid <> pg_backend_pid() group by 1"))
        except (RuntimeError, OSError) as err:
            cluster.log(f"sampling pg_stat_activity failed: {err}")
            backends = {}
        for p in suite.processes:
            st = p.proc_stats() or {}
            prev = self.cpu.get(p.name)
            cpu = ""
            if st and prev and prev[0] == st["pid"] and dt > 0:
                cpu = round(100 * (st["cpu_s"] - prev[1]) / dt, 1)
            if st:
                self.cpu[p.name] = (st["pid"], st["cpu_s"])
            row[f"{p.name}_rss_kb"] = st.get("rss_kb", "")
            row[f"{p.name}_fds"] = st.get("fds", "")
            row[f"{p.name}_cpu_pct"] = cpu
            row[f"{p.name}_pg"] = int(backends.get(p.name, 0))
        row["pg_backends"] = sum(int(n) for n in backends.values())
        row["redis_clients"] = suite.redis.info("clients").get("connected_clients", "")
        row["load1"] = round(os.getloadavg()[0], 2)
        return row


def pct(x):
    """0.1 → '10%', 0.001 → '0.1%'."""
    return f"{x:.0%}" if abs(round(x * 100) - x * 100) < 1e-9 else f"{x:.1%}"


def window(rows, start, end):
    """The rows sampled in (start, end]: each covers the interval that ends at its `t`."""
    return [r for r in rows if start < r["t"] <= end]


def values(rows, column):
    return [r[column] for r in rows if r.get(column) not in ("", None)]


def rate(rows):
    """Transfers per second over the rows' intervals."""
    span = sum(r["interval_s"] for r in rows)
    return sum(r["transfers"] for r in rows) / span if span > 0 else None


class Soak(bank.Suite):
    def __init__(self, cfg):
        super().__init__(cfg, replicas=cfg.replicas, proxies=False, run_prefix="soak-")
        self.sampler = None
        self.sessions = None
        self.figures = []  # (what, after the warm-up, end, ratio or change, bound) for the summary
        self.connections = []  # (counter, first window's most, last window's most)

    def run(self):
        cfg = self.cfg
        clients = self.start_workload(
            f"{cfg.minutes:g} min, no nemesis; {cfg.batch_share:.0%} of the calls batches of {cfg.batch_size}, "
            f"{cfg.read_share:.0%} statement reads, think up to {cfg.think * 1000:.0f} ms",
            signup_interval=cfg.signup_interval, readiness_period=1.0,
            batch_share=cfg.batch_share, batch_size=cfg.batch_size, read_share=cfg.read_share)
        self.sessions = workload.Sessions(self, cfg.refresh_interval)
        self.sessions.start()
        self.sampler = Sampler(self, SAMPLES_CSV)
        self.sampler.start()
        t0 = self.history.t0
        next_note = t0 + 60
        while time.monotonic() < t0 + cfg.seconds and not self.interrupted:
            self.wait_until(min(next_note, t0 + cfg.seconds))
            if time.monotonic() >= next_note:
                next_note += 60
                self.progress()
        self.sampler.stop.set()
        self.sampler.join(30)
        self.stop_workload(clients, self.sessions)

    def progress(self):
        rows = self.sampler.rows[-6:]
        if not rows:
            return
        last = rows[-1]
        procs = ", ".join(f"{r.name} {int(last[f'{r.name}_rss_kb'] or 0) / 1024:.1f} MiB, {last[f'{r.name}_fds']} fds, "
                          f"{last[f'{r.name}_pg']} pg" for r in self.replicas)
        self.say(f"{last['t'] / 60:4.1f} min: {rate(rows) or 0:.0f} transfers/s, p99 {last['transfer_p99_ms']} ms; "
                 f"{procs}; redis clients {last['redis_clients']}; load {last['load1']}")

    def check(self):
        super().check()
        self.checks += self.criteria()

    def criteria(self):
        """The soak's three criteria, as checks of the summary's table."""
        cfg = self.cfg
        rows = self.sampler.rows if self.sampler else []
        end_t = rows[-1]["t"] if rows else 0
        first = window(rows, cfg.warmup, cfg.warmup + cfg.window)
        last = window(rows, end_t - cfg.window, end_t)
        out = []

        # RSS after the warm-up and at the end: the median of a minute's samples each (one
        # sample alone may catch a passing peak or dip of the allocator).
        rss_first = window(rows, cfg.warmup, cfg.warmup + 60)
        rss_last = window(rows, end_t - 60, end_t)

        def rss(col):
            a, b = values(rss_first, col), values(rss_last, col)
            return (statistics.median(a) if a else None), (statistics.median(b) if b else None)

        c = checks.Check(f"RSS of every replica at the end at most {pct(cfg.rss_growth)} above its RSS after the warm-up")
        seen = []
        for r in self.replicas:
            base, end = rss(f"{r.name}_rss_kb")
            if not base or not end:
                c.bad(f"{r.name}: no RSS sampled (after the warm-up: {base}, at the end: {end})")
                continue
            ratio = end / base
            seen.append(f"{r.name} {base / 1024:.1f} → {end / 1024:.1f} MiB ({ratio:.2f}×)")
            self.figures.append((f"RSS of {r.name} (MiB)", f"{base / 1024:.1f}", f"{end / 1024:.1f}", f"{ratio:.2f}×",
                                 f"≤ {1 + cfg.rss_growth:.2f}×"))
            if ratio > 1 + cfg.rss_growth:
                c.bad(f"{r.name}: {base / 1024:.1f} MiB after the warm-up, {end / 1024:.1f} MiB at the end ({ratio:.2f}×)")
        base, end = rss(f"{self.worker.name}_rss_kb")
        if base and end:
            self.figures.append(("RSS of the worker (MiB; not a criterion)", f"{base / 1024:.1f}", f"{end / 1024:.1f}",
                                 f"{end / base:.2f}×", "—"))
        c.info = "; ".join(seen)
        out.append(c)

        c = checks.Check(f"no connection growth: PostgreSQL backends, Redis clients and fds in the last window "
                         f"at most the first window's most + {cfg.conn_slack}")
        counters = [(f"PostgreSQL backends of {p.name}", f"{p.name}_pg") for p in self.processes]
        counters += [("PostgreSQL backends, all", "pg_backends"), ("Redis connected_clients", "redis_clients")]
        counters += [(f"open fds of {p.name}", f"{p.name}_fds") for p in self.processes]
        for what, col in counters:
            a, b = [int(v) for v in values(first, col)], [int(v) for v in values(last, col)]
            if not a or not b:
                c.bad(f"{what}: not sampled in both windows")
                continue
            self.connections.append((what, min(a), max(a), min(b), max(b)))
            if max(b) > max(a) + cfg.conn_slack:
                c.bad(f"{what}: at most {max(a)} in the first window, up to {max(b)} in the last")
        c.info = f"{len(self.connections)} counters, none grew"
        out.append(c)

        c = checks.Check(f"throughput of the last window within {pct(cfg.tolerance)} of the first window after the warm-up")
        r1, r2 = rate(first), rate(last)
        if r1 is None or r2 is None or r1 <= 0:
            c.bad(f"not enough samples for two windows (first {r1}, last {r2})")
        else:
            ratio = r2 / r1
            self.figures.insert(0, ("transfers per second", f"{r1:.1f}", f"{r2:.1f}", f"{ratio:.2f}×",
                                    f"{1 - cfg.tolerance:.2f}× – {1 + cfg.tolerance:.2f}×"))
            p99 = [(statistics.median(values(w, "transfer_p99_ms")) if values(w, "transfer_p99_ms") else None) for w in (first, last)]
            if all(p99):
                self.figures.insert(1, ("transfer call p99, median of the samples (ms; not a criterion)",
                                        f"{p99[0]:.1f}", f"{p99[1]:.1f}", f"{p99[1] / p99[0]:.2f}×", "—"))
            c.info = f"{r1:.1f} then {r2:.1f} transfers/s ({ratio:.2f}×)"
            if abs(ratio - 1) > cfg.tolerance:
                c.bad(f"{r1:.1f} transfers/s in the first window, {r2:.1f} in the last ({ratio:.2f}×)")
        out.append(c)
        return out

    def summary(self):
        cfg = self.cfg
        rows = self.sampler.rows if self.sampler else []
        lines = ["# Soak summary", ""]
        lines.append(f"Run of {time.strftime('%Y-%m-%d %H:%M')}: {cfg.clients} clients (think up to "
                     f"{cfg.think * 1000:.0f} ms; {cfg.batch_share:.0%} batches of {cfg.batch_size}, "
                     f"{cfg.read_share:.0%} statement reads), {len(self.replica_names)} replicas, 1 worker, no nemesis; "
                     f"workload {self.timings.get('workload', 0) / 60:.1f} min, warm-up {cfg.warmup:g} s, windows of "
                     f"{cfg.window:g} s, a sample every {cfg.sample:g} s ({len(rows)} in "
                     f"`{bank.rel_path(SAMPLES_CSV)}`), seed {cfg.seed}; whole run "
                     f"{(time.monotonic() - self.t_start) / 60:.1f} min.")
        lines.append("")
        lines += self.setup_error_section()
        if self.figures:
            lines += ["## Soak", "", "First window: from the end of the warm-up; last window: up to the end. RSS: the "
                      "median of the samples of the minute after the warm-up, and of the last minute.", "",
                      "| figure | first window / after warm-up | last window / end | ratio | bound |", "|---|---|---|---|---|"]
            lines += [f"| {' | '.join(f)} |" for f in self.figures]
            lines.append("")
        if self.connections:
            lines += ["| counter | first window (min–max) | last window (min–max) |", "|---|---|---|"]
            lines += [f"| {w} | {a}–{b} | {c}–{d} |" for w, a, b, c, d in self.connections]
            lines.append("")
        if rows:
            lines += self.timeline(rows)
        if self.sessions:
            lines += [f"Sessions: {self.sessions.refreshed} refreshed, {self.sessions.logins} signed in anew.", ""]
        lines += self.transfers_section()
        return self.checks_section(lines)

    def timeline(self, rows):
        """One line a minute (or fewer: at most 31), from the samples."""
        step = max(1, int(round(60 / self.cfg.sample)))
        picked = rows[step - 1::step]
        if len(picked) > 31:
            picked = picked[::-(-len(picked) // 31)]
        head = ["min", "transfers/s", "p99 ms", *(f"{r.name} RSS MiB" for r in self.replicas),
                *(f"{r.name} fds" for r in self.replicas), "pg backends", "redis clients",
                *(f"{r.name} CPU %" for r in self.replicas), "load"]
        lines = ["Over time (the sample at each minute; transfers/s over the minute before it):", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in picked:
            i = rows.index(r)
            tps = rate(rows[max(0, i - step + 1):i + 1]) or 0
            cells = [f"{r['t'] / 60:.1f}", f"{tps:.1f}", str(r["transfer_p99_ms"]),
                     *(f"{int(r[f'{p.name}_rss_kb'] or 0) / 1024:.1f}" for p in self.replicas),
                     *(str(r[f"{p.name}_fds"]) for p in self.replicas), str(r["pg_backends"]), str(r["redis_clients"]),
                     *(str(r[f"{p.name}_cpu_pct"]) for p in self.replicas), str(r["load1"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        return lines


if __name__ == "__main__":
    cluster.PREFIX = "soak"
    sys.exit(bank.main(lambda: Soak(Config()), "soak-summary.md"))
