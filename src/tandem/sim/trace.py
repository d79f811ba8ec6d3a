"""A readable log of a simulation run.

Every event the simulator performs is one :class:`Event`: a DHCP message sent, delivered
or lost, a client state change, a commit, a crash, failover bytes on the peer link. Tests
query the structured fields ("which server answered client c3, with what lease time");
people read :meth:`Trace.text`. Two runs with the same seed produce identical traces
(:meth:`Trace.lines` compares equal), which is what the determinism tests check.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address
from typing import NamedTuple

from tandem.wire.dhcp import ZERO_IP, DhcpMessage

__all__ = ["DhcpInfo", "Event", "Trace", "describe"]


class DhcpInfo(NamedTuple):
    """The fields of a DHCP message a test asks about (immutable; a named tuple because a
    run creates one per DHCP message and that is several times cheaper than a frozen
    dataclass)."""

    type: str  # "DISCOVER", "OFFER", ... ("?" when the message has no valid type)
    xid: int
    ciaddr: IPv4Address
    yiaddr: IPv4Address
    server_id: IPv4Address | None
    requested_ip: IPv4Address | None
    lease_s: int | None
    t1_s: int | None
    t2_s: int | None
    hwaddr: bytes

    @classmethod
    def of(cls, msg: DhcpMessage) -> DhcpInfo:
        mt = msg.message_type
        return cls(
            mt.name if mt is not None else "?",
            msg.xid,
            msg.ciaddr,
            msg.yiaddr,
            msg.server_id,
            msg.requested_ip,
            msg.lease_time,
            _u32(msg.options.get(58)),
            _u32(msg.options.get(59)),
            msg.hwaddr,
        )

    def summary(self) -> str:
        parts = [self.type, f"xid={self.xid:08x}"]
        if self.ciaddr != ZERO_IP:
            parts.append(f"ciaddr={self.ciaddr}")
        if self.yiaddr != ZERO_IP:
            parts.append(f"yiaddr={self.yiaddr}")
        if self.requested_ip is not None:
            parts.append(f"req={self.requested_ip}")
        if self.server_id is not None:
            parts.append(f"sid={self.server_id}")
        if self.lease_s is not None:
            parts.append(f"lease={self.lease_s}")
        if self.t1_s is not None:
            parts.append(f"t1={self.t1_s}")
        if self.t2_s is not None:
            parts.append(f"t2={self.t2_s}")
        return " ".join(parts)


def _u32(v: bytes | None) -> int | None:
    return int.from_bytes(v, "big") if v is not None and len(v) == 4 else None


def describe(msg: DhcpMessage) -> str:
    """One line for a DHCP message (used by the trace)."""
    return DhcpInfo.of(msg).summary()


class Event(NamedTuple):
    """One thing that happened at virtual time ``t`` (seconds since the run started).

    ``kind``: ``tx`` (a node sent a DHCP message), ``rx`` (a node received one), ``drop``
    (lost: ``detail`` says why), ``state`` (client state change), ``commit``, ``crash``,
    ``restart``, ``peer-tx`` / ``peer-rx`` / ``peer-drop`` / ``peer-link`` (failover link),
    ``fault`` (the test changed the network), ``note`` (anything else).

    For DHCP events ``src``/``dst`` name the nodes (``dst`` is ``"broadcast"`` for a
    broadcast send), ``unicast`` tells how the datagram was addressed, ``dhcp`` holds the
    message fields and ``state`` the sending client's state (RFC 2131 names).

    Immutable; a named tuple because a run creates one per thing that happens and that is
    several times cheaper than a frozen dataclass.
    """

    t: float
    kind: str
    node: str
    src: str = ""
    dst: str = ""
    unicast: bool = False
    dhcp: DhcpInfo | None = None
    state: str = ""
    detail: str = ""

    def line(self) -> str:
        head = f"{self.t:12.3f} {self.kind:<9} {self.node:<6}"
        if self.dhcp is not None:
            how = "unicast" if self.unicast else "broadcast"
            st = f" [{self.state}]" if self.state else ""
            tail = f" ({self.detail})" if self.detail else ""
            return f"{head} {self.src} -> {self.dst} {how}{st}: {self.dhcp.summary()}{tail}"
        return f"{head} {self.detail}"


class Trace:
    """The events of one run, in order.

    ``enabled=False`` records nothing (the soak runs seeds so, and runs a failing seed
    again with the trace for its message: runs are deterministic and nothing in the
    simulation reads the trace). Callers skip building what only the trace needs when it
    is off (``if trace.enabled``)."""

    def __init__(self, start: float, *, enabled: bool = True) -> None:
        self.start = start
        self.enabled = enabled
        self.events: list[Event] = []

    def add(
        self,
        now: float,
        kind: str,
        node: str,
        *,
        src: str = "",
        dst: str = "",
        unicast: bool = False,
        dhcp: DhcpInfo | None = None,
        state: str = "",
        detail: str = "",
    ) -> Event | None:
        """Record one event (``None`` when the trace is off)."""
        if not self.enabled:
            return None
        ev = Event(round(now - self.start, 6), kind, node, src, dst, unicast, dhcp, state, detail)
        self.events.append(ev)
        return ev

    def lines(self) -> list[str]:
        return [e.line() for e in self.events]

    def text(self, last: int | None = None) -> str:
        evs = self.events if last is None else self.events[-last:]
        return "\n".join(e.line() for e in evs)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    # ------------------------------------------------------------------ queries

    def dhcp(
        self,
        kind: str = "tx",
        type: str | None = None,
        src: str | None = None,
        dst: str | None = None,
        node: str | None = None,
        state: str | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """DHCP events filtered by event kind, message type, sender, receiver, the node that
        logged it, the client state, and run time (``since``, seconds since the start)."""
        out = []
        for e in self.events:
            d = e.dhcp
            if d is None or e.kind != kind:
                continue
            if type is not None and d.type != type:
                continue
            if src is not None and e.src != src:
                continue
            if dst is not None and e.dst != dst:
                continue
            if node is not None and e.node != node:
                continue
            if state is not None and e.state != state:
                continue
            if since is not None and e.t < since:
                continue
            out.append(e)
        return out

    def answers_to(self, client: str, type: str = "ACK", since: float | None = None) -> list[Event]:
        """Replies of ``type`` that ``client`` received (``src`` names the server)."""
        return self.dhcp("rx", type=type, node=client, since=since)

    def of_kind(self, kind: str, node: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and (node is None or e.node == node)]
