"""One client connection of the server's front end (frontend.py), and the answers it sends by itself."""
from __future__ import annotations

import collections
import json
import socket
from typing import Any

#: The most bytes of request line and headers (http.server allows 64 KiB per line).
MAX_HEAD_BYTES = 65536
#: A body's buffer starts at this many bytes and doubles as bytes arrive.
_BODY_STEP = 1 << 16
#: Seconds a closing connection is read (and dropped) after its last answer, so the answer is not lost.
LINGER_S = 2.0


def scan_head(head: bytes) -> tuple[str, str, set[bytes], bool, bool]:
    """What the front end needs of a request's head before its body: ``(method, path without query,
    Content-Length values, whether a Transfer-Encoding is given, whether it expects 100-continue)``.
    The handler parses the head fully later."""
    lines = head.split(b"\n")
    words = lines[0].split()
    method = words[0].decode("latin-1") if words else ""
    path = (words[1].decode("latin-1").split("?", 1)[0].rstrip("/") or "/") if len(words) > 1 else ""
    lengths, chunked, expect = set(), False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths.add(value.strip())
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"expect":
            expect = value.strip().lower() == b"100-continue"
    return method, path, lengths, chunked, expect


def plain_answer(status: int, reason: str, error: str, accepted: str | None = None,
                 code: str = "BAD_REQUEST") -> bytes:
    """A complete JSON error answer that closes the connection."""
    payload: dict[str, Any] = {"error": error}
    if accepted:
        payload["accepted"] = accepted
    payload["error_code"] = code
    body = json.dumps(payload).encode()
    extra = "Retry-After: 1\r\n" if status == 503 else ""
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n").encode() + body


class Connection:
    """One client connection and where its current request stands."""

    __slots__ = ("sock", "addr", "fd", "buf", "filled", "phase", "started", "last", "limit", "head",
                 "method", "path", "length", "reserved", "out", "close_after", "events")

    def __init__(self, sock: socket.socket, addr: Any, now: float) -> None:
        self.sock, self.addr, self.fd = sock, addr, sock.fileno()
        self.buf = bytearray()     # head bytes being read; then the body (its buffer grows as bytes arrive)
        self.filled = 0            # body bytes received (the buffer may be larger)
        self.phase = "idle"        # idle -> head -> body -> work -> send -> idle ... (or -> linger -> closed)
        self.started = now         # first byte of the current request (idle, linger: when the phase began)
        self.last = now            # the last byte received or sent
        self.limit = 0.0           # the whole-request (or whole-answer) deadline
        self.head = b""
        self.method = self.path = ""
        self.length = 0            # the body's Content-Length
        self.reserved = 0          # body buffer bytes counted against the server's budget
        self.out: collections.deque = collections.deque()
        self.close_after = False
        self.events = 0            # what the selector watches for
