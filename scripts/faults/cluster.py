"""The processes of one fault-suite run: a private PostgreSQL and Redis, the tally replicas and
the mail worker, each started for the test only inside the run's directory under
target/faults/, so the nemeses can crash, pause and restart them without touching any shared
service (the PostgreSQL on 5432 and the Redis on 6379 that other tests use are never named
here).

PostgreSQL is found and run the way scripts/services.sh does it: the binaries from
`pg_config --bindir` or /usr/lib/postgresql/*/bin (apt-get install postgresql when missing,
as root and unless TALLY_NO_INSTALL is set), and as root the cluster belongs to the
unprivileged user TALLY_DEV_USER (default tally-dev, created with useradd if missing), because
PostgreSQL refuses to run as root. When that user cannot reach the run directory the data lives
in a directory under /var/tmp instead, linked from the run directory.
"""

import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DEV_USER = os.environ.get("TALLY_DEV_USER", "tally-dev")
PREFIX = "faults"  # what log() prints first: the driver's name (soak.py sets "soak")


class SetupError(Exception):
    """Something the suite needs could not be started; not a finding about tally."""


def log(msg):
    print(f"{PREFIX}: {msg}", flush=True)


def is_root():
    return os.geteuid() == 0


def apt_install(*packages):
    if not is_root() or os.environ.get("TALLY_NO_INSTALL") or not shutil.which("apt-get"):
        raise SetupError(f"install {' '.join(packages)} (Debian/Ubuntu: apt-get install {' '.join(packages)})")
    log(f"installing {' '.join(packages)} with apt-get (set TALLY_NO_INSTALL=1 to prevent this)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env)


def local_port_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port nothing listens on, outside the kernel's range for outgoing connections (so no
    client socket of this machine takes it between now and the server's bind)."""
    lo, hi = local_port_range()
    candidates = list(range(hi + 1, 65500)) if hi < 64000 else list(range(20000, lo))
    random.shuffle(candidates)
    for port in candidates[:500]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                continue
        return port
    raise SetupError("no free port found")


def port_open(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def find_pg_bindir():
    cands = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            cands.append(out.stdout.strip())

    def version_key(path):
        parts = path.split("/")[4]
        return [int(p) if p.isdigit() else 0 for p in parts.split(".")]

    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    if shutil.which("pg_ctl"):
        cands.append(os.path.dirname(shutil.which("pg_ctl")))
    for d in cands:
        if d and all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


class Postgres:
    """A private cluster on a free port: trust on 127.0.0.1 only, no unix socket."""

    def __init__(self, run_dir):
        self.bindir = find_pg_bindir()
        if not self.bindir:
            apt_install("postgresql")
            self.bindir = find_pg_bindir()
            if not self.bindir:
                raise SetupError("PostgreSQL server binaries still not found after install")
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        if is_root():
            self.user = DEV_USER
            self._ensure_user()
        link = os.path.join(run_dir, "pg")
        if self._user_can_reach(run_dir):
            os.makedirs(link)
            self.dir = link
            self.external = None
        else:
            self.external = tempfile.mkdtemp(prefix="tally-faults-", dir="/var/tmp")
            os.chmod(self.external, 0o755)
            os.symlink(self.external, link)
            self.dir = self.external
            log(f"{self.user} cannot reach {run_dir}; PostgreSQL data is in {self.external}")
        if self.user != pwd.getpwuid(os.geteuid()).pw_name:
            shutil.chown(self.dir, user=self.user)
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/tally"
        self.psql_bin = shutil.which("psql") or os.path.join(self.bindir, "psql")
        self.started = False

    def _ensure_user(self):
        try:
            pwd.getpwnam(self.user)
            return
        except KeyError:
            pass
        log(f"creating system user {self.user} (PostgreSQL refuses to run as root)")
        nologin = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", nologin, self.user], check=True)

    def _as_user(self, argv):
        if self.user == pwd.getpwuid(os.geteuid()).pw_name:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", self.user, "--", *argv]
        return ["su", "-s", "/bin/sh", self.user, "-c", " ".join(f"'{a}'" for a in argv)]

    def _user_can_reach(self, path):
        if not is_root() or self.user == "root":
            return True
        return subprocess.run(self._as_user(["test", "-x", path]), cwd="/").returncode == 0

    def _run(self, argv, timeout=120):
        out = subprocess.run(self._as_user(argv), cwd="/", capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=timeout)
        return out

    def init(self):
        out = self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                         "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        if out.returncode != 0:
            raise SetupError(f"initdb failed:\n{out.stdout}\n{out.stderr}")
        conf = (
            "\n# --- fault suite instance (scripts/faults/cluster.py) ---\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            # fsync only matters when the machine crashes; the nemeses crash the server, whose
            # writes are in the kernel already. synchronous_commit stays on: an acknowledged
            # commit must be in the WAL when `pg_ctl -m immediate` strikes.
            "fsync = off\n"
            "synchronous_commit = on\n"
            "full_page_writes = off\n"
            "max_connections = 100\n"
            "log_min_messages = warning\n"
        )
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(conf)
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("host all all 127.0.0.1/32 trust\n")

    def start(self):
        out = self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.logfile,
                         "-o", f"-p {self.port}", "-w", "-t", "60", "start"])
        if out.returncode != 0:
            raise SetupError(f"pg_ctl start failed:\n{out.stdout}{out.stderr}\n{tail(self.logfile)}")
        self.started = True

    def stop(self, mode):
        out = self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                         "-t", "60", "stop"])
        if out.returncode != 0:
            raise SetupError(f"pg_ctl stop -m {mode} failed:\n{out.stdout}{out.stderr}")
        self.started = False

    def restart(self, mode):
        out = self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.logfile,
                         "-o", f"-p {self.port}", "-m", mode, "-w", "-t", "60", "restart"])
        if out.returncode != 0:
            raise SetupError(f"pg_ctl restart -m {mode} failed:\n{out.stdout}{out.stderr}\n{tail(self.logfile)}")
        self.started = True

    def create_database(self):
        self.psql("create database tally", db="postgres")

    def psql(self, sql, db="tally"):
        """Rows of `sql` as lists of strings (tab-separated, unaligned)."""
        out = subprocess.run([self.psql_bin, "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                              "-c", sql], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}\n  sql: {sql}")
        return [line.split("\t") for line in out.stdout.splitlines() if line != ""]

    def close(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                           "-w", "-t", "30", "stop"], timeout=60)
            except Exception as err:  # noqa: BLE001 - cleanup must go on
                log(f"stopping PostgreSQL failed: {err}")
        self.started = False

    def remove_data(self, run_dir):
        """Drops the cluster's files (tens of MB); its log is kept in the run directory."""
        shutil.rmtree(self.data, ignore_errors=True)
        if self.external:
            try:
                shutil.copy(self.logfile, os.path.join(run_dir, "postgres.log"))
            except OSError:
                pass
            os.unlink(os.path.join(run_dir, "pg"))
            shutil.rmtree(self.external, ignore_errors=True)


