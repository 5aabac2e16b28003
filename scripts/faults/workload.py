"""The bank workload of the fault suite and what it remembers: client threads making transfers
between the customers' accounts over HTTP JSON, each with a client-chosen id that is sent again,
unchanged, after every ambiguous answer (possibly to another replica) until a definite one; a
thread signing up new users so verification mail is owed while the nemeses strike; and a monitor
of every replica's /readyz. The history (`History`) is what the checks compare the database
with afterwards.
"""

import collections
import random
import threading
import time
import uuid

import api

# A definite refusal by a rule: recorded FAILED, nothing moved (docs/ledger.md "Refusals").
FAILED_REASONS = {"INSUFFICIENT_FUNDS"}


class Account:
    def __init__(self, account_id, owner, currency, overdraft=0):
        self.id = account_id
        self.owner = owner
        self.currency = currency
        self.overdraft = overdraft


class Customer:
    def __init__(self, username, email, password):
        self.username = username
        self.email = email
        self.password = password
        self.token = None
        self.refresh = None
        self.accounts = []


class Op:
    """One transfer as the clients saw it."""

    __slots__ = ("id", "src", "dst", "amount", "currency", "owner", "state", "attempts",
                 "replicas", "started", "finished", "kinds", "nemesis")

    def __init__(self, src, dst, amount, owner, nemesis):
        self.id = str(uuid.uuid4())
        self.src = src
        self.dst = dst
        self.amount = amount
        self.currency = src.currency
        self.owner = owner
        # inflight -> ok | failed | rejected, or unknown when the retries ran out of time
        self.state = "inflight"
        self.attempts = 0
        self.replicas = []
        self.started = time.monotonic()
        self.finished = None
        self.kinds = []
        self.nemesis = nemesis

    def body(self):
        return {"transferId": self.id, "fromAccountId": self.src.id, "toAccountId": self.dst.id,
                "amount": str(self.amount), "currency": self.currency, "memo": "faults"}


