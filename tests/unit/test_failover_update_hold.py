"""Binding updates wait for the commit of their lease change (ISC writes the lease first).

The DST found it (seeds 2107, 789): the BNDUPD of a lease whose store commit failed reached
the standby; the primary crashed, forgot the lease and gave the address to another client
while the standby served the first one. The service holds the addresses the DHCP engine
changed (UpdateQueue.hold, FailoverPeer.hold_updates) and releases them once the commit
holding the change has completed; held updates keep their latest state and leave then.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

from tandem.config.validate import load_text
from tandem.dhcp.engine import Engine
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import META_STATE_KEY, FailoverPeer
from tandem.failover.updates import BindingUpdate, UpdateQueue
from tandem.leases.model import BindingState, Lease
from tandem.sim import MemoryStore, build_engine
from tandem.wire.failover import (
    BindingStatus,
    FailoverMessage,
    HardwareAddress,
    MessageType,
    ServerState,
    decode,
)
from tandem.wire.framing import FrameBuffer

T0 = 1_700_000_000.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def upd(n: int, end: int = int(T0) + 3600) -> BindingUpdate:
    return BindingUpdate(
        address=IPv4Address(f"192.0.2.{n}"),
        binding_status=BindingStatus.ACTIVE,
        hwaddr=HardwareAddress(1, bytes([0, 0x11, 0x22, 0x33, 0x44, n])),
        lease_expiration=end,
        potential_expiration=end + 1800,
        start_time_of_state=int(T0),
        cltt=int(T0),
    )


def addr(n: int) -> IPv4Address:
    return IPv4Address(f"192.0.2.{n}")


def drain(q: UpdateQueue, xid: int = 100) -> list[BindingUpdate]:
    out = []
    while (u := q.pop_next(xid)) is not None:
        out.append(u)
        xid += 1
    return out


# -- the queue ---------------------------------------------------------------------------


def test_held_update_is_skipped_and_leaves_with_its_latest_state_when_released() -> None:
    q = UpdateQueue(window=10)
    q.hold([addr(2)])
    for n in (1, 2, 3):
        q.push(upd(n))
    q.push(upd(2, end=int(T0) + 9999))  # changed again while held: replaced in place
    assert [u.address for u in drain(q)] == [addr(1), addr(3)]
    assert not q.can_send and q.pending_count == 1 and q.is_pending(addr(2))
    assert q.release([addr(2), addr(7)]) == 1  # 7 was never held: ignored
    sent = drain(q, 200)
    assert [(u.address, u.lease_expiration) for u in sent] == [(addr(2), int(T0) + 9999)]
    assert q.held_count == 0 and q.pending_count == 0


def test_holding_an_already_pending_update_stops_it_and_release_keeps_queue_order() -> None:
    q = UpdateQueue(window=10)
    for n in (1, 2, 3, 4):
        q.push(upd(n))
    q.hold([addr(1), addr(3)])
    assert [u.address for u in drain(q)] == [addr(2), addr(4)]
    q.release([addr(3), addr(1)])
    assert [u.address for u in drain(q, 300)] == [addr(1), addr(3)]


def test_held_update_blocks_the_upddone_barrier_until_it_is_sent_and_acked() -> None:
    q = UpdateQueue(window=10)
    q.hold([addr(1)])
    q.push(upd(1))
    q.push(upd(2))
    barrier = q.barrier()
    (sent,) = drain(q)
    q.ack(100)
    assert sent.address == addr(2)
    assert not q.settled(barrier)  # the held one was queued before the barrier
    q.release([addr(1)])
    assert [u.address for u in drain(q, 101)] == [addr(1)]
    q.ack(101)
    assert q.settled(barrier)


def test_requeued_in_flight_update_of_a_held_address_stays_held() -> None:
    q = UpdateQueue(window=10)
    q.push(upd(1))
    q.push(upd(2))
    assert len(drain(q)) == 2
    q.hold([addr(1)])  # changed again, not durable yet; then the link drops
    assert q.requeue_in_flight() == 2
    assert [u.address for u in drain(q, 200)] == [addr(2)]
    q.release([addr(1)])
    assert [u.address for u in drain(q, 300)] == [addr(1)]


# -- the peer, back to back with its partner ----------------------------------------------


class Side:
    def __init__(self, example: str, store: MemoryStore, now: float) -> None:
        self.cfg = load_text((EXAMPLES / example).read_text())
        self.store = store
        engines: list[Engine] = []

        def make_engine(policy: HotStandbyPolicy) -> Engine:
            engines.append(build_engine(self.cfg, policy, store, now))
            return engines[-1]

        self.peer = FailoverPeer(self.cfg, store, now, make_engine)
        self.engine = engines[0]
        self.frames = FrameBuffer()

    def out(self) -> tuple[bytes, list[FailoverMessage]]:
        """This step's bytes (the peer's own changes committed first) and their messages."""
        self.store.commit(self.peer.take_changed())
        self.store.commit(self.peer.take_lazy())
        data = self.peer.data_to_send()
        return data, [decode(f) for f in self.frames.feed(data)]


LEASED = IPv4Address("192.0.2.150")
MAC = b"\x02\x00\x00\x00\x00\x99"


def _primary_store() -> MemoryStore:
    store = MemoryStore()
    store.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.PARTNER_DOWN),
                                               "since": T0 - 10_000}))
    store.commit([Lease(LEASED, 1, BindingState.ACTIVE, hwaddr=MAC, start=T0 - 100,
                        end=T0 + 600, cltt=T0 - 100)])
    return store


def _bndupd_ends(msgs: list[FailoverMessage]) -> list[int | None]:
    """lease-expiration of every BNDUPD group for LEASED in ``msgs``."""
    ends: list[int | None] = []
    for m in msgs:
        if m.msg_type == MessageType.BNDUPD:
            u = BindingUpdate.from_group(m.options)
            if u.address == LEASED:
                ends.append(u.lease_expiration)
    return ends


def _renew(p: Side, end: float, now: float) -> None:
    """A client renews LEASED on the primary: the engine's record and the policy's change
    report (what Engine does for a DHCP change)."""
    lease = p.engine.table.get_ip(LEASED)
    assert lease is not None
    new = lease.copy()
    new.end, new.cltt = end, now
    p.peer.policy.lease_changed(p.engine.apply(new, now), now)


def _run(p: Side, s: Side, now: float, seconds: float) -> tuple[float, list[int | None]]:
    """Shuttle bytes and fire timers for ``seconds`` of virtual time; the BNDUPD ends for
    LEASED the primary sent meanwhile."""
    ends: list[int | None] = []
    end = now + seconds
    while now < end:
        now += 0.01
        for side in (p, s):
            due = side.peer.get_timer()
            if due is not None and due <= now:
                side.peer.handle_timer(now)
        p_data, p_msgs = p.out()
        s_data, _ = s.out()
        ends += _bndupd_ends(p_msgs)
        if s_data:
            p.peer.receive_data(s_data, now)
        if p_data:
            s.peer.receive_data(p_data, now)
    return now, ends


def test_peer_holds_the_bndupd_of_an_uncommitted_change_until_it_is_released() -> None:
    now = T0
    p = Side("hot-standby-primary.toml", _primary_store(), now)
    now += 20
    p.peer.handle_timer(now)
    s = Side("hot-standby-standby.toml", MemoryStore(), now)
    s.peer.connection_made(now)
    p.peer.connection_made(now)
    now, _ = _run(p, s, now, 60)
    assert p.peer.conn is not None and p.peer.conn.communications_ok
    assert s.store.leases[LEASED].state is BindingState.ACTIVE  # the sync carried it

    # A renewal whose commit has not completed (or failed): held, nothing leaves.
    p.peer.hold_updates([LEASED, IPv4Address("198.51.100.7")])  # (not ours: ignored)
    _renew(p, T0 + 2000, now)
    now, ends = _run(p, s, now, 5)
    assert ends == []
    assert p.peer.updates.is_pending(LEASED)
    # Renewed again (still not durable): the queue keeps only the latest state.
    _renew(p, T0 + 3000, now)
    now, ends = _run(p, s, now, 5)
    assert ends == []
    assert s.store.leases[LEASED].end == T0 + 600  # the standby still has the old binding

    # The commit completed: the update leaves, once, with the latest state.
    p.peer.release_updates([LEASED], now)
    now, ends = _run(p, s, now, 5)
    assert ends == [int(T0) + 3000]
    assert s.store.leases[LEASED].end == T0 + 3000
    assert p.peer.updates.held_count == 0