class Redis:
    """A private redis-server in the foreground (a child of this process), no persistence: a
    stop loses every queued job, which is the point of the Redis nemesis."""

    def __init__(self, run_dir):
        self.bin = shutil.which("redis-server")
        if not self.bin:
            apt_install("redis-server")
            self.bin = shutil.which("redis-server")
            if not self.bin:
                raise SetupError("redis-server still not found after install")
        self.dir = os.path.join(run_dir, "redis")
        os.makedirs(self.dir)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SetupError(f"redis-server did not start:\n{tail(os.path.join(self.dir, 'redis.log'))}")

    def command(self, line, timeout=1):
        """One inline command on a connection of its own; the reply's text (a status, an
        error or a bulk string), or None when Redis cannot be reached."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(line.encode() + b"\r\n")
                reply = s.makefile("rb")
                head = reply.readline()
                if head.startswith(b"$"):
                    n = int(head[1:])
                    return reply.read(n).decode(errors="replace") if n >= 0 else ""
                return head.decode(errors="replace").strip()
        except (OSError, ValueError):
            return None

    def ping(self):
        return self.command("PING") == "+PONG"

    def info(self, section):
        """`INFO section` as {field: value}; {} when Redis cannot be reached."""
        text = self.command(f"INFO {section}") or ""
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class Tally:
    """One `tally serve` replica or the `tally worker`: started, SIGKILLed, SIGSTOPped and
    restarted by the nemeses; an exit nobody asked for is a finding."""

    def __init__(self, name, binary, args, env, run_dir, port=None):
        self.name = name
        self.binary = binary
        self.args = args
        self.env = env
        self.run_dir = run_dir
        self.port = port
        self.addr = f"127.0.0.1:{port}" if port else None
        self.logfile = os.path.join(run_dir, f"{name}.log")
        self.proc = None
        self.expected_down = True
        self.starts = 0

    def start(self):
        logf = open(self.logfile, "a")
        self.starts += 1
        logf.write(f"\n===== faults: start #{self.starts} of {self.name} at "
                   f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} =====\n")
        logf.flush()
        self.proc = subprocess.Popen([self.binary, *self.args], env=self.env, cwd=self.run_dir,
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        self.expected_down = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self):
        self.expected_down = True
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def proc_stats(self):
        """The process's resident memory (VmRSS, KiB), open file descriptors and CPU time
        (user + system, seconds) from /proc; None while it is not running."""
        if not self.alive():
            return None
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, StopIteration, ValueError, IndexError):
            return None
        return {"pid": pid, "rss_kb": rss, "fds": fds, "cpu_s": cpu}

    def pause(self):
        self.signal(signal.SIGSTOP)

    def resume(self):
        self.signal(signal.SIGCONT)

    def close(self):
        self.expected_down = True
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
