"""The nemeses of the fault suite and their schedule: what is done to the cluster, one fault at a
time, while the workload runs. Every fault is held until its effect is observed (or a bound
passes, which is then a finding), and after it the suite waits, again bounded, until every
replica is ready again and has given a definite answer to a transfer; so no check depends on
how fast this machine happens to be.

| name | what |
|---|---|
| pg-crash | `pg_ctl stop -m immediate` (a crash: no checkpoint, open transactions cut), held until every replica's /readyz answers 503, then started again (crash recovery) |
| pg-fast-restart | `pg_ctl restart -m fast`: every session terminated, clean shutdown, start |
| replica-kill | SIGKILL of tally-1 (calls in flight get no answer), started again after 3 s |
| replica-pause | SIGSTOP of tally-2 for 8 s (its connections hang, and so does a database transaction it may have open), then SIGCONT |
| redis-stop | the private Redis stopped (its queued mail jobs are lost: no persistence) while users sign up, started again empty |
| proxy-drop | every PostgreSQL connection of tally-3 cut by the proxy, and new ones refused until its /readyz answers 503 |
| proxy-stall | the proxy stops forwarding bytes between tally-3 and PostgreSQL (connections stay open) until its /readyz answers 503, at least 6 s |
| worker-commit-cut | the worker's connection to PostgreSQL (through a second proxy) cut at the moment it sends `DELETE FROM mail_outbox` during a sign-up's mail job, i.e. after the verification mail was written and before the transaction that records it commits: the job is retried and the user gets a second mail, whose code and the first's must both work |
"""

import collections
import time

ALL = ["pg-crash", "replica-kill", "proxy-drop", "worker-commit-cut", "redis-stop", "replica-pause",
       "pg-fast-restart", "proxy-stall"]
EXTRA = []  # opt-in nemeses (FAULTS_NEMESES), not in the default schedule


class Result:
    def __init__(self, name, target, start):
        self.name = name
        self.target = target
        self.start = start  # seconds since the workload began
        self.fault_seconds = None
        self.notes = []
        self.ready_503 = {}  # replica -> seconds from the fault's start until /readyz said 503
        self.ready_recovery = {}  # replica -> seconds from the fault's end until /readyz said 200
        self.recovery = {}  # replica -> seconds from the fault's end until its first definite answer
        self.answers = collections.Counter()
        self.wall_start = None  # time.time() when the fault began, and when recovery ended
        self.wall_end = None
        self.tripped_at = None  # worker-commit-cut: time.time() of the cut


