"""Interop findings against a real ISC dhcpd 4.4.3-P1 (tests/e2e/test_isc_interop.py),
each reproduced without dhcpd: what dhcpd puts on the wire, and what it needs from us.
docs/decisions.md ("ISC dhcpd interop") has the why of each."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

from _configs import previous_on_startup_timeout

from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.failover.bindings import ReceivedBinding, Role, resolve_update
from tandem.failover.events import BindingUpdateReceived
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import META_STATE_KEY, FailoverPeer
from tandem.failover.updates import BindingUpdate
from tandem.leases.model import BindingState, Lease
from tandem.sim import MemoryStore, build_engine
from tandem.wire.dhcp import DhcpMessage, MessageType
from tandem.wire.failover import (
    BindingStatus,
    FailoverMessage,
    HardwareAddress,
    ServerState,
    decode,
    encode,
)
from tandem.wire.failover import (
    MessageType as FoType,
)

T0 = 1_795_657_254.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVER = IPv4Address("192.0.2.2")
ADDR = IPv4Address("192.0.2.150")
MAC = bytes.fromhex("02005efa2101")


def test_isc_released_with_the_renewal_cltt_is_accepted() -> None:
    """Captured (isc-primary run): dhcpd renewed 192.0.2.150 at T0+15 (BNDUPD ACTIVE, CLTT
    T0+15), the client released at T0+16.3, and dhcpd's BNDUPD RELEASED still carried CLTT
    T0+15 (dhcpd does not refresh CLTT on DHCPRELEASE). Tandem (secondary) rejected it with
    reason 15 "ACTIVE x RELEASED: time1" and the release never reached its store."""
    renewal = ReceivedBinding(
        ADDR, BindingStatus.ACTIVE, cltt=T0 + 15, lease_end=T0 + 75, pet=T0 + 120,
        stos=T0 + 15, hwaddr=MAC,
    )  # fmt: skip
    held = resolve_update(
        Lease(ADDR, 1, BindingState.ACTIVE, hwaddr=MAC, cltt=T0, start=T0, end=T0 + 30),
        renewal,
        T0 + 15,
        role=Role.SECONDARY,
    )
    assert held.accept and held.lease is not None
    release = ReceivedBinding(
        ADDR, BindingStatus.RELEASED, cltt=T0 + 15, lease_end=T0 + 16, pet=T0 + 120,
        stos=T0 + 15, hwaddr=MAC,
    )  # fmt: skip
    d = resolve_update(held.lease, release, T0 + 16.3, role=Role.SECONDARY)
    assert d.accept, d.rule
    assert d.lease is not None and d.lease.state is BindingState.RELEASED


def _primary_with_one_lease() -> tuple[FailoverPeer, Engine, MemoryStore]:
    store = MemoryStore()
    state = {"state": int(ServerState.NORMAL), "since": T0 - 10_000}
    store.set_meta(META_STATE_KEY, json.dumps(state))
    cfg = previous_on_startup_timeout(EXAMPLES / "hot-standby-primary.toml")
    engines: list[Engine] = []

    def make_engine(policy: HotStandbyPolicy) -> Engine:
        engines.append(build_engine(cfg, policy, store, T0))
        return engines[-1]

    peer = FailoverPeer(cfg, store, T0, make_engine)
    return peer, engines[0], store


def test_bndupd_for_an_active_lease_carries_start_time_of_state() -> None:
    """dhcpd sets a lease's ``starts`` from start-time-of-state (25) only; without it the
    bindings Tandem sent showed no start in dhcpd's lease file. ISC sends it in every
    BNDUPD (its lease start); draft-12 says SHOULD."""
    peer, engine, store = _primary_with_one_lease()
    now = T0 + 20
    peer.handle_timer(now)  # startup wait over, no partner: COMMUNICATIONS-INTERRUPTED
    bcast = RxInfo(src_ip=IPv4Address("0.0.0.0"), src_port=68, interface="e", local_ip=SERVER)
    opts = {53: bytes((MessageType.DISCOVER,))}
    off = engine.handle(DhcpMessage(chaddr=MAC + bytes(10), options=opts), bcast, now)
    addr = off.replies[0].msg.yiaddr
    opts = {53: bytes((MessageType.REQUEST,)), 50: addr.packed, 54: SERVER.packed}
    ack = engine.handle(DhcpMessage(chaddr=MAC + bytes(10), options=opts), bcast, now + 0.4)
    assert ack.replies[0].msg.message_type is MessageType.ACK
    store.commit([*ack.changed, *peer.take_changed(), *peer.take_lazy()])  # type: ignore[list-item]
    queued = [u for u in peer.updates.pending() if u.address == addr]
    assert len(queued) == 1
    upd = queued[0]
    lease = engine.table.get_ip(addr)
    assert lease is not None and lease.state is BindingState.ACTIVE
    assert upd.binding_status == BindingStatus.ACTIVE
    assert upd.start_time_of_state == int(lease.start) == int(now + 0.4)
    assert upd.cltt == int(lease.cltt)
    # on the wire in ISC's option order: 2, 3, [4], 5, 13, 18, 25, 6
    wire = encode(FailoverMessage(FoType.BNDUPD, 7, int(now), options=upd.to_options()), "isc")
    codes = [o.code for o in decode(wire, "isc").options]
    assert codes == [2, 3, 5, 13, 18, 25, 6], codes


def test_received_expired_or_released_becomes_free() -> None:
    """Captured (isc-primary run, a client that vanished): dhcpd expired 192.0.2.150 and sent
    BNDUPD EXPIRED; Tandem (secondary) ACKed and kept the address EXPIRED. dhcpd set it FREE
    on our ACK and sent nothing more, so on Tandem the address stayed EXPIRED for good.
    draft-12 §5.2 and ISC: the receiver sets FREE (whatever its role; a primary here)."""
    peer, engine, _store = _primary_with_one_lease()
    peer.handle_timer(T0 + 20)
    for n, status in enumerate((BindingStatus.EXPIRED, BindingStatus.RELEASED)):
        addr = IPv4Address(int(IPv4Address("192.0.2.150")) + n)
        hw = MAC[:-1] + bytes((n,))
        active = BindingUpdate(
            addr, int(BindingStatus.ACTIVE), HardwareAddress(1, hw),
            lease_expiration=int(T0 + 50), potential_expiration=int(T0 + 95),
            start_time_of_state=int(T0 + 20), cltt=int(T0 + 20),
        )  # fmt: skip
        peer._on_binding_update(BindingUpdateReceived(1, active), T0 + 21)
        got = engine.table.get_ip(addr)
        assert got is not None and got.state is BindingState.ACTIVE
        gone = BindingUpdate(
            addr, int(status), HardwareAddress(1, hw), lease_expiration=int(T0 + 50),
            potential_expiration=int(T0 + 95), start_time_of_state=int(T0 + 20),
            cltt=int(T0 + 20),
        )  # fmt: skip
        peer._on_binding_update(BindingUpdateReceived(2, gone), T0 + 51)
        got = engine.table.get_ip(addr)
        assert got is not None and got.state is BindingState.FREE, (status, got.state)
        assert got.hwaddr == hw  # the last client stays known (reuse preference)
