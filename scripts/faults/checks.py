"""The checks of the fault suite, run once the workload has stopped and the cluster is calm: the
ledger in the private PostgreSQL against the history the clients kept (docs/schema.md names the
tables), `tally verify`, and the verification mail the worker wrote as .eml files. Each check
returns (name, ok, detail); a failed check fails the suite.
"""

import collections
import email
import email.policy
import glob
import os
import re
import subprocess

import api


class Check:
    def __init__(self, name):
        self.name = name
        self.problems = []
        self.info = ""

    def bad(self, text):
        self.problems.append(text)

    @property
    def ok(self):
        return not self.problems

    def detail(self, limit=8):
        if self.ok:
            return self.info
        shown = self.problems[:limit]
        more = len(self.problems) - len(shown)
        return "; ".join(shown) + (f"; … and {more} more" if more else "")


def ledger(suite):
    """The ledger checks. `suite.ops`, `suite.deposits` and `suite.accounts` are what the
    clients sent and were told."""
    pg = suite.pg
    checks = []

    accounts = {}
    for aid, owner, is_system, is_liquidity, currency, balance, pending, overdraft in pg.psql(
            "select id, coalesce(owner_id::text, ''), is_system, is_liquidity, currency, balance, "
            "pending_debits, overdraft_limit from accounts"):
        accounts[aid] = dict(owner=owner, system=is_system == "t", liquidity=is_liquidity == "t",
                             currency=currency, balance=int(balance), pending=int(pending),
                             overdraft=int(overdraft))
    entries = collections.defaultdict(list)  # transfer id -> [(account, amount)]
    entry_sum = collections.Counter()
    for tid, aid, amount in pg.psql("select transfer_id, account_id, amount from entries"):
        entries[tid].append((aid, int(amount)))
        entry_sum[aid] += int(amount)
    transfers = {}
    for tid, kind, status, src, dst, amount, currency in pg.psql(
            "select id, kind, status, from_account_id, to_account_id, amount, currency from transfers"):
        transfers[tid] = dict(kind=kind, status=status, src=src, dst=dst, amount=int(amount), currency=currency)

    c = Check("every currency sums to zero")
    per = collections.Counter()
    for a in accounts.values():
        per[a["currency"]] += a["balance"]
    for cur, total in sorted(per.items()):
        if total != 0:
            c.bad(f"{cur} sums to {total}")
    c.info = ", ".join(f"{cur} {total}" for cur, total in sorted(per.items()) if cur in suite.currencies)
    checks.append(c)

    c = Check("no customer balance beyond its overdraft limit")
    for aid, a in accounts.items():
        if a["system"]:
            continue
        if a["balance"] - a["pending"] < -a["overdraft"] or a["balance"] < -a["overdraft"]:
            c.bad(f"account {aid}: balance {a['balance']}, pending debits {a['pending']}, limit {a['overdraft']}")
    used = sum(1 for a in accounts.values() if not a["system"] and a["balance"] < 0)
    c.info = (f"{sum(1 for a in accounts.values() if not a['system'])} non-system accounts; "
              f"{used} in overdraft, within its limit")
    checks.append(c)

    c = Check("every balance equals the sum of its entries")
    for aid, a in accounts.items():
        if a["balance"] != entry_sum.get(aid, 0):
            c.bad(f"account {aid}: balance {a['balance']}, entries sum to {entry_sum.get(aid, 0)}")
    c.info = f"{len(accounts)} accounts, {sum(len(v) for v in entries.values())} entries"
    checks.append(c)

    c = Check("every transfer has the entries of its status")
    for tid, t in transfers.items():
        got = sorted(entries.get(tid, []))
        if t["status"] == "succeeded":
            want = sorted([(t["src"], -t["amount"]), (t["dst"], t["amount"])])
            if got != want:
                c.bad(f"transfer {tid} ({t['kind']}, succeeded {t['amount']}): entries {got}")
        elif t["status"] == "failed" and got:
            c.bad(f"transfer {tid} (failed): entries {got}")
    for tid in entries:
        if tid not in transfers:
            c.bad(f"entries of an unknown transfer {tid}")
    c.info = f"{len(transfers)} transfers"
    checks.append(c)

    ops = {op.id: op for op in suite.ops}
    ack = Check("every acknowledged transfer is applied exactly once (none lost)")
    failed = Check("every failed transfer is recorded failed and moved nothing (none applied)")
    resolved = Check("every transfer has a definite outcome (unknown ones read back)")
    for op in suite.ops:
        t = transfers.get(op.id)
        same = t is not None and (t["src"], t["dst"], t["amount"], t["currency"], t["kind"]) == \
            (op.src.id, op.dst.id, op.amount, op.currency, "transfer")
        if t is not None and not same:
            ack.bad(f"transfer {op.id}: stored as {t}, sent as {op.src.id} → {op.dst.id} {op.amount} {op.currency}")
        if op.state == "ok":
            if t is None:
                ack.bad(f"acknowledged transfer {op.id} ({op.amount} {op.currency}, answered on "
                        f"{op.replicas[-1]} during {op.nemesis}) is not in the database")
            elif t["status"] != "succeeded":
                ack.bad(f"acknowledged transfer {op.id} is stored {t['status']}")
        elif op.state == "failed":
            if t is None:
                failed.bad(f"transfer {op.id} was answered failed but is not recorded")
            elif t["status"] != "failed":
                failed.bad(f"transfer {op.id} was answered failed (attempts: {', '.join(op.kinds)}) "
                           f"but is stored {t['status']}")
        else:
            # unknown / inflight / rejected: the read-back (suite.readback) says what happened.
            rb = suite.readback.get(op.id)
            db = t["status"] if t else "absent"
            if rb is None:
                resolved.bad(f"transfer {op.id} ({op.state}) could not be read back")
            elif rb != db:
                resolved.bad(f"transfer {op.id}: read back as {rb}, database says {db}")
    n_unknown = sum(1 for op in suite.ops if op.state not in ("ok", "failed"))
    ack.info = f"{sum(1 for op in suite.ops if op.state == 'ok')} acknowledged"
    failed.info = f"{sum(1 for op in suite.ops if op.state == 'failed')} failed"
    resolved.info = f"{n_unknown} without a definite answer, all read back" if n_unknown else "all answered"
    checks += [ack, failed, resolved]

    c = Check("the database holds no transfer the clients did not send")
    deposit_ids = {d["id"] for d in suite.deposits}
    for tid, t in transfers.items():
        if t["kind"] == "transfer" and tid not in ops:
            c.bad(f"transfer {tid} {t}")
        elif t["kind"] == "deposit" and tid not in deposit_ids:
            c.bad(f"deposit {tid} {t}")
        elif t["kind"] not in ("transfer", "deposit"):
            c.bad(f"{t['kind']} {tid}")
    c.info = "none"
    checks.append(c)

    c = Check("every balance equals the clients' model (deposits + applied transfers)")
    model = collections.Counter()
    for d in suite.deposits:
        model[d["account"]] += d["amount"]
    for op in suite.ops:
        applied = op.state == "ok" or (op.state not in ("ok", "failed") and suite.readback.get(op.id) == "succeeded")
        if applied:
            model[op.src.id] -= op.amount
            model[op.dst.id] += op.amount
    for a in suite.accounts:
        if accounts.get(a.id, {}).get("balance") != model[a.id]:
            c.bad(f"account {a.id}: database {accounts.get(a.id, {}).get('balance')}, model {model[a.id]}")
    c.info = f"{len(suite.accounts)} customer accounts"
    checks.append(c)
    return checks


