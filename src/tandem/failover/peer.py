"""The failover peer: state machine + peer connection + policy + bindings (sans-I/O).

:class:`FailoverPeer` ties the failover pieces together for one relationship (hot standby, or
load balance with :class:`~tandem.failover.load_balance.LoadBalancePolicy` and the FREE/BACKUP
split of :meth:`FailoverPeer._balance_split`), in
the same shape as the engine: no socket, no clock; ``now`` (epoch seconds) is an argument,
:meth:`FailoverPeer.get_timer` / :meth:`FailoverPeer.handle_timer` drive time, bytes go in
through :meth:`FailoverPeer.receive_data` and out through :meth:`FailoverPeer.data_to_send`.

* **Connections.** One :class:`~tandem.failover.connection.PeerConnection` per TCP connection
  (:meth:`connection_made` / :meth:`connection_lost`); the primary sends CONNECT. The outbound
  :class:`~tandem.failover.updates.UpdateQueue` outlives connections (un-ACKed BNDUPDs are
  re-sent on the next one); at start-up it is refilled with every committed binding the
  partner never acknowledged (``tstp > tsfp``). When a connection ends by itself (tReceive
  expired, protocol breach, DISCONNECT) :meth:`close_requested` asks the transport to close
  the socket.
* **States.** Connection events become machine inputs (partner STATE -> partner input, lost or
  closed connection -> COMM_LOST, UPDDONE -> UPDDONE_RECEIVED); every state change is
  announced with STATE; machine effects become connection calls (UPDREQ / UPDREQALL, pool
  rebalancing). The machine persists (state, start time) through the store's meta table
  before it acts.
* **Bindings out.** The engine reports every lease change to the
  :class:`~tandem.failover.hot_standby.HotStandbyPolicy`; :meth:`take_changed` drains those
  changes into BNDUPDs (lease end, potential expiration, CLTT, client identity). A BNDACK
  makes the PET acknowledged (policy + the lease's ``tsfp``, written back through
  ``engine.apply`` and returned by :meth:`take_changed` to be committed).
* **Update requests.** UPDREQ / UPDREQALL are answered by a cursor over the pool addresses,
  a bounded batch per step while the partner's window (max-unacked) has room, then UPDDONE
  (:meth:`FailoverPeer._pump_sync`; each lease is read when its turn comes).
* **Bindings in.** A received BNDUPD is decided by :func:`~tandem.failover.bindings.
  resolve_update`; an accepted binding goes into the engine (``engine.apply``) and is
  returned by :meth:`take_changed`. The BNDACK is queued in the same step: the transport must
  send this step's bytes only after its commit (the simulator and the service both do), so
  the binding is durable before the partner hears it was accepted.
* **Reserve.** The primary in NORMAL moves FREE addresses to BACKUP up to
  ``reserve_percent`` (hot-standby.md 4.3): on entering NORMAL, on a POOLREQ, and every
  :data:`REBALANCE_INTERVAL_S`.

The engine is any object with ``table`` (a :class:`~tandem.leases.table.LeaseTable`) and
``apply(lease, now) -> Lease`` (:class:`tandem.dhcp.engine.Engine`); failover may not import
``dhcp``, so the caller builds the engine around :attr:`FailoverPeer.policy` (see
``make_engine``).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Protocol

from tandem.config.schema import Config, FailoverSection
from tandem.config.validate import (
    failover_subnets,
    read_shared_secret,
    receive_timer_s,
    subnet_id,
)
from tandem.failover import bindings
from tandem.failover.bindings import ReceivedBinding, Role
from tandem.failover.connection import ConnectionConfig, PeerConnection
from tandem.failover.events import (
    BindingAcked,
    BindingUpdateReceived,
    CommunicationsLost,
    Connected,
    ConnectionClosed,
    Event,
    PartnerStateChanged,
    PoolRequestReceived,
    UpdateDoneReceived,
    UpdateRequestReceived,
)
from tandem.failover.hot_standby import HotStandbyPolicy, StateView
from tandem.failover.lb_hash import encode_hba, primary_buckets
from tandem.failover.load_balance import (
    BalancePlan,
    LoadBalancePolicy,
    plan_balance,
    split_plan,
)
from tandem.failover.machine import FailoverMachine, LogRecord, Transition
from tandem.failover.states import Effect, Input, partner_input
from tandem.failover.updates import BindingUpdate, UpdateQueue
from tandem.leases.model import BindingState, Lease
from tandem.leases.table import LeaseTable, PoolAddresses, subtract_ranges
from tandem.wire.addr import ipv4
from tandem.wire.failover import BindingStatus, HardwareAddress, ServerFlags, ServerState

__all__ = [
    "META_STATE_KEY",
    "REBALANCE_INTERVAL_S",
    "BindingEngine",
    "FailoverPeer",
    "MetaStore",
    "connection_config",
]

#: Store meta key of the persisted (state, start-time-of-state).
META_STATE_KEY = "failover.state"
#: How many connection events :attr:`FailoverPeer.events` keeps.
EVENT_HISTORY = 1000
#: How often the primary in NORMAL checks the standby's reserve (besides entering NORMAL).
REBALANCE_INTERVAL_S = 60.0
#: Answering UPDREQ / UPDREQALL: at most this many BNDUPDs are queued per step (and never
#: more than the partner's window has room for: pending + in flight <= max-unacked).
SYNC_BATCH = 256
#: ... and at most this many pool addresses are examined per step; when the budget runs out
#: with room left, the answer resumes from a timer due at once (other work runs between).
SYNC_SCAN = 4096

_S = ServerState
_ACTIVE = BindingState.ACTIVE
_GIVEN_UP = (BindingState.EXPIRED, BindingState.RELEASED, BindingState.RESET)


class BindingEngine(Protocol):
    """What the peer needs of the DHCP engine (:class:`tandem.dhcp.engine.Engine`)."""

    table: LeaseTable

    def apply(self, lease: Lease, now: float) -> Lease: ...


class MetaStore(Protocol):
    """The part of the lease store the peer uses (:class:`tandem.store.base.LeaseStore`)."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


