"""A TCP proxy between a tally process and the private PostgreSQL, for the network nemeses:
`drop` closes every open connection at once (and, for a while, every new one as it arrives),
`stall` stops forwarding bytes in both directions for some seconds while keeping the
connections open (the replica sees a database that went silent, not one that went away), and
`arm` sets a tripwire that cuts the one connection whose next message to PostgreSQL holds a
given text, before that message is forwarded (one statement of a transaction lost, and the
transaction with it).

Threads, not asyncio: a pool has a handful of connections, so two pump threads each are cheap,
and blocking sockets keep the stall exact (a stalled pump holds its chunk and reads no more).
"""

import socket
import threading
import time


class Proxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = set()  # (client, server) socket pairs
        self.flowing = threading.Event()
        self.flowing.set()
        self.refuse_until = 0.0
        self.closed = False
        self.accepted = 0
        self.dropped = 0
        self.tripwire = None
        self.tripped = threading.Event()
        self.tripped_at = None  # time.time() of the cut
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                self._abort(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                self._abort(client)
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, server)
            with self.lock:
                self.conns.add(pair)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server, pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, pair, False), daemon=True).start()

    def _pump(self, src, dst, pair, to_server):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                wire = self.tripwire
                if to_server and wire is not None and wire in data:
                    self.tripwire = None
                    self.tripped_at = time.time()
                    self.tripped.set()
                    break  # not forwarded: the connection dies with it
                while not self.flowing.wait(0.2):
                    if pair not in self.conns:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close_pair(pair)

    @staticmethod
    def _abort(sock):
        try:
            # RST rather than FIN: the peer sees the connection die, as when a link breaks.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _close_pair(self, pair):
        with self.lock:
            if pair not in self.conns:
                return
            self.conns.discard(pair)
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._abort(s)

    def drop(self, refuse_seconds=0.0):
        """Closes every connection now; refuses new ones for `refuse_seconds`."""
        self.refuse_until = time.monotonic() + refuse_seconds
        with self.lock:
            pairs = list(self.conns)
        for pair in pairs:
            self._close_pair(pair)
        self.dropped += len(pairs)
        return len(pairs)

    def arm(self, text):
        """Cuts the first connection that sends `text` to PostgreSQL (a statement's text travels
        in its Parse message, the first time a connection prepares it)."""
        self.tripped.clear()
        self.tripped_at = None
        self.tripwire = text

    def disarm(self):
        self.tripwire = None

    def stall(self):
        self.flowing.clear()
        with self.lock:
            return len(self.conns)

    def resume(self):
        self.flowing.set()

    def close(self):
        self.closed = True
        self.flowing.set()
        try:
            self.listener.close()
        except OSError:
            pass
        self.drop()
