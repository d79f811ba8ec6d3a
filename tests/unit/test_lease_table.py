"""LeaseTable indexes and AddressPool (compact free-address bookkeeping)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tandem.leases.model import BindingState, Lease
from tandem.leases.table import (
    AddressPool,
    LeaseTable,
    client_key,
    copy_lease,
    lease_key,
    merge_ranges,
    subtract_ranges,
)

BASE = int(IPv4Address("192.0.2.0"))


def _lease(last: int, hw: bytes = b"", cid: bytes | None = None) -> Lease:
    return Lease(IPv4Address(BASE + last), 1, BindingState.ACTIVE, hwaddr=hw, client_id=cid)


@pytest.mark.parametrize(
    ("cid", "htype", "hw", "expected"),
    [
        (b"\x01abc", 1, b"\x02" * 6, b"C\x01abc"),  # client id wins over hardware address
        (None, 1, b"\x02" * 6, b"H\x01" + b"\x02" * 6),
        (None, 6, b"\x02" * 6, b"H\x06" + b"\x02" * 6),  # the hardware type is part of it
        (b"", 1, b"\x02" * 6, b"H\x01" + b"\x02" * 6),  # empty client id = none
        (None, 1, b"", None),
    ],
)
def test_client_key(cid: bytes | None, htype: int, hw: bytes, expected: bytes | None) -> None:
    assert client_key(cid, htype, hw) == expected


def test_client_id_and_hwaddr_keys_never_collide() -> None:
    assert client_key(b"\x01" + b"\x02" * 6, 1, b"") != client_key(None, 1, b"\x02" * 6)


def test_table_indexes_by_address_and_client_and_follows_changes() -> None:
    t = LeaseTable()
    a = _lease(10, hw=b"\xaa" * 6)
    t.put(a)
    ka = client_key(None, 1, b"\xaa" * 6)
    assert ka is not None
    assert t.get(BASE + 10) is a
    assert t.for_client(ka) == [a]
    # the client association changes: the index follows
    a.hwaddr = b"\xbb" * 6
    t.put(a)
    kb = client_key(None, 1, b"\xbb" * 6)
    assert kb is not None
    assert t.for_client(ka) == []
    assert t.for_client(kb) == [a]
    assert t.key_of(BASE + 10) == kb
    # association cleared (declined): no longer indexed
    a.hwaddr = b""
    t.put(a)
    assert t.for_client(kb) == []
    assert t.key_of(BASE + 10) is None
    assert len(t) == 1


def test_table_replacing_object_for_same_address_unindexes_old() -> None:
    t = LeaseTable()
    old = _lease(10, hw=b"\xaa" * 6)
    t.put(old)
    new = _lease(10, cid=b"\x01xyz")
    t.put(new)
    assert t.get(BASE + 10) is new
    assert t.for_client(client_key(None, 1, b"\xaa" * 6) or b"") == []
    assert t.for_client(b"C\x01xyz") == [new]


def test_table_one_client_many_leases_and_remove() -> None:
    t = LeaseTable()
    x, y = _lease(10, hw=b"\xaa" * 6), _lease(11, hw=b"\xaa" * 6)
    t.put(x)
    t.put(y)
    key = lease_key(x)
    assert key is not None
    assert t.for_client(key) == [x, y]
    assert t.remove(BASE + 10) is x
    assert t.for_client(key) == [y]
    assert t.get(BASE + 10) is None
    assert [le.address for le in t] == [y.address]


def test_copy_lease_is_independent_and_equal() -> None:
    a = _lease(10, hw=b"\xaa" * 6)
    a.relay_info = b"\x01\x02ab"
    a.tstp, a.tsfp = 5.0, 6.0
    c = copy_lease(a)
    assert c == a and c is not a
    c.state = BindingState.EXPIRED
    assert a.state is BindingState.ACTIVE


@pytest.mark.parametrize(
    ("ranges", "holes", "expected"),
    [
        ([(1, 10)], [], [(1, 10)]),
        ([(1, 10)], [(3, 4)], [(1, 2), (5, 10)]),
        ([(1, 10)], [(1, 10)], []),
        ([(1, 10)], [(0, 1), (10, 12)], [(2, 9)]),
        ([(1, 5), (4, 10)], [(6, 6)], [(1, 5), (7, 10)]),
        ([(1, 10), (20, 30)], [(5, 25)], [(1, 4), (26, 30)]),
    ],
)
def test_subtract_ranges(
    ranges: list[tuple[int, int]], holes: list[tuple[int, int]], expected: list[tuple[int, int]]
) -> None:
    assert subtract_ranges(ranges, holes) == expected


def test_merge_ranges() -> None:
    assert merge_ranges([(5, 9), (1, 3), (4, 4), (20, 19)]) == [(1, 9)]


def test_pool_cursor_walks_ranges_once_and_contains() -> None:
    p = AddressPool([(10, 12), (20, 21)])
    assert p.size == 5
    assert p.contains(10) and p.contains(12) and p.contains(21)
    assert not p.contains(9) and not p.contains(13) and not p.contains(22)
    assert not p.passed(11)
    got = [p.next_fresh() for _ in range(6)]
    assert got == [10, 11, 12, 20, 21, None]
    assert p.passed(11) and p.unvisited() == 0


def test_pool_queues_are_fifo_and_exclusive() -> None:
    p = AddressPool([(10, 20)])
    p.push_free(15)
    p.push_free(12)
    p.push_reusable(13)
    p.push_reusable(12)  # moves 12 from free to reusable
    assert p.queued() == (1, 2)
    p.discard(13)
    assert p.pop_free() == 15
    assert p.pop_free() is None
    assert p.pop_reusable() == 12
    assert p.pop_reusable() is None


def test_pool_for_a_slash_16_is_built_lazily() -> None:
    lo = int(IPv4Address("198.18.0.1"))
    p = AddressPool([(lo, lo + 65533)])
    assert p.size == 65534
    assert p.unvisited() == 65534
    assert p.next_fresh() == lo


def test_empty_pool() -> None:
    p = AddressPool([])
    assert p.size == 0 and p.next_fresh() is None and not p.contains(1) and p.passed(1)
