"""A simulated DHCP server: the real engine, a policy, an optional failover peer, and a
model of the durable store that keeps only what was committed.

It behaves like ``tandem.service`` where it matters for safety:

* every lease the engine (or the peer) changes goes into a commit that completes
  ``commit_s`` later; commits complete in order;
* DHCPACKs for an address leave only when the commit of their step (and every commit
  before it) has completed; OFFERs, NAKs and ACKs to INFORM leave at once;
* as in ``net/peer_tcp.py``, the bytes the failover peer wants to send wait only for the
  commits of the peer's own lease changes: the bytes of a step that changed leases through
  the peer leave when that commit has completed, later bytes stay behind them (order), and
  bytes with nothing held before them leave at once (a CONNECT does not wait for DHCP
  commits);
* as in ``tandem.service``, a binding update for a lease the DHCP engine changed (a request
  or an engine timer) never leaves before that change is durable: right after the engine
  step the changed addresses are held in the peer (``hold_updates``), and they are released
  (``release_updates``) when the commit holding them has completed successfully and no newer
  change of the address waits for a later commit; the BNDUPDs then leave. A failed commit
  releases nothing (its changes, and their updates, wait for the retry);
* :meth:`SimServer.crash` (kill -9) loses everything not committed: the engine (offers,
  in-memory state), the peer, the commits in flight and the replies waiting for them;
* :meth:`SimServer.restart` rebuilds the engine (and peer) from the committed leases
  through the server's :data:`StackFactory`;
* a commit may fail (:attr:`MemoryStore.failing`, a broken disk): like ``tandem.service``,
  the ACKs waiting for it are withheld (never sent), its changes are retried with the next
  commit (at the latest :data:`COMMIT_RETRY_S` later) and their binding updates stay held,
  and when it held peer changes the failover bytes waiting for it are dropped and the
  connection is closed (the partner re-sends its updates);
* each server has its own clock, ``clock_offset`` seconds ahead of the simulation's (0 by
  default): the cores see ``now + clock_offset``, their deadlines are converted back, and
  every lease time in its engine and store is in its own clock (:meth:`SimServer.true_time`).

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
from tandem.errors import DecodeError, StoreError
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
#: After a failed commit, the changes are retried at the latest this much later (service.py).
COMMIT_RETRY_S = 1.0


class _Leases(dict[IPv4Address, Lease]):
    """The store's leases by address; every address written or removed is added to
    ``dirty`` (the invariant checks recheck only those, see ``sim.invariants``)."""

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[IPv4Address] = set()

    def __setitem__(self, key: IPv4Address, value: Lease) -> None:
        self.dirty.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: IPv4Address) -> None:
        self.dirty.add(key)
        super().__delitem__(key)

    def pop(self, key: IPv4Address, *default: Any) -> Any:
        self.dirty.add(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[IPv4Address, Lease]:
        item = super().popitem()
        self.dirty.add(item[0])
        return item

    def setdefault(self, key: IPv4Address, default: Any = None) -> Any:
        self.dirty.add(key)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        before = dict(self)
        super().update(*args, **kwargs)
        self.dirty.update(k for k, v in self.items() if before.get(k) is not v)

    def __ior__(self, other: Any) -> _Leases:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        self.dirty.update(self.keys())
        super().clear()


class MemoryStore:
    """The durable store, modelled in memory: what was committed survives a crash.

    ``leases`` is a dict that records in ``leases.dirty`` every address written since the
    invariant checks last looked (leases in it are copies; nothing mutates them in place)."""

    def __init__(self) -> None:
        self.leases: dict[IPv4Address, Lease] = _Leases()
        self.meta: dict[str, str] = {}
        self.commits = 0
        self.failing = False  # while true, commit() raises StoreError (nothing is written)
        self.failed_commits = 0

    def load(self) -> list[Lease]:
        return [copy_lease(le) for le in self.leases.values()]

    def commit(self, leases: Iterable[Lease]) -> None:
        if self.failing:
            self.failed_commits += 1
            raise StoreError("simulated write failure")
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
    * ``take_lazy() -> list[Lease]``: leases to commit that no byte waits for (stored with
      the step's batch, which does not gate the step's bytes unless ``take_changed`` or
      ``changed`` gave leases too);
    * ``close_requested() -> bool``: the peer wants the connection closed (tReceive expired,
      protocol error); polled after every step;
    * ``hold_updates(addresses)`` / ``release_updates(addresses, now)``: the engine changed
      ``addresses`` (not durable yet) / the commit holding them completed (see the module
      docstring).

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
    peer_gate: bool = False  # holds lease changes of the failover peer
    handle: Handle | None = None
    done: bool = False
    failed: bool = False


@dataclass(slots=True, eq=False)
class _HeldBytes:
    """Failover bytes waiting for ``gate`` (None: only for what is held before them)."""

    gate: _Batch | None
    data: bytes
    generation: int  # the peer-link connection they were produced for


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
        self._held: list[_HeldBytes] = []
        self._engine_timer = Timer(sched, self._on_engine_timer, f"{name}:engine")
        self._peer_timer = Timer(sched, self._on_peer_timer, f"{name}:peer")
        self.rx_malformed = 0
        self.activity = 0  # counts steps that may have changed the engine, peer or store
        self.clock_offset = 0.0  # this server's clock minus the simulation's (see set_clock)
        self.acks_withheld = 0
        self._engine_due: float | None = None  # armed deadlines, in this server's clock
        self._peer_due: float | None = None

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

    # ------------------------------------------------------------------ clock

    def local(self, now: float) -> float:
        """This server's clock at simulation time ``now``."""
        return now + self.clock_offset

    def true_time(self, local: float) -> float:
        """The simulation time of a time in this server's clock (e.g. a stored lease end)."""
        return local - self.clock_offset

    def set_clock(self, offset: float, now: float | None = None) -> None:
        """Step this server's clock to ``offset`` seconds ahead of the simulation's."""
        now = self.sched.now if now is None else now
        old, self.clock_offset = self.clock_offset, float(offset)
        self.activity += 1
        self.trace.add(now, "fault", self.name, detail=f"clock {old:+.3f} -> {offset:+.3f} s")
        self._engine_due = self._peer_due = None
        self._rearm()

    # ------------------------------------------------------------------ life cycle

    def start(self, now: float) -> None:
        if self.up:
            return
        self.up = True
        self.lives += 1
        self.activity += 1
        self.stack = self.factory(self.config, self.store, self.local(now))
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
        self._held.clear()
        self.activity += 1
        self._engine_timer.cancel()
        self._peer_timer.cancel()
        self._engine_due = self._peer_due = None
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
        if self.trace.enabled:
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
        out = self.engine.handle(msg, rx, self.local(now))
        self._hold(out.changed)
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

    def _fired(self, now: float, due: float | None) -> float:
        """The local time of a timer firing at ``now`` (never before its deadline, whatever
        the rounding of the clock conversion)."""
        local = self.local(now)
        return local if due is None else max(local, due)

    def _on_engine_timer(self, now: float) -> None:
        if not self.up:
            return
        changed = self.engine.handle_timer(self._fired(now, self._engine_due))
        self._hold(changed)
        self._finish(now, list(changed), [])

    def _on_peer_timer(self, now: float) -> None:
        peer = self.peer
        if not self.up or peer is None:
            return
        res = peer.handle_timer(self._fired(now, self._peer_due))
        self._finish(now, _leases(res), [], from_peer=True)

    def peer_connected(self, now: float) -> None:
        peer = self.peer
        if peer is None:
            return
        fn = getattr(peer, "connection_made", None)
        if fn is not None:
            fn(self.local(now))
        self._finish(now, [], [])

    def peer_disconnected(self, now: float) -> None:
        peer = self.peer
        if peer is None:
            return
        fn = getattr(peer, "connection_lost", None)
        if fn is not None:
            fn(self.local(now))
        self._finish(now, [], [])

    def peer_receive(self, data: bytes, now: float) -> None:
        peer = self.peer
        if not self.up or peer is None:
            return
        res = peer.receive_data(data, self.local(now))
        self._finish(now, _leases(res), [], from_peer=True)

    # ------------------------------------------------------------------ commits

    def _hold(self, changed: Iterable[Lease]) -> None:
        """The engine changed these leases: their binding updates wait for the commit."""
        peer = self.peer
        fn = getattr(peer, "hold_updates", None) if peer is not None else None
        if fn is not None and changed:
            fn([le.address for le in changed])

    def _release(self, b: _Batch, now: float) -> None:
        """``b`` is durable: release the updates of its addresses that no later commit (a
        newer change) still holds, and queue the BNDUPDs that may leave now."""
        peer = self.peer
        fn = getattr(peer, "release_updates", None) if peer is not None else None
        if fn is None or peer is None:
            return
        newer = {le.address for later in self._batches for le in later.changes}
        addresses = [le.address for le in b.changes if le.address not in newer]
        if not addresses:
            return
        fn(addresses, self.local(now))
        data = peer.data_to_send()
        if data:
            if not self._held:
                self._send_peer(data, now)
            else:
                gen = self.peer_link.generation if self.peer_link is not None else 0
                self._held.append(_HeldBytes(None, data, gen))

    def _finish(
        self,
        now: float,
        changed: list[Lease],
        later: list[tuple[Reply, float]],
        *,
        from_peer: bool = False,
    ) -> None:
        """End of a step: gather the peer's changes and bytes, start the commit, send what
        may be sent, re-arm the timers. ``from_peer``: ``changed`` came from the peer."""
        self.activity += 1
        peer = self.peer
        data = b""
        close = False
        peer_changed = from_peer and bool(changed)
        if peer is not None:
            take = getattr(peer, "take_changed", None)
            if take is not None:
                taken = take()
                peer_changed = peer_changed or bool(taken)
                changed.extend(taken)
            take_lazy = getattr(peer, "take_lazy", None)
            if take_lazy is not None:
                changed.extend(take_lazy())  # stored with this batch; no byte waits for it
            data = peer.data_to_send()
            want_close = getattr(peer, "close_requested", None)
            close = bool(want_close()) if want_close is not None else False
        b: _Batch | None = None
        if changed or (later and self._batches):
            last = self._batches[-1].due if self._batches else now
            due = max(now + self.commit_s, last) if changed else last
            b = _Batch(due, changed, later, peer_changed)
            self._batches.append(b)
            b.handle = self.sched.at(due, partial(self._complete, b), f"{self.name}:commit")
        else:
            for r, handled in later:
                self._send_reply(r, now, handled)
        if data or peer_changed:
            gate = b if peer_changed else None
            if gate is None and not self._held:
                self._send_peer(data, now)
            else:
                gen = self.peer_link.generation if self.peer_link is not None else 0
                self._held.append(_HeldBytes(gate, data, gen))
        if close and self.peer_link is not None:
            self.peer_link.close(self, now, "closed by peer")
        self._rearm()

    def _drain_peer(self, now: float) -> None:
        """Send the held failover bytes whose commits (and every earlier one) are done; a
        failed commit drops the bytes held for it and closes the connection."""
        held = self._held
        link = self.peer_link
        while held:
            h = held[0]
            if h.gate is not None and not (h.gate.done or h.gate.failed):
                break
            held.pop(0)
            if h.gate is not None and h.gate.failed:
                for other in held:
                    if other.generation == h.generation:
                        other.data = b""
                if link is not None and link.connected and link.generation == h.generation:
                    link.close(self, now, "commit failed")
                continue
            if h.data and (link is None or link.generation == h.generation):
                self._send_peer(h.data, now)  # (no peer_link: a subclass routes the bytes)

    def _complete(self, b: _Batch, now: float) -> None:
        """A commit completed: make it durable, then send what waited for it."""
        if not self.up or not self._batches or self._batches[0] is not b:
            return
        self._batches.pop(0)
        self.activity += 1
        if b.changes:
            try:
                self.store.commit(b.changes)
            except StoreError as exc:
                b.failed = True
                self._commit_failed(b, now, exc)
                self._drain_peer(now)
                return
            if self.trace.enabled:
                self.trace.add(
                    now,
                    "commit",
                    self.name,
                    detail="commit "
                    + ", ".join(f"{le.address}={le.state.name}" for le in b.changes),
                )
            for fn in self.on_commit:
                fn(self, b.changes, now)
            self._release(b, now)
        b.done = True
        for r, handled in b.replies:
            self._send_reply(r, now, handled)
        self._drain_peer(now)

    def _commit_failed(self, b: _Batch, now: float, exc: StoreError) -> None:
        """What service.py does when a commit fails: ACKs withheld, changes retried with the
        next commit (older versions first, so newer ones win); the failover bytes held for
        it are dropped and the connection closed (:meth:`_drain_peer`)."""
        acks = [r for r, _h in b.replies if r.msg.message_type is MessageType.ACK]
        self.acks_withheld += len(acks)
        for r, _h in b.replies:
            if r.msg.message_type is not MessageType.ACK:
                self._send_reply(r, now)
        self.trace.add(
            now,
            "store-fail",
            self.name,
            detail=f"commit of {len(b.changes)} failed ({exc}): {len(acks)} ACKs withheld"
            + (" and the failover bytes held for it" if b.peer_gate else ""),
        )
        if self._batches:
            nxt = self._batches[0]
            nxt.changes[:0] = b.changes
        else:
            retry = _Batch(now + COMMIT_RETRY_S, list(b.changes), [])
            self._batches.append(retry)
            retry.handle = self.sched.at(
                retry.due, partial(self._complete, retry), f"{self.name}:commit-retry"
            )

    def _send_peer(self, data: bytes, now: float) -> None:
        if self.peer_link is not None:
            self.peer_link.send(self, data, now)

    def _rearm(self) -> None:
        if not self.up or self.stack is None:
            return
        self._engine_due = self.stack.engine.get_timer()
        peer = self.stack.peer
        self._peer_due = peer.get_timer() if peer is not None else None
        self._engine_timer.arm(self._sim_time(self._engine_due))
        self._peer_timer.arm(self._sim_time(self._peer_due))

    def _sim_time(self, local: float | None) -> float | None:
        return None if local is None else local - self.clock_offset

    # ------------------------------------------------------------------ views

    def has_uncommitted(self) -> bool:
        """A commit is in flight (lease changes not yet durable)."""
        return any(b.changes for b in self._batches)

    def committed_active(self, now: float) -> dict[IPv4Address, Lease]:
        """Committed leases that are ACTIVE and unexpired at ``now``."""
        local = self.local(now)
        return {a: le for a, le in self.store.leases.items() if le.is_active(local)}


def _leases(res: object) -> list[Lease]:
    if isinstance(res, list):
        return [x for x in res if isinstance(x, Lease)]
    return []
