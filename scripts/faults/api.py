"""A small HTTP JSON client of tally's gateway (docs/api.md) for the fault suite: one keep-alive
connection per replica per thread, and every answer sorted into what the bank test needs to know
about it: a definite answer, or an ambiguous one (a transport error, a timeout, 503
UNAVAILABLE, 504 DEADLINE_EXCEEDED) after which the same request is sent again with the same
id, or a bug (500, any INTERNAL/UNKNOWN/DATA_LOSS).
"""

import http.client
import json
import socket
import time

# gRPC codes in the JSON error body (`code`), docs/api.md "HTTP errors and headers".
GRPC_CODES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


class Answer:
    """One HTTP answer (`status` set) or one transport failure (`error` set)."""

    def __init__(self, status=None, body=b"", headers=None, error=None, elapsed=0.0):
        self.status = status
        self.raw = body
        self.headers = headers or {}
        self.error = error
        self.elapsed = elapsed
        self.json = None
        if body:
            try:
                self.json = json.loads(body)
            except ValueError:
                self.json = None

    @property
    def grpc_code(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("code"), int):
            return GRPC_CODES.get(self.json["code"], str(self.json["code"]))
        return None

    @property
    def reason(self):
        if isinstance(self.json, dict):
            for d in self.json.get("details") or []:
                if isinstance(d, dict) and d.get("reason"):
                    return d["reason"]
        return None

    @property
    def kind(self):
        """A short label for the summary: `503 UNAVAILABLE`, `connection refused`, ..."""
        if self.error:
            return self.error
        label = str(self.status)
        if self.grpc_code and self.status != 200:
            label += f" {self.grpc_code}"
            if self.reason and self.reason not in (self.grpc_code,):
                label += f" {self.reason}"
        return label

    @property
    def ambiguous(self):
        """The request may or may not have taken effect: send it again, same id."""
        return self.error is not None or self.status in (503, 504)

    @property
    def bug(self):
        """500 or a code reserved for bugs (docs/ledger.md: INTERNAL is kept for bugs)."""
        return self.status is not None and (self.status >= 500 and self.status not in (503, 504)
                                            or self.grpc_code in ("INTERNAL", "UNKNOWN", "DATA_LOSS"))

    def describe(self):
        if self.error:
            return f"transport error: {self.error} after {self.elapsed:.2f}s"
        body = self.raw.decode(errors="replace")
        if len(body) > 600:
            body = body[:600] + "…"
        return f"HTTP {self.status} after {self.elapsed:.2f}s: {body}"


def error_kind(err):
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed without answer"
    if isinstance(err, BrokenPipeError):
        return "broken pipe"
    if isinstance(err, http.client.HTTPException):
        return f"http error {type(err).__name__}"
    return f"{type(err).__name__}"


class Client:
    """Not thread-safe: one per thread."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.conns = {}

    def _conn(self, addr):
        c = self.conns.get(addr)
        if c is None:
            host, port = addr.rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
            self.conns[addr] = c
        return c

    def drop(self, addr):
        c = self.conns.pop(addr, None)
        if c is not None:
            try:
                c.close()
            except OSError:
                pass

    def call(self, addr, method, path, body=None, token=None, timeout=None):
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if token:
            headers["authorization"] = f"Bearer {token}"
        started = time.monotonic()
        conn = self._conn(addr)
        if timeout is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            answer = Answer(status=resp.status, body=raw, headers=dict(resp.getheaders()),
                            elapsed=time.monotonic() - started)
            if resp.will_close:
                self.drop(addr)
        except (OSError, http.client.HTTPException) as err:
            self.drop(addr)
            answer = Answer(error=error_kind(err), elapsed=time.monotonic() - started)
        finally:
            if timeout is not None and addr in self.conns:
                self.conns[addr].timeout = self.timeout
                if self.conns[addr].sock is not None:
                    self.conns[addr].sock.settimeout(self.timeout)
        return answer

    def close(self):
        for addr in list(self.conns):
            self.drop(addr)