class Meter:
    """What the clients completed, by kind of call (`transfer`, `batch`, `read`): how many
    transfers got a definite outcome (or reads an answer) and how long each call took, from its
    first attempt to its answer. `take` hands them over and starts afresh (the soak's sampler)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.seconds = collections.defaultdict(list)

    def add(self, kind, n, seconds):
        with self.lock:
            self.counts[kind] += n
            self.seconds[kind].append(seconds)

    def take(self):
        with self.lock:
            taken = self.counts, self.seconds
            self.counts, self.seconds = collections.Counter(), collections.defaultdict(list)
        return taken


class History:
    def __init__(self, t0):
        self.t0 = t0
        self.lock = threading.Lock()
        self.ops = []
        self.answers = collections.Counter()  # every answer to a transfer, by kind
        self.retries = collections.Counter()  # answers that made a client send again, by kind
        self.findings = []  # (check, detail)
        self.bugs = []  # 500 / INTERNAL answers, with their repro
        self.unexpected = []  # answers outside the expected set, with their repro
        self.nemesis = "calm"  # what is being done to the cluster right now
        self.nemesis_answers = collections.Counter()
        self.watch = None  # (t_end, {replica: seconds until its first definite answer})
        self.retry_deadline = None
        self.log_tail = None  # set by the suite: replica name -> last log lines
        self.meter = Meter()

    def rel(self, t=None):
        return (t if t is not None else time.monotonic()) - self.t0

    def begin(self, src, dst, amount, owner):
        op = Op(src, dst, amount, owner, self.nemesis)
        with self.lock:
            self.ops.append(op)
        return op

    def record_answer(self, what, replica, request, answer, retry, unexpected=False):
        kind = answer.kind
        with self.lock:
            self.answers[(what, kind)] += 1
            self.nemesis_answers[(what, kind)] += 1
            if retry:
                self.retries[(what, kind)] += 1
        if answer.bug or unexpected or retry == "unexpected":
            kept = self.bugs if answer.bug else self.unexpected
            repro = {
                "at": f"{self.rel():.1f}s ({time.strftime('%H:%M:%SZ', time.gmtime())})",
                "nemesis": self.nemesis,
                "replica": replica.name,
                "request": request,
                "answer": answer.describe(),
                # The replica's last log lines, for the first few (reading them costs a file read).
                "log": self.log_tail(replica) if self.log_tail and len(kept) < 20 else "",
            }
            with self.lock:
                kept.append(repro)

    def definite(self, replica):
        now = time.monotonic()
        with self.lock:
            if self.watch is not None:
                t_end, first = self.watch
                if replica.name not in first and now >= t_end:
                    first[replica.name] = now - t_end

    def finding(self, check, detail):
        with self.lock:
            self.findings.append((check, detail))


def classify(answer):
    """(outcome, retry): outcome ok | failed | None; retry names why the call is sent again."""
    if answer.status == 200:
        return "answered", None
    if answer.status == 400 and answer.grpc_code == "FAILED_PRECONDITION" and answer.reason in FAILED_REASONS:
        return "failed", None
    if answer.ambiguous:
        return None, "ambiguous"
    if answer.status == 409 and answer.grpc_code == "ABORTED":
        return None, "aborted"  # certainly not applied: retry with the same id (docs/ledger.md)
    if answer.status == 429:
        return None, "rate limited"
    if answer.bug or answer.status == 401:
        # A bug, or a signed-in client turned away: keep going with the same id, but it is a
        # finding either way.
        return None, "unexpected"
    return "rejected", None


class TransferClient(threading.Thread):
    """A closed loop: one call, then a pause of up to `think` seconds, until the workload stops.
    A call is a transfer (`POST /v1/transfers`), or, with the shares given, a batch of
    `batch_size` transfers from one owner's accounts (`POST /v1/transfers:batchCreate`, resent
    whole with the same ids after an ambiguous answer) or the reads of a statement: the owner's
    accounts, a page of one account's entries and its balance."""

    def __init__(self, index, suite, home, accounts, by_currency, max_amount, think, seed,
                 batch_share=0.0, batch_size=10, read_share=0.0):
        super().__init__(name=f"client-{index}", daemon=True)
        self.suite = suite
        self.history = suite.history
        self.home = home
        self.accounts = accounts
        self.by_currency = by_currency
        self.max_amount = max_amount
        self.think = think
        self.rng = random.Random(seed)
        self.http = api.Client(timeout=suite.cfg.client_timeout)
        self.batch_share = batch_share
        self.batch_size = batch_size
        self.read_share = read_share

    def run(self):
        try:
            while not self.suite.stop_new.is_set():
                roll = self.rng.random() if self.batch_share or self.read_share else 1.0
                if roll < self.read_share:
                    self.read()
                elif roll < self.read_share + self.batch_share:
                    first = self.new_op()
                    own = [a for a in self.accounts if a.owner == first.src.owner]
                    self.execute_batch([first] + [self.new_op(self.rng.choice(own)) for _ in range(self.batch_size - 1)])
                else:
                    self.execute(self.new_op())
                if self.think:
                    time.sleep(self.rng.uniform(0, self.think))
        except Exception as err:  # noqa: BLE001 - a crashed client is a bug of the suite
            self.history.finding("workload", f"{self.name} crashed: {err!r}")
            raise
        finally:
            self.http.close()

    def new_op(self, src=None):
        src = src or self.rng.choice(self.accounts)
        dst = self.rng.choice([a for a in self.by_currency[src.currency] if a is not src])
        amount = self.rng.randint(1, self.max_amount)
        return self.history.begin(src, dst, amount, self.suite.owners[src.owner])

    def execute(self, op):
        self.send("transfer", [op], "/v1/transfers", op.body(),
                  lambda answer: self.settle(op, answer.json or {}, answer))

    def execute_batch(self, ops):
        """An item answered ABORTED or UNAVAILABLE was not written: it is sent again, with the
        same id, in a batch of such items; any other item error is a finding."""
        while ops:
            again = []

            def settle(answer, ops=ops, again=again):
                results = (answer.json or {}).get("results") or []
                if len(results) != len(ops):
                    self.history.finding("answers", f"batch of {len(ops)}: {len(results)} results: {answer.describe()}")
                for op, result in zip(ops, results):
                    error = result.get("error") or {}
                    if "transfer" in result:
                        self.settle(op, result["transfer"], answer)
                    elif error.get("code") in (10, 14):
                        again.append(op)
                    else:
                        op.state = "rejected"
                        self.history.finding("answers", f"transfer {op.id} in a batch: {error}")

            self.send("batch", ops, "/v1/transfers:batchCreate", {"transfers": [op.body() for op in ops]}, settle)
            deadline = self.history.retry_deadline
            if again and deadline is not None and time.monotonic() > deadline:
                for op in again:
                    op.state = "unknown"
                again = []
            ops = again

    def settle(self, op, got, answer):
        """The state a transfer's record (`got`) gives its op; a record of another transfer is a
        finding."""
        status = got.get("status")
        if status == "TRANSFER_STATUS_SUCCEEDED":
            op.state = "ok"
        elif status == "TRANSFER_STATUS_FAILED":
            op.state = "failed"
        else:
            op.state = "rejected"
            self.history.finding("answers", f"transfer {op.id}: 200 with status {status!r}")
        if (got.get("transferId"), got.get("fromAccountId"), got.get("toAccountId"), got.get("amount")) != \
                (op.id, op.src.id, op.dst.id, str(op.amount)):
            self.history.finding("answers", f"transfer {op.id}: the answer names another transfer: {answer.describe()}")

    def send(self, what, ops, path, body, settle):
        """POSTs `body` (which carries the ops' ids) to the home replica, then again, unchanged,
        to any replica after every ambiguous answer, until a definite one; `settle(answer)` sets
        the ops' states from a 200."""
        replica = self.home
        backoff = 0.05
        started = time.monotonic()
        while True:
            for op in ops:
                op.attempts += 1
                op.replicas.append(replica.name)
            answer = self.http.call(replica.addr, "POST", path, body, token=ops[0].owner.token)
            outcome, retry = classify(answer)
            for op in ops:
                op.kinds.append(answer.kind)
            self.history.record_answer(what, replica, {f"POST {path}": body}, answer, retry,
                                       unexpected=outcome == "rejected")
            if outcome in ("answered", "failed"):
                if outcome == "answered":
                    settle(answer)
                else:
                    for op in ops:
                        op.state = "failed"
                self.history.definite(replica)
                break
            if outcome == "rejected":
                for op in ops:
                    op.state = "rejected"
                break
            deadline = self.history.retry_deadline
            if deadline is not None and time.monotonic() > deadline:
                for op in ops:
                    op.state = "unknown"
                break
            wait = backoff * self.rng.uniform(0.5, 1.5)
            if retry == "rate limited":
                wait = max(wait, 1.0)
            time.sleep(wait)
            backoff = min(backoff * 2, 1.0)
            replica = self.rng.choice(self.suite.replicas)
        now = time.monotonic()
        for op in ops:
            op.finished = now
        self.history.meter.add(what, sum(1 for op in ops if op.state in ("ok", "failed")), now - started)

    def read(self):
        """A statement, on the home replica: ListAccounts, a page of ListEntries and
        GetAccountBalance of one of an owner's accounts. Not retried: an ambiguous answer is only
        counted; a bug or an unexpected refusal is a finding."""
        account = self.rng.choice(self.accounts)
        owner = self.suite.owners[account.owner]
        started = time.monotonic()
        for path in ("/v1/accounts?pageSize=50", f"/v1/accounts/{account.id}/entries?pageSize=20",
                     f"/v1/accounts/{account.id}/balance"):
            answer = self.http.call(self.home.addr, "GET", path, token=owner.token)
            self.history.record_answer("read", self.home, {f"GET {path}": None}, answer, None,
                                       unexpected=answer.status != 200 and not answer.ambiguous)
        self.history.meter.add("read", 1, time.monotonic() - started)


