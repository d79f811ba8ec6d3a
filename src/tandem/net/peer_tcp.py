"""The failover link on the asyncio loop: one TCP connection to the partner, fed to a
sans-I/O peer (spec §2.1; draft-12 §8.2).

:class:`PeerLink` owns the sockets, the peer owns the protocol. The link

* listens on ``listen`` (TCP 647 by default) on both servers and accepts a connection only
  from ``allowed_peer``; any other source is closed at once, counted
  (``stats["refused_not_partner"]``) and logged at most once per
  :data:`REFUSED_LOG_INTERVAL_S` (``FAILOVER_CONNECTION_REFUSED``);
* keeps at most one live connection: a connection that comes up while one is live (accepted
  or dialled) is closed at once (``stats["refused_busy"]``);
* dials ``connect_to`` when ``role == "primary"`` (spec §2.1: the primary opens the
  connection and sends CONNECT; it also accepts an inbound one from the partner, like ISC,
  and the peer sends CONNECT on whichever comes up first). The outbound socket is bound to
  the listen address, because that is the address the partner accepts. While disconnected
  the primary retries with exponential backoff between ``reconnect_s[0]`` and
  ``reconnect_s[1]`` (1 s .. 30 s): the delay doubles after every failed attempt and goes
  back to the minimum once a connection came up. The secondary only listens (it does not
  send the draft's optional "stimulus" connection);
* feeds received bytes to ``peer.receive_data(data, now)``, arms one loop timer at
  ``peer.get_timer()`` (epoch seconds from ``clock``, translated to loop time) and calls
  ``peer.handle_timer(now)`` when it fires;
* calls the optional ``peer.connection_made(now)`` / ``peer.connection_lost(now)`` when the
  live connection comes up / goes away (also when the link itself closed it), and closes the
  connection when the optional ``peer.close_requested()`` says so, after the bytes of that
  step left;
* after every step (bytes received, timer, connection up/down, :meth:`PeerLink.flush`)
  collects the leases to commit (a list of :class:`~tandem.leases.model.Lease` returned by
  ``receive_data``/``handle_timer`` plus the optional ``peer.take_changed()``), then
  ``peer.data_to_send()``.

Commit before acknowledgement. When a step changed leases, ``on_changed(leases)`` is called
*before* any byte of that step is written. It may

* return ``None``: the leases are durable now (a synchronous commit); the bytes go at once;
* return an awaitable (a future or coroutine that completes when the commit is durable):
  the bytes of that step, and every byte of every later step, are held until it completes
  successfully. Bytes therefore leave in the order the peer produced them, and never before
  a commit started earlier. If it raises (or ``on_changed`` itself raises), the held bytes of
  the live connection are dropped and the connection is closed: the partner resends its
  unacknowledged BNDUPDs on the next connection, which is safe; an acknowledgement for a
  binding we did not store is not.

Leases the peer gives through the optional ``peer.take_lazy()`` (a BNDACK that only raised
acknowledged times, see :meth:`tandem.failover.peer.FailoverPeer.take_lazy`) go to
``store_lazy(leases)``, which stores them with a later commit: no byte waits for them. Without
``store_lazy`` they are committed like the others.

Received bytes reach the peer in steps of at most ``rx_slice`` bytes (default
:data:`DEFAULT_RX_SLICE`); the rest of a larger read waits in a backlog for the next turn of
the loop (later reads queue behind it). Each slice's commit and acknowledgements thus go
before the next slice is decoded, so the partner builds its next updates while we work on
the rest: a full sync with a window of 100 runs as a pipeline of two halves instead of
stop-and-wait per window (docs/performance.md).

Backpressure: when the socket's write buffer grows beyond ``max_write_buffer`` bytes, or the
receive backlog beyond ``max_write_buffer`` bytes, the link stops reading from the partner
until it drains.

Mutual TLS (optional, ``tls=TlsFiles(cert, key, ca)``; off by default): both the listening
socket and the dialled connection run TLS 1.2+, each side presents its certificate and
requires the partner's to verify against ``ca`` (a CA, or simply the partner's self-signed
certificate). Host names are not checked: the partner is still pinned by its source address
(``allowed_peer``) and its certificate must chain to ``ca``. With TLS the listening socket is
a :class:`TlsListener`: it accepts plain TCP and starts TLS only for the partner's address
(a stranger is refused before any handshake).
A failed handshake never reaches the peer: an inbound one (a wrong or missing certificate,
plain TCP, a handshake that does not finish within ``connect_timeout_s``) is counted
(``stats["tls_handshake_failed"]``) and logged with the source and the reason at most once
per :data:`REFUSED_LOG_INTERVAL_S` (``FAILOVER_TLS_HANDSHAKE_FAILED``); an outbound one
counts as a failed connect attempt (``FAILOVER_CONNECT_FAILED``, backoff).

Nothing raised by the peer, the callback or the socket reaches the loop's exception handler:
a peer or callback exception is logged (``INTERNAL_ERROR``), counted and closes the
connection; socket errors end the connection (``FAILOVER_LINK_DOWN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import ssl
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Literal, Protocol, cast

from tandem.clock import Clock, SystemClock
from tandem.leases.model import Lease
from tandem.log import RateLimit, event, get_logger

log = get_logger("net.peer")


DEFAULT_PORT = 647
DEFAULT_RECONNECT_S = (1.0, 30.0)
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_WRITE_BUFFER = 1024 * 1024
#: Received bytes handed to the peer per step (about 50 BNDUPDs of ~68 bytes: half of the
#: default window of 100; 2,048 measured slower, 70.5 s against 64.2 s): see the module
#: docstring.
DEFAULT_RX_SLICE = 3500
REFUSED_LOG_INTERVAL_S = 60.0
#: A timer that the peer re-arms at a deadline already past right after it fired is retried
#: after this long instead of at once (a peer bug must not spin the loop).
STUCK_TIMER_DELAY_S = 0.1
#: After an exception from the peer, its timer runs again no sooner than this.
ERROR_TIMER_DELAY_S = 1.0

Role = Literal["primary", "secondary"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for mutual TLS on the failover link: our certificate chain, its private
    key, and the CA bundle (or the partner's self-signed certificate) the partner's
    certificate must verify against."""

    cert_file: str
    key_file: str
    ca_file: str

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        ctx = ssl.create_default_context(purpose, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.check_hostname = False  # the partner is pinned by address and by the CA
        ctx.verify_mode = ssl.CERT_REQUIRED  # on the server side too: mutual
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """For the listening socket (raises OSError/ssl.SSLError on unreadable files)."""
        return self._context(ssl.Purpose.CLIENT_AUTH)

    def client_context(self) -> ssl.SSLContext:
        """For the dialled connection."""
        return self._context(ssl.Purpose.SERVER_AUTH)


class _TlsSettings(Protocol):
    @property
    def tls_cert_file(self) -> str | None: ...

    @property
    def tls_key_file(self) -> str | None: ...

    @property
    def tls_ca_file(self) -> str | None: ...


def tls_files(section: _TlsSettings) -> TlsFiles | None:
    """The TLS files of a failover config section (None: TLS off; the config check makes
    sure that either all three are given or none)."""
    cert, key, ca = section.tls_cert_file, section.tls_key_file, section.tls_ca_file
    if cert is None or key is None or ca is None:
        return None
    return TlsFiles(cert, key, ca)
Address = tuple[IPv4Address | str, int]
ChangedHandler = Callable[[list[Lease]], Awaitable[object] | None]


class SansIOPeer(Protocol):
    """What :class:`PeerLink` drives (the shape of ``tandem.sim.server.SimPeer``).

    Required: ``get_timer``, ``handle_timer``, ``receive_data``, ``data_to_send``.
    Optional, called when present: ``connection_made(now)``, ``connection_lost(now)``,
    ``take_changed() -> list[Lease]``, ``take_lazy() -> list[Lease]``,
    ``close_requested() -> bool``.
    ``receive_data``/``handle_timer`` may return a list; the leases in it are committed.
    """

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Any: ...

    def receive_data(self, data: bytes, now: float) -> Any: ...

    def data_to_send(self) -> bytes: ...


@dataclass(slots=True, eq=False)
class _Pending:
    """Bytes of one step waiting for a commit (its own or an earlier one)."""

    gate: asyncio.Future[object] | None
    data: bytes
    conn: _Conn | None


class _Conn(asyncio.Protocol):
    """One TCP connection (accepted or dialled); the link decides whether it goes live."""

    def __init__(self, link: PeerLink, direction: str) -> None:
        self.link = link
        self.direction = direction
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.live = False
        self.closing = False  # close once the held bytes are written
        self.lost = asyncio.get_running_loop().create_future()
        self._write_full = False  # the transport's write buffer is above its high mark
        self._rx_full = False  # the link's receive backlog is above its limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's TCPTransport is one but does not subclass
        # asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        try:
            peername = transport.get_extra_info("peername")
            self.remote = str(peername[0]) if peername else ""
            self.link._on_connection(self)
        except Exception:
            self.link._internal_error("connection setup")
            self.abort()

    def data_received(self, data: bytes) -> None:
        if not self.live:
            return
        try:
            self.link._on_data(self, data)
        except Exception:  # never reach the loop's exception handler
            self.link._internal_error("receive")

    def eof_received(self) -> bool | None:
        return False  # half-close: let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.live:
            reason = "closed by partner" if exc is None else f"error: {_describe(exc)}"
            try:
                self.link._on_lost(self, reason)
            except Exception:
                self.link._internal_error("connection lost")

    def pause_writing(self) -> None:
        self.link.stats["backpressure_pauses"] += 1
        self._write_full = True
        self._set_reading()

    def resume_writing(self) -> None:
        self._write_full = False
        self._set_reading()

    def set_rx_full(self, full: bool) -> None:
        if full != self._rx_full:
            self._rx_full = full
            if full:
                self.link.stats["rx_backlog_pauses"] += 1
            self._set_reading()

    def _set_reading(self) -> None:
        """Read from the socket unless a write buffer or the receive backlog is full."""
        if self.transport is not None:
            with contextlib.suppress(Exception):
                if self._write_full or self._rx_full:
                    self.transport.pause_reading()
                else:
                    self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.link.stats["tx_bytes"] += len(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Listening(Protocol):
    """What :class:`PeerLink` needs of its listening socket (``asyncio.Server`` or
    :class:`TlsListener`)."""

    @property
    def sockets(self) -> Sequence[Any]: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


#: Accept errors (e.g. EMFILE) are retried after this long, and logged at most once a minute.
ACCEPT_RETRY_S = 0.1


class TlsListener:
    """A listening TCP socket for links with mutual TLS: it accepts plain TCP, asks
    ``route(source)`` which link the connection belongs to, and hands the socket to that
    link, which starts TLS only for its partner (``PeerLink._accept_socket``). Unlike a TLS
    ``create_server``, this sees every handshake that fails, with its source address."""

    def __init__(self, listen: Address, route: Callable[[str], PeerLink]) -> None:
        self.listen = (str(listen[0]), int(listen[1]))
        self._route = route
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._error_log = RateLimit(1, REFUSED_LOG_INTERVAL_S)

    @property
    def sockets(self) -> Sequence[socket.socket]:
        return [self._sock] if self._sock is not None else []

    async def start(self) -> None:
        """Bind and listen (raises OSError), then accept in a task."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self.listen)
            sock.listen(100)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._task = loop.create_task(self._accept_loop(loop, sock))

    async def _accept_loop(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:  # out of file descriptors...: keep listening
                if self._error_log.allow(loop.time()):
                    event(log, logging.WARNING, "FAILOVER_ACCEPT_FAILED",
                          address=f"{self.listen[0]}:{self.listen[1]}", error=_describe(exc))
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            source = str(addr[0])
            try:
                link = self._route(source)
                loop.create_task(link._accept_socket(conn, source))
            except Exception:
                conn.close()
                log.exception("INTERNAL_ERROR in accept")

    def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    async def wait_closed(self) -> None:
        return None


class PeerLink:
    """The TCP transport of one failover relationship. See the module docstring.

    ``start()`` opens the listening socket (raises OSError) and, for the primary, starts
    dialling; ``close()`` stops everything. ``flush()`` runs the end-of-step work after the
    owner called the peer directly (e.g. queued a binding update): it collects leases to
    commit and bytes to send, and re-arms the timer.
    """

    def __init__(
        self,
        peer: SansIOPeer,
        *,
        role: Role,
        listen: Address,
        connect_to: Address | None,
        allowed_peer: IPv4Address | str,
        clock: Clock | None = None,
        on_changed: ChangedHandler | None = None,
        store_lazy: Callable[[list[Lease]], None] | None = None,
        reconnect_s: tuple[float, float] = DEFAULT_RECONNECT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        stats: Counter[str] | None = None,
        tls: TlsFiles | None = None,
        rx_slice: int = DEFAULT_RX_SLICE,
    ) -> None:
        if role not in ("primary", "secondary"):
            raise ValueError(f"role must be primary or secondary, got {role!r}")
        if rx_slice < 1:
            raise ValueError("rx_slice must be at least 1 byte")
        if not 0 < reconnect_s[0] <= reconnect_s[1]:
            raise ValueError("reconnect_s must be (min, max) with 0 < min <= max")
        self.peer = peer
        self.role: Role = role
        self.listen = (str(listen[0]), int(listen[1]))
        self.connect_to = (str(connect_to[0]), int(connect_to[1])) if connect_to else None
        self.allowed_peer = str(IPv4Address(str(allowed_peer)))
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.on_changed = on_changed
        self.store_lazy = store_lazy
        self.reconnect_s = reconnect_s
        self.connect_timeout_s = connect_timeout_s
        self.max_write_buffer = max_write_buffer
        self.rx_slice = rx_slice
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.tls = tls
        # built here so that unreadable or mismatched files fail at construction
        self._ssl_server = tls.server_context() if tls is not None else None
        self._ssl_client = tls.client_context() if tls is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _Listening | None = None
        self._dialer: asyncio.Task[None] | None = None
        self._live: _Conn | None = None
        self._conns: set[_Conn] = set()
        self._idle = asyncio.Event()
        self._pending: deque[_Pending] = deque()
        self._rx_backlog = bytearray()  # received bytes of the live connection not fed yet
        self._rx_call: asyncio.Handle | None = None  # the next slice's turn
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._fired_deadline: float | None = None
        self._timer_floor = 0.0  # loop time before which the timer must not fire again
        self._closed = False
        self._refused_log = RateLimit(1, REFUSED_LOG_INTERVAL_S, self._refused_summary)
        self._tls_log = RateLimit(1, REFUSED_LOG_INTERVAL_S, self._tls_summary)
        self._handshakes: set[asyncio.Task[None]] = set()
        self._dial_log = RateLimit(1, REFUSED_LOG_INTERVAL_S)
        self._changed_listeners: list[Callable[[bool], None]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._live is not None

    @property
    def listen_port(self) -> int:
        """The bound listening port (useful with port 0), or the configured one."""
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self.listen[1]

    def on_connection_change(self, fn: Callable[[bool], None]) -> None:
        """Call ``fn(connected)`` whenever the live connection comes up or goes away."""
        self._changed_listeners.append(fn)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._closed = False
        if self._ssl_server is not None:
            listener = TlsListener(self.listen, lambda source: self)
            await listener.start()
            self._server = listener
        else:
            self._server = await loop.create_server(
                lambda: _Conn(self, "inbound"),
                self.listen[0],
                self.listen[1],
                reuse_address=True,
                family=socket.AF_INET,
            )
        event(log, logging.INFO, "FAILOVER_LISTENING", address=f"{self.listen[0]}:"
              f"{self.listen_port}", partner=self.allowed_peer, role=self.role,
              tls=self.tls is not None)
        self._idle.set()
        if self.role == "primary" and self.connect_to is not None:
            self._dialer = loop.create_task(self._dial_loop())
        self._rearm()

    async def close(self) -> None:
        """Stop listening and dialling, close every connection (the peer hears
        ``connection_lost``), cancel the timer. Held bytes are dropped."""
        if self._closed:
            return
        self._closed = True
        dialer, self._dialer = self._dialer, None
        if dialer is not None:
            dialer.cancel()
        if self._server is not None:
            self._server.close()
        for task in list(self._handshakes):
            task.cancel()  # a handshake of a shared TlsListener (its close() may come later)
        live = self._live
        if live is not None:
            self._drop_live(live, "link closed")
        waits: list[asyncio.Future[None]] = []
        for conn in list(self._conns):
            conn.abort()
            waits.append(conn.lost)
        if waits:
            await asyncio.wait(waits, timeout=1.0)
        self._conns.clear()
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if dialer is not None:
            # asyncio.wait so that a cancellation the dialer missed cannot hang close()
            await asyncio.wait([dialer], timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
            self._server = None

    # ------------------------------------------------------------------ dialling

    async def _dial_loop(self) -> None:
        assert self._loop is not None and self.connect_to is not None
        delay = self.reconnect_s[0]
        host, port = self.connect_to
        while not self._closed:
            await self._idle.wait()
            if self._live is not None:  # an inbound connection won meanwhile
                self._idle.clear()
                continue
            self.stats["connect_attempts"] += 1
            conn: _Conn | None = None
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(self.connect_timeout_s):
                    _, conn = await self._loop.create_connection(
                        lambda: _Conn(self, "outbound"),
                        host,
                        port,
                        local_addr=(self.listen[0], 0),
                        family=socket.AF_INET,
                        ssl=self._ssl_client,
                        ssl_handshake_timeout=(
                            self.connect_timeout_s if self._ssl_client else None
                        ),
                    )
            except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
                self.stats["connect_failures"] += 1
                if self._dial_log.allow(self._loop.time()):
                    event(log, logging.WARNING, "FAILOVER_CONNECT_FAILED",
                          partner=f"{host}:{port}", error=_describe(exc),
                          retry_s=round(delay, 3))
            if conn is not None and conn.live:
                delay = self.reconnect_s[0]
                await asyncio.shield(conn.lost)  # then wait the minimum delay before dialling again
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_s[1])
                continue
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ connections

    async def _accept_socket(self, sock: socket.socket, source: str) -> None:
        """A connection a :class:`TlsListener` accepted for this link: the partner's address
        gets the TLS handshake (its failure counted and logged); a stranger, or any source
        while a connection is live, goes without TLS straight to :meth:`_on_connection`,
        which refuses it (counted and logged there)."""
        loop = self._loop
        if loop is None or self._closed:
            sock.close()
            return
        tls = self._ssl_server if source == self.allowed_peer and self._live is None else None
        task = asyncio.current_task()
        if task is not None:
            self._handshakes.add(task)
        try:
            await loop.connect_accepted_socket(
                lambda: _Conn(self, "inbound"),
                sock,
                ssl=tls,
                ssl_handshake_timeout=self.connect_timeout_s if tls is not None else None,
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as exc:  # ssl.SSLError, a reset, the handshake timeout
            sock.close()  # a no-op when the transport closed it already
            if tls is not None:
                self._tls_failed(source, exc)
        finally:
            if task is not None:
                self._handshakes.discard(task)

    def _tls_failed(self, source: str, exc: BaseException) -> None:
        self.stats["tls_handshake_failed"] += 1
        loop = self._loop
        if self._tls_log.allow(loop.time() if loop is not None else 0.0):
            reason = getattr(exc, "reason", None) or _describe(exc)
            event(log, logging.WARNING, "FAILOVER_TLS_HANDSHAKE_FAILED", source=source,
                  reason=reason, action="connection refused")

    def _on_connection(self, conn: _Conn) -> None:
        loop = self._loop
        now_mono = loop.time() if loop is not None else 0.0
        if self._closed:
            conn.abort()
            return
        if conn.direction == "inbound" and conn.remote != self.allowed_peer:
            self.stats["refused_not_partner"] += 1
            conn.abort()
            if self._refused_log.allow(now_mono):
                event(log, logging.WARNING, "FAILOVER_CONNECTION_REFUSED",
                      source=conn.remote, reason="not the partner", partner=self.allowed_peer)
            return
        if self._live is not None:
            self.stats["refused_busy"] += 1
            conn.abort()
            if self._refused_log.allow(now_mono):
                event(log, logging.WARNING, "FAILOVER_CONNECTION_REFUSED",
                      source=conn.remote, reason="a connection is already up")
            return
        assert conn.transport is not None
        conn.transport.set_write_buffer_limits(high=self.max_write_buffer)
        with contextlib.suppress(OSError):
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn.live = True
        self._live = conn
        self._conns.add(conn)
        self._idle.clear()
        self.stats["connections"] += 1
        event(log, logging.INFO, "FAILOVER_LINK_UP", partner=conn.remote,
              direction=conn.direction)
        self._notify(True)
        now = self.clock.now()
        fn = getattr(self.peer, "connection_made", None)
        res = self._call_peer("connection_made", fn, now) if fn is not None else None
        self._after_step(res)

    def _on_data(self, conn: _Conn, data: bytes) -> None:
        self.stats["rx_bytes"] += len(data)
        if self._rx_backlog:  # earlier bytes are still waiting: these go after them
            self._rx_backlog += data
            conn.set_rx_full(len(self._rx_backlog) > self.max_write_buffer)
            return
        n = self.rx_slice
        if len(data) > n:
            self._rx_backlog += data[n:]
            data = data[:n]
            self._next_slice(conn)
        self._feed(data)

    def _next_slice(self, conn: _Conn) -> None:
        loop = self._loop
        if loop is not None and self._rx_call is None:
            self.stats["rx_slices_deferred"] += 1
            self._rx_call = loop.call_soon(self._on_slice, conn)

    def _on_slice(self, conn: _Conn) -> None:
        try:
            self._rx_call = None
            backlog = self._rx_backlog
            if conn is not self._live or not conn.live:
                backlog.clear()
                return
            n = self.rx_slice
            data = bytes(backlog[:n])
            del backlog[:n]
            if backlog:
                self._next_slice(conn)
            conn.set_rx_full(len(backlog) > self.max_write_buffer)
            self._feed(data)
        except Exception:  # never reach the loop's exception handler
            self._internal_error("receive")

    def _feed(self, data: bytes) -> None:
        now = self.clock.now()
        res = self._call_peer("receive_data", self.peer.receive_data, data, now)
        self._after_step(res)

    def _on_lost(self, conn: _Conn, reason: str) -> None:
        if self._live is conn:
            self._drop_live(conn, reason)

    def _drop_live(self, conn: _Conn, reason: str) -> None:
        """The live connection ended (by the partner, by us, or an error)."""
        conn.live = False
        if self._live is not conn:
            return
        self._live = None
        self._conns.discard(conn)
        self._rx_backlog.clear()  # bytes of a dead connection never reach the peer
        if self._rx_call is not None:
            self._rx_call.cancel()
            self._rx_call = None
        if conn.transport is not None and not conn.transport.is_closing():
            conn.abort()
        event(log, logging.INFO, "FAILOVER_LINK_DOWN", partner=conn.remote, reason=reason)
        self._notify(False)
        now = self.clock.now()
        fn = getattr(self.peer, "connection_lost", None)
        res = self._call_peer("connection_lost", fn, now) if fn is not None else None
        self._after_step(res)
        if not self._closed:
            self._idle.set()

    def _close_live(self, reason: str) -> None:
        """Close the live connection gracefully (bytes already written still go)."""
        conn = self._live
        if conn is None:
            return
        conn.close()
        self._drop_live(conn, reason)

    def _notify(self, up: bool) -> None:
        for fn in self._changed_listeners:
            try:
                fn(up)
            except Exception:
                self._internal_error("connection listener")

    # ------------------------------------------------------------------ steps

    def flush(self) -> None:
        """End-of-step work after the owner called the peer outside the link's callbacks."""
        self._after_step(None)

    def _call_peer(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            self._internal_error(f"peer.{what}")
            if self._loop is not None:
                self._timer_floor = self._loop.time() + ERROR_TIMER_DELAY_S
            if self._live is not None:
                self._close_live(f"internal error in peer.{what}")
            return None

    def _after_step(self, result: Any) -> None:
        peer = self.peer
        changed: list[Lease] = []
        if isinstance(result, list):
            changed.extend(x for x in result if isinstance(x, Lease))
        take = getattr(peer, "take_changed", None)
        if take is not None:
            more = self._call_peer("take_changed", take)
            if isinstance(more, list):
                changed.extend(more)
        take_lazy = getattr(peer, "take_lazy", None)
        if take_lazy is not None:
            lazy = self._call_peer("take_lazy", take_lazy)
            if isinstance(lazy, list) and lazy:
                if self.store_lazy is not None:
                    try:
                        self.store_lazy(lazy)
                    except Exception:
                        self._internal_error("store_lazy")
                else:
                    changed.extend(lazy)  # nowhere to store them apart: like any change
        data = self._call_peer("data_to_send", peer.data_to_send) or b""
        want = getattr(peer, "close_requested", None)
        close = bool(self._call_peer("close_requested", want)) if want is not None else False
        self._emit(changed, bytes(data))
        if close and self._live is not None:
            self._live.closing = True
            self._drain()
        self._rearm()

    def _emit(self, changed: list[Lease], data: bytes) -> None:
        gate: asyncio.Future[object] | None = None
        conn = self._live
        if changed:
            self.stats["commits_requested"] += 1
            try:
                res = self.on_changed(changed) if self.on_changed is not None else None
                if res is not None and inspect.isawaitable(res):
                    gate = asyncio.ensure_future(res)
            except Exception:
                self._internal_error("on_changed")
                self._commit_failed(conn)
                return
            if gate is not None:
                gate.add_done_callback(self._gate_done)
        if not data and gate is None:
            return
        if data and conn is None:
            self.stats["tx_dropped_bytes"] += len(data)
            data = b""
        if gate is None and not self._pending:
            if data and conn is not None:
                conn.write(data)
            return
        self._pending.append(_Pending(gate, data, conn))
        self.stats["tx_held"] += 1
        self._drain()

    def _gate_done(self, fut: asyncio.Future[object]) -> None:
        try:
            self._drain()
        except Exception:  # pragma: no cover - _drain does not raise; belt and braces
            self._internal_error("drain")

    def _drain(self) -> None:
        """Write the held bytes whose commits (and every earlier one) are done."""
        pending = self._pending
        while pending:
            head = pending[0]
            gate = head.gate
            if gate is not None and not gate.done():
                break
            pending.popleft()
            failed = gate is not None and (gate.cancelled() or gate.exception() is not None)
            if failed:
                assert gate is not None
                exc = None if gate.cancelled() else gate.exception()
                event(log, logging.ERROR, "FAILOVER_COMMIT_FAILED",
                      error=_describe(exc) if exc is not None else "cancelled",
                      action="held bytes dropped, connection closed")
                self.stats["commit_failures"] += 1
                self._commit_failed(head.conn)
                continue
            conn = head.conn
            if head.data and conn is not None and conn.live:
                conn.write(head.data)
        live = self._live
        if live is not None and live.closing and not any(p.conn is live for p in pending):
            self._close_live("closed by peer")

    def _commit_failed(self, conn: _Conn | None) -> None:
        """Drop the bytes held for ``conn`` and close it (they may acknowledge what failed)."""
        for p in self._pending:
            if p.conn is conn:
                p.data = b""
        if conn is not None and conn.live:
            conn.abort()
            self._drop_live(conn, "commit failed")

    # ------------------------------------------------------------------ timer

    def _rearm(self) -> None:
        loop = self._loop
        if loop is None or self._closed:
            return
        try:
            deadline = self.peer.get_timer()
        except Exception:
            self._internal_error("peer.get_timer")
            deadline = None
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_deadline = None
            return
        if self._timer is not None and deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, deadline - self.clock.now())
        when = loop.time() + delay
        if self._fired_deadline is not None and deadline <= self._fired_deadline:
            when = max(when, loop.time() + STUCK_TIMER_DELAY_S)  # the peer did not move on
        when = max(when, self._timer_floor)
        self._timer_deadline = deadline
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        try:
            self._run_timer()
        except Exception:  # never reach the loop's exception handler
            self._internal_error("timer")

    def _run_timer(self) -> None:
        self._timer = None
        deadline = self._timer_deadline
        self._timer_deadline = None
        now = self.clock.now()
        res = self._call_peer("handle_timer", self.peer.handle_timer, now)
        self._fired_deadline = deadline if deadline is not None and now >= deadline else None
        self.stats["timers"] += 1
        try:
            self._after_step(res)
        finally:
            self._fired_deadline = None

    # ------------------------------------------------------------------ logging

    def _internal_error(self, where: str) -> None:
        self.stats["internal_errors"] += 1
        log.exception("INTERNAL_ERROR in %s", where)

    def _refused_summary(self, suppressed: int, total: int, window_s: float) -> None:
        event(log, logging.WARNING, "FAILOVER_CONNECTION_REFUSED_SUMMARY",
              suppressed=suppressed, total=total, window_s=window_s)

    def _tls_summary(self, suppressed: int, total: int, window_s: float) -> None:
        event(log, logging.WARNING, "FAILOVER_TLS_HANDSHAKE_FAILED_SUMMARY",
              suppressed=suppressed, total=total, window_s=window_s)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
