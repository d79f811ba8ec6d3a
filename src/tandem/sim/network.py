"""Simulated networks: the client LAN (UDP datagrams) and the failover link (a byte stream).

The LAN delivers broadcast datagrams to every attached node listening on the destination
port, unicast ones to the node that owns the destination address (a server's fixed address,
a client's bound address), and link-layer unicast (a server's reply to a client that has no
address yet) to the node with that hardware address. Every (sender, receiver) delivery goes
through the LAN's :class:`Faults` (delay, jitter, loss, duplication, reordering; one seeded
random stream) and the active :class:`Cut` s (partitions, optionally only for unicast or only
for broadcast, optionally one-way).

The :class:`PeerLink` carries the bytes two failover peers hand out (``data_to_send``) to
the other (``receive_data``). By default it behaves like TCP: bytes arrive in order, a lost
segment shows up as a retransmission delay, duplicates and reordering are invisible, and a
partition holds the bytes back until it heals (or until a peer closes the connection,
which loses them). With ``stream=False`` chunks are lost, duplicated and reordered as they
are, to test robustness. Chunks may be split at random points (``fragment``) so that the
receiver's framing is exercised.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Protocol

from tandem.sim.scheduler import Scheduler
from tandem.sim.trace import DhcpInfo, Trace
from tandem.wire.dhcp import DhcpMessage

__all__ = [
    "BROADCAST",
    "Cut",
    "Faults",
    "Frame",
    "Lan",
    "LanNode",
    "PeerEnd",
    "PeerLink",
]

BROADCAST = IPv4Address("255.255.255.255")


@dataclass(slots=True)
class Faults:
    """What a link does to traffic. Probabilities are per delivery (per chunk)."""

    delay_s: float = 0.001  # fixed one-way latency
    jitter_s: float = 0.0  # plus uniform [0, jitter_s)
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # probability of an extra ``reorder_delay_s`` (overtaken by later ones)
    reorder_delay_s: float = 0.05
    retransmit_s: float = 0.2  # stream links: what a lost segment costs (TCP retransmission)


@dataclass(slots=True, frozen=True)
class Frame:
    """One UDP datagram on the LAN (the payload is the encoded DHCP message)."""

    src_node: str
    src_ip: IPv4Address
    src_port: int
    dst_ip: IPv4Address
    dst_port: int
    payload: bytes
    link_hw: bytes | None = None  # link-layer unicast to this hardware address

    @property
    def broadcast(self) -> bool:
        return self.dst_ip == BROADCAST and self.link_hw is None


@dataclass(slots=True, eq=False)
class Cut:
    """A partition: traffic from a node in ``a`` to a node in ``b`` is lost (and from ``b``
    to ``a`` when ``both_ways``). ``None`` stands for every node. ``unicast``/``broadcast``
    say which datagrams are cut (link-layer unicast counts as unicast)."""

    a: frozenset[str] | None
    b: frozenset[str] | None
    unicast: bool = True
    broadcast: bool = True
    both_ways: bool = True
    label: str = ""

    def blocks(self, src: str, dst: str, broadcast: bool) -> bool:
        if not (self.broadcast if broadcast else self.unicast):
            return False
        if _member(src, self.a) and _member(dst, self.b):
            return True
        return self.both_ways and _member(src, self.b) and _member(dst, self.a)


def _member(name: str, group: frozenset[str] | None) -> bool:
    return group is None or name in group


class LanNode(Protocol):
    """What the LAN needs from an attached node (clients and servers)."""

    name: str
    hwaddr: bytes
    port: int

    def owns(self, ip: IPv4Address) -> bool: ...

    def is_up(self) -> bool: ...

    def receive(self, frame: Frame, now: float) -> None: ...


@dataclass(slots=True)
class _Stats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    cut: int = 0
    no_route: int = 0
    duplicated: int = 0


class Lan:
    """One broadcast domain (interface ``name``) with faults and partitions."""

    def __init__(self, sched: Scheduler, trace: Trace, name: str = "lan0") -> None:
        self.sched = sched
        self.trace = trace
        self.name = name
        self.faults = Faults()
        self.cuts: list[Cut] = []
        self.nodes: list[LanNode] = []
        self.stats = _Stats()
        self._rng = sched.rng(f"lan:{name}")
        # Optional observer of every delivered DHCP message (sender, receiver, message).
        self.on_deliver: list[Callable[[Frame, LanNode, DhcpMessage], None]] = []

    def attach(self, node: LanNode) -> None:
        if any(n.name == node.name for n in self.nodes):
            raise ValueError(f"node name {node.name!r} is already on {self.name}")
        self.nodes.append(node)

    # ------------------------------------------------------------------ partitions

    def partition(
        self,
        a: Iterable[str] | None,
        b: Iterable[str] | None,
        *,
        unicast: bool = True,
        broadcast: bool = True,
        both_ways: bool = True,
        label: str = "",
    ) -> Cut:
        """Cut traffic between node groups ``a`` and ``b`` (``None``: all nodes)."""
        cut = Cut(
            frozenset(a) if a is not None else None,
            frozenset(b) if b is not None else None,
            unicast,
            broadcast,
            both_ways,
            label,
        )
        self.cuts.append(cut)
        self.trace.add(self.sched.now, "fault", self.name, detail=f"partition {_cut_text(cut)}")
        return cut

    def heal(self, cut: Cut | None = None) -> None:
        """Remove one cut (``None``: all of them)."""
        if cut is None:
            self.cuts.clear()
            self.trace.add(self.sched.now, "fault", self.name, detail="heal all")
            return
        if cut in self.cuts:
            self.cuts.remove(cut)
            self.trace.add(self.sched.now, "fault", self.name, detail=f"heal {_cut_text(cut)}")

    # ------------------------------------------------------------------ delivery

    def send(self, frame: Frame, msg: DhcpMessage, state: str = "") -> None:
        """Put ``frame`` (whose payload encodes ``msg``) on the wire."""
        now = self.sched.now
        self.stats.sent += 1
        receivers: list[LanNode]
        if frame.link_hw is not None:
            receivers = [
                n for n in self.nodes if n.hwaddr == frame.link_hw and n.port == frame.dst_port
            ]
            dst = receivers[0].name if receivers else f"hw:{frame.link_hw.hex()}"
        elif frame.dst_ip == BROADCAST:
            receivers = [
                n for n in self.nodes if n.name != frame.src_node and n.port == frame.dst_port
            ]
            dst = "broadcast"
        else:
            receivers = [n for n in self.nodes if n.port == frame.dst_port and n.owns(frame.dst_ip)]
            dst = receivers[0].name if receivers else str(frame.dst_ip)
        info = DhcpInfo.of(msg) if self.trace.enabled else None
        bcast = frame.broadcast
        self.trace.add(
            now,
            "tx",
            frame.src_node,
            src=frame.src_node,
            dst=dst,
            unicast=not bcast,
            dhcp=info,
            state=state,
        )
        if not receivers:
            self.stats.no_route += 1
            self.trace.add(
                now,
                "drop",
                frame.src_node,
                src=frame.src_node,
                dst=dst,
                unicast=not bcast,
                dhcp=info,
                detail="no such host",
            )
            return
        f = self.faults
        rng = self._rng
        for node in receivers:
            if any(c.blocks(frame.src_node, node.name, bcast) for c in self.cuts):
                self.stats.cut += 1
                self._dropped(now, frame, node.name, info, "partition")
                continue
            if f.loss and rng.random() < f.loss:
                self.stats.lost += 1
                self._dropped(now, frame, node.name, info, "lost")
                continue
            copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
            if copies == 2:
                self.stats.duplicated += 1
            for _ in range(copies):
                delay = f.delay_s + (rng.random() * f.jitter_s if f.jitter_s else 0.0)
                if f.reorder and rng.random() < f.reorder:
                    delay += f.reorder_delay_s
                self.sched.after(delay, _Delivery(self, frame, node, msg).run, "lan")

    def _arrive(self, frame: Frame, node: LanNode, msg: DhcpMessage, now: float) -> None:
        why = ""
        if not node.is_up():
            why = "host down"
        elif frame.link_hw is None and frame.dst_ip != BROADCAST and not node.owns(frame.dst_ip):
            why = f"{frame.dst_ip} no longer here"  # a client's address changed meanwhile
        if why:
            self._dropped(now, frame, node.name, DhcpInfo.of(msg) if self.trace.enabled else None,
                          why)
            return
        self.stats.delivered += 1
        node.receive(frame, now)

    def _dropped(
        self, now: float, frame: Frame, dst: str, info: DhcpInfo | None, why: str
    ) -> None:
        """Trace a frame that did not reach ``dst`` (and why)."""
        self.trace.add(now, "drop", dst, src=frame.src_node, dst=dst,
                       unicast=not frame.broadcast, dhcp=info, detail=why)


class _Delivery:
    __slots__ = ("frame", "lan", "msg", "node")

    def __init__(self, lan: Lan, frame: Frame, node: LanNode, msg: DhcpMessage) -> None:
        self.lan = lan
        self.frame = frame
        self.node = node
        self.msg = msg

    def run(self, now: float) -> None:
        self.lan._arrive(self.frame, self.node, self.msg, now)


def _cut_text(cut: Cut) -> str:
    a = ",".join(sorted(cut.a)) if cut.a is not None else "*"
    b = ",".join(sorted(cut.b)) if cut.b is not None else "*"
    arrow = "<->" if cut.both_ways else "->"
    kinds = "+".join(k for k, on in (("unicast", cut.unicast), ("broadcast", cut.broadcast)) if on)
    lbl = f" '{cut.label}'" if cut.label else ""
    return f"{a} {arrow} {b} ({kinds}){lbl}"


# ---------------------------------------------------------------------- failover link


class PeerEnd(Protocol):
    """What the peer link needs from each end (a :class:`~tandem.sim.server.SimServer`)."""

    name: str

    def is_up(self) -> bool: ...

    def peer_connected(self, now: float) -> None: ...

    def peer_disconnected(self, now: float) -> None: ...

    def peer_receive(self, data: bytes, now: float) -> None: ...


@dataclass(slots=True)
class _Direction:
    held: list[bytes] = field(default_factory=list)  # bytes held back by a partition
    last_arrival: float = 0.0  # stream order: nothing arrives before this


class PeerLink:
    """A point-to-point failover connection between two servers.

    The connection is up when both ends are up and the link is not partitioned; it is
    (re)established ``reconnect_s`` after that becomes true. A crash of one end resets the
    connection at once (kill -9: the kernel closes the socket) unless ``silent_crash``; a
    partition does not tell the peers anything: they notice by their own timers and may
    close the connection (:meth:`close`), which loses the bytes held back.
    """

    def __init__(
        self,
        sched: Scheduler,
        trace: Trace,
        a: PeerEnd,
        b: PeerEnd,
        *,
        faults: Faults | None = None,
        stream: bool = True,
        fragment: bool = False,
        reconnect_s: float = 5.0,
        silent_crash: bool = False,
        describe: Callable[[bytes], str] | None = None,
    ) -> None:
        self.sched = sched
        self.trace = trace
        self.a = a
        self.b = b
        self.faults = faults if faults is not None else Faults()
        self.stream = stream
        self.fragment = fragment
        self.reconnect_s = reconnect_s
        self.silent_crash = silent_crash
        self.describe = describe
        self.name = f"{a.name}~{b.name}"
        self.connected = False
        self.partitioned = False
        self.generation = 0  # connection number; bytes of an old connection are dropped
        self._dirs = {a.name: _Direction(), b.name: _Direction()}
        self._rng: random.Random = sched.rng(f"peerlink:{self.name}")
        self._retry: object | None = None
        self.bytes_delivered = 0

    def other(self, end: PeerEnd) -> PeerEnd:
        return self.b if end is self.a else self.a

    # ------------------------------------------------------------------ connection

    def start(self) -> None:
        """Try to connect now (called when the simulation starts)."""
        self._try_connect(self.sched.now)

    def _try_connect(self, now: float) -> None:
        self._retry = None
        if self.connected or self.partitioned or not (self.a.is_up() and self.b.is_up()):
            return
        self.connected = True
        self.generation += 1
        for d in self._dirs.values():
            d.held.clear()
            d.last_arrival = now
        self.trace.add(now, "peer-link", self.name, detail=f"connected #{self.generation}")
        self.a.peer_connected(now)
        self.b.peer_connected(now)

    def _schedule_connect(self) -> None:
        if self._retry is None and not self.connected:
            self._retry = self.sched.after(self.reconnect_s, self._try_connect, "peer-connect")

    def close(self, by: PeerEnd | None, now: float, reason: str = "closed") -> None:
        """Drop the connection (a peer closed it, or an end crashed); both live ends hear of
        it, except a crashed end. Reconnection is attempted after ``reconnect_s``."""
        if not self.connected:
            return
        self.connected = False
        for d in self._dirs.values():
            d.held.clear()
        who = by.name if by is not None else "link"
        self.trace.add(now, "peer-link", self.name, detail=f"{reason} by {who}")
        for end in (self.a, self.b):
            if end.is_up():
                end.peer_disconnected(now)
        self._schedule_connect()

    def end_crashed(self, end: PeerEnd, now: float) -> None:
        if not self.connected:
            return
        if self.silent_crash:
            # The survivor hears nothing; its bytes go nowhere until it closes the link.
            self.trace.add(now, "peer-link", self.name, detail=f"{end.name} vanished")
            return
        self.close(end, now, "reset (crash)")

    def end_restarted(self, end: PeerEnd, now: float) -> None:
        if self.connected:
            # A silently crashed end comes back: its old connection is gone.
            self.close(end, now, "reset (restart)")
        else:
            self._schedule_connect()

    def partition(self) -> None:
        self.partitioned = True
        self.trace.add(self.sched.now, "fault", self.name, detail="peer link partitioned")

    def heal(self) -> None:
        if not self.partitioned:
            return
        self.partitioned = False
        now = self.sched.now
        self.trace.add(now, "fault", self.name, detail="peer link healed")
        if self.connected:
            for src, d in self._dirs.items():
                held, d.held = d.held, []
                end = self.a if src == self.a.name else self.b
                for chunk in held:
                    self._transmit(end, chunk, now)
        else:
            self._schedule_connect()

    # ------------------------------------------------------------------ bytes

    def send(self, src: PeerEnd, data: bytes, now: float) -> None:
        if not data:
            return
        if not self.connected:
            self.trace.add(now, "peer-drop", src.name, detail=f"{len(data)} B: not connected")
            return
        if self.trace.enabled:
            self.trace.add(now, "peer-tx", src.name, detail=self._text(data))
        if self.partitioned:
            if self.stream:
                self._dirs[src.name].held.append(data)
            else:
                self.trace.add(now, "peer-drop", src.name, detail=f"{len(data)} B: partition")
            return
        self._transmit(src, data, now)

    def _transmit(self, src: PeerEnd, data: bytes, now: float) -> None:
        f = self.faults
        rng = self._rng
        d = self._dirs[src.name]
        chunks = [data]
        if self.fragment and len(data) > 1:
            cut = rng.randrange(1, len(data))
            chunks = [data[:cut], data[cut:]]
        for chunk in chunks:
            delay = f.delay_s + (rng.random() * f.jitter_s if f.jitter_s else 0.0)
            lost = bool(f.loss) and rng.random() < f.loss
            if self.stream:
                if lost:
                    delay += f.retransmit_s
                arrival = max(now + delay, d.last_arrival)
                d.last_arrival = arrival
                self._deliver_at(src, chunk, arrival)
                continue
            if lost:
                self.trace.add(now, "peer-drop", src.name, detail=f"{len(chunk)} B: lost")
                continue
            if f.reorder and rng.random() < f.reorder:
                delay += f.reorder_delay_s
            self._deliver_at(src, chunk, now + delay)
            if f.duplicate and rng.random() < f.duplicate:
                self._deliver_at(src, chunk, now + delay + f.delay_s)

    def _deliver_at(self, src: PeerEnd, chunk: bytes, when: float) -> None:
        gen = self.generation
        dst = self.other(src)

        def arrive(now: float) -> None:
            if not self.connected or self.generation != gen or not dst.is_up():
                self.trace.add(now, "peer-drop", dst.name, detail=f"{len(chunk)} B: link gone")
                return
            self.bytes_delivered += len(chunk)
            if self.trace.enabled:
                self.trace.add(now, "peer-rx", dst.name, detail=self._text(chunk))
            dst.peer_receive(chunk, now)

        self.sched.at(when, arrive, "peer")

    def _text(self, data: bytes) -> str:
        if self.describe is not None:
            try:
                return self.describe(data)
            except Exception as exc:  # a description must never break the run
                return f"{len(data)} B (undescribable: {exc!r})"
        return f"{len(data)} B"