class Sessions(threading.Thread):
    """Keeps the customers signed in past the access tokens' lifetime (900 s by default):
    every `interval` seconds each customer's session is refreshed (`POST /v1/sessions:refresh`,
    which rotates the refresh token). After an answer that is not a 200 the old refresh token
    may have been rotated already, and presenting it again would revoke the session, so the
    customer signs in anew instead."""

    def __init__(self, suite, interval):
        super().__init__(name="sessions", daemon=True)
        self.suite = suite
        self.history = suite.history
        self.interval = interval
        self.http = api.Client(timeout=suite.cfg.client_timeout)
        self.refreshed = self.logins = 0

    def run(self):
        try:
            while not self.suite.stop_new.wait(self.interval):
                # Fresh connections: the servers close idle ones, and a request sent on one of
                # those fails (broken pipe), which would cost a sign-in.
                self.http.close()
                for i, c in enumerate(self.suite.customers):
                    self.renew(c, self.suite.replicas[i % len(self.suite.replicas)])
        except Exception as err:  # noqa: BLE001
            self.history.finding("workload", f"sessions crashed: {err!r}")
            raise
        finally:
            self.http.close()

    def renew(self, c, replica):
        a = self.http.call(replica.addr, "POST", "/v1/sessions:refresh", {"refreshToken": c.refresh})
        self.history.record_answer("refresh", replica, {"POST /v1/sessions:refresh": "(a refresh token)"}, a, None,
                                   unexpected=a.status != 200 and not a.ambiguous)
        if a.status == 200:
            c.token, c.refresh = a.json["accessToken"], a.json["refreshToken"]
            self.refreshed += 1
            return
        for _ in range(5):
            a = self.http.call(replica.addr, "POST", "/v1/sessions", {"username": c.username, "password": c.password})
            self.history.record_answer("login", replica, {"POST /v1/sessions": c.username}, a, None,
                                       unexpected=a.status != 200 and not a.ambiguous)
            if a.status == 200:
                c.token, c.refresh = a.json["accessToken"], a.json["refreshToken"]
                self.logins += 1
                return
            time.sleep(1)
        self.history.finding("workload", f"{c.username} could not sign in again: {a.describe()}")