class Nemeses:
    def __init__(self, suite):
        self.suite = suite
        self.h = suite.history
        self.mon = suite.readiness
        self.results = []

    # -- helpers --------------------------------------------------------------------------

    def replica(self, name):
        return next(r for r in self.suite.replicas if r.name == name)

    def hold_until_unready(self, replicas, t0, least, most, keep_faulting=None):
        """Holds the fault at least `least` s, and until /readyz of every one of `replicas`
        answered 503 (at most `most` s). Returns {replica: seconds until 503, or None}."""
        def all_unready():
            return all(self.mon.first_since(r, "503", t0) is not None for r in replicas)

        while time.monotonic() - t0 < most:
            if keep_faulting:
                keep_faulting()
            if time.monotonic() - t0 >= least and all_unready():
                break
            time.sleep(0.1)
        seen = {}
        for r in replicas:
            t = self.mon.first_since(r, "503", t0)
            seen[r.name] = None if t is None else t - t0
        return seen

    def check_unready(self, result, replicas, t0, most, why):
        for r in replicas:
            if result.ready_503.get(r.name) is None:
                states = dict(self.mon.states_between(r, t0, time.monotonic()))
                self.h.finding("readiness", f"{result.name}: /readyz of {r.name} never answered 503 in "
                                            f"{most} s while {why} (answers seen: {states})")

    # -- the nemeses: each returns when its fault has ended -------------------------------

    def pg_crash(self, result):
        pg = self.suite.pg
        t0 = time.monotonic()
        pg.stop("immediate")
        self.suite.signups.now(1)
        result.ready_503 = self.hold_until_unready(self.suite.replicas, t0, least=4, most=30)
        self.check_unready(result, self.suite.replicas, t0, 30, "PostgreSQL was down")
        pg.start()
        result.notes.append("PostgreSQL down (immediate stop) until every replica was unready")
        return t0

    def pg_fast_restart(self, result):
        t0 = time.monotonic()
        self.suite.pg.restart("fast")
        result.notes.append("pg_ctl restart -m fast")
        return t0

    def replica_kill(self, result):
        r = self.replica("tally-1")
        t0 = time.monotonic()
        r.kill()
        time.sleep(3)
        r.start()
        result.notes.append("SIGKILL, started again 3 s later")
        return t0

    def replica_pause(self, result):
        r = self.replica("tally-2")
        t0 = time.monotonic()
        r.pause()
        time.sleep(8)
        r.resume()
        result.notes.append("SIGSTOP for 8 s, SIGCONT")
        return t0

    def redis_stop(self, result):
        redis = self.suite.redis
        t0 = time.monotonic()
        redis.stop()
        self.suite.signups.now(2)
        done = self.suite.signups.wait_idle(45)
        left = 6 - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
        redis.start()
        result.notes.append("Redis down while 2 users signed up" + ("" if done else " (sign-ups still retrying)"))
        return t0

    def proxy_drop(self, result):
        proxy = self.suite.proxy
        r = self.replica(self.suite.proxied)
        t0 = time.monotonic()
        n = proxy.drop(refuse_seconds=2)

        def keep_refusing():
            proxy.refuse_until = time.monotonic() + 1

        result.ready_503 = self.hold_until_unready([r], t0, least=3, most=30, keep_faulting=keep_refusing)
        self.check_unready(result, [r], t0, 30, "its database connections were cut")
        proxy.refuse_until = 0
        result.notes.append(f"{n} connections cut, new ones refused until unready")
        return t0

    def proxy_stall(self, result):
        proxy = self.suite.proxy
        r = self.replica(self.suite.proxied)
        t0 = time.monotonic()
        n = proxy.stall()
        result.ready_503 = self.hold_until_unready([r], t0, least=6, most=30)
        self.check_unready(result, [r], t0, 30, "its database connections were stalled")
        proxy.resume()
        result.notes.append(f"{n} connections stalled until unready")
        return t0

    def worker_commit_cut(self, result):
        wp = self.suite.worker_proxy
        t0 = time.monotonic()
        # Fresh connections first: a statement's text is only sent the first time a connection
        # prepares it.
        wp.drop()
        wp.arm(b"DELETE FROM mail_outbox")
        self.suite.signups.now(1)
        hit = wp.tripped.wait(45)
        wp.disarm()
        result.tripped_at = wp.tripped_at if hit else None
        result.notes.append("worker connection cut at DELETE FROM mail_outbox" if hit else
                            "the worker sent no DELETE FROM mail_outbox within 45 s")
        if not hit:
            self.h.finding("mail", "worker-commit-cut: the worker sent no mail within 45 s of a sign-up")
        return t0

    TARGETS = {
        "pg-crash": ("PostgreSQL", pg_crash),
        "pg-fast-restart": ("PostgreSQL", pg_fast_restart),
        "replica-kill": ("tally-1", replica_kill),
        "replica-pause": ("tally-2", replica_pause),
        "redis-stop": ("Redis", redis_stop),
        "proxy-drop": ("tally-3 ↔ PostgreSQL", proxy_drop),
        "proxy-stall": ("tally-3 ↔ PostgreSQL", proxy_stall),
        "worker-commit-cut": ("worker ↔ PostgreSQL", worker_commit_cut),
    }

    # -- one nemesis, then the wait for recovery -----------------------------------------

    def run_one(self, name):
        target, fn = self.TARGETS[name]
        result = Result(name, target, self.h.rel())
        self.suite.say(f"nemesis {name} ({target})")
        with self.h.lock:
            self.h.nemesis = name
            self.h.nemesis_answers = collections.Counter()
        result.wall_start = time.time()
        t0 = fn(self, result)
        t_end = time.monotonic()
        result.fault_seconds = t_end - t0
        with self.h.lock:
            self.h.watch = (t_end, {})
        self.await_recovery(result, t_end)
        result.wall_end = time.time()
        with self.h.lock:
            self.h.watch = None
            self.h.nemesis = "calm"
            result.answers = self.h.nemesis_answers
        self.results.append(result)
        rec = ", ".join(f"{k} {v:.1f}s" if v is not None else f"{k} -" for k, v in result.recovery.items())
        self.suite.say(f"  fault {result.fault_seconds:.1f}s; first answer after it: {rec}")
        return result

    def await_recovery(self, result, t_end):
        bound = self.suite.cfg.recovery_timeout
        replicas = self.suite.replicas

        def ready_all():
            return all(self.mon.first_since(r, "200", t_end) is not None for r in replicas)

        def answered_all():
            with self.h.lock:
                return all(r.name in self.h.watch[1] for r in replicas)

        self.mon.wait_for(lambda: ready_all() and answered_all(), bound)
        for r in replicas:
            t = self.mon.first_since(r, "200", t_end)
            result.ready_recovery[r.name] = None if t is None else t - t_end
            if t is None:
                self.h.finding("recovery", f"{name_of(result)}: /readyz of {r.name} did not answer 200 "
                                           f"within {bound} s after the fault ended")
        with self.h.lock:
            first = dict(self.h.watch[1])
        for r in replicas:
            result.recovery[r.name] = first.get(r.name)
            if r.name not in first:
                self.h.finding("recovery", f"{name_of(result)}: {r.name} gave no definite answer to a "
                                           f"transfer within {bound} s after the fault ended (stuck?)")

    def run_schedule(self, names, seconds, gap=5.0):
        """Spreads the nemeses over `seconds`: nemesis k starts at k·seconds/(n+1), or `gap` s
        after the previous one recovered, whichever is later."""
        interval = seconds / (len(names) + 1)
        start = time.monotonic()
        last_end = start
        for k, name in enumerate(names, 1):
            at = max(start + k * interval, last_end + gap)
            while time.monotonic() < at:
                if self.suite.interrupted:
                    return
                time.sleep(0.1)
            self.run_one(name)
            last_end = time.monotonic()
        return last_end


def name_of(result):
    return result.name
