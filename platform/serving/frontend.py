"""The server's front end: one thread reads every request in full before it takes a worker.

A thread per connection lets slow clients hold every thread: 300 connections sending one header line
every 5 s once locked `/ping` out, and a body trickled one byte every 4 s reset the read timeout with
each byte. Here one thread watches every socket (``selectors``, non-blocking) and

- reads a request's headers and then its body, each under deadlines that no trickle resets: the
  headers within ``header_timeout`` of the request's first byte, the whole request within
  ``request_timeout`` plus one second per MB of body; no byte for ``socket_timeout`` ends it too.
  Past a deadline: 408, and the connection is closed;
- grows a body's buffer as its bytes arrive (never from what Content-Length claims), up to the
  server's body cap, and all bodies held at once up to ``max_buffered_bytes`` (503 beyond);
- hands only a complete request to the pool of ``workers`` threads (``queued`` more may wait for
  one; 503 beyond), and answers ``GET /ping``, ``/health`` and ``/version`` itself, at once;
- writes each answer back without blocking, under the same kind of deadline;
- holds at most ``max_connections`` connections: a new one pushes out the idle or header-reading
  connection that has waited longest, so a crowd of slow clients cannot shut the others out.

The request itself is parsed and answered by :func:`~stemreg.platform.serving.handler.answer_request`.
"""
from __future__ import annotations

import collections
import logging
import queue
import re
import selectors
import socket
import time
from http import HTTPStatus
from typing import Any

from stemreg.platform.serving.connection import (_BODY_STEP, LINGER_S, MAX_HEAD_BYTES, Connection as _Conn,
                                                 plain_answer, scan_head)

log = logging.getLogger(__name__)