class Signups(threading.Thread):
    """Signs up a new user every `interval` seconds, and at once when a nemesis asks (so mail is
    owed while Redis or PostgreSQL is down). A sign-up's outcome may be ambiguous too: it is
    sent again, the same, until 200, or 409 ALREADY_EXISTS after an ambiguous attempt (the first
    one committed)."""

    def __init__(self, suite, interval, seed):
        super().__init__(name="signups", daemon=True)
        self.suite = suite
        self.history = suite.history
        self.interval = interval
        self.rng = random.Random(seed)
        self.http = api.Client(timeout=suite.cfg.client_timeout)
        self.wake = threading.Event()
        self.pending = 0
        self.cond = threading.Condition()
        self.users = []  # (username, email, state, nemesis, attempts, wall time of the first attempt)
        self.n = 0

    def now(self, count=1):
        with self.cond:
            self.pending += count
        self.wake.set()

    def wait_idle(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.pending > 0 and time.monotonic() < deadline:
                self.cond.wait(0.2)
            return self.pending == 0

    def run(self):
        try:
            while not self.suite.stop_new.is_set():
                self.wake.wait(self.interval)
                self.wake.clear()
                if self.suite.stop_new.is_set():
                    break
                with self.cond:
                    asked = self.pending
                # The sign-ups a nemesis asked for, or the periodic one; only the former count
                # down `pending` (one asked for while the periodic one runs still gets its own).
                for i in range(max(1, asked)):
                    self.signup()
                    with self.cond:
                        if i < asked:
                            self.pending = max(0, self.pending - 1)
                        self.cond.notify_all()
        except Exception as err:  # noqa: BLE001
            self.history.finding("workload", f"signups crashed: {err!r}")
            raise
        finally:
            self.http.close()

    def signup(self):
        self.n += 1
        username = f"late{self.n:03d}"
        email = f"{username}@faults.test"
        body = {"username": username, "fullName": f"Late {self.n}", "email": email,
                "password": self.suite.password}
        nemesis = self.history.nemesis
        began = time.time()
        ambiguous_before = False
        attempts = 0
        backoff = 0.1
        state = "unknown"
        while True:
            attempts += 1
            replica = self.rng.choice(self.suite.replicas)
            answer = self.http.call(replica.addr, "POST", "/v1/users", body)
            retry = None
            if answer.status == 200:
                state = "created"
            elif answer.status == 409 and answer.grpc_code == "ALREADY_EXISTS" and ambiguous_before:
                state = "created (an ambiguous attempt had committed)"
            elif answer.ambiguous or answer.status == 429:
                retry = "ambiguous"
                ambiguous_before = True
            else:
                if answer.bug:
                    retry = "unexpected"
                    ambiguous_before = True
                else:
                    state = f"refused: {answer.kind}"
            self.history.record_answer("signup", replica, {"POST /v1/users": body}, answer, retry,
                                       unexpected=state.startswith("refused"))
            if retry is None:
                break
            deadline = self.history.retry_deadline
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(backoff * self.rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 1.0)
        self.users.append((username, email, state, nemesis, attempts, began))


class Readiness(threading.Thread):
    """Polls /readyz of every replica (one thread each, so a paused replica holds up no other)
    and keeps every observation: (time, answer), the answer being the HTTP status or the
    transport error."""

    def __init__(self, suite, period=0.25):
        super().__init__(name="readiness", daemon=True)
        self.suite = suite
        self.period = period
        self.lock = threading.Lock()
        self.obs = collections.defaultdict(list)
        self.stop = threading.Event()

    def run(self):
        threads = [threading.Thread(target=self.poll, args=(r,), daemon=True) for r in self.suite.replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def poll(self, replica):
        http = api.Client(timeout=3.0)
        while not self.stop.is_set():
            answer = http.call(replica.addr, "GET", "/readyz")
            state = str(answer.status) if answer.status else answer.error
            with self.lock:
                self.obs[replica.name].append((time.monotonic(), state))
            self.stop.wait(self.period)
        http.close()

    def first_since(self, replica, state, since):
        """When `state` was first observed at or after `since` (None if not yet)."""
        with self.lock:
            for t, s in self.obs[replica.name]:
                if t >= since and s == state:
                    return t
        return None

    def states_between(self, replica, start, end):
        with self.lock:
            return collections.Counter(s for t, s in self.obs[replica.name] if start <= t <= end)

    def wait_for(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()
