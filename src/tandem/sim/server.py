"""A simulated DHCP server: the real engine, a policy, an optional failover peer, and a
model of the durable store that keeps only what was committed.

It behaves like ``tandem.service`` where it matters for safety:

* every lease the engine (or the peer) changes goes into a commit that completes
  ``commit_s`` later; commits complete in order;
* DHCPACKs for an address, and every byte the failover peer wants to send, leave only when
  the commit of their step (and every commit before it) has completed; OFFERs, NAKs and
  ACKs to INFORM leave at once;
* :meth:`SimServer.crash` (kill -9) loses everything not committed: the engine (offers,
  in-memory state), the peer, the commits in flight and the replies waiting for them;
* :meth:`SimServer.restart` rebuilds the engine (and peer) from the committed leases
  through the server's :data:`StackFactory`.

A failover integration plugs in through the factory: it builds ``Engine(config, policy)``
with its own policy, loads ``store.load()``, and returns the peer object (see
:class:`SimPeer` for the methods the simulator calls).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address
from typing import Any, Protocol

from tandem.config.schema import Config
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import Reply, RxInfo
from tandem.errors import DecodeError
from tandem.failover.policy import Policy, StandalonePolicy
from tandem.leases.model import Lease
from tandem.leases.table import copy_lease
from tandem.sim.network import BROADCAST, Frame, Lan, PeerLink
from tandem.sim.scheduler import Handle, Scheduler, Timer
from tandem.sim.trace import DhcpInfo, Trace
from tandem.wire.dhcp import ZERO_IP, DhcpMessage, MessageType, decode, encode

__all__ = [
    "MemoryStore",
    "SimPeer",
    "SimServer",
    "Stack",
    "StackFactory",
    "build_engine",
    "standalone_stack",
]

SERVER_PORT = 67


class MemoryStore:
    """The durable store, modelled in memory: what was committed survives a crash."""

    def __init__(self) -> None:
        self.leases: dict[IPv4Address, Lease] = {}
        self.meta: dict[str, str] = {}
        self.commits = 0

    def load(self) -> list[Lease]:
        return [copy_lease(le) for le in self.leases.values()]

    def commit(self, leases: Iterable[Lease]) -> None:
        for le in leases:
            self.leases[le.address] = copy_lease(le)
        self.commits += 1

    def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self.meta[key] = value  # its own commit: durable at once

    def close(self) -> None:
        return None


class SimPeer(Protocol):
    """The failover peer as the simulator drives it (sans-I/O, like the engine).

    Required: ``get_timer``, ``handle_timer``, ``receive_data``, ``data_to_send``.
    Optional (called when present):

    * ``connection_made(now)`` / ``connection_lost(now)``: the TCP connection to the partner
      came up / went away (crash of the partner with a reset, a close by either side);
    * ``take_changed() -> list[Lease]``: leases the peer changed in the engine's table (a
      binding update from the partner, pool rebalancing) that must be committed; bytes the
      peer produced in the same step (e.g. the BNDACK) leave only after that commit;
    * ``close_requested() -> bool``: the peer wants the connection closed (tReceive expired,
      protocol error); polled after every step.

    ``handle_timer`` and ``receive_data`` may also return a list of leases to commit.
    """

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Any: ...

    def receive_data(self, data: bytes, now: float) -> Any: ...

    def data_to_send(self) -> bytes: ...


@dataclass(slots=True)
class Stack:
    """What a factory builds for one server life (start or restart)."""

    engine: Engine
    peer: SimPeer | None = None


# (config, committed store, now) -> a fresh stack with the committed leases loaded.
StackFactory = Callable[[Config, MemoryStore, float], Stack]


def build_engine(config: Config, policy: Policy | None, store: MemoryStore, now: float) -> Engine:
    """An engine with ``policy`` and every committed lease loaded (what service startup does)."""
    engine = Engine(config, policy if policy is not None else StandalonePolicy())
    engine.load(store.load(), now)
    return engine


def standalone_stack(config: Config, store: MemoryStore, now: float) -> Stack:
    return Stack(build_engine(config, None, store, now))


@dataclass(slots=True, eq=False)
class _Batch:
    """One commit in flight and what waits for it."""

    due: float
    changes: list[Lease]
    replies: list[tuple[Reply, float]]
    peer_bytes: bytes
    handle: Handle | None = None


# (server, the ACK sent, when the engine handled the request it answers)
AckListener = Callable[["SimServer", DhcpMessage, float], None]
CommitListener = Callable[["SimServer", list[Lease], float], None]


class SimServer:
    """One server on the LAN (see the module docstring)."""

    port = SERVER_PORT

    def __init__(
        self,
        sched: Scheduler,
        trace: Trace,
        lan: Lan,
        name: str,
        ip: IPv4Address,
        config: Config,
        factory: StackFactory = standalone_stack,
        commit_s: float = 0.002,
    ) -> None:
        self.sched = sched
        self.trace = trace
        self.lan = lan
        self.name = name
        self.ip = ip
        self.hwaddr = b"\x02\xff" + ip.packed
        self.config = config
        self.factory = factory
        self.commit_s = commit_s
        self.store = MemoryStore()
        self.up = False
        self.stack: Stack | None = None
        self.peer_link: PeerLink | None = None
        self.lives = 0
        self.on_ack: list[AckListener] = []
        self.on_commit: list[CommitListener] = []
        self._batches: list[_Batch] = []
        self._engine_timer = Timer(sched, self._on_engine_timer, f"{name}:engine")
        self._peer_timer = Timer(sched, self._on_peer_timer, f"{name}:peer")
        self.rx_malformed = 0
        self.activity = 0  # counts steps that may have changed the engine, peer or store

    # ------------------------------------------------------------------ node API

    @property
    def engine(self) -> Engine:
        if self.stack is None:
            raise RuntimeError(f"server {self.name} is down")
        return self.stack.engine

    @property
    def peer(self) -> SimPeer | None:
        return self.stack.peer if self.stack is not None else None

    def is_up(self) -> bool:
        return self.up

    def owns(self, ip: IPv4Address) -> bool:
        return ip == self.ip

    # ------------------------------------------------------------------ life cycle

    def start(self, now: float) -> None:
        if self.up:
            return
        self.up = True
        self.lives += 1
        self.activity += 1
        self.stack = self.factory(self.config, self.store, now)
        what = "start" if self.lives == 1 else "restart"
        self.trace.add(
            now, what, self.name, detail=f"{what}: {len(self.store.leases)} committed leases"
        )
        self._rearm()
        if self.peer_link is not None and self.lives > 1:
            self.peer_link.end_restarted(self, now)

    def restart(self, now: float | None = None) -> None:
        self.start(self.sched.now if now is None else now)

    def crash(self, now: float | None = None) -> None:
        """kill -9: everything not committed is lost."""
        now = self.sched.now if now is None else now
        if not self.up:
            return
        lost = sum(len(b.changes) for b in self._batches)
        withheld = sum(len(b.replies) for b in self._batches)
        for b in self._batches:
            if b.handle is not None:
                b.handle.cancel()
        self._batches.clear()
        self.activity += 1
        self._engine_timer.cancel()
        self._peer_timer.cancel()
        self.up = False
        self.stack = None
        self.trace.add(
            now,
            "crash",
            self.name,
            detail=f"crash: {lost} uncommitted lease changes lost, {withheld} replies withheld",
        )
        if self.peer_link is not None:
            self.peer_link.end_crashed(self, now)

    # ------------------------------------------------------------------ DHCP

    def receive(self, frame: Frame, now: float) -> None:
        try:
            msg = decode(frame.payload)
        except DecodeError as exc:
            self.rx_malformed += 1
            self.trace.add(now, "drop", self.name, detail=f"malformed from {frame.src_node}: {exc}")
            return
        to_unicast = frame.dst_ip != BROADCAST or frame.link_hw is not None
        self.trace.add(
            now,
            "rx",
            self.name,
            src=frame.src_node,
            dst=self.name,
            unicast=to_unicast,
            dhcp=DhcpInfo.of(msg),
        )
        rx = RxInfo(
            src_ip=frame.src_ip,
            src_port=frame.src_port,
            interface=self.lan.name,
            local_ip=self.ip,
            to_unicast=to_unicast,
        )
        out = self.engine.handle(msg, rx, now)
        if out.event is not None:
            self.trace.add(now, "note", self.name, detail=f"event {out.event}")
        later: list[tuple[Reply, float]] = []
        for r in out.replies:
            if r.msg.message_type is MessageType.ACK and r.msg.yiaddr != ZERO_IP:
                later.append((r, now))
            else:
                self._send_reply(r, now)
        self._finish(now, list(out.changed), later)

    def _send_reply(self, r: Reply, now: float, handled: float | None = None) -> None:
        """Send one reply; ``handled`` is when the engine produced it (ACK listeners get it:
        the lease end the server recorded is ``handled + lease time``)."""
        payload = encode(r.msg)
        frame = Frame(
            self.name,
            self.ip,
            SERVER_PORT,
            r.dest_ip,
            r.dest_port,
            payload,
            r.hwaddr if r.link_layer else None,
        )
        self.lan.send(frame, r.msg)
        if r.msg.message_type is MessageType.ACK and r.msg.yiaddr != ZERO_IP:
            for fn in self.on_ack:
                fn(self, r.msg, now if handled is None else handled)

    # ------------------------------------------------------------------ timers and peer

    def _on_engine_timer(self, now: float) -> None:
        if not self.up:
            return
        changed = self.engine.handle_timer(now)
        self._finish(now, list(changed), [])

    def _on_peer_timer(self, now: float) -> None:
        peer = self.peer
        if not self.up or peer is None:
            return
        res = peer.handle_timer(now)
        self._finish(now, _leases(res), [])

    def peer_connected(self, now: float) -> None:
        peer = self.peer
        if peer is None:
            return
        fn = getattr(peer, "connection_made", None)
        if fn is not None:
            fn(now)
        self._finish(now, [], [])

    def peer_disconnected(self, now: float) -> None:
        peer = self.peer
        if peer is None:
            return
        fn = getattr(peer, "connection_lost", None)
        if fn is not None:
            fn(now)
        self._finish(now, [], [])

    def peer_receive(self, data: bytes, now: float) -> None:
        peer = self.peer
        if not self.up or peer is None:
            return
        res = peer.receive_data(data, now)
        self._finish(now, _leases(res), [])

    # ------------------------------------------------------------------ commits

    def _finish(self, now: float, changed: list[Lease], later: list[tuple[Reply, float]]) -> None:
        """End of a step: gather the peer's changes and bytes, start the commit, send what
        may be sent, re-arm the timers."""
        self.activity += 1
        peer = self.peer
        data = b""
        close = False
        if peer is not None:
            take = getattr(peer, "take_changed", None)
            if take is not None:
                changed.extend(take())
            data = peer.data_to_send()
            want_close = getattr(peer, "close_requested", None)
            close = bool(want_close()) if want_close is not None else False
        if not changed and not later and not data:
            pass
        elif changed or self._batches:
            last = self._batches[-1].due if self._batches else now
            due = max(now + self.commit_s, last) if changed else last
            b = _Batch(due, changed, later, data)
            self._batches.append(b)
            b.handle = self.sched.at(due, partial(self._complete, b), f"{self.name}:commit")
        else:
            for r, handled in later:
                self._send_reply(r, now, handled)
            if data:
                self._send_peer(data, now)
        if close and self.peer_link is not None:
            self.peer_link.close(self, now, "closed by peer")
        self._rearm()

    def _complete(self, b: _Batch, now: float) -> None:
        """A commit completed: make it durable, then send what waited for it."""
        if not self.up or not self._batches or self._batches[0] is not b:
            return
        self._batches.pop(0)
        self.activity += 1
        if b.changes:
            self.store.commit(b.changes)
            self.trace.add(
                now,
                "commit",
                self.name,
                detail="commit " + ", ".join(f"{le.address}={le.state.name}" for le in b.changes),
            )
            for fn in self.on_commit:
                fn(self, b.changes, now)
        for r, handled in b.replies:
            self._send_reply(r, now, handled)
        if b.peer_bytes:
            self._send_peer(b.peer_bytes, now)

    def _send_peer(self, data: bytes, now: float) -> None:
        if self.peer_link is not None:
            self.peer_link.send(self, data, now)

    def _rearm(self) -> None:
        if not self.up or self.stack is None:
            return
        self._engine_timer.arm(self.stack.engine.get_timer())
        peer = self.stack.peer
        self._peer_timer.arm(peer.get_timer() if peer is not None else None)

    # ------------------------------------------------------------------ views

    def committed_active(self, now: float) -> dict[IPv4Address, Lease]:
        """Committed leases that are ACTIVE and unexpired at ``now``."""
        return {a: le for a, le in self.store.leases.items() if le.is_active(now)}


def _leases(res: object) -> list[Lease]:
    if isinstance(res, list):
        return [x for x in res if isinstance(x, Lease)]
    return []
