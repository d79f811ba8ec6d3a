"""Safety invariants, checked after every simulation step.

1. **No address is leased to two clients at overlapping times** — neither by what the
   clients believe (two clients holding the same unexpired address), nor by the servers'
   durable stores (two servers' committed ACTIVE unexpired leases naming different clients
   for one address), nor between the two (a client holds an address that a store gives to
   another client).
2. **No ACKed lease is forgotten** — every DHCPACK a server sent is remembered until its
   lease ends (or the client releases / declines it, or the same server moves the client
   to another address); while it lasts, the server's committed store, and its engine when
   it is up, must hold the address ACTIVE for that client until at least that end, across
   any number of crashes and restarts.
3. **Extra checks** (:meth:`Invariants.add_check`), e.g. the MCLT bound
   (:class:`MCLTBound`, for a failover pair): a callable ``(now) -> iterable of problem
   strings``.

Lease times in a server's store and engine are in that server's clock
(``SimServer.clock_offset``); they are converted to simulation time before comparing.

A violation raises :class:`InvariantViolation` with the seed, the time and the end of the
trace, so the failing run can be replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from tandem.leases.model import BindingState, Lease
from tandem.leases.table import lease_key
from tandem.sim.client import Binding, SimClient
from tandem.sim.server import SimServer
from tandem.sim.trace import Trace
from tandem.wire.dhcp import DhcpMessage

__all__ = ["AckRecord", "InvariantViolation", "Invariants", "MCLTBound"]

_EPS = 1e-6
Check = Callable[[float], Iterable[str]]


class InvariantViolation(AssertionError):
    """A safety invariant failed (the message says which, when, and how to replay)."""


@dataclass(slots=True)
class AckRecord:
    """An ACK a server sent, remembered while its lease lasts."""

    server: str
    key: bytes
    address: IPv4Address
    end: float  # the lease end the server recorded (request handled + lease time)
    handled: float

    @property
    def addr_int(self) -> int:
        return int(self.address)


class Invariants:
    """The checks of one simulation (see the module docstring)."""

    def __init__(
        self,
        trace: Trace,
        clients: list[SimClient],
        servers: list[SimServer],
        seed: int,
    ) -> None:
        self.trace = trace
        self.clients = clients
        self.servers = servers
        self.seed = seed
        self.extra: list[tuple[str, Check]] = []
        self.acks: list[AckRecord] = []  # every ACK sent, in order (for extra checks)
        self._live: dict[tuple[str, IPv4Address], AckRecord] = {}
        self.checks_run = 0
        self._sig: tuple[int, ...] = ()
        self._holding: dict[int, bytes] = {}
        self._records_changed = False
        self._by_name: dict[str, SimServer] = {}
        self._gave_up: dict[tuple[bytes, IPv4Address], float] = {}

    def add_check(self, name: str, check: Check) -> None:
        """Run ``check(now)`` after every step; each string it yields is a violation."""
        self.extra.append((name, check))

    # ------------------------------------------------------------------ bookkeeping

    def ack_sent(self, server: SimServer, msg: DhcpMessage, handled: float) -> None:
        """``server`` sent ``msg`` (an ACK) for a request it handled at ``handled``."""
        lease_s = msg.lease_time
        if lease_s is None:
            return
        key = _msg_key(msg)
        given_up = self._gave_up.get((key, msg.yiaddr))
        if given_up is not None and given_up >= handled:
            # The client released / declined the address after the request this ACK answers
            # (the ACK waited for its commit meanwhile): the server may forget it.
            return
        rec = AckRecord(server.name, key, msg.yiaddr, handled + lease_s, handled)
        self.acks.append(rec)
        # The same server moving this client to another address ends the old record.
        for k, old in list(self._live.items()):
            if old.server == server.name and old.key == key and old.address != msg.yiaddr:
                del self._live[k]
        self._live[(server.name, msg.yiaddr)] = rec
        self._records_changed = True

    def client_gave_up(self, client: SimClient, b: Binding, why: str, now: float) -> None:
        """RELEASE / DECLINE: the servers may forget the lease (every server's record)."""
        self._gave_up[(client.key, b.address)] = now
        for k, rec in list(self._live.items()):
            if rec.address == b.address and rec.key == client.key:
                del self._live[k]
                self._records_changed = True

    # ------------------------------------------------------------------ checking

    def check(self, now: float) -> None:
        """Run every check at ``now``; raise :class:`InvariantViolation` on any problem.

        The server-side checks are recomputed only when a server did something (handled a
        message or timer, committed, crashed, restarted: ``SimServer.activity``), a client's
        holdings changed or the ACK records changed since the last step: with the same inputs
        and a later time, the set of conflicts can only shrink (leases end). Client holdings
        and the extra checks run on every step."""
        self.checks_run += 1
        problems: list[str] = []
        held = self._client_holdings(now, problems)
        sig = tuple(s.activity for s in self.servers)
        holding = {a: cb[0].key for a, cb in held.items()}
        if sig != self._sig or holding != self._holding or self._records_changed:
            self._sig = sig
            self._holding = holding
            self._records_changed = False
            self._stores(now, held, problems)
            self._acked_in_stores(now, problems)
            self._acked_in_engines(now, problems)
        for name, fn in self.extra:
            problems.extend(f"{name}: {p}" for p in fn(now))
        if problems:
            t = now - self.trace.start
            tail = self.trace.text(last=40)
            raise InvariantViolation(
                f"seed={self.seed} t={t:.3f}: " + "; ".join(problems) + "\n--- trace tail:\n" + tail
            )

    def _client_holdings(
        self, now: float, problems: list[str]
    ) -> dict[int, tuple[SimClient, Binding]]:
        held: dict[int, tuple[SimClient, Binding]] = {}
        for c in self.clients:
            b = c.holds(now)
            if b is None:
                continue
            a = int(b.address)
            other = held.get(a)
            if other is not None:
                problems.append(
                    f"{b.address} held by {other[0].name} (until {other[1].end:.3f}) and "
                    f"{c.name} (until {b.end:.3f})"
                )
            held[a] = (c, b)
        return held

    def _stores(
        self,
        now: float,
        held: dict[int, tuple[SimClient, Binding]],
        problems: list[str],
    ) -> None:
        owner: dict[int, tuple[str, bytes | None]] = {}
        for s in self.servers:
            off = s.clock_offset
            for le in s.store.leases.values():
                if le.state is not BindingState.ACTIVE or le.end - off <= now:
                    continue
                a = int(le.address)
                key = lease_key(le)
                prev = owner.get(a)
                if prev is not None and prev[1] != key:
                    problems.append(
                        f"{le.address} ACTIVE in {prev[0]}'s store for {_k(prev[1])} and in "
                        f"{s.name}'s for {_k(key)}"
                    )
                owner.setdefault(a, (s.name, key))
                h = held.get(a)
                if h is not None and h[0].key != key:
                    problems.append(
                        f"{le.address} held by {h[0].name} but ACTIVE in {s.name}'s store for "
                        f"{_k(key)}"
                    )

    def _expire_records(self, now: float) -> None:
        live = self._live
        if any(r.end <= now for r in live.values()):
            for k in [k for k, r in live.items() if r.end <= now]:
                del live[k]

    def _acked_in_stores(self, now: float, problems: list[str]) -> None:
        self._expire_records(now)
        by_name = {s.name: s for s in self.servers}
        for rec in self._live.values():
            s = by_name[rec.server]
            p = _forgotten(s.store.leases.get(rec.address), rec, s.clock_offset)
            if p:
                problems.append(f"{s.name} store: {p}")

    def _acked_in_engines(self, now: float, problems: list[str]) -> None:
        self._expire_records(now)
        for rec in self._live.values():
            s = self._by_name.get(rec.server)
            if s is None:
                self._by_name = {x.name: x for x in self.servers}
                s = self._by_name[rec.server]
            stack = s.stack
            if stack is not None:
                p = _forgotten(stack.engine.table.get(rec.addr_int), rec, s.clock_offset)
                if p:
                    problems.append(f"{s.name} engine: {p}")


def _forgotten(le: Lease | None, rec: AckRecord, offset: float = 0.0) -> str:
    if le is None:
        why = "no lease"
    elif le.state is not BindingState.ACTIVE:
        why = f"state {le.state.name}"
    elif le.end - offset < rec.end - _EPS:
        why = f"ends {le.end - offset:.3f}"
    elif lease_key(le) != rec.key:
        why = f"now for {_k(lease_key(le))}"
    else:
        return ""
    return f"ACK of {rec.address} to {_k(rec.key)} until {rec.end:.3f} forgotten ({why})"


def _msg_key(msg: DhcpMessage) -> bytes:
    cid = msg.client_id
    if cid:
        return b"C" + cid
    return b"H" + bytes((msg.htype & 0xFF,)) + msg.hwaddr


def _k(key: bytes | None) -> str:
    return key.hex() if key is not None else "nobody"


class MCLTBound:
    """The MCLT bound of a failover pair (draft-12 §4.2.1, hot-standby.md 1.3): no ACK ends
    later than the MCLT beyond what the partner has acknowledged for that client (the PET /
    lease end the partner has committed) or beyond the time of the ACK.

    Register :meth:`ack_sent` as an ``on_ack`` listener of both servers and the object itself
    with :meth:`Invariants.add_check`. Times are compared in the ACKing server's clock; when
    the two clocks differ, the difference is allowed on top (lease ends travel between
    clocks unconverted; the protocol tolerates skew up to ``max_clock_skew_s``)."""

    def __init__(
        self,
        partner: Mapping[str, SimServer],
        mclt_s: float,
        start: float,
        *,
        rounding_s: float = 1.0,
    ) -> None:
        self.partner = partner
        self.mclt = float(mclt_s)
        self.start = start
        self.rounding = rounding_s  # lease ends travel rounded up to whole seconds
        self.checked = 0
        self._pending: list[tuple[SimServer, DhcpMessage, float, float, float]] = []

    def ack_sent(self, srv: SimServer, msg: DhcpMessage, handled: float) -> None:
        """Measure, when the ACK leaves, what the partner has committed for this client."""
        lease_s = msg.lease_time
        if lease_s is None:
            return
        other = self.partner[srv.name]
        known = other.store.leases.get(msg.yiaddr)
        base = 0.0
        if known is not None:
            # The partner's potential expiration is per address (it will not reuse the
            # address before PET + MCLT, whoever held it); a lease end only for this client.
            same = lease_key(known) == _msg_key(msg) and known.state is BindingState.ACTIVE
            base = max(known.tsfp, known.end - self.rounding if same else 0.0)
        skew = abs(srv.clock_offset - other.clock_offset)
        local_handled = handled + srv.clock_offset
        self._pending.append((srv, msg, local_handled + lease_s, base, skew))

    def __call__(self, now: float) -> Iterator[str]:
        pending, self._pending = self._pending, []
        for srv, msg, end, base, skew in pending:
            self.checked += 1
            handled = end - (msg.lease_time or 0)
            allowed = self.mclt + max(handled, base) + skew
            if end > allowed + _EPS:
                off = srv.clock_offset
                yield (
                    f"{srv.name} ACKed {msg.yiaddr} until {end - off - self.start:.3f}, beyond "
                    f"MCLT + partner's knowledge ({allowed - off - self.start:.3f})"
                )
