"""The failover peer: state machine + peer connection + hot-standby policy + bindings (sans-I/O).

:class:`FailoverPeer` ties the failover pieces together for one hot-standby relationship, in
the same shape as the engine: no socket, no clock; ``now`` (epoch seconds) is an argument,
:meth:`FailoverPeer.get_timer` / :meth:`FailoverPeer.handle_timer` drive time, bytes go in
through :meth:`FailoverPeer.receive_data` and out through :meth:`FailoverPeer.data_to_send`.

* **Connections.** One :class:`~tandem.failover.connection.PeerConnection` per TCP connection
  (:meth:`connection_made` / :meth:`connection_lost`); the primary sends CONNECT. The outbound
  :class:`~tandem.failover.updates.UpdateQueue` outlives connections (un-ACKed BNDUPDs are
  re-sent on the next one). When a connection ends by itself (tReceive expired, protocol
  breach, DISCONNECT) :meth:`close_requested` asks the transport to close the socket.
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
from collections.abc import Callable, Iterable
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
from tandem.failover.machine import FailoverMachine, LogRecord, Transition
from tandem.failover.states import Effect, Input, partner_input
from tandem.failover.updates import BindingUpdate, UpdateQueue
from tandem.leases.model import BindingState, Lease
from tandem.leases.table import LeaseTable
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
#: How often the primary in NORMAL checks the standby's reserve (besides entering NORMAL).
REBALANCE_INTERVAL_S = 60.0

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
    if fo is None:
        raise ValueError("no [failover] section")
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
    )


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
    connections: int = 0
    reject_rules: dict[str, int] = field(default_factory=dict)


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
        if fo is None:
            raise ValueError("FailoverPeer needs a [failover] section")
        if fo.mode != "hot-standby":
            raise ValueError(f"FailoverPeer implements hot-standby only, not {fo.mode}")
        self.config = config
        self.fo: FailoverSection = fo
        self.store = store
        self.role = Role(fo.role)
        self.conn_config = connection_config(config)
        self.updates = UpdateQueue()
        self.conn: PeerConnection | None = None
        self.stats = PeerStats()
        self.events: list[Event] = []  # every connection event, in order (diagnostics)
        self._changed: list[Lease] = []
        self._close_wanted = False
        self._next_rebalance: float | None = None
        self._pool = _pool_addresses(config)
        # The state we were in before the current one, counting states passed "via" (a
        # restart that goes STARTUP -> COMMUNICATIONS-INTERRUPTED -> NORMAL in one step came
        # from COMMUNICATIONS-INTERRUPTED: a recovery, hot-standby.md 4.2).
        self._previous: ServerState | None = None

        initial = _load_state(store)
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
            last_operation_at=last_op,
            storage_lost_at=storage_lost_at,
        )
        self.machine.start(now)

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

    def receive_data(self, data: bytes, now: float) -> None:
        conn = self.conn
        if conn is not None and data:
            self._handle_events(conn.receive_data(data, now), now)
        self._flush_policy(now)

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

    def get_timer(self) -> float | None:
        times = [self.m.get_timer(), self._next_rebalance]
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
            pet = max(lease.tstp, lease.end)
        return BindingUpdate(
            address=lease.address,
            binding_status=int(lease.state),
            hwaddr=HardwareAddress(lease.htype, lease.hwaddr) if has_client else None,
            client_id=lease.client_id if has_client else None,
            # Round the lease end up: the partner must never think a lease ends before the
            # client does; the PET is rounded down (the MCLT bound counts from it).
            lease_expiration=math.ceil(lease.end) if active or lease.end else None,
            potential_expiration=math.floor(pet) if pet is not None else None,
            cltt=int(lease.cltt) if lease.cltt else None,
        )

    def _on_binding_acked(self, ev: BindingAcked, now: float) -> None:
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
            self.policy.acknowledged(ev.address, float(pet))
            new.tsfp = max(new.tsfp, float(pet))
            new.tstp = max(new.tstp, float(pet))
        if lease.state in _GIVEN_UP and (upd.cltt or 0) == int(lease.cltt):
            # The partner knows the address is no longer bound: it is available again, to
            # whichever of us owns it (draft-12 §5.2: EXPIRED/RELEASED -> FREE on ACK).
            new.state = bindings.own_free_state(self.role)
            self._changed.append(self.engine.apply(new, now))
            self._queue(self._update_of(new, None), now)
            return
        if new.tsfp != lease.tsfp or new.tstp != lease.tstp:
            self._changed.append(self.engine.apply(new, now))

    # ------------------------------------------------------------------ bindings in

    def _on_binding_update(self, ev: BindingUpdateReceived, now: float) -> None:
        self.stats.updates_received += 1
        upd = ev.update
        conn = self.conn
        sid = self._pool.get(upd.address)
        try:
            status = BindingStatus(upd.binding_status)
        except ValueError:
            status = None
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
        if received.pet is not None:
            self.policy.received(upd.address, received.pet)
        self._changed.append(self.engine.apply(lease, now))
        if conn is not None:
            conn.ack_binding_update(ev.xid, address=upd.address, now=now)

    def _on_update_request(self, ev: UpdateRequestReceived, now: float) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        self._flush_policy(now)
        pending = {u.address for u in self.updates.pending()}
        pending.update(u.address for u in self.updates.in_flight().values())
        for lease in sorted(self.engine.table, key=lambda le: int(le.address)):
            if lease.address not in self._pool or lease.address in pending:
                continue
            unacked = lease.tstp > lease.tsfp or (lease.state is _ACTIVE and lease.tstp == 0)
            if ev.all or unacked:
                self._queue(self._update_of(lease, None), now)
        conn.send_update_done(ev.xid, now)

    # ------------------------------------------------------------------ reserve

    def reserve_counts(self) -> tuple[int, int]:
        """(FREE, BACKUP) addresses of the relationship's pools (no record counts FREE)."""
        free = backup = 0
        table = self.engine.table
        for addr in self._pool:
            lease = table.get_ip(addr)
            if lease is None or lease.state is BindingState.FREE:
                free += 1
            elif lease.state is BindingState.BACKUP:
                backup += 1
        return free, backup

    def _rebalance(self, now: float) -> int:
        """The primary in NORMAL tops the standby's reserve up (never takes it back: a
        BACKUP address may be leased by the standby without our knowledge yet)."""
        if not bindings.may_rebalance(self.role, self.m.state):
            return 0
        self._next_rebalance = now + REBALANCE_INTERVAL_S
        free, backup = self.reserve_counts()
        delta = bindings.rebalance_delta(free, backup, self.fo.reserve_percent)
        if delta <= 0:
            return 0
        table = self.engine.table
        candidates = [(a, table.get_ip(a)) for a in self._pool]
        chosen = bindings.choose_for_backup(candidates, delta)
        for addr in chosen:
            old = table.get_ip(addr)
            lease = old.copy() if old is not None else Lease(addr, self._pool[addr])
            lease.state = BindingState.BACKUP
            self._changed.append(self.engine.apply(lease, now))
            self._queue(self._update_of(lease, None), now)
        self.stats.moved_to_backup += len(chosen)
        return len(chosen)


def _pool_addresses(config: Config) -> dict[IPv4Address, int]:
    """Every dynamic pool address of the relationship's subnets -> its subnet id (pools minus
    exclusions and reserved addresses, as the engine allocates them)."""
    out: dict[IPv4Address, int] = {}
    for i in failover_subnets(config):
        sn = config.subnets[i]
        sid = subnet_id(config, i)
        excluded: set[int] = set()
        for ex in sn.exclusions:
            excluded.update(range(int(ex.start), int(ex.end) + 1))
        excluded.update(int(r.ip_address) for r in sn.reservations)
        for pool in sn.pools:
            for a in range(int(pool.start), int(pool.end) + 1):
                if a not in excluded:
                    out[IPv4Address(a)] = sid
    return out

