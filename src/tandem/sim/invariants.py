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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tandem.leases.model import BindingState, Lease
from tandem.leases.table import lease_key
from tandem.sim.client import _HOLDING, Binding, SimClient
from tandem.sim.server import MemoryStore, SimServer, _Leases
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
    # Derived from ``address`` / ``key`` once (the per-step check compares without building
    # keys): the address as int, and the key split into client id / (htype, hwaddr).
    addr_int: int = field(init=False, repr=False, compare=False)
    _cid: bytes | None = field(init=False, repr=False, compare=False)
    _htype: int = field(init=False, repr=False, compare=False)
    _hw: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.addr_int = int(self.address)
        k = self.key
        self._cid = k[1:] if k[:1] == b"C" else None
        self._htype = k[1] if k[:1] == b"H" and len(k) > 1 else -1
        self._hw = k[2:] if k[:1] == b"H" and len(k) > 1 else None

    def held_by(self, le: Lease | None, offset: float) -> bool:
        """``le`` (in a clock ``offset`` ahead) keeps this ACK: ``_forgotten(le, self,
        offset) == ""``, without building the lease's client key."""
        if le is None or le.state is not BindingState.ACTIVE or le.end - offset < self.end - _EPS:
            return False
        cid = le.client_id
        if cid:  # lease_key(le) == b"C" + cid
            return cid == self._cid
        hw = le.hwaddr  # lease_key(le) == b"H" + htype + hw, or None without hw
        return bool(hw) and hw == self._hw and (le.htype & 0xFF) == self._htype


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
        #: Also run the full scan after every step and fail if the incremental check
        #: disagrees with it (tests of the incremental check; slow).
        self.verify = False
        # The holders at the previous step: address -> (client, its client_id and hwaddr
        # objects, its key). The same client with the same identity objects has the same key.
        self._holders: dict[int, tuple[SimClient, bytes | None, bytes, bytes]] = {}
        self._by_name: dict[str, SimServer] = {}
        self._gave_up: dict[tuple[bytes, IPv4Address], float] = {}
        # What the incremental store check saw last: per server name, the server, its store
        # and its clock offset (a different one: every address of that store is rechecked).
        self._seen: dict[str, tuple[SimServer, MemoryStore, float, int]] = {}
        self._fresh: list[AckRecord] = []  # ACK records added since the previous step

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
        self._fresh.append(rec)

    def client_gave_up(
        self, client: SimClient, address: IPv4Address, why: str, now: float
    ) -> None:
        """The client stopped using ``address`` (RELEASE, DECLINE, a NAK, an unanswered
        INIT-REBOOT after which it starts over): the servers may forget the lease (every
        server's record). A server that forgets a lease its client still uses is caught
        before that: the check runs after every step, before any reply reaches a client."""
        self._gave_up[(client.key, address)] = now
        for k, rec in list(self._live.items()):
            if rec.address == address and rec.key == client.key:
                del self._live[k]

    # ------------------------------------------------------------------ checking

    def check(self, now: float) -> None:
        """Run every check at ``now``; raise :class:`InvariantViolation` on any problem.

        Client holdings and the extra checks are evaluated in full on every step; the
        server-side checks incrementally (:meth:`_quick`), with the same result as the full
        scan at every step, for these reasons:

        * two stores ACTIVE for different clients, or a store giving a held address to
          another client: the problems of one address depend only on the stores' leases
          for it, the clock offsets, the key of the client holding it and ``now``; with the
          same inputs and a later ``now`` they can only shrink (leases end), and the
          previous step had none. So only the addresses written in some store since the
          previous step (``MemoryStore.leases.dirty``) or whose holder changed are
          rechecked, and every address of a store whose server's clock offset changed;
        * an ACKed lease forgotten by a store or an engine: whether a record is kept does
          not depend on ``now`` at all (a record is dropped when its lease ends); it
          changes only when the store or engine changes, which happens only in a step of
          that server (``SimServer.activity`` counts them), a store write, or a clock
          change. So the records of the servers with such a change, and new records, are
          rechecked.

        When anything is found the full scan runs and gives the message (as before);
        ``verify`` runs the full scan on every step and fails if the two disagree."""
        self.checks_run += 1
        problems: list[str] = []
        held = self._client_holdings(now, problems)
        found = self._quick(now, held)
        if found or self.verify:
            full: list[str] = []
            self._stores(now, held, full)
            self._acked_in_stores(now, full)
            self._acked_in_engines(now, full)
            if self.verify and bool(full) != found:
                raise AssertionError(
                    f"seed={self.seed}: incremental check says {found}, full scan {full}"
                )
            problems.extend(full)
        for name, fn in self.extra:
            for p in fn(now):
                problems.append(f"{name}: {p}")
        if problems:
            self._seen.clear()  # (a caller that goes on after a violation: recheck all)
            t = now - self.trace.start
            tail = self.trace.text(last=40)
            raise InvariantViolation(
                f"seed={self.seed} t={t:.3f}: " + "; ".join(problems) + "\n--- trace tail:\n" + tail
            )

    def _quick(self, now: float, held: dict[int, tuple[SimClient, Binding]]) -> bool:
        """Whether a server-side check fails at ``now`` (see :meth:`check`)."""
        found = False
        dirty: set[IPv4Address] = set()  # addresses to recheck across the stores
        changed: list[SimServer] = []  # servers whose engine may have changed
        written: list[tuple[SimServer, Iterable[IPv4Address]]] = []  # store writes
        seen = self._seen
        for s in self.servers:
            store = s.store
            leases = store.leases
            last = seen.get(s.name)
            if last is not None and last[3] == s.activity and last[0] is s:
                marks = leases.dirty if isinstance(leases, _Leases) else None
                if (
                    marks is not None
                    and not marks
                    and last[1] is store
                    and last[2] == s.clock_offset
                ):
                    continue  # nothing happened to this server
            seen[s.name] = (s, store, s.clock_offset, s.activity)
            changed.append(s)
            marks = leases.dirty if isinstance(leases, _Leases) else None
            if (
                last is None
                or last[0] is not s
                or last[1] is not store
                or last[2] != s.clock_offset
                or marks is None  # (a plain dict put there by a test: every address)
            ):
                everything = list(leases)
                dirty.update(everything)
                written.append((s, everything))
                written.append((s, [r.address for r in self._live.values() if r.server == s.name]))
            if marks:
                dirty.update(marks)
                written.append((s, list(marks)))
                marks.clear()
        # Addresses whose holder's key differs from the previous step's (none held: None).
        prev = self._holders
        same = len(prev) == len(held)
        for a, (c, b) in held.items():
            p = prev.get(a)
            if p is not None and p[0] is c and p[1] is c.client_id and p[2] is c.hwaddr:
                continue
            same = False
            if p is None or p[3] != c.key:
                dirty.add(b.address)
        if not same:  # (same: every address held by the same client as before, no other)
            holders: dict[int, tuple[SimClient, bytes | None, bytes, bytes]] = {}
            for a, (c, _b) in held.items():
                holders[a] = (c, c.client_id, c.hwaddr, c.key)
            self._holders = holders
        if dirty:
            servers = self.servers
            for addr in dirty:
                owner: bytes | None = None
                have_owner = False
                h = held.get(int(addr))
                for s in servers:
                    le = s.store.leases.get(addr)
                    if (
                        le is None
                        or le.state is not BindingState.ACTIVE
                        or le.end - s.clock_offset <= now
                    ):
                        continue
                    key = lease_key(le)
                    if have_owner and owner != key:
                        found = True
                    if not have_owner:
                        owner, have_owner = key, True
                    if h is not None and h[0].key != key:
                        found = True
        live = self._live
        # ACK records against the stores: the records at written addresses, and new ones.
        for s, addrs in written:
            name = s.name
            for addr in addrs:
                rec = live.get((name, addr))
                if (
                    rec is not None
                    and rec.end > now
                    and not rec.held_by(s.store.leases.get(addr), s.clock_offset)
                ):
                    found = True
        fresh = self._fresh
        if fresh:
            self._fresh = []
            by_name = self._by_name_now()
            for rec in fresh:
                if rec.end > now and live.get((rec.server, rec.address)) is rec:
                    srv = by_name[rec.server]
                    if not rec.held_by(srv.store.leases.get(rec.address), srv.clock_offset):
                        found = True
                    stack = srv.stack
                    if stack is not None and not rec.held_by(
                        stack.engine.table.get(rec.addr_int), srv.clock_offset
                    ):
                        found = True
        # ACK records against the engines of the servers that did something
        # (AckRecord.held_by inlined: this loop runs on almost every step).
        if changed:
            active = BindingState.ACTIVE
            expired: list[tuple[str, IPv4Address]] = []
            for s in changed:
                stack = s.stack
                if stack is None:
                    continue
                name = s.name
                get = stack.engine.table.get
                off = s.clock_offset
                for k, rec in live.items():
                    if rec.server != name:
                        continue
                    if rec.end <= now:
                        expired.append(k)
                        continue
                    le = get(rec.addr_int)
                    if le is None or le.state is not active or le.end - off < rec.end - _EPS:
                        found = True
                        continue
                    cid = le.client_id
                    if cid:
                        if cid != rec._cid:
                            found = True
                    else:
                        hw = le.hwaddr
                        if not hw or hw != rec._hw or (le.htype & 0xFF) != rec._htype:
                            found = True
            for k in expired:
                live.pop(k, None)
        return found

    def _by_name_now(self) -> dict[str, SimServer]:
        by_name = self._by_name
        if len(by_name) != len(self.servers) or any(
            by_name.get(s.name) is not s for s in self.servers
        ):
            self._by_name = by_name = {s.name: s for s in self.servers}
        return by_name

    def _client_holdings(
        self, now: float, problems: list[str]
    ) -> dict[int, tuple[SimClient, Binding]]:
        held: dict[int, tuple[SimClient, Binding]] = {}
        holding = _HOLDING
        for c in self.clients:
            b = c.binding  # SimClient.holds(now), inlined (runs for every client every step)
            if b is None or c.state not in holding or b.end <= now:
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

    def __call__(self, now: float) -> list[str]:
        pending = self._pending
        if not pending:
            return []
        self._pending = []
        out: list[str] = []
        for srv, msg, end, base, skew in pending:
            self.checked += 1
            handled = end - (msg.lease_time or 0)
            allowed = self.mclt + max(handled, base) + skew
            if end > allowed + _EPS:
                off = srv.clock_offset
                out.append(
                    f"{srv.name} ACKed {msg.yiaddr} until {end - off - self.start:.3f}, beyond "
                    f"MCLT + partner's knowledge ({allowed - off - self.start:.3f})"
                )
        return out
