"""Composition root: store + engine + DHCP sockets + timer, and the blocking ``run()``.

The per-burst path (``Server._on_burst``), called once per socket wakeup with every datagram
drained from the socket:

1. decode each datagram (malformed ones are counted as ``rx_malformed`` and dropped) and
   let the engine handle it, collecting every reply and every changed lease;
2. hand all changed leases of the burst to ONE store commit (durability before reply);
3. send the replies. ACKs leave only after the commit that holds their lease (and every
   commit before it) has returned; OFFERs and NAKs need no durability and leave at once.

Commits run on one worker thread, one at a time, so the fsync overlaps the handling of the
next burst (SQLite releases the GIL while it writes). Changes that arrive while a commit is
in flight are grouped into the next one, together with the ACKs that wait for them, and a
new commit starts at most once per ``store.group_commit_window_ms`` (group commit: under
load a few hundred transactions a second instead of one per wakeup — a commit costs far
more CPU than a lease). When nothing is being written and the burst changed nothing,
replies go out immediately.

If a commit fails (StoreError), its ACKs are withheld (``acks_withheld``), an alarm
``STORE_WRITE_FAILED`` is logged, and the changes are retried with the next commit (at the
latest one second later); OFFERs and NAKs still go.

One timer follows ``engine.get_timer()``: after every burst and timer run it is re-armed
when the engine's next deadline is earlier than the armed one (a later one keeps the armed
timer, which then fires early, finds nothing due and re-arms).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import queue
import signal
import threading
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any, Final, cast

from tandem.api.control import ControlHandler, ControlServer
from tandem.build import build_kind
from tandem.clock import Clock, SystemClock
from tandem.config import Config, relationships
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import Reply, RxInfo
from tandem.errors import DecodeError, StoreError
from tandem.failover.machine import LogRecord
from tandem.failover.peer import FailoverPeer
from tandem.failover.policy import Policy
from tandem.failover.relationships import FailoverSet
from tandem.leases.model import Lease
from tandem.log import RateLimit, event, get_logger, setup_logging
from tandem.net.peer_mux import MuxedPeerLink, SharedListener
from tandem.net.peer_tcp import PeerLink, tls_files
from tandem.net.udp import DhcpTransport
from tandem.store import open_store
from tandem.store.base import LeaseStore
from tandem.wire.dhcp import (
    OPT_LEASE_TIME,
    OPT_MAX_MESSAGE_SIZE,
    OPT_MESSAGE_TYPE,
    ZERO_IP,
    DhcpMessage,
    decode,
    encode,
)

log: Final = get_logger("service")

INFO: Final = logging.INFO
WARNING: Final = logging.WARNING
ERROR: Final = logging.ERROR

ACK_TYPE: Final = b"\x05"
ACK_LOG_PER_SECOND: Final = 50  # above this, a per-second ACK_SUMMARY line replaces per-ACK lines
HOUSEKEEPING_INTERVAL_S: Final = 1.0
INTERFACE_REFRESH_S: Final = 30.0
MAX_REPLY_SIZE: Final = 1472  # 1500-byte MTU minus IPv4 and UDP headers
# ACKs held for a commit in flight, at most (a store that hangs must not grow RAM forever).
MAX_WAITING_ACKS = 65536

EXIT_OK: Final = 0
EXIT_START_FAILED: Final = 1

# Engine events logged at WARNING (the rest at INFO).
_WARNING_EVENTS: Final = frozenset({"POOL_EXHAUSTED", "ADDRESS_DECLINED", "DECLINE"})


def _mac(hw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in hw)


def _lease_time(msg: DhcpMessage) -> int | None:
    v = msg.options.get(OPT_LEASE_TIME)
    return int.from_bytes(v, "big") if v is not None and len(v) == 4 else None


def _reply_size(request: DhcpMessage) -> int:
    v = request.options.get(OPT_MAX_MESSAGE_SIZE)
    if v is None or len(v) != 2:
        return 576
    return max(576, min(int.from_bytes(v, "big"), MAX_REPLY_SIZE))


class Server:
    """A running DHCP server: ``await start()``, serve, ``await stop()``.

    ``store``, ``engine`` and ``clock`` may be injected (tests); otherwise the store is
    opened from ``config.store`` and owned (closed on stop).
    """

    def __init__(
        self,
        config: Config,
        *,
        store: LeaseStore | None = None,
        engine: Engine | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._clock: Clock = clock or SystemClock()
        self._store = store
        self._owns_store = store is None
        self._engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counters: Counter[str] = Counter()
        self._transport: DhcpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        self._last_refresh = 0.0
        # Changes not yet handed to the store (newest version per address), and the ACKs
        # that must wait for them; the commit in flight and the ACKs that wait for it.
        self._waiting: dict[IPv4Address, Lease] = {}
        self._waiting_replies: list[tuple[Reply, DhcpMessage]] = []
        self._inflight: asyncio.Future[None] | None = None
        # Group commit: a new commit starts at most once per window (loop time), so that a
        # busy server writes a few hundred larger transactions a second, not thousands.
        self._commit_window_s = config.store.group_commit_window_ms / 1000.0
        self._last_commit_start = float("-inf")
        self._commit_timer: asyncio.TimerHandle | None = None
        # Futures of callers waiting for their changes to be durable (the failover link holds
        # the bytes that acknowledge a binding until then): attached to the next commit.
        self._commit_waiters: list[asyncio.Future[None]] = []
        # Failover: every relationship's sans-I/O peer and TCP link (none without
        # [failover]); relationships that share a listen address:port share one socket.
        self._failover: FailoverSet | None = None
        self._links: dict[str, PeerLink] = {}
        self._listeners: list[SharedListener] = []
        self._failover_listeners: list[Callable[[LogRecord], None]] = []
        self._control: ControlServer | None = None  # the operator control socket
        self._store_thread: _StoreThread | None = None
        self._store_failing = False
        self._store_failing_since: float | None = None  # epoch s of the first failed commit
        self._store_error: str | None = None  # the last commit error while failing
        # Clock skew logging: the connection last logged per (kind, relationship).
        self._skew_noted: dict[tuple[str, str], object] = {}
        self._skew_log = RateLimit(1, 60.0)
        self._arrived = False  # changes arrived since the last commit was handed off
        self._committing_for_link = False  # in _commit_now (within a failover link's step)
        self._ack_log = RateLimit(ACK_LOG_PER_SECOND, 1.0, self._ack_summary)
        self._malformed_log = RateLimit(1, 10.0)
        self._error_log = RateLimit(1, 10.0)
        self._event_logs: dict[str, RateLimit] = {}
        self.running = False

    # -- properties --------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("server not started")
        return self._engine

    @property
    def store(self) -> LeaseStore:
        if self._store is None:
            raise RuntimeError("server not started")
        return self._store

    @property
    def stats(self) -> Counter[str]:
        """A snapshot: the engine's counters plus the server's and the sockets'."""
        total: Counter[str] = Counter()
        if self._engine is not None:
            total.update(self._engine.stats)
        total.update(self._counters)
        for link in self._links.values():  # failover links: who was refused, and why
            total["failover_tls_handshake_failed"] += link.stats["tls_handshake_failed"]
            total["failover_refused_not_partner"] += link.stats["refused_not_partner"]
        for peer in self.failover_peers.values():  # failover state writes (machine.py)
            m = peer.machine
            if m is not None:
                total["failover_state_write_failed"] += m.persist_failures
                total["failover_state_write_recoveries"] += m.persist_recoveries
        return total

    @property
    def listening(self) -> list[str]:
        return self._transport.listening if self._transport is not None else []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load leases, open the sockets. Raises StoreError / OSError."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        if self._store is None:
            self._store = open_store(cfg.store)
        try:
            leases = self._store.load()
            now = self._clock.now()
            if self._engine is None and cfg.failover is not None:
                self._failover = self._make_failover(leases, now)
                self._engine = cast(Engine, self._failover.engine)
            else:
                if self._engine is None:
                    self._engine = Engine(cfg)
                self._engine.load(leases, now)
            transport = DhcpTransport(
                interfaces=list(cfg.server.interfaces),
                listen_address=cfg.server.listen_address,
                port=cfg.server.port,
                raw_replies=cfg.server.raw_replies,
                stats=self._counters,
            )
            transport.open()
        except BaseException:
            if self._owns_store:
                self._store.close()
                self._store = None
            raise
        self._transport = transport
        self._store_thread = _StoreThread()
        transport.start(self._loop, self._on_burst)
        self.running = True
        if self._failover is not None:
            await self._start_links(self._failover)
        await self._start_control()
        self._rearm_timer()
        self._last_refresh = self._loop.time()
        self._housekeeping = self._loop.call_later(HOUSEKEEPING_INTERVAL_S, self._on_housekeeping)
        active = sum(1 for lease in leases if lease.is_active(now))
        event(
            log, INFO, "SERVER_STARTED",
            subnets=len(cfg.subnets),
            pools=sum(len(s.pools) for s in cfg.subnets),
            leases_loaded=len(leases),
            active=active,
            listening=",".join(transport.listening),
            server_id=cfg.server.server_id or "per-interface",
            raw_replies="yes" if transport.raw_available else "no",
            store=cfg.store.path,
            build=build_kind(),
        )

    async def stop(self) -> None:
        """Stop receiving, finish every commit (sending the ACKs that waited), close."""
        if not self.running:
            return
        self.running = False
        if self._control is not None:
            await self._control.stop()
            self._control = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        if self._transport is not None:
            self._transport.stop_receiving()
        links, self._links = self._links, {}
        for link in links.values():
            await link.close()
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await listener.close()
        await self.flush()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._store_thread is not None:
            self._store_thread.shutdown()
            self._store_thread = None
        if self._loop is not None:
            self._ack_log.flush(self._loop.time() + self._ack_log.window_s)
        if self._store is not None and self._owns_store:
            self._store.close()
            self._store = None
        c = self._counters
        event(log, INFO, "SERVER_STOPPED", received=c["rx"], bursts=c["rx_bursts"], sent=c["tx"],
              malformed=c["rx_malformed"], commits=c["commits"],
              store_write_failures=c["store_write_failed"])

    async def flush(self) -> None:
        """Finish the commit in flight, then try once to commit whatever waits behind it."""
        if self._inflight is not None:
            await asyncio.wait([self._inflight])  # its done-callback has run after this
        if self._waiting or self._waiting_replies:
            self._start_commit(force=True)
            if self._inflight is not None:
                await asyncio.wait([self._inflight])

    # -- the burst path ----------------------------------------------------------------

    def _on_burst(self, batch: list[tuple[bytes, RxInfo]]) -> None:
        engine = self._engine
        transport = self._transport
        if engine is None or transport is None:
            return
        now = self._clock.now()
        handle = engine.handle
        replies: list[tuple[Reply, DhcpMessage]] = []
        changed: list[Lease] = []
        counters = self._counters
        for data, rx in batch:
            try:
                msg = decode(data)
            except DecodeError as exc:
                counters["rx_malformed"] += 1
                self._log_malformed(rx, exc)
                continue
            try:
                outcome = handle(msg, rx, now)
            except Exception:
                counters["engine_errors"] += 1
                self._log_error("ENGINE_ERROR", msg, rx)
                continue
            if outcome.changed:
                changed.extend(outcome.changed)
            if outcome.replies:
                for reply in outcome.replies:
                    replies.append((reply, msg))
            if outcome.event is not None:
                self._log_event(outcome.event, msg, rx)
        if changed:
            waiting = self._waiting
            for lease in changed:
                waiting[lease.address] = lease  # the engine hands out snapshots
            self._arrived = True
            self._hold_updates(changed)
        if self._inflight is None and not self._waiting:
            if replies:
                self._send(replies, True)
        else:
            if replies:
                now_replies = []
                for item in replies:
                    if item[0].msg.options.get(OPT_MESSAGE_TYPE) == ACK_TYPE:
                        if len(self._waiting_replies) >= MAX_WAITING_ACKS:
                            # a commit that hangs (not fails): bounded; the client retries
                            counters["acks_dropped_backlog"] += 1
                            continue
                        self._waiting_replies.append(item)
                        self._arrived = True
                    else:
                        now_replies.append(item)
                if now_replies:
                    self._send(now_replies, True)
            if self._inflight is None:
                self._start_commit()
        if changed:
            for link in self._links.values():
                link.flush()  # queued as binding updates, held until their commit is done
        self._rearm_timer()

    def _send(self, replies: list[tuple[Reply, DhcpMessage]], committed: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        counters = self._counters
        send = transport.send
        log_acks = log.isEnabledFor(INFO)  # else _log_ack would return at once
        for reply, request in replies:
            msg = reply.msg
            is_ack = msg.options.get(OPT_MESSAGE_TYPE) == ACK_TYPE
            if is_ack and not committed and msg.yiaddr != ZERO_IP:
                counters["acks_withheld"] += 1
                continue
            try:
                data = encode(msg, _reply_size(request))
            except Exception:
                counters["encode_errors"] += 1
                self._log_error("ENCODE_ERROR", msg, None)
                continue
            if send(reply, data) and is_ack:
                counters["acks_sent"] += 1
                if log_acks and msg.yiaddr != ZERO_IP:
                    self._log_ack(reply, request)

    # -- commits -----------------------------------------------------------------------

    def _start_commit(self, force: bool = False) -> None:
        """Hand everything waiting to the store thread (one commit in flight at a time,
        at most one started per group-commit window unless ``force``)."""
        loop, store, worker = self._loop, self._store, self._store_thread
        if self._inflight is not None or loop is None or store is None or worker is None:
            return
        if not self._waiting:
            # Nothing to write: ACKs that waited only for earlier commits may go now.
            replies, self._waiting_replies = self._waiting_replies, []
            if replies:
                self._send(replies, not self._store_failing)
            return
        start = loop.time()
        due = self._last_commit_start + self._commit_window_s
        if start < due and not force:
            if self._commit_timer is None:
                self._commit_timer = loop.call_at(due, self._on_commit_timer)
            return
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        self._last_commit_start = start
        batch = list(self._waiting.values())
        replies, self._waiting_replies = self._waiting_replies, []
        waiters, self._commit_waiters = self._commit_waiters, []
        self._waiting = {}
        self._arrived = False
        fut: asyncio.Future[None] = loop.create_future()
        self._inflight = fut
        call_soon_threadsafe = loop.call_soon_threadsafe
        commit_done = self._commit_done

        def done(exc: BaseException | None) -> None:  # on the store thread
            call_soon_threadsafe(commit_done, fut, exc, batch, replies, waiters)

        worker.submit(store.commit, batch, done)

    def _commit_now(self) -> BaseException | None:
        """Commit everything waiting on this thread, from a failover link's step (the
        store thread is idle: no commit is in flight, and meta writes block the loop until
        done). Returns the exception if the commit failed (the leases then wait for the
        next attempt, as after any failed commit)."""
        loop, store = self._loop, self._store
        assert loop is not None and store is not None and self._inflight is None
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        self._last_commit_start = loop.time()
        batch = list(self._waiting.values())
        replies, self._waiting_replies = self._waiting_replies, []
        waiters, self._commit_waiters = self._commit_waiters, []
        self._waiting = {}
        self._arrived = False
        try:
            store.commit(batch)
        except BaseException as exc:
            error: BaseException | None = exc
        else:
            error = None
        self._committing_for_link = True
        try:
            self._commit_finished(error, batch, replies, waiters)
        finally:
            self._committing_for_link = False
        return error

    def _on_commit_timer(self) -> None:
        self._commit_timer = None
        self._start_commit()

    def _commit_done(
        self,
        fut: asyncio.Future[None],
        exc: BaseException | None,
        batch: list[Lease],
        replies: list[tuple[Reply, DhcpMessage]],
        waiters: list[asyncio.Future[None]] | None = None,
    ) -> None:
        """On the loop, after ``store.commit(batch)`` returned (``exc`` None) or raised.
        ``fut`` (the commit in flight) completes at the end, once all of this has run."""
        self._inflight = None
        try:
            self._commit_finished(exc, batch, replies, waiters)
        finally:
            if not fut.done():
                fut.set_result(None)

    def _commit_finished(
        self,
        exc: BaseException | None,
        batch: list[Lease],
        replies: list[tuple[Reply, DhcpMessage]],
        waiters: list[asyncio.Future[None]] | None,
    ) -> None:
        try:
            for waiter in waiters or ():
                if not waiter.done():
                    if exc is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(StoreError(f"commit failed: {exc}"))
            if exc is None:
                self._counters["commits"] += 1
                self._counters["leases_committed"] += len(batch)
                if self._store_failing:
                    self._store_failing = False
                    since, self._store_failing_since = self._store_failing_since, None
                    self._store_error = None
                    self._counters["store_recoveries"] += 1
                    down = self._clock.now() - since if since is not None else 0.0
                    event(log, WARNING, "STORE_WRITE_RECOVERED", leases=len(batch),
                          failing_s=round(down, 1))
                self._send(replies, True)
                self._release_updates(batch)  # their binding updates may leave now
            else:
                self._commit_failed(exc, batch)
                self._send(replies, False)
            if exc is not None:
                # Retry at once only if new work arrived meanwhile (so a broken disk is
                # retried per burst or per housekeeping tick, never in a tight loop).
                if self._arrived:
                    self._start_commit()
                return
            if self._waiting:
                self._start_commit()
            elif self._waiting_replies:
                # ACKs produced while this commit ran, with no changes of their own
                later, self._waiting_replies = self._waiting_replies, []
                self._send(later, True)
        except Exception:
            self._counters["internal_errors"] += 1
            log.exception("INTERNAL_ERROR after commit")

    def _hold_updates(self, changed: list[Lease]) -> None:
        """The engine changed these leases: their binding updates stay queued in the peers
        until the commit holding the change has completed (ISC writes the lease first)."""
        fs = self._failover
        if fs is not None:
            fs.hold_updates([lease.address for lease in changed])

    def _release_updates(self, batch: list[Lease]) -> None:
        """``batch`` is durable: the binding updates of its addresses may leave, except
        those changed again meanwhile (held until the commit of that newer change)."""
        fs = self._failover
        if fs is None or not batch:
            return
        waiting = self._waiting
        addresses = [lease.address for lease in batch if lease.address not in waiting]
        if not addresses:
            return
        try:
            fs.release_updates(addresses, self._clock.now())
        except Exception:  # a bug: logged, and the group commit goes on
            self._counters["internal_errors"] += 1
            log.exception("INTERNAL_ERROR releasing binding updates")
        if self._committing_for_link:
            # Inside a link's step (a commit at once for the peer): that step's own bytes
            # go first, the released updates on the loop's next turn.
            loop = self._loop
            if loop is not None:
                loop.call_soon(self._flush_links)
        else:
            self._flush_links()

    def _flush_links(self) -> None:
        for link in self._links.values():
            link.flush()

    def _commit_failed(self, exc: BaseException, batch: list[Lease]) -> None:
        self._counters["store_write_failed"] += 1
        for lease in batch:  # keep newer versions that arrived meanwhile
            self._waiting.setdefault(lease.address, lease)
        if not isinstance(exc, StoreError):
            log.error("INTERNAL_ERROR in store commit", exc_info=exc)
        if not self._store_failing or self._error_log.allow(self._now_mono()):
            event(log, ERROR, "STORE_WRITE_FAILED", leases=len(self._waiting), error=exc,
                  action="ACKs withheld; retrying")
        if not self._store_failing:
            self._store_failing_since = self._clock.now()
        self._store_error = str(exc)
        self._store_failing = True

    @property
    def store_health(self) -> dict[str, object]:
        """The store alarm for ``status``: ``ok`` false (alarm ``STORE_WRITE_FAILED``) from a
        failed commit until one succeeds; meanwhile ACKs that bind an address are withheld
        and the changes kept (one version per address) for the next attempt."""
        failing = self._store_failing
        return {
            "ok": not failing,
            "alarm": "STORE_WRITE_FAILED" if failing else None,
            "failing_since": self._store_failing_since,
            "error": self._store_error,
            "uncommitted_leases": len(self._waiting),
        }

    # -- failover ----------------------------------------------------------------------

    @property
    def failover_peer(self) -> FailoverPeer | None:
        """The failover peer when the server is in exactly one relationship."""
        fs = self._failover
        if fs is None or len(fs.relationships) != 1:
            return None
        return fs.relationships[0].peer

    @property
    def failover_peers(self) -> dict[str, FailoverPeer]:
        """Every relationship's peer by name, in config order (empty when standalone)."""
        return self._failover.peers if self._failover is not None else {}

    @property
    def failover_set(self) -> FailoverSet | None:
        return self._failover

    def on_failover_record(self, fn: Callable[[LogRecord], None]) -> None:
        """Call ``fn`` with every failover state record (FAILOVER_STATE_CHANGED, ...)."""
        self._failover_listeners.append(fn)

    def partner_down(self, relationship: str | None = None) -> bool:
        """Operator command: the partner (of ``relationship``; may be omitted when there is
        one) is down. Returns whether the state changed."""
        peers = self.failover_peers
        if relationship is None and len(peers) == 1:
            relationship = next(iter(peers))
        peer = peers.get(relationship) if relationship is not None else None
        if peer is None:
            return False
        changed = peer.partner_down(self._clock.now())
        link = self._links.get(relationship) if relationship is not None else None
        if link is not None:
            link.flush()
        return changed

    def _make_failover(self, leases: list[Lease], now: float) -> FailoverSet:
        cfg = self.config

        def make_engine(policy: Policy) -> Engine:
            engine = Engine(cfg, policy)
            engine.load(leases, now)
            return engine

        # The machine persists its state from the event loop thread while commits run on
        # the store thread: route meta writes through the same thread, one at a time.
        return FailoverSet(cfg, _StoreThreadMeta(self), now, make_engine,
                           log=self._on_failover_record)

    def _on_failover_record(self, name: str, record: LogRecord) -> None:
        fields = record.fields()
        if len(relationships(self.config)) > 1:
            fields["relationship"] = name
        level = {"FAILOVER_STATE_CHANGED": INFO, "FAILOVER_STATE_WRITE_FAILED": ERROR}
        event(log, level.get(record.event, WARNING), record.event, **fields)
        for fn in self._failover_listeners:
            fn(record)

    async def _start_links(self, fs: FailoverSet) -> None:
        """One TCP link per relationship; relationships listening on the same address and
        port share one socket that routes by the partner's address."""
        groups: dict[tuple[str, int], list[str]] = {}
        for rel in fs.relationships:
            fo = rel.section
            groups.setdefault((str(fo.listen_address), fo.listen_port), []).append(rel.name)
        for rel in fs.relationships:
            fo = rel.section
            shared = len(groups[(str(fo.listen_address), fo.listen_port)]) > 1
            self._links[rel.name] = (MuxedPeerLink if shared else PeerLink)(
                rel.peer,
                role=fo.role,
                listen=(str(fo.listen_address), fo.listen_port),
                connect_to=(str(fo.peer_address), fo.peer_port),
                allowed_peer=fo.peer_address,
                clock=self._clock,
                on_changed=self._commit_for_peer,
                store_lazy=self._store_lazy,
                tls=tls_files(fo),
            )
        for (host, port), names in groups.items():
            if len(names) > 1:
                listener = SharedListener((host, port), [self._links[n] for n in names])
                await listener.start()
                self._listeners.append(listener)
        for link in self._links.values():
            await link.start()

    @property
    def failover_links(self) -> dict[str, PeerLink]:
        return dict(self._links)

    def _commit_for_peer(self, leases: list[Lease]) -> asyncio.Future[None] | None:
        """Leases the failover peer changed (received bindings): durable before the peer's
        bytes of this step (BNDACKs) leave.

        With no commit in flight they are committed at once, on the loop thread, with
        everything else waiting (returns None: the bytes may go). A commit handed to the
        store thread instead would start only when the kernel gives that thread the CPU,
        in practice after the loop has worked through every other BNDUPD already read
        (measured: 1-3 ms late per batch), so the partner would hear no BNDACK until then
        and a sync would run stop-and-wait (docs/performance.md). Otherwise (a group
        commit is in flight) they go with the next one, and the returned future holds the
        bytes until it is durable. A failed commit at once returns a failed future."""
        loop = self._loop
        if loop is None or not leases:
            return None
        for lease in leases:
            self._waiting[lease.address] = lease
        self._arrived = True
        if self._inflight is None and self._store is not None:
            error = self._commit_now()
            if error is None:
                return None
            failed: asyncio.Future[None] = loop.create_future()
            failed.set_exception(StoreError(f"commit failed: {error}"))
            return failed  # the link drops this step's bytes and closes the connection
        waiter: asyncio.Future[None] = loop.create_future()
        self._commit_waiters.append(waiter)
        if self._inflight is None:
            self._start_commit()
        return waiter

    def _store_lazy(self, leases: list[Lease]) -> None:
        """Leases the failover peer changed that nothing waits for (see
        :meth:`FailoverPeer.take_lazy`): they go with the next commit, at the latest on the
        next housekeeping tick."""
        waiting = self._waiting
        for lease in leases:
            waiting[lease.address] = lease
        self._arrived = True

    def _set_meta_on_store_thread(self, key: str, value: str) -> None:
        store, worker = self._store, self._store_thread
        if store is None:
            raise StoreError("store closed")
        if worker is None:  # before start()/after stop(): nothing else is writing
            store.set_meta(key, value)
        else:
            worker.call(store.set_meta, key, value)

    # -- control socket ----------------------------------------------------------------

    async def _start_control(self) -> None:
        """Open the operator control socket; failing to is logged, not fatal (DHCP first)."""
        path = self.config.server.control_socket
        if not path:
            return
        control = ControlServer(path, ControlHandler(self), self._clock.now)
        try:
            await control.start()
        except OSError as exc:
            event(log, WARNING, "CONTROL_SOCKET_FAILED", path=path,
                  error=exc.strerror or str(exc))
            return
        self._control = control

    # -- timers ------------------------------------------------------------------------

    def _rearm_timer(self) -> None:
        engine = self._engine
        loop = self._loop
        if engine is None or loop is None or not self.running:
            return
        deadline = engine.get_timer()
        timer = self._timer
        if timer is not None:
            armed = self._timer_deadline
            # Keep a timer armed for the same or an earlier time: the engine's next
            # deadline moves later with almost every burst (an OFFER hold or a lease timer
            # is superseded), and a cancel + re-arm per burst costs more than the rare
            # early wakeup, which finds nothing due and re-arms on the deadline then.
            if armed is not None and (deadline is None or deadline >= armed):
                return
            timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock.now())
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        engine = self._engine
        if engine is None or not self.running:
            return
        try:
            changed = engine.handle_timer(self._clock.now())
            if changed:
                for lease in changed:
                    self._waiting[lease.address] = lease  # snapshots, like Outcome.changed
                self._arrived = True
                self._hold_updates(changed)
                self._start_commit()
        except Exception:
            self._counters["internal_errors"] += 1
            log.exception("INTERNAL_ERROR in timer")
        self._rearm_timer()

    def _on_housekeeping(self) -> None:
        loop = self._loop
        if loop is None or not self.running:
            return
        now = loop.time()
        try:
            self._ack_log.flush(now)
            if self._waiting and self._inflight is None:
                self._start_commit()
            if now - self._last_refresh >= INTERFACE_REFRESH_S and self._transport is not None:
                self._last_refresh = now
                self._transport.refresh()
            self._check_clock_skew(now)
        except Exception:
            self._counters["internal_errors"] += 1
            log.exception("INTERNAL_ERROR in housekeeping")
        self._housekeeping = loop.call_later(HOUSEKEEPING_INTERVAL_S, self._on_housekeeping)

    def _check_clock_skew(self, mono: float) -> None:
        """Log the partner's clock skew (measured by the connection from message times):
        FAILOVER_CLOCK_SKEW once per connection when it reaches the warning threshold (half
        of max_clock_skew_s), FAILOVER_CLOCK_SKEW_REFUSED when a connection was refused or
        closed for it (reject reason 4; the link keeps retrying and recovers by itself once
        the clocks agree), at most once a minute."""
        for name, peer in self.failover_peers.items():
            conn = peer.conn
            if conn is None:
                continue
            closed = conn.close_reason
            if closed is not None and closed.reject_reason == 4:
                if self._skew_noted.get(("refused", name)) is not conn:
                    self._skew_noted[("refused", name)] = conn
                    self._counters["failover_skew_refusals"] += 1
                    if self._skew_log.allow(mono):
                        event(log, ERROR, "FAILOVER_CLOCK_SKEW_REFUSED", relationship=name,
                              reason=closed.reason, limit_s=peer.fo.max_clock_skew_s,
                              action="retrying; fix the clocks (NTP)")
                continue
            skew = conn.clock_skew_s
            warn_at = conn.config.skew_warning
            key = ("warned", name)
            if skew is not None and abs(skew) >= warn_at and self._skew_noted.get(key) is not conn:
                self._skew_noted[key] = conn
                event(log, WARNING, "FAILOVER_CLOCK_SKEW", relationship=name,
                      skew_s=round(skew, 1), warn_at_s=warn_at, limit_s=conn.config.max_skew_s)

    # -- logging -----------------------------------------------------------------------

    def _now_mono(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _log_ack(self, reply: Reply, request: DhcpMessage) -> None:
        if not log.isEnabledFor(INFO) or not self._ack_log.allow(self._now_mono()):
            return
        msg = reply.msg
        via = f"relay {msg.giaddr}" if msg.giaddr != ZERO_IP else (reply.interface or "-")
        event(log, INFO, "LEASE_ACKED", address=msg.yiaddr, mac=_mac(msg.hwaddr),
              lease_s=_lease_time(msg), via=via)

    def _ack_summary(self, suppressed: int, total: int, window_s: float) -> None:
        event(log, INFO, "ACK_SUMMARY", acks=total, window_s=window_s,
              not_logged_individually=suppressed)

    def _log_malformed(self, rx: RxInfo, exc: DecodeError) -> None:
        if log.isEnabledFor(logging.DEBUG) and self._malformed_log.allow(self._now_mono()):
            event(log, logging.DEBUG, "RX_MALFORMED", src=f"{rx.src_ip}:{rx.src_port}",
                  interface=rx.interface or "-", error=exc,
                  total=self._counters["rx_malformed"])

    def _log_error(self, name: str, msg: DhcpMessage, rx: RxInfo | None) -> None:
        if self._error_log.allow(self._now_mono()):
            log.exception("%s mac=%s src=%s", name, _mac(msg.hwaddr),
                          f"{rx.src_ip}:{rx.src_port}" if rx is not None else "-")

    def _log_event(self, name: str, msg: DhcpMessage, rx: RxInfo) -> None:
        limiter = self._event_logs.get(name)
        if limiter is None:
            limit = 1 if name == "POOL_EXHAUSTED" else 20
            interval = self.config.server.log_burst_interval_s

            def summary(suppressed: int, total: int, window_s: float, _n: str = name) -> None:
                event(log, INFO, "EVENT_SUMMARY", event=_n, occurrences=total,
                      window_s=window_s, not_logged_individually=suppressed)

            limiter = self._event_logs[name] = RateLimit(limit, interval, summary)
        if limiter.allow(self._now_mono()):
            via = f"relay {msg.giaddr}" if msg.giaddr != ZERO_IP else (rx.interface or "-")
            level = WARNING if name in _WARNING_EVENTS else INFO
            event(log, level, name, mac=_mac(msg.hwaddr), via=via)


class _StoreThread:
    """The one thread that writes the store: jobs run one at a time, in submission order
    (a commit, the failover machine's meta writes), so the fsync overlaps the event loop.

    Leaner than a ``ThreadPoolExecutor`` + ``run_in_executor`` per commit (no
    ``concurrent.futures.Future`` with its condition variable, no future chaining, no idle
    semaphore): the loop hears of a finished commit through one ``call_soon_threadsafe``.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_StoreJob | None] = queue.SimpleQueue()
        self._worker_thread = threading.Thread(
            target=self._run, name="tandem-store", daemon=True)
        self._worker_thread.start()

    def submit(
        self, fn: Callable[[list[Lease]], None], arg: list[Lease],
        done: Callable[[BaseException | None], None],
    ) -> None:
        """Run ``fn(arg)`` on the store thread, then ``done(exception or None)`` there."""
        self._jobs.put((fn, arg, done))

    def call(self, fn: Callable[[str, str], None], key: str, value: str) -> None:
        """Run ``fn(key, value)`` on the store thread and wait for it (raises what it
        raised). Not from the store thread itself."""
        result: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run(_: object) -> None:
            fn(key, value)

        def done(exc: BaseException | None) -> None:
            if exc is None:
                result.set_result(None)
            else:
                result.set_exception(exc)

        self._jobs.put((run, None, done))
        result.result()

    def shutdown(self) -> None:
        """Finish the jobs queued so far, then end the thread."""
        self._jobs.put(None)
        self._worker_thread.join()

    def _run(self) -> None:
        get = self._jobs.get
        while (job := get()) is not None:
            fn, arg, done = job
            try:
                fn(arg)
            except BaseException as exc:  # handed to the caller, like a future would
                error: BaseException | None = exc
            else:
                error = None
            try:
                done(error)
            except Exception:  # e.g. the loop closed meanwhile: nobody to tell
                log.exception("INTERNAL_ERROR after a store job")
            del job, fn, arg, done, error


# (function, its argument, what to call with the exception or None afterwards)
_StoreJob = tuple[Callable[[Any], None], Any, Callable[[BaseException | None], None]]


class _StoreThreadMeta:
    """The store's meta table as the failover peer sees it: reads direct, writes on the
    store thread (waiting for it), so they never interleave with a commit in flight."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def get_meta(self, key: str) -> str | None:
        return self._server.store.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self._server._set_meta_on_store_thread(key, value)


# -- blocking entry point --------------------------------------------------------------


async def serve(config: Config, stop: asyncio.Event | None = None) -> int:
    """Run a server until ``stop`` is set (or SIGINT/SIGTERM); returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    # Handlers first: a signal during startup must also end in a graceful stop.
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops us through ``stop``
    try:
        server = Server(config)
        try:
            await server.start()
        except StoreError as exc:
            event(log, ERROR, "SERVER_START_FAILED", reason="store", error=exc)
            return EXIT_START_FAILED
        except OSError as exc:
            event(log, ERROR, "SERVER_START_FAILED", reason="sockets",
                  error=exc.strerror or str(exc), port=config.server.port)
            return EXIT_START_FAILED
        _tune_gc()
        try:
            await stop.wait()
        finally:
            await server.stop()
        return EXIT_OK
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# Young-generation threshold while serving: the per-packet objects are acyclic and die young,
# so collecting every 700 allocations (CPython's default) costs ~10 % of a busy server.
GC_GEN0_THRESHOLD: Final = 50_000


def _tune_gc() -> None:
    """Move everything built at startup (config, pools, loaded leases) out of the
    collector's sight and collect young objects less often. Reference counting still frees
    almost everything at once; the collector only finds cycles."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def run(config: Config) -> int:
    """Serve ``config`` until SIGINT/SIGTERM (blocking), on uvloop when it is installed.
    Exit code 0 after a graceful stop, 1 when the store or the sockets cannot be opened."""
    setup_logging()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional extra
        return asyncio.run(serve(config))
    # uvloop.run, not asyncio.Runner(loop_factory=...): in 3.11 the latter does not make the
    # loop current, and uvloop's signal handlers then never fire.
    code: int = uvloop.run(serve(config))
    return code
