"""UPDREQALL answered incrementally (bench/scale.py found the primary deaf for ~20 s with 1M
leases while it built every BNDUPD at once): a primary holding N=20,000 leases in
PARTNER-DOWN and a blank standby in RECOVER, wired back to back (bytes shuttled in virtual
time, every change committed before the bytes that follow it leave). The answer keeps at most
the partner's window of BNDUPDs outstanding and of update objects queued, the standby ends with
every binding, UPDDONE leaves only after the last BNDACK, and leases changed mid-sync (behind
and ahead of the cursor) reach the standby with their latest state."""

from __future__ import annotations

import dataclasses
import json
import math
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.config.validate import load_text
from tandem.dhcp.engine import Engine
from tandem.failover.connection import PeerConnection
from tandem.failover.events import BindingUpdateReceived
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import (
    META_STATE_KEY,
    SYNC_BATCH,
    SYNC_SCAN,
    FailoverPeer,
    connection_config,
)
from tandem.leases.model import BindingState, Lease
from tandem.leases.table import LeaseTable
from tandem.sim import MemoryStore, build_engine
from tandem.wire.failover import MessageType, ServerState, decode
from tandem.wire.framing import FrameBuffer

T0 = 1_700_000_000.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
N = 20_000
FIRST = int(IPv4Address("10.0.0.10"))
BULK = [IPv4Address(FIRST + i) for i in range(N)]
WINDOW = 100  # max_unacked_updates (the default) on both sides
BULK_SUBNET = f"""
[[subnets]]
id = 2
prefix = "10.0.0.0/16"
pools = [{{ start = "{BULK[0]}", end = "{BULK[-1]}" }}]
lease_time_s = 600
"""


class Side:
    def __init__(self, example: str, store: MemoryStore, now: float) -> None:
        self.cfg = load_text((EXAMPLES / example).read_text() + BULK_SUBNET)
        self.store = store
        engines: list[Engine] = []

        def make_engine(policy: HotStandbyPolicy) -> Engine:
            engines.append(build_engine(self.cfg, policy, store, now))
            return engines[-1]

        self.peer = FailoverPeer(self.cfg, store, now, make_engine)
        self.engine = engines[0]
        self.frames = FrameBuffer()

    def commit(self) -> None:
        self.store.commit(self.peer.take_changed())
        self.store.commit(self.peer.take_lazy())

    def out(self) -> tuple[bytes, list[int]]:
        """This step's bytes (after its commit) and the message types in them."""
        self.commit()
        data = self.peer.data_to_send()
        return data, [decode(f).msg_type for f in self.frames.feed(data)]


def _primary_store() -> MemoryStore:
    store = MemoryStore()
    store.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.PARTNER_DOWN),
                                               "since": T0 - 10_000}))
    store.commit(
        Lease(a, 2, BindingState.ACTIVE, hwaddr=b"\x02\x00" + a.packed, start=T0 - 100,
              end=T0 + 3600 + i % 7, cltt=T0 - 100)
        for i, a in enumerate(BULK)
    )
    return store


def _change(side: Side, address: IPv4Address, end: float, now: float,
            state: BindingState = BindingState.ACTIVE) -> None:
    """A client renews (or releases): the engine's record and the policy's change report
    (what Engine._changed does for a DHCP change)."""
    lease = side.engine.table.get_ip(address)
    assert lease is not None
    new = lease.copy()
    new.end, new.cltt, new.state = end, now, state
    snap = side.engine.apply(new, now)
    side.peer.policy.lease_changed(snap, now)


