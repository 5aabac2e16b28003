#!/usr/bin/env python3
"""`make test-faults`: a Jepsen-style bank test of tally under faults (docs/faults.md).

Starts, for this run only, in target/faults/<run>/: a private PostgreSQL and Redis, three
`tally serve` replicas (the third reaching PostgreSQL through a TCP proxy this script runs) and
one `tally worker` writing mail as .eml files (through a second proxy, for the
worker-commit-cut nemesis). Sets up a banker and customers through the HTTP JSON API, then runs
client threads making transfers with client-chosen ids, retried with the same id after every
ambiguous answer, and a thread signing up users, while the nemeses (nemesis.py) crash, restart,
pause and cut PostgreSQL, Redis, the replicas and the worker. Afterwards it checks the ledger
against what the clients were told (checks.py), runs `tally verify`, checks the mail (every
verification mailed at least once, the code of each one's earliest mail verifies), prints a
summary and writes it to target/faults-summary.md. Exits 1 when a check fails, 2 when the
suite itself could not run.

Environment: TALLY_BIN (default ./target/debug/tally), FAULTS_SECONDS (150: the workload's
length, nemeses spread over it), FAULTS_CLIENTS (16), FAULTS_CUSTOMERS (8), FAULTS_SEED (random),
FAULTS_NEMESES (comma-separated, run in that order; default nemesis.ALL; nemesis.EXTRA holds
the opt-in ones, if any), FAULTS_THINK_MS (50: the most a client pauses between transfers),
FAULTS_KEEP_DATA (set: keep the PostgreSQL data directory). Standard library only.
"""

import base64
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in scripts/faults/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import api  # noqa: E402
import checks  # noqa: E402
import cluster  # noqa: E402
import nemesis  # noqa: E402
import proxy  # noqa: E402
import workload  # noqa: E402
from cluster import SetupError, log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPLICAS = 3
RUNS_KEPT = 3


class Config:
    def __init__(self):
        env = os.environ
        self.tally_bin = os.path.abspath(env.get("TALLY_BIN") or os.path.join(ROOT, "target/debug/tally"))
        self.seconds = float(env.get("FAULTS_SECONDS") or 150)
        self.clients = int(env.get("FAULTS_CLIENTS") or 16)
        self.customers = int(env.get("FAULTS_CUSTOMERS") or 8)
        self.seed = int(env.get("FAULTS_SEED") or random.randrange(1, 10**6))
        names = [n.strip() for n in (env.get("FAULTS_NEMESES") or ",".join(nemesis.ALL)).split(",") if n.strip()]
        unknown = [n for n in names if n not in nemesis.ALL + nemesis.EXTRA]
        if unknown:
            raise SetupError(f"FAULTS_NEMESES: unknown {', '.join(unknown)} "
                             f"(known: {', '.join(nemesis.ALL + nemesis.EXTRA)})")
        self.nemeses = names
        self.think = float(env.get("FAULTS_THINK_MS") or 50) / 1000
        self.keep_data = bool(env.get("FAULTS_KEEP_DATA"))
        # Below the 8 s pause of a replica and the 5 s pool wait of a replica without its
        # database, so clients do time out and send the same transfer to another replica while
        # the first copy is still queued (both then race for the same id).
        self.client_timeout = 4.0
        self.recovery_timeout = 60.0
        self.retry_grace = 60.0  # how long in-flight transfers may keep retrying after the end
        self.max_amount = 6000
        self.deposit = 20000
        self.overdraft = 5000


def rel_path(path):
    try:
        return os.path.relpath(path, ROOT)
    except ValueError:
        return path


