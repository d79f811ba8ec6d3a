"""UpdateQueue (max-unacked flow control) and BindingUpdate <-> option groups."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tandem.failover.updates import BindingUpdate, UpdateQueue
from tandem.wire.failover import (
    BindingStatus,
    Ddns,
    FailoverMessage,
    HardwareAddress,
    MessageType,
    Option,
    OptionCode,
    decode,
    encode,
)

T = 1_700_000_000


def upd(n: int, status: int = BindingStatus.ACTIVE, end: int = T + 3600) -> BindingUpdate:
    return BindingUpdate(
        address=IPv4Address(f"192.0.2.{n}"),
        binding_status=status,
        hwaddr=HardwareAddress(1, bytes([0, 0x11, 0x22, 0x33, 0x44, n])),
        lease_expiration=end,
        potential_expiration=end + 1800,
        start_time_of_state=T,
        cltt=T,
    )


def addr(n: int) -> IPv4Address:
    return IPv4Address(f"192.0.2.{n}")


def test_nothing_leaves_while_the_window_is_zero() -> None:
    q = UpdateQueue()
    q.push(upd(1))
    assert not q.can_send
    assert q.pop_next(1) is None
    assert q.pending_count == 1 and q.in_flight_count == 0


def test_window_fills_acks_free_it_and_order_is_kept() -> None:
    q = UpdateQueue(window=3)
    for n in range(1, 8):
        q.push(upd(n))
    sent = []
    xid = 100
    while (u := q.pop_next(xid)) is not None:
        sent.append((xid, u.address))
        xid += 1
    assert [a for _, a in sent] == [addr(1), addr(2), addr(3)]
    assert q.in_flight_count == 3 and q.pending_count == 4
    # An ACK out of order frees exactly one slot; the next pending one goes next.
    assert q.ack(101) == upd(2)
    assert q.pop_next(200) == upd(4)
    assert q.pop_next(201) is None
    assert q.ack(999) is None  # unknown xid: no effect
    assert q.in_flight_count == 3
    for x in (100, 102, 200):
        q.ack(x)
    rest = [q.pop_next(300 + i) for i in range(3)]
    assert [u.address for u in rest if u] == [addr(5), addr(6), addr(7)]


def test_pending_update_for_same_address_is_replaced_in_place() -> None:
    q = UpdateQueue(window=10)
    s1 = q.push(upd(1))
    q.push(upd(2))
    s1b = q.push(upd(1, BindingStatus.RELEASED))
    assert s1b == s1
    assert [u.binding_status for u in q.pending()] == [BindingStatus.RELEASED, BindingStatus.ACTIVE]
    assert q.pending_count == 2


def test_in_flight_address_is_queued_again_behind() -> None:
    q = UpdateQueue(window=10)
    q.push(upd(1))
    assert q.pop_next(1) == upd(1)
    q.push(upd(1, BindingStatus.EXPIRED))
    assert q.pending_count == 1 and q.in_flight_count == 1
    assert q.pop_next(2) == upd(1, BindingStatus.EXPIRED)


def test_is_in_flight_follows_sends_acks_and_requeues() -> None:
    """Per address, counted: two updates of one address in flight need both BNDACKs."""
    q = UpdateQueue(window=10)
    q.push(upd(1))
    q.push(upd(2))
    assert not q.is_in_flight(addr(1))  # pending is not in flight
    q.pop_next(1)
    q.push(upd(1, BindingStatus.EXPIRED))
    q.pop_next(2)  # addr(2)
    q.pop_next(3)  # addr(1) again
    assert q.is_in_flight(addr(1)) and q.is_in_flight(addr(2))
    q.ack(1)
    assert q.is_in_flight(addr(1))  # the second one still flies
    q.ack(3)
    assert not q.is_in_flight(addr(1)) and q.is_in_flight(addr(2))
    q.ack(999)
    q.requeue_in_flight()
    assert not q.is_in_flight(addr(2)) and q.is_pending(addr(2))


def test_requeue_puts_unacked_back_at_the_head_in_send_order() -> None:
    q = UpdateQueue(window=2)
    for n in (1, 2, 3, 4):
        q.push(upd(n))
    q.pop_next(10)
    q.pop_next(11)
    assert q.requeue_in_flight() == 2
    assert [u.address for u in q.pending()] == [addr(1), addr(2), addr(3), addr(4)]
    assert q.in_flight_count == 0


def test_requeue_drops_a_stale_copy_superseded_by_a_newer_pending_one() -> None:
    q = UpdateQueue(window=2)
    q.push(upd(1))
    q.push(upd(2))
    q.pop_next(10)
    q.push(upd(1, BindingStatus.RELEASED))  # newer binding for the in-flight address
    assert q.requeue_in_flight() == 0
    assert list(q.pending()) == [upd(2), upd(1, BindingStatus.RELEASED)]


def test_duplicate_xid_is_a_programming_error() -> None:
    q = UpdateQueue(window=2)
    q.push(upd(1))
    q.push(upd(2))
    q.pop_next(5)
    with pytest.raises(ValueError):
        q.pop_next(5)


def test_barrier_settles_when_everything_before_it_is_acked() -> None:
    q = UpdateQueue(window=1)
    assert q.barrier() == 0 and q.settled(0)
    q.push(upd(1))
    q.push(upd(2))
    b = q.barrier()
    assert not q.settled(b)
    q.pop_next(1)
    q.ack(1)
    assert not q.settled(b)  # 2 still pending
    q.pop_next(2)
    q.push(upd(3))  # queued after the barrier: does not hold it back
    assert not q.settled(b)
    q.ack(2)
    assert q.settled(b)
    assert not q.settled(q.barrier())


def test_binding_update_round_trips_through_an_option_group() -> None:
    u = BindingUpdate(
        address=addr(10),
        binding_status=BindingStatus.ACTIVE,
        hwaddr=HardwareAddress(1, bytes.fromhex("001122334455")),
        client_id=b"\x01\x00\x11\x22\x33\x44\x55",
        lease_expiration=T + 3600,
        potential_expiration=T + 5400,
        start_time_of_state=T,
        cltt=T,
        ip_flags=0x0002,
        extra=(Option(OptionCode.DDNS, Ddns(0x0001, b"\x03foo\x00")),),
    )
    msg = FailoverMessage(MessageType.BNDUPD, 7, T, u.to_options())
    back = decode(encode(msg, "isc"), "isc")
    _, groups = back.address_groups()
    assert len(groups) == 1
    again = BindingUpdate.from_group(groups[0])
    assert again.address == u.address and again.binding_status == u.binding_status
    assert again.hwaddr == u.hwaddr and again.client_id == u.client_id
    assert (again.lease_expiration, again.potential_expiration, again.cltt) == (
        T + 3600,
        T + 5400,
        T,
    )
    assert again.ip_flags == 2 and again.start_time_of_state == T
    assert [c for c, _ in again.extra] == [OptionCode.DDNS]


def test_isc_option_order_matches_what_isc_sends() -> None:
    codes = [c for c, _ in upd(3).to_options()]
    assert codes == [2, 3, 5, 13, 18, 25, 6]


def test_group_without_binding_status_is_refused() -> None:
    with pytest.raises(ValueError, match="binding-status"):
        BindingUpdate.from_group([Option(OptionCode.ASSIGNED_IP_ADDRESS, addr(1))])
    with pytest.raises(ValueError, match="assigned-IP"):
        BindingUpdate.from_group([Option(OptionCode.BINDING_STATUS, 2)])