def test_updreqall_of_20k_leases_is_answered_within_the_window() -> None:
    now = T0
    p = Side("hot-standby-primary.toml", _primary_store(), now)
    now += 20  # past the startup wait
    p.peer.handle_timer(now)
    assert p.peer.state is ServerState.PARTNER_DOWN
    s = Side("hot-standby-standby.toml", MemoryStore(), now)
    s.peer.connection_made(now)
    p.peer.connection_made(now)
    outstanding = most_outstanding = most_queued = 0
    bndupds = bndacks = 0
    upddone_outstanding: int | None = None
    behind, ahead = BULK[10], BULK[-10]
    changed_at: int | None = None
    rounds = 0
    while rounds < 20_000:
        rounds += 1
        now += 0.001
        for side in (p, s):
            due = side.peer.get_timer()
            if due is not None and due <= now:
                side.peer.handle_timer(now)
        p_data, p_types = p.out()
        s_data, s_types = s.out()
        for t in p_types:
            if t == MessageType.BNDUPD:
                bndupds += 1
                outstanding += 1
            elif t == MessageType.UPDDONE:
                upddone_outstanding = outstanding
        most_outstanding = max(most_outstanding, outstanding)
        q = p.peer.updates
        most_queued = max(most_queued, q.pending_count + q.in_flight_count)
        if s_data:
            p.peer.receive_data(s_data, now)
            acks = s_types.count(MessageType.BNDACK)
            bndacks += acks
            outstanding -= acks
        if p_data:
            s.peer.receive_data(p_data, now)
        if changed_at is None and p.peer.stats.sync_updates_sent >= N // 4:
            changed_at = p.peer.stats.sync_updates_sent
            _change(p, behind, T0 + 7200, now)  # already sent by the cursor
            # not reached yet: renewed, then released (a stale copy would bring it back)
            _change(p, ahead, T0 + 5000, now)
            p.commit()
            _change(p, ahead, now, now, BindingState.RELEASED)
        if upddone_outstanding is not None and not p_data and not s_data:
            break
    s.commit()
    p.commit()

    assert changed_at is not None and changed_at < N - WINDOW  # the change came mid-sync
    assert upddone_outstanding == 0  # UPDDONE only after the BNDACK of every BNDUPD
    assert p.peer.stats.syncs_done == 1
    assert outstanding == 0 and bndacks == bndupds
    # each binding once, plus the mid-sync changes (the release: RELEASED, then FREE once
    # ACKed, and the cursor's current state) and the reserve moves of NORMAL
    assert N <= bndupds <= N + 4 + p.peer.stats.moved_to_backup
    # flow control: never more than the window outstanding, nor queued in RAM
    assert most_outstanding <= WINDOW
    assert most_queued <= WINDOW + 2 and p.peer.stats.sync_peak_queued <= WINDOW
    assert SYNC_BATCH >= WINDOW  # (so the window, not the batch cap, is what bounded it)
    # the standby left RECOVER on the UPDDONE and holds every binding, in its latest state
    assert s.peer.state is not ServerState.RECOVER
    held = s.store.leases
    for a in BULK:
        mine = p.engine.table.get_ip(a)
        theirs = held.get(a)
        assert mine is not None and theirs is not None, a
        assert theirs.state is mine.state, a
        if a != ahead:
            assert theirs.state is BindingState.ACTIVE and theirs.hwaddr == mine.hwaddr, a
            assert theirs.end == math.ceil(mine.end), a
    assert held[behind].end == T0 + 7200
    assert p.engine.table.get_ip(ahead).state is BindingState.FREE  # type: ignore[union-attr]
    assert held[ahead].state is BindingState.FREE


