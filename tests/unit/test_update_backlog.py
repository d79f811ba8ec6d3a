"""The binding-update backlog while the partner is away is bounded: 100,000 lease changes on a
primary in COMMUNICATIONS-INTERRUPTED (the reference configuration, 100 pool addresses) keep
the RAM-held update queue at one entry per address, and what the partner has not acknowledged
is recorded in the store (each lease's sent-but-unacknowledged PET: tstp > tsfp), so a restart
that loses the RAM queue still knows what to send: it queues those bindings again at start-up
(one per address, still bounded by the pool), and answers UPDREQ from the lease table."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

from _configs import previous_on_startup_timeout

from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import EVENT_HISTORY, META_STATE_KEY, FailoverPeer
from tandem.leases.model import BindingState
from tandem.sim import MemoryStore, build_engine
from tandem.wire.dhcp import DhcpMessage, MessageType
from tandem.wire.failover import ServerState

T0 = 1_700_000_000.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVER = IPv4Address("192.0.2.2")
CLIENTS = 100  # = the pool size of the reference configuration


def _peer(store: MemoryStore, now: float) -> tuple[FailoverPeer, Engine]:
    cfg = previous_on_startup_timeout(EXAMPLES / "hot-standby-primary.toml")
    engines: list[Engine] = []

    def make_engine(policy: HotStandbyPolicy) -> Engine:
        engines.append(build_engine(cfg, policy, store, now))
        return engines[-1]

    peer = FailoverPeer(cfg, store, now, make_engine)
    return peer, engines[0]


def _msg(mt: MessageType, n: int, **kw: object) -> DhcpMessage:
    opts: dict[int, bytes] = {53: bytes((mt,))}
    req = kw.pop("requested", None)
    if isinstance(req, IPv4Address):
        opts[50] = req.packed
        opts[54] = SERVER.packed
    hw = bytes((2, 0, 0, 0, n >> 8, n & 0xFF))
    return DhcpMessage(chaddr=hw + bytes(10), options=opts, **kw)  # type: ignore[arg-type]


def test_100k_changes_while_disconnected_keep_the_ram_queue_bounded() -> None:
    store = MemoryStore()
    # a pair that was in NORMAL: after the startup wait without the partner, COMM-INTERRUPTED
    store.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.NORMAL),
                                               "since": T0 - 10_000}))
    peer, engine = _peer(store, T0)
    now = T0 + 20
    peer.handle_timer(now)
    assert peer.state is ServerState.COMMUNICATIONS_INTERRUPTED and peer.conn is None
    bcast = RxInfo(src_ip=IPv4Address("0.0.0.0"), src_port=68, interface="e", local_ip=SERVER)
    addr: dict[int, IPv4Address] = {}
    changes = 0
    most_queued = 0

    def step(changed: list[object]) -> None:
        nonlocal changes, most_queued
        more = peer.take_changed()  # turns the engine's changes into queued BNDUPDs
        leases = [*changed, *more]
        store.commit(leases)  # type: ignore[arg-type]
        changes += len(changed)
        most_queued = max(most_queued, peer.updates.pending_count + peer.updates.in_flight_count)
        assert peer.policy.outbound == []  # nothing piles up in the policy either

    for n in range(CLIENTS):
        off = engine.handle(_msg(MessageType.DISCOVER, n), bcast, now)
        a = off.replies[0].msg.yiaddr
        ack = engine.handle(_msg(MessageType.REQUEST, n, requested=a), bcast, now)
        assert ack.replies[0].msg.message_type is MessageType.ACK
        addr[n] = a
        step(list(ack.changed))
    rounds = 0
    while changes < 100_000:
        now += 1.0
        rounds += 1
        for n in range(CLIENTS):
            a = addr[n]
            rx = RxInfo(src_ip=a, src_port=68, interface="e", local_ip=SERVER, to_unicast=True)
            out = engine.handle(_msg(MessageType.REQUEST, n, ciaddr=a), rx, now)
            assert out.replies and out.replies[0].msg.message_type is MessageType.ACK
            step(list(out.changed))
    assert changes >= 100_000 and rounds >= 999
    assert peer.stats.updates_sent >= 100_000  # every change was queued for the partner...
    assert most_queued <= CLIENTS  # ...but the RAM queue never held more than one per address
    assert peer.updates.pending_count == CLIENTS
    assert len(peer.events) <= EVENT_HISTORY
    # what the partner has not acknowledged is marked in the store, lease by lease
    active = [le for le in store.leases.values() if le.state is BindingState.ACTIVE]
    assert len(active) == CLIENTS
    assert all(le.tstp > le.tsfp for le in active)

    # a restart loses the RAM queue; the marks in the store are what is left to send, and
    # the restarted peer queues exactly those again (docs/reliability.md)
    peer2, engine2 = _peer(store, now + 1)
    unacked = [le for le in engine2.table if le.tstp > le.tsfp]
    assert {le.address for le in unacked} == set(addr.values())
    assert peer2.stats.resent_after_restart == CLIENTS
    assert {u.address for u in peer2.updates.pending()} == set(addr.values())