def connection_config(config: Config) -> ConnectionConfig:
    """The :class:`ConnectionConfig` of ``config.failover`` (which must be present)."""
    fo = config.failover
    if not isinstance(fo, FailoverSection):  # None, or several: see relationship_config
        raise ValueError("no single [failover] relationship")
    secret = read_shared_secret(fo)
    return ConnectionConfig(
        relationship=fo.name,
        role=fo.role,
        mode=fo.mode,
        dialect=fo.dialect,
        my_address=fo.listen_address,
        partner_address=fo.peer_address,
        mclt_s=fo.mclt_s,
        max_unacked=fo.max_unacked_updates,
        receive_timer_s=receive_timer_s(fo),
        keepalive_s=float(fo.keepalive_interval_s) if fo.keepalive_interval_s else None,
        max_skew_s=float(fo.max_clock_skew_s),
        shared_secret=secret.encode("utf-8") if secret is not None else None,
        hba=_hba(fo),
    )


def _primary_percent(fo: FailoverSection) -> int:
    """The primary's share of the clients (load-balance: each side configures its own)."""
    own = fo.load_balance_percent
    return own if fo.role == "primary" else 100 - own


def _hba(fo: FailoverSection) -> bytes | None:
    """Load balance: the HBA the primary sends / the secondary expects (spec §8.2); None for
    hot standby (connection.py's all-primary default)."""
    if fo.mode != "load-balance":
        return None
    return encode_hba(primary_buckets(_primary_percent(fo)), fo.dialect)