def tally_verify(suite):
    c = Check("`tally verify` is clean")
    out = subprocess.run([suite.cfg.tally_bin, "verify"], env=suite.tally_env(suite.pg.url),
                         capture_output=True, text=True, timeout=120)
    text = (out.stdout + out.stderr).strip()
    with open(os.path.join(suite.run_dir, "verify.txt"), "w") as f:
        f.write(text + "\n")
    if out.returncode != 0:
        c.bad(f"exit {out.returncode}: {text[-1500:]}")
    else:
        # Its verdict is the last line of stdout; log lines (a slow-statement warning) go to stderr.
        c.info = (out.stdout.strip().splitlines() or text.splitlines() or ["exit 0"])[-1]
    return c


CODE_RE = re.compile(r"^code: (\S+)$", re.M)
VID_RE = re.compile(r"^verification_id: (\S+)$", re.M)

# One .eml the worker wrote: its file name, recipient, the verification id and code it names,
# and when it was written (st_mtime_ns, and time.time() seconds).
Mail = collections.namedtuple("Mail", "file to vid code mtime_ns")


def read_mails(mail_dir):
    """Every .eml the worker wrote, earliest first (by mtime, then name)."""
    mails = []
    for path in glob.glob(os.path.join(mail_dir, "*.eml")):
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        to = str(msg.get("To", "")).strip()
        m = re.search(r"<([^>]+)>", to)
        to = (m.group(1) if m else to).lower()
        part = msg.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
        vid = VID_RE.search(text)
        code = CODE_RE.search(text)
        mails.append(Mail(os.path.basename(path), to, vid.group(1) if vid else None,
                          code.group(1) if code else None, os.stat(path).st_mtime_ns))
    mails.sort(key=lambda m: (m.mtime_ns, m.file))
    return mails