#: Routes answered by the front end itself: cheap, and they must answer however busy the workers are.
INLINE_ROUTES = frozenset({"/ping", "/health", "/version"})
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class FrontEnd:
    """The event loop of one :class:`~stemreg.platform.serving.server.DenoiserHTTPServer` (see the module)."""

    def __init__(self, server: Any, listener: socket.socket) -> None:
        self.server = server
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self.done: queue.SimpleQueue = queue.SimpleQueue()  # (conn, parts, close) from the workers
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.buffered = 0          # body buffer bytes held, all connections together (loop thread only)
        self.in_flight = 0         # requests given to the workers, running or waiting (loop thread only)
        self.stopping = False

    # -- the loop ------------------------------------------------------------------------------------
    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # its buffer is full (so the loop is woken anyway), or closed
            pass

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    def run(self, poll_interval: float = 0.25) -> None:
        """Serve until :meth:`stop`; closes every connection on the way out."""
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = 0.0
        try:
            while not self.stopping:
                for key, events in self.sel.select(timeout=min(poll_interval, 0.1)):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                    elif self.conns.get(key.fd) is key.data:
                        if events & selectors.EVENT_WRITE:
                            self._write(key.data)
                        if events & selectors.EVENT_READ and self.conns.get(key.fd) is key.data:
                            self._read(key.data)
                self._collect_answers()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 0.05
        finally:
            for conn in list(self.conns.values()):
                self._close(conn)
            self.sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if not events:
            self.sel.unregister(conn.sock)
        elif not conn.events:
            self.sel.register(conn.sock, events, conn)
        else:
            self.sel.modify(conn.sock, events, conn)
        conn.events = events

    # -- connections -----------------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors and the like: try again next round
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            if len(self.conns) >= self.server.max_connections and not self._evict():
                try:
                    sock.send(plain_answer(503, "Service Unavailable", f"the server holds {len(self.conns)} "
                                           "connections, its most, all busy; retry shortly",
                                           code="TEMPORARILY_UNAVAILABLE"))
                except OSError:
                    pass
                sock.close()
                continue
            conn = _Conn(sock, addr, time.monotonic())
            self.conns[conn.fd] = conn
            self._watch(conn, selectors.EVENT_READ)

    def _evict(self) -> bool:
        """Make room: close the connection idle longest, else the one reading headers longest."""
        for phase in ("idle", "linger", "head"):
            waiting = [c for c in self.conns.values() if c.phase == phase]
            if waiting:
                oldest = min(waiting, key=lambda c: c.started)
                if phase == "head":
                    self._refuse(oldest, 503, "the server is full and this request's headers were the "
                                 "slowest to arrive; retry", code="TEMPORARILY_UNAVAILABLE")
                self._close(oldest)
                return True
        return False

    def _close(self, conn: _Conn) -> None:
        if self.conns.get(conn.fd) is conn:
            del self.conns[conn.fd]
            self._watch(conn, 0)
        if conn.phase != "work":  # a worker still holds the body of a request in work
            self._release(conn)
        try:
            conn.sock.close()
        except OSError:
            pass

    def _release(self, conn: _Conn) -> None:
        self.buffered -= conn.reserved
        conn.reserved = 0
        conn.buf = bytearray()

    def _refuse(self, conn: _Conn, status: int, error: str, accepted: str | None = None,
                code: str = "BAD_REQUEST") -> None:
        """Answer ``status`` with a JSON error and close (after the client has had it)."""
        self._release(conn)
        self._answer(conn, [plain_answer(status, HTTPStatus(status).phrase, error, accepted, code)], True)

    # -- reading ---------------------------------------------------------------------------------------
    def _read(self, conn: _Conn) -> None:
        now = time.monotonic()
        if conn.phase == "body":
            self._read_body(conn, now)
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed its side
            if conn.phase == "head":
                self._refuse(conn, 400, f"the request ended after {len(conn.buf)} bytes of headers",
                             "a request line and headers ending with an empty line")
            else:
                self._close(conn)
            return
        conn.last = now
        if conn.phase == "linger":  # an answer that closes the connection is out: drop what still comes
            return
        conn.buf += data
        self._advance(conn, now)

    def _advance(self, conn: _Conn, now: float) -> None:
        """Go on with the bytes in ``conn.buf`` while idle or reading headers."""
        if conn.phase == "idle":
            start = 0
            while start < len(conn.buf) and conn.buf[start] in b"\r\n":  # blank lines between requests
                start += 1
            del conn.buf[:start]
            if not conn.buf:
                return
            conn.phase, conn.started = "head", now
            conn.limit = now + self.server.request_timeout
        match = _HEAD_END.search(conn.buf)
        if match is None:
            if len(conn.buf) > MAX_HEAD_BYTES:
                self._refuse(conn, 431, f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
                             f"at most {MAX_HEAD_BYTES} bytes of headers")
            return
        end = match.end()
        conn.head = bytes(conn.buf[:end])
        # A fresh buffer (at most 64 KiB copied), not `del buf[:end]`: that shifts the body's start to an
        # odd address, and the pixels of a .npy read in place would be misaligned (slow in every op).
        conn.buf = bytearray(conn.buf[end:])
        if self._parse_head(conn, now):
            self._read_body(conn, now, received=False)

    def _parse_head(self, conn: _Conn, now: float) -> bool:
        """Take the method, path and body length from the head; False when the request was refused."""
        conn.method, conn.path, lengths, chunked, expect = scan_head(conn.head)
        if chunked:
            self._refuse(conn, 411, "a body sent with Transfer-Encoding is not read",
                         "a request body with a Content-Length header")
            return False
        if len(lengths) > 1:
            self._refuse(conn, 400, "the request has several different Content-Length headers",
                         "one Content-Length header")
            return False
        text = lengths.pop() if lengths else b"0"
        if not text.isdigit():
            self._refuse(conn, 400, f"bad Content-Length {text.decode('latin-1')[:40]!r}", "a non-negative integer")
            return False
        length = int(text)
        cap = self.server.max_body_bytes
        if length > cap:  # not read (nor buffered): refused from what it claims
            self._refuse(conn, 413, f"request body of {length} bytes is larger than this server's cap of {cap} "
                         f"bytes (--max-pixels {self.server.max_pixels})",
                         f"at most {self.server.max_pixels} pixels per request", code="RESOURCE_LIMIT_EXCEEDED")
            return False
        conn.length = length
        conn.limit = conn.started + self.server.request_timeout + length / 1e6
        conn.phase, conn.filled = "body", len(conn.buf)
        conn.reserved = len(conn.buf)  # the body's first bytes, read with the headers
        self.buffered += conn.reserved
        if expect and length > conn.filled:
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass
        return True

    def _read_body(self, conn: _Conn, now: float, received: bool = True) -> None:
        if received:
            if conn.filled == len(conn.buf):  # full: double it (from 64 KiB), never past Content-Length
                step = min(conn.length - conn.filled, max(conn.filled, _BODY_STEP))
                if step and self.buffered + step > self.server.max_buffered_bytes:
                    self._refuse(conn, 503, "the server is receiving too many large bodies at once; retry "
                                 "shortly", code="TEMPORARILY_UNAVAILABLE")
                    return
                conn.buf.extend(bytes(step))
                conn.reserved += step
                self.buffered += step
            view = memoryview(conn.buf)
            try:
                n = conn.sock.recv_into(view[conn.filled:])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            finally:
                view.release()
            if not n:
                self._refuse(conn, 400, f"the body ended after {conn.filled} of the {conn.length} bytes its "
                             "Content-Length announced", "a body as long as its Content-Length")
                return
            conn.filled += n
            conn.last = now
        if conn.filled < conn.length:
            return
        leftover = bytes(conn.buf[conn.length:])  # a pipelined next request, if any
        del conn.buf[conn.length:]
        self._dispatch(conn, leftover)

    # -- handing over, answering ---------------------------------------------------------------------
    def _dispatch(self, conn: _Conn, leftover: bytes) -> None:
        body, conn.buf = conn.buf, bytearray(leftover)
        conn.phase = "work"
        self._watch(conn, 0)  # nothing more is read from this connection until it is answered
        if conn.method == "GET" and conn.path in INLINE_ROUTES:
            self.buffered -= conn.reserved
            conn.reserved = 0
            parts, close = self.server.run_request(conn.head, body, conn.addr)
            self._answer(conn, parts, close)
            return
        if self.in_flight >= self.server.workers + self.server.queued:
            self._refuse(conn, 503, f"the server is busy ({self.server.workers} requests served, "
                         f"{self.server.queued} waiting); retry shortly", code="TEMPORARILY_UNAVAILABLE")
            return
        self.in_flight += 1
        self.server.submit(self._work, conn, conn.head, body)

    def _work(self, conn: _Conn, head: bytes, body: bytearray) -> None:
        """In a worker thread: answer the request, hand the answer back to the loop."""
        try:
            parts, close = self.server.run_request(head, body, conn.addr)
        except BaseException:  # noqa: BLE001 - the loop must learn of it, whatever happened
            log.exception("error serving a request")
            parts, close = [plain_answer(500, "Internal Server Error", "internal error while serving this "
                                         "request; the server's log has the details", code="INTERNAL_ERROR")], True
        del body
        self.done.put((conn, parts, close))
        self.wake()

    def _collect_answers(self) -> None:
        while True:
            try:
                conn, parts, close = self.done.get_nowait()
            except queue.Empty:
                return
            self.in_flight -= 1
            self.buffered -= conn.reserved
            conn.reserved = 0
            if self.conns.get(conn.fd) is conn:
                self._answer(conn, parts, close)

    def _answer(self, conn: _Conn, parts: list, close: bool) -> None:
        now = time.monotonic()
        views = [memoryview(part).cast("B") for part in parts]
        conn.out = collections.deque(v for v in views if v.nbytes)
        conn.close_after = close or conn.close_after
        conn.phase, conn.last = "send", now
        conn.limit = now + self.server.request_timeout + sum(v.nbytes for v in views) / 1e6
        self._write(conn)
        if conn.phase == "send" and self.conns.get(conn.fd) is conn:
            self._watch(conn, selectors.EVENT_WRITE)

    def _write(self, conn: _Conn) -> None:
        while conn.out:
            try:
                n = conn.sock.send(conn.out[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the client went away
                self._close(conn)
                return
            conn.last = time.monotonic()
            if n < conn.out[0].nbytes:
                conn.out[0] = conn.out[0][n:]
                return
            conn.out.popleft()
        now = time.monotonic()
        if conn.close_after:
            try:  # tell the client we are done, and read what it still sends until it closes (no reset)
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close(conn)
                return
            conn.phase, conn.started = "linger", now
            self._watch(conn, selectors.EVENT_READ)
            return
        conn.phase, conn.started, conn.last = "idle", now, now
        self._watch(conn, selectors.EVENT_READ)
        if conn.buf:
            self._advance(conn, now)

    # -- deadlines ---------------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        srv = self.server
        for conn in list(self.conns.values()):
            silent = now - conn.last > srv.socket_timeout
            if conn.phase == "idle" and silent or conn.phase == "linger" and now - conn.started > LINGER_S:
                self._close(conn)
            elif conn.phase == "head" and (silent or now > conn.limit or now - conn.started > srv.header_timeout):
                self._refuse(conn, 408, f"the request line and headers did not arrive in time ({len(conn.buf)} "
                             f"bytes in {now - conn.started:.0f} s)",
                             f"headers within {srv.header_timeout:g} s, sent without pauses")
            elif conn.phase == "body" and (silent or now > conn.limit):
                self._refuse(conn, 408, f"the body did not arrive in time ({conn.filled} of {conn.length} bytes "
                             f"in {now - conn.started:.0f} s)", "a body as long as its Content-Length, sent "
                             f"without pauses, the whole request within {srv.request_timeout:g} s + 1 s per MB")
            elif conn.phase == "send" and (silent or now > conn.limit):
                self._close(conn)