def _load_state(store: MetaStore) -> tuple[ServerState, float] | None:
    raw = store.get_meta(META_STATE_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return ServerState(int(data["state"])), float(data["since"])
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: treated as a first run (RECOVER, UPDREQALL)


@dataclass(slots=True)
class PeerStats:
    """Counters of what the peer did (for tests and the API)."""

    updates_sent: int = 0
    updates_acked: int = 0
    updates_rejected_by_partner: int = 0
    updates_received: int = 0
    updates_accepted: int = 0
    updates_rejected: int = 0
    moved_to_backup: int = 0
    moved_to_free: int = 0  # load balance: BACKUP -> FREE accepted by the secondary
    reclaims_sent: int = 0  # load balance: BNDUPD FREE for a BACKUP address
    pool_requests_sent: int = 0
    connections: int = 0
    resent_after_restart: int = 0  # unacknowledged bindings queued at start-up
    reject_rules: dict[str, int] = field(default_factory=dict)
    # UPDREQ / UPDREQALL answers: BNDUPDs the cursor queued, answers completed (UPDDONE
    # queued), and the most update objects (pending + in flight) held while one ran.
    sync_updates_sent: int = 0
    syncs_done: int = 0
    sync_peak_queued: int = 0


@dataclass(slots=True)
class _Sync:
    """One UPDREQ / UPDREQALL being answered on ``conn``: a cursor over the pool addresses
    (pool order: ascending within each pool). Each lease is read from the table when the
    cursor reaches it, so the partner gets its state at that moment, never a snapshot."""

    xid: int
    all: bool
    conn: PeerConnection
    cursor: Iterator[int]  # pool addresses as ints (PoolAddresses.ints)
    # Addresses whose state the partner itself sent us (and we stored as sent) after the
    # request arrived: the cursor does not send them back. ISC dhcpd rejects such echoes of
    # its own in-flight updates (reason 16, "incoming update is less critical").
    known: set[IPv4Address] = field(default_factory=set)


class FailoverPeer:
    """One hot-standby failover endpoint (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        store: MetaStore,
        now: float,
        make_engine: Callable[[HotStandbyPolicy], BindingEngine],
        *,
        log: Callable[[LogRecord], None] | None = None,
        storage_lost_at: float | None = None,
    ) -> None:
        """Build the machine (from the stored state), the policy and, through
        ``make_engine(policy)``, the engine with the committed leases loaded."""
        fo = config.failover
        if not isinstance(fo, FailoverSection):  # several: one peer per relationship_config
            raise ValueError("FailoverPeer needs one [failover] relationship")
        self.config = config
        self.fo: FailoverSection = fo
        self.store = store
        self.role = Role(fo.role)
        self.conn_config = connection_config(config)
        self.updates = UpdateQueue()
        self.conn: PeerConnection | None = None
        self.stats = PeerStats()
        # The latest connection events, in order (diagnostics; bounded: a long-lived pair
        # sees one event per binding update and would otherwise grow without end).
        self.events: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self._changed: list[Lease] = []
        self._lazy: list[Lease] = []  # to store, but nothing sent waits for them
        self._close_wanted = False
        self._next_rebalance: float | None = None
        self._reclaiming: set[IPv4Address] = set()  # load balance: BACKUP -> FREE in flight
        # Addresses whose partner update we accepted while our own update of the address was
        # in flight (the two crossed): until those BNDACKs are in, an ACK never lowers the
        # stored PET (see _on_binding_acked).
        self._crossed: set[IPv4Address] = set()
        self._syncs: deque[_Sync] = deque()  # update requests being answered, oldest first
        self._sync_resume: float | None = None  # scan budget ran out: continue at this time
        self._pool = _pool_addresses(config)
        # The state we were in before the current one, counting states passed "via" (a
        # restart that goes STARTUP -> COMMUNICATIONS-INTERRUPTED -> NORMAL in one step came
        # from COMMUNICATIONS-INTERRUPTED: a recovery, hot-standby.md 4.2).
        self._previous: ServerState | None = None

        initial = _load_state(store)
        self.policy: HotStandbyPolicy
        if fo.mode == "load-balance":
            self.policy = LoadBalancePolicy(
                fo.role,
                fo.mclt_s,
                self._state_view,
                primary_percent=_primary_percent(fo),
                max_seconds=fo.load_balance_max_seconds,
            )
        else:
            self.policy = HotStandbyPolicy(fo.role, fo.mclt_s, self._state_view)
        self.machine: FailoverMachine | None = None
        self.engine = make_engine(self.policy)
        last_op: float | None = None
        if initial is not None:
            # Our last operation: the latest CLTT we committed (a lease we served or
            # recorded) or the start of the stored state, whichever is later.
            cltts = [le.cltt for le in self.engine.table]
            last_op = max([initial[1], *cltts])
        self.machine = FailoverMachine(
            fo.role,
            fo.mclt_s,
            fo.state_switchover_interval_s,
            self._persist,
            initial,
            log=log,
            startup_timeout_action=fo.startup_timeout_action,
            last_operation_at=last_op,
            storage_lost_at=storage_lost_at,
        )
        self.machine.start(now)
        self._queue_unacknowledged(now)

    def _queue_unacknowledged(self, now: float) -> None:
        """Queue a BNDUPD for every committed binding the partner has not acknowledged
        (``tstp > tsfp``: the update queue is in RAM and died with the previous process).
        They leave once communication is established, as any queued update (draft-12
        §7.1.1: a server sends the pending updates when communication is re-established;
        ISC queues every lease with tstp > atsfp at start-up). Bindings we only received
        from the partner (tstp 0) are not sent back. Each carries a PET of at least what
        the partner already holds (:meth:`_update_of`). An ACTIVE lease that ended while we
        were down is left to the engine's expiry (its EXPIRED update follows): sent as
        ACTIVE it could overwrite a newer binding the partner made in PARTNER-DOWN after
        that end (a secondary accepts the primary's ACTIVE for another client, §5.4 (5))."""
        get = self.engine.table.get
        for a in self._pool.ints():  # (ints: no address object per pool address)
            lease = get(a)
            if lease is None or not _pet_unacknowledged(lease):
                continue
            if lease.state is _ACTIVE and lease.end <= now:
                continue
            self.updates.push(self._update_of(lease, None))
            self.stats.resent_after_restart += 1

    # ------------------------------------------------------------------ views

    @property
    def m(self) -> FailoverMachine:
        assert self.machine is not None
        return self.machine

    @property
    def state(self) -> ServerState:
        return self.m.state

    def _state_view(self) -> StateView:
        m = self.machine
        if m is None:  # while the engine is being built
            return StateView(_S.STARTUP, 0.0, None)
        return StateView(m.state, m.state_since, self._previous)

    def _persist(self, state: ServerState, since: float) -> None:
        self.store.set_meta(META_STATE_KEY, json.dumps({"state": int(state), "since": since}))

    # ------------------------------------------------------------------ transport surface

    def connection_made(self, now: float) -> None:
        """A TCP connection to the partner is up: a fresh :class:`PeerConnection`."""
        if self.conn is not None and not self.conn.closed:
            self._handle_events(self.conn.connection_lost(now), now)
        self.conn = PeerConnection(self.conn_config, now, self.updates)
        self._crossed.clear()  # nothing of ours is in flight on a new connection
        self._syncs.clear()  # requests of the old connection die with it
        self._sync_resume = None
        self._close_wanted = False
        self.stats.connections += 1
        self._announce(now)
        self.conn.initiate(now)

    def connection_lost(self, now: float) -> None:
        conn = self.conn
        if conn is None:
            return
        self._handle_events(conn.connection_lost(now), now)
        self._close_wanted = False
        self._syncs.clear()
        self._sync_resume = None

    def receive_data(self, data: bytes, now: float) -> None:
        conn = self.conn
        if conn is not None and data:
            self._handle_events(conn.receive_data(data, now), now)
        self._flush_policy(now)
        if self._syncs:
            self._pump_sync(now)  # BNDACKs opened the window: the next batch

    def data_to_send(self) -> bytes:
        conn = self.conn
        return conn.data_to_send() if conn is not None else b""

    def close_requested(self) -> bool:
        want, self._close_wanted = self._close_wanted, False
        return want

    def take_changed(self) -> list[Lease]:
        """Leases to commit (received bindings, acknowledged times, reserve moves). Also
        turns the engine's lease changes of this step into queued BNDUPDs."""
        self._flush_policy(None)
        out, self._changed = self._changed, []
        return out

    def take_lazy(self) -> list[Lease]:
        """Leases to store that no byte waits for: a BNDACK that only raised the times of
        a binding (``tsfp``, the PET the partner acknowledged, and ``tstp``). Lost in a
        crash, the lease keeps its older, lower times: grants are then bounded by a lower
        base (tighter), the binding counts as unacknowledged and is sent again (UPDREQ),
        and a PET sent from the stored lease is still at least its end. Safe, so the
        transport need not hold this step's bytes for their commit (for
        :meth:`take_changed` it must). A BNDACK that lowers a time is not lazy: a crash
        must not bring back a higher base than the partner holds (DST seed 996)."""
        out, self._lazy = self._lazy, []
        return out

    def hold_updates(self, addresses: Iterable[IPv4Address]) -> None:
        """The DHCP engine changed ``addresses`` and the change is not durable yet: their
        binding updates stay queued until :meth:`release_updates` (addresses outside this
        relationship are ignored)."""
        pool = self._pool
        self.updates.hold(a for a in addresses if a in pool)

    def release_updates(self, addresses: Iterable[IPv4Address], now: float) -> None:
        """The commit holding the changes of ``addresses`` completed: their updates may
        leave; the sendable ones go into the outgoing bytes now (the caller sends them)."""
        if self.updates.release(addresses) and self.conn is not None and not self.conn.closed:
            self.conn.flush_updates(now)

    def get_timer(self) -> float | None:
        times = [self.m.get_timer(), self._next_rebalance, self._sync_resume]
        if self.conn is not None:
            times.append(self.conn.get_timer())
        live = [t for t in times if t is not None]
        return min(live) if live else None

    def handle_timer(self, now: float) -> None:
        t = self.m.handle_timer(now)
        if t is not None:
            self._on_transition(t, now)
        conn = self.conn
        if conn is not None:
            self._handle_events(conn.handle_timer(now), now)
        if self._next_rebalance is not None and now >= self._next_rebalance:
            self._next_rebalance = None
            self._rebalance(now)
        self._flush_policy(now)
        if self._syncs:
            self._pump_sync(now)
        else:
            self._sync_resume = None

    # ------------------------------------------------------------------ operator commands

    def partner_down(self, now: float) -> bool:
        """Operator: the partner is down (COMMUNICATIONS-INTERRUPTED -> PARTNER-DOWN).
        Returns whether the state changed."""
        return self._input(Input.OPERATOR_PARTNER_DOWN, now)

    def shutdown(self, now: float) -> bool:
        return self._input(Input.OPERATOR_SHUTDOWN, now)

    def pause(self, now: float) -> bool:
        return self._input(Input.OPERATOR_PAUSE, now)

    # ------------------------------------------------------------------ machine side

    def _input(
        self, inp: Input, now: float, partner_stos: float | None = None
    ) -> bool:
        t = self.m.handle(inp, now, partner_stos=partner_stos)
        if t is None:
            return False
        self._on_transition(t, now)
        return t.changed

    def _announce(self, now: float) -> None:
        """Queue our STATE (sent now, or right after the handshake)."""
        conn = self.conn
        if conn is None or conn.closed:
            return
        m = self.m
        if m.state is _S.STARTUP:
            conn.send_state(
                m.previous_state, int(m.state_since), now, flags=int(ServerFlags.STARTUP)
            )
        else:
            conn.send_state(m.state, int(m.state_since), now)

    def _on_transition(self, t: Transition, now: float) -> None:
        if t.changed:
            self._previous = t.via[-1] if t.via else t.from_state
            self._announce(now)
            if t.to_state is not _S.NORMAL:
                self._next_rebalance = None
        conn = self.conn
        ready = conn is not None and conn.established
        for effect in t.effects:
            if effect in (Effect.REQUEST_UPDATES, Effect.REQUEST_ALL_UPDATES) and ready:
                assert conn is not None
                conn.request_updates(effect is Effect.REQUEST_ALL_UPDATES, now)
            elif effect is Effect.REBALANCE_POOL:
                self._rebalance(now)
            # SEND_PENDING_UPDATES: the shared queue flushes by itself once the partner's
            # STATE is in (communications OK); nothing else to do.

    def _handle_events(self, events: Iterable[Event], now: float) -> None:
        for ev in events:
            self.events.append(ev)
            if isinstance(ev, Connected):
                self._input(Input.CONNECTED, now)
            elif isinstance(ev, PartnerStateChanged):
                self._input(partner_input(ev.state, ev.startup), now, float(ev.start_time))
            elif isinstance(ev, BindingUpdateReceived):
                self._on_binding_update(ev, now)
            elif isinstance(ev, BindingAcked):
                self._on_binding_acked(ev, now)
            elif isinstance(ev, UpdateRequestReceived):
                self._on_update_request(ev, now)
            elif isinstance(ev, UpdateDoneReceived):
                self._input(Input.UPDDONE_RECEIVED, now)
            elif isinstance(ev, PoolRequestReceived):
                moved = self._rebalance(now)
                if self.conn is not None and not self.conn.closed:
                    self.conn.send_pool_response(moved, ev.xid, now)
            elif isinstance(ev, ConnectionClosed):
                self._close_wanted = True
                self._input(Input.COMM_LOST, now)
            elif isinstance(ev, CommunicationsLost):
                pass  # ConnectionClosed follows at once

    # ------------------------------------------------------------------ bindings out

    def _flush_policy(self, now: float | None) -> None:
        for change in self.policy.drain_updates():
            self._queue(self._update_of(change.lease, change.pet), change.queued_at)

    def _queue(self, update: BindingUpdate, now: float | None) -> None:
        self.stats.updates_sent += 1
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.queue_binding_update(update, now)
        else:
            self.updates.push(update)

    def _update_of(self, lease: Lease, pet: float | None) -> BindingUpdate:
        has_client = bool(lease.hwaddr) or lease.client_id is not None
        active = lease.state is _ACTIVE
        if active and pet is None:
            # A re-sent or requested binding: never a PET below what the partner may hold
            # for it already (what it acknowledged or sent us, tsfp), or its stored PET
            # would go back while we hold a grant built on the higher one.
            pet = max(lease.tstp, lease.tsfp, lease.end)
        return BindingUpdate(
            address=lease.address,
            binding_status=int(lease.state),
            hwaddr=HardwareAddress(lease.htype, lease.hwaddr) if has_client else None,
            client_id=lease.client_id if has_client else None,
            # Round the lease end up: the partner must never think a lease ends before the
            # client does; the PET is rounded down (the MCLT bound counts from it).
            lease_expiration=math.ceil(lease.end) if active or lease.end else None,
            potential_expiration=math.floor(pet) if pet is not None else None,
            # ISC takes the lease start from start-time-of-state (draft: SHOULD)
            start_time_of_state=int(lease.start) if active and lease.start else None,
            cltt=int(lease.cltt) if lease.cltt else None,
        )

    def _on_binding_acked(self, ev: BindingAcked, now: float) -> None:
        crossed = ev.address in self._crossed
        if crossed and not self.updates.is_in_flight(ev.address):
            self._crossed.discard(ev.address)  # the last of our crossed updates is answered
        if ev.address in self._reclaiming and self._reclaim_acked(ev, now):
            return
        if ev.reject_reason is not None:
            self.stats.updates_rejected_by_partner += 1
            return
        self.stats.updates_acked += 1
        upd = ev.update
        lease = self.engine.table.get_ip(ev.address)
        if lease is None or int(lease.state) != upd.binding_status:
            return  # changed again since: the newer update is on its way
        pet = upd.potential_expiration
        new = lease.copy()
        if pet is not None:
            acked = float(pet)
            if crossed:
                # Our update and the partner's own update of this address crossed: the
                # partner stored our PET and then took its own back from our BNDACK, while we
                # stored its PET and now hear the BNDACK of ours. Replacing here would leave
                # the two sides holding different PETs (each the one it sent; the one with
                # the higher then grants beyond MCLT + what the other has stored: DST seed
                # 3051). Both sides keep the higher of the two instead.
                acked = max(acked, lease.tsfp)
            self.policy.acknowledged(ev.address, acked)
            # Otherwise the partner now holds exactly this PET (a received PET replaces its
            # base even when lower, bindings._stored): never keep a higher one from an
            # earlier binding of the address, or a later grant could exceed MCLT + what the
            # partner knows (found by DST, seed 996).
            new.tsfp = acked
            new.tstp = max(new.tstp, acked)
        if lease.state in _GIVEN_UP and (upd.cltt or 0) == int(lease.cltt):
            # The partner knows the address is no longer bound: it is available again
            # (draft-12 §5.2: EXPIRED/RELEASED -> FREE on ACK, whichever side sent it; the
            # primary tops the reserve up). Not BACKUP on a secondary: when both sides
            # expired the lease, their FREE and BACKUP updates crossed and each side ended
            # believing the other owned the address (lost for good; found by DST, seed 952).
            new.state = BindingState.FREE
            self._changed.append(self.engine.apply(new, now))
            self._queue(self._update_of(new, None), now)
            return
        if new.tsfp < lease.tsfp or new.tstp < lease.tstp:
            self._changed.append(self.engine.apply(new, now))  # lowered (DST seed 996)
        elif new.tsfp != lease.tsfp or new.tstp != lease.tstp:
            self._lazy.append(self.engine.apply(new, now))  # raised: see take_lazy

    # ------------------------------------------------------------------ bindings in

    def _on_binding_update(self, ev: BindingUpdateReceived, now: float) -> None:
        self.stats.updates_received += 1
        upd = ev.update
        conn = self.conn
        sid = self._pool.get(upd.address)
        status = _BINDING_STATUS.get(upd.binding_status)  # (the Enum call costs ~1 µs)
        if status is None:
            self.stats.updates_rejected += 1
            if conn is not None:
                conn.ack_binding_update(
                    ev.xid, 3, address=upd.address, message="unknown binding status", now=now
                )
            return
        hw = upd.hwaddr
        received = ReceivedBinding(
            address=upd.address,
            status=status,
            cltt=float(upd.cltt) if upd.cltt is not None else None,
            lease_end=float(upd.lease_expiration) if upd.lease_expiration is not None else None,
            pet=float(upd.potential_expiration) if upd.potential_expiration is not None else None,
            stos=float(upd.start_time_of_state) if upd.start_time_of_state is not None else None,
            hwaddr=hw.address if hw is not None else b"",
            htype=hw.htype if hw is not None else 1,
            client_id=upd.client_id,
        )
        local = self.engine.table.get_ip(upd.address)
        d = bindings.resolve_update(
            local,
            received,
            now,
            role=self.role,
            subnet_id=sid if sid is not None else 0,
            in_relationship=sid is not None,
        )
        if not d.accept or d.lease is None:
            self.stats.updates_rejected += 1
            self.stats.reject_rules[d.rule] = self.stats.reject_rules.get(d.rule, 0) + 1
            if conn is not None:
                reason = int(d.reject_reason) if d.reject_reason is not None else 6
                conn.ack_binding_update(ev.xid, reason, address=upd.address, message=d.rule,
                                        now=now)
            return
        self.stats.updates_accepted += 1
        lease = d.lease
        if lease.state in _GIVEN_UP:
            # draft-12 §5.2 (and ISC): the receiver of EXPIRED/RELEASED/RESET sets the address
            # FREE. ISC dhcpd sends no FREE after our ACK, so keeping the received state left
            # the address unusable for good.
            lease.state = BindingState.FREE
        if (
            local is not None
            and local.state is _ACTIVE
            and lease.state is _ACTIVE
            and bindings.same_client(local, received)
            and local.end > lease.end
        ):
            # Never shorten a lease we hold for the same client (we may have ACKed it and our
            # update is still on its way): the later end stands.
            lease.end = local.end
        else:
            for sync in self._syncs:
                sync.known.add(upd.address)
        if received.pet is not None:
            self.policy.received(upd.address, received.pet)
            if self.updates.is_in_flight(upd.address):
                self._crossed.add(upd.address)  # our update of it is on its way: crossed
        self._changed.append(self.engine.apply(lease, now))
        if conn is not None:
            conn.ack_binding_update(ev.xid, address=upd.address, now=now)

    def _on_update_request(self, ev: UpdateRequestReceived, now: float) -> None:
        """UPDREQ / UPDREQALL: answered incrementally by :meth:`_pump_sync` (a cursor over
        the pool, a bounded batch per step as the partner's window opens), then UPDDONE.
        Building every BNDUPD at once stalled the server for ~20 s with 1M leases."""
        conn = self.conn
        if conn is None or conn.closed:
            return
        self._flush_policy(now)
        # The first batch leaves at the end of this step (receive_data / handle_timer pump
        # once per step, so one step never examines more than SYNC_SCAN addresses).
        self._syncs.append(_Sync(ev.xid, ev.all, conn, self._pool.ints()))

    def _pump_sync(self, now: float) -> None:
        """Queue the next BNDUPDs of the oldest update request while the partner's window
        has room (pending + in flight < max-unacked, at most :data:`SYNC_BATCH` per step,
        :data:`SYNC_SCAN` addresses examined); UPDDONE once its cursor is exhausted (the
        connection holds it until every update queued before it is ACKed, draft-12 §7.7).

        A lease changed while the answer runs is queued as usual (policy changes); when
        the cursor reaches an address whose update is still pending or in flight it skips
        it (the queue carries the latest state), otherwise it sends the current state.
        """
        self._sync_resume = None
        queue = self.updates
        table = self.engine.table
        while self._syncs:
            sync = self._syncs[0]
            conn = self.conn
            if conn is not sync.conn or conn is None or conn.closed:
                self._syncs.clear()  # the partner asks again on its next connection
                return
            room = min(SYNC_BATCH, queue.window - queue.in_flight_count - queue.pending_count)
            if room <= 0:
                return  # the next BNDACK opens the window
            produced = 0
            exhausted = True
            get = table.get
            for scanned, a in enumerate(sync.cursor, 1):
                lease = get(a)
                if lease is None:
                    pass
                elif (
                    not queue.is_in_flight(addr := lease.address)
                    and addr not in sync.known
                    and not queue.is_pending(addr)
                    and (sync.all or _unacked(lease))
                ):
                    self._queue(self._update_of(lease, None), now)
                    produced += 1
                if produced >= room or scanned >= SYNC_SCAN:
                    exhausted = False
                    break
            self.stats.sync_updates_sent += produced
            held = queue.pending_count + queue.in_flight_count
            self.stats.sync_peak_queued = max(self.stats.sync_peak_queued, held)
            if not exhausted:
                if produced < room:
                    self._sync_resume = now  # scan budget spent: go on from a timer
                return
            self._syncs.popleft()
            self.stats.syncs_done += 1
            conn.send_update_done(sync.xid, now)
            if self._syncs:
                self._sync_resume = now  # the next request in the next step (scan budget)
                return

    # ------------------------------------------------------------------ reserve

    def reserve_counts(self) -> tuple[int, int]:
        """(FREE, BACKUP) addresses of the relationship's pools (no record counts FREE)."""
        # By int, without an address object per pool address: with 1,000,000 addresses
        # this scan blocks the loop (it runs on entering NORMAL and every
        # REBALANCE_INTERVAL_S): 0.39 s by IPv4Address, ~0.1 s this way.
        free = backup = 0
        get = self.engine.table.get
        free_st, backup_st = BindingState.FREE, BindingState.BACKUP
        for a in self._pool.ints():
            lease = get(a)
            st = free_st if lease is None else lease.state
            if st is free_st:
                free += 1
            elif st is backup_st:
                backup += 1
        return free, backup

    def _rebalance(self, now: float) -> int:
        """The primary in NORMAL tops the standby's reserve up (never takes it back: a
        BACKUP address may be leased by the standby without our knowledge yet)."""
        if self.fo.mode == "load-balance":
            return self._balance_split(now)
        if not bindings.may_rebalance(self.role, self.m.state):
            return 0
        self._next_rebalance = now + REBALANCE_INTERVAL_S
        free, backup = self.reserve_counts()
        delta = bindings.rebalance_delta(free, backup, self.fo.reserve_percent)
        if delta <= 0:
            return 0
        table = self.engine.table
        get = table.get
        free_st = BindingState.FREE
        # Only FREE addresses (or without a record) can be chosen: an address object for
        # those alone (all 1,000,000 of a big pool took 1.5 s, the loop blocked).
        candidates = [
            (ipv4(a), lease)
            for a in self._pool.ints()
            if (lease := get(a)) is None or lease.state is free_st
        ]
        chosen = bindings.choose_for_backup(candidates, delta)
        for addr in chosen:
            old = table.get_ip(addr)
            lease = old.copy() if old is not None else Lease(addr, self._pool[addr])
            lease.state = BindingState.BACKUP
            self._changed.append(self.engine.apply(lease, now))
            self._queue(self._update_of(lease, None), now)
        self.stats.moved_to_backup += len(chosen)
        return len(chosen)

    # ------------------------------------------------------------------ load-balance split

    def balance_plan(self) -> BalancePlan:
        """The FREE/BACKUP split of the pools against the load-balance target (and the moves
        the primary would make now); see :func:`~tandem.failover.load_balance.plan_balance`."""
        assert isinstance(self.policy, LoadBalancePolicy)
        # Count first, nothing allocated per address, and plan the moves only when the split
        # is off: with 1,000,000 pool addresses a balanced split takes 0.08 s here, against
        # 0.64-0.74 s when every address was collected (bench/reserve_scan.py).
        free, backup = self.reserve_counts()
        table = self.engine.table
        pending = 0
        for addr in self._reclaiming:
            lease = table.get_ip(addr)
            if lease is not None and lease.state is BindingState.BACKUP:
                pending += 1
        pct = self.policy.secondary_percent
        plan = split_plan(free + pending, backup - pending, secondary_percent=pct)
        if plan.balanced:
            return plan
        get = table.get
        return plan_balance(
            ((a, get(a)) for a in self._pool.ints()),
            primary_buckets=self.policy.primary_buckets,
            secondary_percent=pct,
            pending_free=self._reclaiming,
        )

    def _balance_split(self, now: float) -> int:
        """Load balance, in NORMAL, on entering it, on a POOLREQ and every
        :data:`REBALANCE_INTERVAL_S`. The primary moves FREE -> BACKUP at once (it stops
        allocating them when it sends the BNDUPD) and BACKUP -> FREE only once the secondary
        accepted (it rejects an address it has leased meanwhile). The secondary asks with a
        POOLREQ (isc dialect) when it holds too few. Returns the addresses moved to BACKUP."""
        if self.m.state is not _S.NORMAL:
            return 0
        self._next_rebalance = now + REBALANCE_INTERVAL_S
        plan = self.balance_plan()
        conn = self.conn
        if self.role is Role.SECONDARY:
            if (
                not plan.balanced
                and plan.delta > 0
                and self.fo.dialect == "isc"
                and conn is not None
                and conn.established
                and not conn.closed
            ):
                conn.send_pool_request(now)
                self.stats.pool_requests_sent += 1
            return 0
        table = self.engine.table
        for addr in plan.to_backup:
            old = table.get_ip(addr)
            lease = old.copy() if old is not None else Lease(addr, self._pool[addr])
            lease.state = BindingState.BACKUP
            self._changed.append(self.engine.apply(lease, now))
            self._queue(self._update_of(lease, None), now)
        for addr in plan.to_free:
            old = table.get_ip(addr)
            assert old is not None  # a BACKUP address has a record
            offer = old.copy()
            offer.state = BindingState.FREE  # stays BACKUP here until the secondary ACKs
            self._reclaiming.add(addr)
            self._queue(self._update_of(offer, None), now)
        self.stats.moved_to_backup += len(plan.to_backup)
        self.stats.reclaims_sent += len(plan.to_free)
        return len(plan.to_backup)

    def _reclaim_acked(self, ev: BindingAcked, now: float) -> bool:
        """The BNDACK of a BACKUP -> FREE move: the address is the primary's once the
        secondary accepted. False: not that update (handled as any other BNDACK)."""
        if ev.update.binding_status != int(BindingStatus.FREE):
            return False
        self._reclaiming.discard(ev.address)
        if ev.reject_reason is not None:
            self.stats.updates_rejected_by_partner += 1
            return True  # the secondary leased it meanwhile: its BNDUPD tells us
        self.stats.updates_acked += 1
        lease = self.engine.table.get_ip(ev.address)
        if lease is not None and lease.state is BindingState.BACKUP:
            new = lease.copy()
            new.state = BindingState.FREE
            self._changed.append(self.engine.apply(new, now))
            self.stats.moved_to_free += 1
        return True


def _unacked(lease: Lease) -> bool:
    """UPDREQ (not ALL): a binding the partner has not acknowledged (draft-12 §7.8)."""
    return _pet_unacknowledged(lease) or (lease.state is _ACTIVE and lease.tstp == 0)


_BINDING_STATUS: dict[int, BindingStatus] = {int(s): s for s in BindingStatus}


def _pet_unacknowledged(lease: Lease) -> bool:
    """The PET we sent (tstp) is above what the partner acknowledged or sent (tsfp). PETs
    travel in whole seconds (rounded down): a fractional tstp is acknowledged by its floor."""
    return math.floor(lease.tstp) > lease.tsfp


def _pool_addresses(config: Config) -> PoolAddresses:
    """Every dynamic pool address of the relationship's subnets -> its subnet id (pools minus
    exclusions and reserved addresses, as the engine allocates them), as ranges: no object
    per address (bench/scale.py, docs/performance.md)."""
    spans: list[tuple[int, int, int]] = []
    for i in failover_subnets(config):
        sn = config.subnets[i]
        sid = subnet_id(config, i)
        holes = [(int(ex.start), int(ex.end)) for ex in sn.exclusions]
        holes += [(int(r.ip_address), int(r.ip_address)) for r in sn.reservations]
        for pool in sn.pools:
            for lo, hi in subtract_ranges([(int(pool.start), int(pool.end))], holes):
                spans.append((lo, hi, sid))
    return PoolAddresses(spans)