def by_verification(mails):
    """{verification id: [its mails, earliest first]}."""
    out = collections.defaultdict(list)
    for m in mails:
        out[m.vid].append(m)
    return out


def nemesis_at(suite, wall):
    """The nemesis whose fault or recovery was under way at wall-clock time `wall`, or calm."""
    for r in (suite.nemeses.results if suite.nemeses else []):
        if r.wall_start is not None and r.wall_start <= wall <= (r.wall_end or float("inf")):
            return r.name
    return "calm"


def first_codes_verify(suite, mails):
    """Every mailed code works, the one of the earliest mail included (before the fix, the
    earliest of two was the dead one): each verification of a user signed up during the run is
    verified with the code of its earliest mail, which must answer 200 with emailVerified."""
    c = Check("every verification's first mailed code verifies its address")
    late = {u[0] for u in suite.signups.users}
    rows = [r for r in suite.pg.psql("select v.id, u.username from email_verifications v "
                                     "join users u on u.id = v.user_id") if r[1] in late]
    mailed = by_verification(mails)
    http = api.Client(timeout=10)
    duplicated = verified_dup = 0
    for vid, username in rows:
        got = mailed.get(vid)
        if not got:
            c.bad(f"verification {vid} of {username}: no mail")
            continue
        first = got[0]
        if first.code is None:
            c.bad(f"{first.file} (verification {vid} of {username}) holds no code")
            continue
        a = http.call(suite.replicas[0].addr, "POST", "/v1/users:verifyEmail",
                      {"verificationId": vid, "code": first.code})
        ok = a.status == 200 and bool((a.json or {}).get("emailVerified"))
        if not ok:
            c.bad(f"{first.file} <{first.to}> (the first of {len(got)} mails of verification {vid}): {a.describe()}")
        if len(got) > 1:
            duplicated += 1
            verified_dup += ok
    http.close()
    c.info = (f"{len(rows)} verifications of users signed up during the run, each verified with the code "
              f"of its earliest mail; of the {duplicated} mailed more than once, {verified_dup} verified "
              f"with the first mail's code")
    return c