class Suite:
    """One run: `replicas` tally servers and a worker on a PostgreSQL and a Redis of its own.
    With `proxies`, the last replica and the worker reach PostgreSQL through the TCP proxies
    the nemeses cut (the fault suite); without, every process connects directly (the soak).
    `run_prefix` names the run's directory under target/faults/."""

    def __init__(self, cfg, replicas=REPLICAS, proxies=True, run_prefix="run-"):
        self.cfg = cfg
        self.replica_names = [f"tally-{i + 1}" for i in range(replicas)]
        self.use_proxies = proxies
        self.run_prefix = run_prefix
        self.t_start = time.monotonic()
        self.history = workload.History(self.t_start)
        self.history.log_tail = lambda r: cluster.tail(r.logfile, 15)
        self.stop_new = threading.Event()
        self.interrupted = False
        self.password = "fault suite passphrase " + uuid.uuid4().hex[:8]
        self.token_key = base64.b64encode(os.urandom(32)).decode()
        self.pg = self.redis = self.proxy = self.worker_proxy = None
        self.replicas = []
        self.worker = None
        self.processes = []
        self.customers = []
        self.owners = {}
        self.accounts = []
        self.deposits = []
        self.currencies = ["USD", "EUR"]
        self.proxied = self.replica_names[-1] if proxies else None
        self.ops = []
        self.readback = {}
        self.mail_delays = []  # (username, seconds from sign-up to its .eml, nemesis)
        self.results = []
        self.checks = []
        self.setup_error = None
        self.timings = {}
        self.readiness = None
        self.signups = None
        self.nemeses = None
        self.run_dir = self.make_run_dir()

    def say(self, msg):
        log(f"[{time.monotonic() - self.t_start:6.1f}s] {msg}")

    # -- the run directory and the processes ----------------------------------------------

    def make_run_dir(self):
        base = os.path.join(ROOT, "target", "faults")
        os.makedirs(base, exist_ok=True)
        old = sorted(d for d in os.listdir(base) if d.startswith(self.run_prefix))
        for d in old[: max(0, len(old) - (RUNS_KEPT - 1))]:
            self.reap_old_run(os.path.join(base, d))
        run_dir = tempfile.mkdtemp(prefix=time.strftime(f"{self.run_prefix}%Y%m%d-%H%M%S-"), dir=base)
        os.chmod(run_dir, 0o755)
        return run_dir

    @staticmethod
    def reap_old_run(path):
        """Deletes an old run's directory; a PostgreSQL still running there (a run killed with
        SIGKILL) is stopped first."""
        data = os.path.join(path, "pg", "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            bindir = cluster.find_pg_bindir()
            if bindir:
                owner = os.stat(data).st_uid
                argv = [os.path.join(bindir, "pg_ctl"), "-D", os.path.realpath(data), "-m", "immediate", "stop"]
                if owner != os.geteuid() and shutil.which("runuser"):
                    import pwd
                    argv = ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--", *argv]
                subprocess.run(argv, cwd="/", capture_output=True)
        link = os.path.join(path, "pg")
        if os.path.islink(link):
            target = os.path.realpath(link)
            if target.startswith("/var/tmp/tally-faults-"):
                shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)

    def tally_env(self, database_url, **extra):
        """The environment of a tally process: this process's, minus every tally setting the
        caller may have exported (the Makefile exports TALLY_LISTEN_ADDR and friends), plus
        the suite's."""
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("TALLY_") or k in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "RUST_LOG")
                       or k.startswith("OTEL_"))}
        env.update({
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis.url if self.redis else "redis://127.0.0.1:1",
            "RUST_LOG": "info,sqlx=warn",
            "NO_COLOR": "1",
            "TALLY_TOKEN_KEY": self.token_key,
            "TALLY_OUTBOX_LEASE_SECS": "15",
            "TALLY_DB_MAX_CONNECTIONS": "10",
        })
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start_cluster(self):
        t = time.monotonic()
        self.say(f"run directory {rel_path(self.run_dir)}; binary {os.environ.get('TALLY_BIN') or rel_path(self.cfg.tally_bin)}")
        if not os.access(self.cfg.tally_bin, os.X_OK):
            raise SetupError(f"{self.cfg.tally_bin} is not an executable (build it: cargo build --locked)")
        self.pg = cluster.Postgres(self.run_dir)
        self.pg.init()
        self.pg.start()
        self.pg.create_database()
        self.say(f"PostgreSQL ({self.pg.bindir}) on 127.0.0.1:{self.pg.port}, run as {self.pg.user}")
        self.redis = cluster.Redis(self.run_dir)
        self.redis.start()
        self.say(f"Redis on 127.0.0.1:{self.redis.port}")
        if self.use_proxies:
            self.proxy = proxy.Proxy(self.pg.port)
            self.worker_proxy = proxy.Proxy(self.pg.port)
            self.say(f"proxies → PostgreSQL: 127.0.0.1:{self.proxy.port} for {self.proxied}, "
                     f"127.0.0.1:{self.worker_proxy.port} for the worker")

        def url(name, via=None):
            # application_name: pg_stat_activity tells each process's connections apart.
            port = via.port if via else self.pg.port
            return f"postgres://postgres@127.0.0.1:{port}/tally?application_name={name}"
        out = subprocess.run([self.cfg.tally_bin, "migrate", "up"], env=self.tally_env(self.pg.url),
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise SetupError(f"tally migrate up failed: {out.stdout}{out.stderr}")
        for name in self.replica_names:
            port = cluster.free_port()
            env = self.tally_env(
                url(name, self.proxy if name == self.proxied else None),
                TALLY_LISTEN_ADDR=f"127.0.0.1:{port}",
                TALLY_RATE_AUTH_PER_MINUTE=1_000_000,
                TALLY_RATE_WRITES_PER_SECOND=1_000_000,
                TALLY_SHUTDOWN_DRAIN_SECS=2,
            )
            self.replicas.append(cluster.Tally(name, self.cfg.tally_bin, ["serve"], env, self.run_dir, port))
        worker_env = self.tally_env(
            url("worker", self.worker_proxy),
            TALLY_MAIL_DIR=os.path.join(self.run_dir, "mail"),
            TALLY_PUBLIC_URL=f"http://{self.replicas[0].addr}",
            TALLY_WORKER_METRICS_ADDR=f"127.0.0.1:{cluster.free_port()}",
            TALLY_QUEUE_POLL_MS=200,
            TALLY_OUTBOX_SWEEP_INTERVAL_MS=1000,
            TALLY_MAIL_BACKOFF_BASE_MS=500,
            TALLY_MAIL_BACKOFF_MAX_MS=4000,
            TALLY_MAIL_ATTEMPTS_MAX=30,
            TALLY_SHUTDOWN_DRAIN_SECS=2,
        )
        self.worker = cluster.Tally("worker", self.cfg.tally_bin, ["worker"], worker_env, self.run_dir)
        self.processes = [*self.replicas, self.worker]
        for p in self.processes:
            p.start()
        http = api.Client(timeout=5)
        for r in self.replicas:
            deadline = time.monotonic() + 60
            while True:
                a = http.call(r.addr, "GET", "/readyz")
                if a.status == 200:
                    break
                if not r.alive() or time.monotonic() > deadline:
                    raise SetupError(f"{r.name} did not get ready: {a.describe()}\n{cluster.tail(r.logfile)}")
                time.sleep(0.1)
        http.close()
        self.say(f"{len(self.replicas)} replicas ready (" + ", ".join(f"{r.name} {r.addr}" for r in self.replicas) + "), worker started")
        self.timings["cluster start"] = time.monotonic() - t

    def close(self):
        for p in self.processes:
            p.close()
        for p in (self.proxy, self.worker_proxy):
            if p:
                p.close()
        if self.redis:
            self.redis.close()
        if self.pg:
            self.pg.close()
            if not self.cfg.keep_data:
                self.pg.remove_data(self.run_dir)

    # -- setup through the API -------------------------------------------------------------

    def must(self, http, replica, method, path, body=None, token=None, want=200):
        """A setup call: ambiguous answers are retried a few times; anything else but `want`
        stops the suite (a 500 is also recorded as a finding)."""
        for _ in range(20):
            a = http.call(replica.addr, method, path, body, token=token)
            if a.status == want:
                return a.json
            if a.bug:
                self.history.record_answer("setup", replica, {f"{method} {path}": body}, a, None)
            if not (a.ambiguous or a.status == 429):
                break
            time.sleep(0.3)
        raise SetupError(f"setup call {method} {path} on {replica.name} answered {a.describe()}")

    def wait_mail(self, addresses, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            mails = checks.read_mails(os.path.join(self.run_dir, "mail"))
            got = {}
            for m in mails:  # earliest first
                got.setdefault(m.to, (m.vid, m.code))
            if all(a in got for a in addresses):
                return got
            if time.monotonic() > deadline:
                missing = [a for a in addresses if a not in got]
                raise SetupError(f"no verification mail for {', '.join(missing)} within {timeout} s\n"
                                 f"{cluster.tail(self.worker.logfile)}")
            time.sleep(0.2)

    def setup_bank(self):
        t = time.monotonic()
        http = api.Client(timeout=15)
        reps = self.replicas
        env = self.tally_env(self.pg.url)
        for argv in (["admin", "create-user", "--username", "banker", "--email", "banker@faults.test",
                      "--password", self.password], ["admin", "grant-role", "banker", "banker"]):
            out = subprocess.run([self.cfg.tally_bin, *argv], env=env, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise SetupError(f"tally {' '.join(argv[:2])} failed: {out.stdout}{out.stderr}")
        banker = self.must(http, reps[0], "POST", "/v1/sessions", {"username": "banker", "password": self.password})
        banker_token = banker["accessToken"]

        for i in range(self.cfg.customers):
            c = workload.Customer(f"cust{i + 1:02d}", f"cust{i + 1:02d}@faults.test", self.password)
            self.must(http, reps[i % len(reps)], "POST", "/v1/users",
                      {"username": c.username, "fullName": f"Customer {i + 1}", "email": c.email, "password": c.password})
            self.customers.append(c)
        mails = self.wait_mail([c.email for c in self.customers])
        for i, c in enumerate(self.customers):
            vid, code = mails[c.email]
            got = self.must(http, reps[(i + 1) % len(reps)], "POST", "/v1/users:verifyEmail", {"verificationId": vid, "code": code})
            if not got.get("emailVerified"):
                raise SetupError(f"verifying {c.username}'s email answered {got}")
            session = self.must(http, reps[(i + 2) % len(reps)], "POST", "/v1/sessions",
                                {"username": c.username, "password": c.password})
            c.token, c.refresh = session["accessToken"], session["refreshToken"]
            self.owners[c.username] = c

        for i, c in enumerate(self.customers):
            currencies = ["USD", "USD"] + (["EUR", "EUR"] if i % 2 == 0 else [])
            for k, cur in enumerate(currencies):
                a = self.must(http, reps[(i + k) % len(reps)], "POST", "/v1/accounts",
                              {"currency": cur, "name": f"{cur} {k + 1}"}, token=c.token)
                self.accounts.append(workload.Account(a["accountId"], c.username, cur))
            if i % 3 == 0:
                a = self.must(http, reps[i % len(reps)], "POST", "/v1/accounts",
                              {"currency": "USD", "owner": c.username, "name": "overdraft",
                               "overdraftLimit": str(self.cfg.overdraft)}, token=banker_token)
                self.accounts.append(workload.Account(a["accountId"], c.username, "USD", self.cfg.overdraft))
        for k, a in enumerate(self.accounts):
            rid = str(uuid.uuid4())
            got = self.must(http, reps[k % len(reps)], "POST", f"/v1/accounts/{a.id}:deposit",
                            {"requestId": rid, "amount": str(self.cfg.deposit)}, token=banker_token)
            if got.get("status") != "TRANSFER_STATUS_SUCCEEDED":
                raise SetupError(f"deposit answered {got}")
            self.deposits.append({"id": rid, "account": a.id, "amount": self.cfg.deposit})
        http.close()
        by = collections.Counter(a.currency for a in self.accounts)
        self.say(f"banker, {len(self.customers)} customers (emails verified), {len(self.accounts)} accounts "
                 f"({', '.join(f'{n} {c}' for c, n in sorted(by.items()))}), each given {self.cfg.deposit} by the banker")
        self.timings["setup"] = time.monotonic() - t

    # -- the run ----------------------------------------------------------------------------

    def watchdog(self):
        """An exit nobody asked for is a finding; the process is started again so the other
        checks still mean something."""
        while not self.stop_watchdog.is_set():
            for p in self.processes:
                if not p.expected_down and p.proc is not None and p.proc.poll() is not None:
                    rc = p.proc.returncode
                    self.history.finding("processes", f"{p.name} exited by itself (status {rc}) during "
                                                      f"{self.history.nemesis} at {self.history.rel():.1f}s; "
                                                      f"log: …{cluster.tail(p.logfile, 8)[-1200:]}")
                    self.say(f"{p.name} exited by itself (status {rc}); starting it again")
                    p.start()
            self.stop_watchdog.wait(0.5)

    def start_workload(self, what, signup_interval=8, readiness_period=0.25, **mix):
        """Starts the readiness monitor, the watchdog, the sign-ups and `cfg.clients` transfer
        clients (spread over the replicas; `mix`: TransferClient's shares of batches and reads);
        returns the clients. `what` ends the line that announces the workload."""
        cfg = self.cfg
        by_currency = collections.defaultdict(list)
        for a in self.accounts:
            by_currency[a.currency].append(a)
        self.readiness = workload.Readiness(self, period=readiness_period)
        self.readiness.start()
        self.signups = workload.Signups(self, interval=signup_interval, seed=cfg.seed)
        self.stop_watchdog = threading.Event()
        threading.Thread(target=self.watchdog, name="watchdog", daemon=True).start()
        n = len(self.replicas)
        clients = [workload.TransferClient(i, self, self.replicas[i % n], self.accounts, by_currency,
                                           cfg.max_amount, cfg.think, cfg.seed * 1000 + i, **mix)
                   for i in range(cfg.clients)]
        self.history.t0 = time.monotonic()
        self.say(f"workload: {cfg.clients} clients over {n} replicas, {what} (seed {cfg.seed})")
        for c in clients:
            c.start()
        self.signups.start()
        return clients

    def wait_until(self, end):
        while time.monotonic() < end and not self.interrupted:
            time.sleep(0.2)

    def stop_workload(self, clients, *others):
        """Lets the clients start no new transfer, waits for those in flight (they keep
        retrying for `cfg.retry_grace` at most), for the sign-ups and for `others` (threads
        that stop with `stop_new`)."""
        cfg = self.cfg
        self.say("stopping the workload; transfers in flight keep retrying")
        self.history.retry_deadline = time.monotonic() + cfg.retry_grace
        self.stop_new.set()
        self.signups.wake.set()
        for c in clients:
            c.join(cfg.retry_grace + 30)
            if c.is_alive():
                self.history.finding("workload", f"{c.name} did not finish (a call hangs?)")
        for t in (self.signups, *others):
            t.join(cfg.retry_grace + 30)
        self.timings["workload"] = time.monotonic() - self.history.t0
        self.ops = list(self.history.ops)

    def run(self):
        cfg = self.cfg
        clients = self.start_workload(f"{cfg.seconds:.0f} s, nemeses: {', '.join(cfg.nemeses)}")
        self.nemeses = nemesis.Nemeses(self)
        self.nemeses.run_schedule(cfg.nemeses, cfg.seconds)
        self.wait_until(max(self.history.t0 + cfg.seconds, time.monotonic() + 10))
        self.stop_workload(clients)
        self.results = self.nemeses.results

    def resolve(self):
        """Reads back every transfer without a definite answer (GET /v1/transfers/{id})."""
        http = api.Client(timeout=10)
        for op in self.ops:
            if op.state in ("ok", "failed"):
                continue
            for attempt in range(30):
                r = self.replicas[attempt % len(self.replicas)]
                a = http.call(r.addr, "GET", f"/v1/transfers/{op.id}", token=op.owner.token)
                if a.bug:
                    self.history.record_answer("read-back", r, {f"GET /v1/transfers/{op.id}": None}, a, None)
                if a.status == 200:
                    self.readback[op.id] = {"TRANSFER_STATUS_SUCCEEDED": "succeeded",
                                            "TRANSFER_STATUS_FAILED": "failed"}.get(a.json.get("status"), a.json.get("status"))
                    break
                if a.status == 404:
                    self.readback[op.id] = "absent"
                    break
                time.sleep(0.5)
        http.close()

    def drain_mail(self, timeout=120):
        """Waits until the worker has sent everything owed (bounded), then verifies the
        addresses of the users signed up during the run with the code of each verification's
        earliest mail (checks.first_codes_verify)."""
        t = time.monotonic()
        deadline = t + timeout
        mail_dir = os.path.join(self.run_dir, "mail")
        while True:
            owed = int(self.pg.psql("select count(*) from mail_outbox")[0][0])
            verifications = int(self.pg.psql("select count(*) from email_verifications")[0][0])
            mails = checks.read_mails(mail_dir)
            mailed = len({m.vid for m in mails})
            if owed == 0 and mailed >= verifications:
                break
            if time.monotonic() > deadline:
                self.history.finding("mail", f"after {timeout} s, {owed} mails still owed and {len(mails)} "
                                             f"written for {mailed} of {verifications} verifications")
                break
            time.sleep(0.5)
        self.timings["mail drain"] = time.monotonic() - t
        time.sleep(2)  # a duplicate send would land now
        mails = checks.read_mails(mail_dir)
        written = {}
        for m in mails:  # earliest first: the first mail of each recipient
            written.setdefault(m.to, m.mtime_ns / 1e9)
        for u in self.signups.users:
            if u[1] in written and u[5] is not None:
                self.mail_delays.append((u[0], written[u[1]] - u[5], u[3]))
        return mails, checks.first_codes_verify(self, mails)

    def check(self):
        mails, verified = self.drain_mail()
        self.readiness.stop.set()
        self.stop_watchdog.set()
        h = self.history
        out = []

        c = checks.Check("no HTTP 500 / INTERNAL answer")
        for b in h.bugs:
            c.bad(f"{b['answer']} to {b['request']} on {b['replica']} during {b['nemesis']} at {b['at']}")
        c.info = "none"
        out.append(c)
        c = checks.Check("no unexpected answer")
        c.info = "none"
        for b in h.unexpected:
            if b not in h.bugs:
                c.bad(f"{b['answer']} to {b['request']} on {b['replica']} during {b['nemesis']} at {b['at']}")
        for check, detail in h.findings:
            if check in ("answers", "workload"):
                c.bad(detail)
        for r in self.replicas:
            odd = {s: n for s, n in self.readiness.states_between(r, 0, time.monotonic()).items()
                   if s.isdigit() and s not in ("200", "503")}
            if odd:
                c.bad(f"/readyz of {r.name} answered {odd}")
        out.append(c)
        results = self.nemeses.results if self.nemeses else []
        unready = [f"{r.name}: {', '.join(r.ready_503)}" for r in results if r.ready_503]
        slowest = max(((v, r.name, k) for r in results for k, v in r.recovery.items() if v is not None),
                      default=None)
        infos = {
            "readiness": "503 seen: " + ("; ".join(unready) if unready else "no nemesis that cuts the database ran"),
            "recovery": f"after {len(results)} nemeses" + (
                f"; slowest first answer {slowest[0]:.1f}s ({slowest[2]} after {slowest[1]})" if slowest else ""),
            "processes": "none",
            "mail": f"owed mail written {self.timings.get('mail drain', 0):.0f}s after the workload",
        }
        for name, title in (("readiness", "/readyz answers 503 while the database is unreachable"),
                            ("recovery", "every replica recovers after every nemesis (ready, then a definite answer)"),
                            ("processes", "no process exits by itself"),
                            ("mail", "the mail outbox drains")):
            if name in ("readiness", "recovery") and not self.cfg.nemeses:
                continue  # the soak: nothing to recover from
            c = checks.Check(title)
            c.info = infos[name]
            for check, detail in h.findings:
                if check == name:
                    c.bad(detail)
            out.append(c)
        out += checks.ledger(self)
        out.append(checks.tally_verify(self))
        out += checks.mail(self, mails)
        out.append(verified)
        out.append(checks.logs(self))
        self.checks = out

    # -- the summary ------------------------------------------------------------------------

    def summary(self):
        lines = ["# Fault suite summary", ""]
        lines.append(f"Run of {time.strftime('%Y-%m-%d %H:%M')}: {self.cfg.clients} clients, {len(self.replica_names)} "
                     f"replicas (`{self.proxied}` through the proxy), 1 worker, workload {self.timings.get('workload', 0):.0f} s, "
                     f"seed {self.cfg.seed}; whole run {time.monotonic() - self.t_start:.0f} s.")
        lines.append("")
        lines += self.setup_error_section() + self.transfers_section() + self.nemeses_section()
        return self.checks_section(lines)

    def setup_error_section(self):
        if not self.setup_error:
            return []
        return ["**The suite could not run:**", "", "```", str(self.setup_error).strip(), "```", ""]

    def transfers_section(self):
        """The summary's transfers, answers, sign-ups and timings."""
        h = self.history
        ops = self.ops or list(h.ops)
        states = collections.Counter(op.state for op in ops)
        retried = sum(1 for op in ops if op.attempts > 1)
        lines = ["## Transfers", "", "| | count |", "|---|---|"]
        lines.append(f"| attempted | {len(ops)} |")
        lines.append(f"| acknowledged (applied) | {states['ok']} |")
        lines.append(f"| definitively failed (insufficient funds) | {states['failed']} |")
        unresolved = [op for op in ops if op.state not in ('ok', 'failed')]
        rb = collections.Counter(self.readback.get(op.id, "not read") for op in unresolved)
        lines.append(f"| no definite answer, read back | {len(unresolved)}" +
                     (f" ({', '.join(f'{k}: {v}' for k, v in sorted(rb.items()))})" if unresolved else "") + " |")
        lines.append(f"| retried (sent more than once) | {retried} |")
        lines.append(f"| requests sent | {sum(op.attempts for op in ops)} |")
        lines.append(f"| most attempts of one transfer | {max((op.attempts for op in ops), default=0)} |")
        lines.append("")
        lines += ["Answers that made a client send the same request again, and every answer seen:", "",
                  "| answer | retries | seen |", "|---|---|---|"]
        kinds = collections.Counter({k: v for k, v in h.answers.items()})
        for (what, kind), n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"| {what}: {kind} | {h.retries.get((what, kind), 0)} | {n} |")
        lines.append("")
        if self.signups:
            su = collections.Counter(u[2] for u in self.signups.users)
            lines.append(f"Sign-ups during the run: {len(self.signups.users)} ("
                         + ", ".join(f"{k}: {v}" for k, v in su.items()) + "); during a nemesis: "
                         + (", ".join(f"{u[0]} ({u[3]})" for u in self.signups.users if u[3] != "calm") or "none") + ".")
            lines.append("")
        if self.mail_delays:
            worst = sorted(self.mail_delays, key=lambda d: -d[1])[:3]
            lines.append("Their mail was written after (the slowest three): "
                         + ", ".join(f"{u} {d:.1f}s (signed up during {n})" for u, d, n in worst) + ".")
            lines.append("")
        lines.append("Timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items()) + ".")
        lines.append("")
        return lines

    def nemeses_section(self):
        lines = ["## Nemeses", "",
                  "Recovery: from the end of the fault until /readyz answered 200, and until the first definite "
                  "answer to a transfer, on each replica.", "",
                  "| # | nemesis | target | at | fault | /readyz 503 after | ready again after | first answer after | answers during fault + recovery |",
                  "|---|---|---|---|---|---|---|---|---|"]

        def per(d):
            return ", ".join(f"{k.replace('tally-', 't')} {v:.1f}s" if v is not None else f"{k.replace('tally-', 't')} —"
                             for k, v in d.items()) or "—"

        for i, r in enumerate(self.results or (self.nemeses.results if self.nemeses else []), 1):
            top = ", ".join(f"{'' if what == 'transfer' else what + ' '}{kind} ×{n}"
                            for (what, kind), n in r.answers.most_common(5))
            lines.append(f"| {i} | {r.name} | {r.target} | {r.start:.0f}s | {r.fault_seconds:.1f}s | {per(r.ready_503)} "
                         f"| {per(r.ready_recovery)} | {per(r.recovery)} | {top} |")
        lines.append("")
        return lines

    def checks_section(self, lines):
        """Appends the checks, the first repros when one failed and the verdict to `lines`:
        (the summary's text, whether it passed)."""
        h = self.history
        lines += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
        for c in self.checks:
            detail = c.detail().replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {c.name} | {'ok' if c.ok else '**FAILED**'} | {detail} |")
        lines.append("")
        if any(not c.ok for c in self.checks) and (h.bugs or h.unexpected):
            lines += ["## Repros", ""]
            for b in (h.bugs + [u for u in h.unexpected if u not in h.bugs])[:5]:
                lines += [f"- {b['at']}, during {b['nemesis']}, on {b['replica']}: `{b['request']}` → {b['answer']}",
                          "", "  ```", *("  " + line for line in b["log"].strip().splitlines()[-8:]), "  ```", ""]
        failed = [c for c in self.checks if not c.ok]
        verdict = "PASSED" if self.checks and not failed and not self.setup_error else "FAILED"
        lines.append(f"**{verdict}**: {len(self.checks) - len(failed)} of {len(self.checks)} checks passed"
                     + "".join(f"; failed: {c.name} ({c.detail(2)})" for c in failed)
                     + f". Logs: `{rel_path(self.run_dir)}/`.")
        return "\n".join(lines) + "\n", verdict == "PASSED"


def main(make_suite=lambda: Suite(Config()), summary_name="faults-summary.md"):
    """Runs a suite (`make_suite()`: the configuration is read there, and a SetupError from it
    exits 2), prints its summary and writes it to target/`summary_name`: exit 0 when every
    check passed, 1 when one failed, 2 when the suite could not run."""
    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        suite = make_suite()
    except SetupError as err:
        print(f"{cluster.PREFIX}: {err}", file=sys.stderr)
        return 2
    code = 2
    try:
        suite.start_cluster()
        suite.setup_bank()
        suite.run()
        suite.resolve()
        suite.check()
    except KeyboardInterrupt:
        suite.interrupted = True
        suite.setup_error = "interrupted"
        log("interrupted; cleaning up")
    except SetupError as err:
        suite.setup_error = err
        log(f"error: {err}")
    except Exception:  # noqa: BLE001 - a bug of the suite: still clean up and summarise
        suite.setup_error = "the suite crashed:\n" + traceback.format_exc()
        log(suite.setup_error)
    finally:
        suite.stop_new.set()
        try:
            suite.close()
        except Exception as err:  # noqa: BLE001
            log(f"cleanup: {err}")
    text, passed = suite.summary()
    print()
    print(text)
    path = os.path.join(ROOT, "target", summary_name)
    with open(path, "w") as f:
        f.write(text)
    log(f"summary written to {rel_path(path)}")
    if suite.setup_error:
        return 2
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
