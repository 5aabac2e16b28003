#!/usr/bin/env python3
"""A real SMTP server for tally's tests: aiosmtpd, storing each accepted message as a file.

Usage: smtp_sink.py --dir DIR [--port 0] [--refuse-first N] [--refuse-always]
                    [--refuse-code 451] [--delay-ms 0]

Listens on 127.0.0.1 and prints "LISTENING <port>" on stdout once it accepts connections.
Every accepted message becomes DIR/<n>.eml (the raw message) and DIR/<n>.txt (the decoded
text/plain part, so tests need no MIME parser). Every DATA command, accepted or refused, is
counted in DIR/attempts (one line each). --refuse-first N answers the first N DATA commands
with --refuse-code (451: transient, 550: permanent); --refuse-always refuses every one.
--delay-ms makes every DATA command take that long (a slow server keeps mail in flight).
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import os
import socket
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, folder, refuse_first, refuse_always, refuse_code, delay_ms):
        self.folder = folder
        self.delay_ms = delay_ms
        self.refuse_first = refuse_first
        self.refuse_always = refuse_always
        self.refuse_code = refuse_code
        self.attempts = 0
        self.numbers = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        with open(os.path.join(self.folder, "attempts"), "a") as f:
            f.write(f"{self.attempts}\n")
        if self.refuse_always or self.attempts <= self.refuse_first:
            kind = "4.3.0 try again later" if self.refuse_code < 500 else "5.7.1 refused"
            return f"{self.refuse_code} {kind}"
        n = next(self.numbers)
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        body = text.get_content() if text is not None else ""
        # Write under a temporary name, then rename: readers never see half a file.
        for suffix, data in ((".eml", raw), (".txt", body.encode())):
            tmp = os.path.join(self.folder, f".{n}{suffix}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(self.folder, f"{n}{suffix}"))
        return "250 2.0.0 OK"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--refuse-first", type=int, default=0)
    parser.add_argument("--refuse-always", action="store_true")
    parser.add_argument("--refuse-code", type=int, default=451)
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir, args.refuse_first, args.refuse_always, args.refuse_code, args.delay_ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp-sink.localhost"), sock=sock
    )
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