def mail(suite, mails):
    """At least once: every verification mailed, more than one mail allowed (sending and
    committing cannot be one atomic step, and every minted code works); anything else strict."""
    checks = []
    pg = suite.pg
    c = Check("every verification mailed at least once (duplicates allowed), outbox empty, no dead letters")
    rows = pg.psql("select v.id, lower(v.email), v.mailed_at is not null, u.username from email_verifications v "
                   "join users u on u.id = v.user_id")
    outbox = int(pg.psql("select count(*) from mail_outbox")[0][0])
    dead = pg.psql("select verification_id, attempts, last_error from mail_dead_letters")
    mailed = by_verification(mails)
    by_to = collections.Counter(m.to for m in mails)
    wanted_per_to = collections.Counter()
    duplicates = collections.Counter()  # nemesis under way at the first mail -> verifications
    dup_detail = []
    for vid, addr, is_mailed, username in rows:
        wanted_per_to[addr] += 1
        got = mailed.get(vid, [])
        if not got:
            c.bad(f"verification {vid} of {username} <{addr}>: no mail")
        for m in got:
            if m.to != addr:
                c.bad(f"{m.file} for verification {vid} of {username} went to <{m.to}>, not <{addr}>")
            if m.code is None:
                c.bad(f"{m.file} for verification {vid} of {username} holds no code")
        if len(got) > 1:
            nem = nemesis_at(suite, got[0].mtime_ns / 1e9)
            duplicates[nem] += 1
            gaps = ", ".join(f"+{(m.mtime_ns - got[0].mtime_ns) / 1e9:.1f}s" for m in got[1:])
            dup_detail.append(f"{username} {len(got)} ({nem}; later {gaps})")
        if is_mailed != "t":
            c.bad(f"verification {vid} of {username} is not marked mailed")
    known = {r[0] for r in rows}
    for vid, got in mailed.items():
        if vid not in known:
            c.bad(f"mail(s) {', '.join(m.file for m in got)} name an unknown verification {vid}")
    for addr, n in by_to.items():
        if n < wanted_per_to.get(addr, 0) or not wanted_per_to.get(addr):
            c.bad(f"<{addr}> got {n} mails for {wanted_per_to.get(addr, 0)} verifications")
    if outbox:
        c.bad(f"{outbox} mails still owed in mail_outbox")
    for vid, attempts, err in dead:
        c.bad(f"dead letter for verification {vid} after {attempts} attempts: {err[:200]}")
    # worker-commit-cut cut the connection after a mail was written: that verification must
    # have been mailed again (else the nemesis missed the window it is there for).
    for r in (suite.nemeses.results if suite.nemeses else []):
        if r.name == "worker-commit-cut" and r.tripped_at is not None:
            hit = [got for got in mailed.values() if len(got) > 1
                   and r.wall_start - 1 <= got[0].mtime_ns / 1e9 <= r.tripped_at + 1
                   and got[-1].mtime_ns / 1e9 > r.tripped_at - 1]
            if not hit:
                c.bad(f"worker-commit-cut cut the worker's connection at {r.start:.0f}s, "
                      f"but no verification was mailed again after it")
    c.info = (f"{len(mails)} mails for {len(rows)} verifications; "
              + (f"{sum(duplicates.values())} mailed more than once (by the nemesis under way at the first mail: "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(duplicates.items())) + "; "
                 + ", ".join(dup_detail[:6]) + (", …" if len(dup_detail) > 6 else "") + ")"
                 if duplicates else "none mailed more than once")
              + "; outbox empty, no dead letters")
    checks.append(c)

    c = Check("every user who signed up during the run exists once and was mailed (at least once)")
    users = {r[0]: r for r in pg.psql("select username, email from users")}
    for username, addr, state, nemesis, attempts, _ in suite.signups.users:
        if state.startswith("created") and username not in users:
            c.bad(f"{username} was acknowledged ({state}) but does not exist")
        if username in users and by_to.get(addr, 0) < 1:
            c.bad(f"{username} (signed up during {nemesis}) got no mail")
        if not state.startswith("created") and username not in users:
            c.bad(f"{username}: sign-up never answered ({state}) and the user does not exist")
    n = len(suite.signups.users)
    c.info = f"{n} sign-ups during the run (" + ", ".join(
        f"{k}: {v}" for k, v in collections.Counter(u[3] for u in suite.signups.users).items()) + ")"
    checks.append(c)
    return checks


def logs(suite):
    c = Check("no panic in any tally log")
    c.info = "none"
    for p in suite.processes:
        try:
            with open(p.logfile, errors="replace") as f:
                for line in f:
                    if "panicked" in line:
                        c.bad(f"{os.path.basename(p.logfile)}: {line.strip()[:300]}")
        except OSError:
            pass
    return c