def test_updreq_sends_only_unacknowledged_bindings_then_upddone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """UPDREQ (not ALL): the cursor skips bindings the partner acknowledged (tsfp = tstp)
    and walks the whole pool in bounded steps (scan budget, resumed from a timer). The
    standby here is a bare PeerConnection, so this UPDREQ is the only request."""
    now = T0
    store = _primary_store()
    unacked = set(BULK[::1000])
    for a in BULK:
        lease = store.leases[a]
        lease.tstp = lease.end
        lease.tsfp = lease.end - (10 if a in unacked else 0)
    p = Side("hot-standby-primary.toml", store, now)
    now += 20
    p.peer.handle_timer(now)
    s_cfg = load_text((EXAMPLES / "hot-standby-standby.toml").read_text() + BULK_SUBNET)
    s = PeerConnection(connection_config(s_cfg), now)
    s.initiate(now)
    s.send_state(ServerState.RECOVER, int(now), now)
    p.peer.connection_made(now)
    sent: set[IPv4Address] = set()
    table = p.engine.table
    real_get = LeaseTable.get_ip
    looked = [0]

    def counting_get(self: LeaseTable, address: IPv4Address) -> Lease | None:
        if self is table:
            looked[0] += 1
        return real_get(self, address)

    monkeypatch.setattr(LeaseTable, "get_ip", counting_get)
    most_looked = 0  # table look-ups in one peer step (handle_timer or receive_data)
    done = asked = False
    for _ in range(3000):
        now += 0.001
        due = p.peer.get_timer()
        if due is not None and due <= now:
            looked[0] = 0
            p.peer.handle_timer(now)
            most_looked = max(most_looked, looked[0])
        if not asked and s.established:
            s.request_updates(False, now)
            asked = True
        p_data, p_types = p.out()
        done = done or MessageType.UPDDONE in p_types
        for ev in s.receive_data(p_data, now) if p_data else []:
            if isinstance(ev, BindingUpdateReceived):
                sent.add(ev.update.address)
                s.ack_binding_update(ev.xid, address=ev.update.address, now=now)
        s_data = s.data_to_send()
        if s_data:
            looked[0] = 0
            p.peer.receive_data(s_data, now)
            most_looked = max(most_looked, looked[0])
        if done and not p_data and not s_data:
            break
    assert asked and done and p.peer.stats.syncs_done == 1
    assert sent == unacked
    # the pool walk was spread over steps of at most SYNC_SCAN addresses each
    assert SYNC_SCAN < N and 0 < most_looked <= SYNC_SCAN + 2 * WINDOW


def test_the_cursor_does_not_echo_what_the_partner_sent_during_the_sync() -> None:
    """ISC dhcpd rejects (reason 16) a BNDUPD for an address whose own update to us is still
    in flight; our cursor read such addresses in the state the partner had just sent (seen in
    tests/e2e/test_isc_interop.py: ISC's pool-balance BACKUP moves echoed back during the
    answer to its UPDREQALL). A binding the partner sent and we stored as sent is not sent
    back; everything else still is."""
    now = T0
    store = _primary_store()
    p = Side("hot-standby-primary.toml", store, now)
    now += 20
    p.peer.handle_timer(now)
    s_cfg = load_text((EXAMPLES / "hot-standby-standby.toml").read_text() + BULK_SUBNET)
    s = PeerConnection(connection_config(s_cfg), now)
    s.initiate(now)
    s.send_state(ServerState.RECOVER, int(now), now)
    p.peer.connection_made(now)
    theirs = BULK[-5]  # far ahead of the cursor when the partner's update arrives
    sent: list[IPv4Address] = []
    done = asked = pushed = False
    for _ in range(5000):
        now += 0.001
        due = p.peer.get_timer()
        if due is not None and due <= now:
            p.peer.handle_timer(now)
        if not asked and s.established:
            s.request_updates(True, now)
            asked = True
        p_data, p_types = p.out()
        done = done or MessageType.UPDDONE in p_types
        for ev in s.receive_data(p_data, now) if p_data else []:
            if isinstance(ev, BindingUpdateReceived):
                sent.append(ev.update.address)
                s.ack_binding_update(ev.xid, address=ev.update.address, now=now)
        if not pushed and len(sent) >= WINDOW:
            # the partner's own change of that binding (a renewal it granted), mid-sync
            mine = p.engine.table.get_ip(theirs)
            assert mine is not None
            upd = dataclasses.replace(
                p.peer._update_of(mine, None),
                lease_expiration=int(T0 + 9000),
                potential_expiration=int(T0 + 9000),
                cltt=int(now),
            )
            s.queue_binding_update(upd, now)
            pushed = True
        s_data = s.data_to_send()
        if s_data:
            p.peer.receive_data(s_data, now)
        if done and not p_data and not s_data:
            break
    assert asked and pushed and done
    stored = p.engine.table.get_ip(theirs)
    assert stored is not None and stored.end == T0 + 9000  # accepted as sent
    assert theirs not in sent  # ... and not echoed back by the cursor
    assert set(sent) == set(BULK) - {theirs}  # every other binding was sent once
    assert len(sent) == len(set(sent))
