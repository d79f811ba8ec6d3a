"""The compact structures behind bench/scale.py's memory and sync figures behave exactly as
the plain ones they replaced: the failover pool's range mapping (was a dict of one
``IPv4Address`` per pool address), the lease table's single-lease client entries (were
one-element lists), the fast ``IPv4Address`` maker, ``Lease.copy`` (was
``dataclasses.replace``), the store's row-by-row load sharing equal times, and the failover
wire's ipv4 encoder and batching check fast paths (same bytes, same verdicts)."""

from __future__ import annotations

import dataclasses
import os
import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.config.validate import load_text, subnet_id
from tandem.failover.peer import _pool_addresses
from tandem.leases.model import BindingState, Lease
from tandem.leases.table import LeaseTable, PoolAddresses, client_key
from tandem.store.sqlite import SqliteLeaseStore
from tandem.wire import failover as fw
from tandem.wire.addr import ipv4, ipv4_from_packed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXTRA = """
[[subnets]]
id = 7
prefix = "198.51.100.0/24"
pools = [{ start = "198.51.100.200", end = "198.51.100.220" },
         { start = "198.51.100.10", end = "198.51.100.30" }]
exclusions = [{ start = "198.51.100.12", end = "198.51.100.14" },
              { start = "198.51.100.215", end = "198.51.100.230" }]

[[subnets.reservations]]
hw_address = "02:00:00:00:00:01"
ip_address = "198.51.100.20"
"""


def _old_pool_dict(cfg_text: str) -> dict[IPv4Address, int]:
    """The dict the failover peer built before (one entry per pool address)."""
    from tandem.config.validate import failover_subnets

    config = load_text(cfg_text)
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


def test_pool_ranges_equal_the_per_address_dict() -> None:
    text = (EXAMPLES / "hot-standby-primary.toml").read_text() + EXTRA
    old = _old_pool_dict(text)
    new = _pool_addresses(load_text(text))
    assert len(old) == 100 + (21 - 3 - 1) + (220 - 200 + 1 - 6)  # holes: exclusions, reservation
    assert list(new) == list(old)  # same addresses, same order (config order, ascending)
    assert [IPv4Address(a) for a in new.ints()] == list(old)
    assert len(new) == len(old)
    for addr, sid in old.items():
        assert addr in new and new[addr] == sid and new.get(addr) == sid
    for missing in ("198.51.100.12", "198.51.100.20", "198.51.100.215", "192.0.2.99",
                    "192.0.2.200", "10.0.0.1"):
        a = IPv4Address(missing)
        assert a not in new and new.get(a) is None and new.get(a, -1) == -1
        with pytest.raises(KeyError):
            new[a]
    assert "192.0.2.100" not in new  # a string is not an address key (as in the dict)


def test_pool_ranges_overlapping_spans_keep_the_first() -> None:
    pool = PoolAddresses([(10, 20, 1), (15, 25, 2), (5, 12, 3)])
    assert list(pool.ints()) == [*range(10, 21), *range(21, 26), *range(5, 10)]
    assert pool.sid_of(15) == 1 and pool.sid_of(22) == 2 and pool.sid_of(5) == 3
    assert len(pool) == 21 and pool.sid_of(26) is None and pool.sid_of(4) is None


def test_fast_ipv4_is_an_ordinary_address() -> None:
    rng = random.Random(7)
    for a in [0, 1, 0xFFFFFFFF, *(rng.randrange(1 << 32) for _ in range(200))]:
        ref = IPv4Address(a)
        fast = ipv4(a)
        assert type(fast) is IPv4Address
        assert fast == ref and hash(fast) == hash(ref) and str(fast) == str(ref)
        assert fast.packed == ref.packed and int(fast) == a
        assert ipv4_from_packed(ref.packed) == ref
        assert {ref: 1}[fast] == 1


def test_table_client_entries_single_then_list_then_single() -> None:
    t = LeaseTable()
    hw = b"\xaa" * 6
    key = client_key(None, 1, hw)
    assert key is not None
    x = Lease(IPv4Address("192.0.2.10"), 1, BindingState.ACTIVE, hwaddr=hw)
    y = Lease(IPv4Address("192.0.2.11"), 1, BindingState.ACTIVE, hwaddr=hw)
    z = Lease(IPv4Address("192.0.2.12"), 1, BindingState.ACTIVE, hwaddr=hw)
    t.put(x)
    got = t.for_client(key)
    assert got == [x]
    got.append(y)  # the caller's list: the index does not change
    assert t.for_client(key) == [x]
    t.put(y)
    t.put(z)
    assert t.for_client(key) == [x, y, z]
    t.remove(int(y.address))
    assert t.for_client(key) == [x, z]
    x.hwaddr = b"\xbb" * 6  # changed in place, re-put: moves to the other client
    t.put(x)
    assert t.for_client(key) == [z]
    assert t.for_client(client_key(None, 1, b"\xbb" * 6) or b"") == [x]
    t.remove(int(z.address))
    assert t.for_client(key) == []
    t.put(z)
    assert t.for_client(key) == [z]


def test_lease_copy_equals_dataclasses_replace() -> None:
    lease = Lease(IPv4Address("192.0.2.10"), 3, BindingState.ABANDONED, b"\x01\x02", 6,
                  b"\x01cid", "host", 1.5, 2.5, 3.5, 4.5, 5.5, b"\x52\x01x")
    copy = lease.copy()
    assert copy == dataclasses.replace(lease) and copy is not lease
    for f in dataclasses.fields(Lease):  # every field, so a new field cannot be forgotten
        assert getattr(copy, f.name) == getattr(lease, f.name), f.name
    copy.state = BindingState.FREE
    assert lease.state is BindingState.ABANDONED


@pytest.mark.skipif(
    os.environ.get("TANDEM_EXPECT_COMPILED") == "1",
    reason="the compiled build's Lease stores its times as C doubles: no float objects to share",
)
def test_store_load_shares_equal_times_of_a_lease(tmp_path: Path) -> None:
    t = 1_700_000_000.25
    leases = [
        Lease(IPv4Address("192.0.2.10"), 1, BindingState.ACTIVE, b"\x02" * 6, start=t,
              end=t + 600, cltt=t, tstp=t + 600, tsfp=t + 600),
        Lease(IPv4Address("192.0.2.11"), 1, BindingState.ACTIVE, b"\x03" * 6, start=t,
              end=t + 600, cltt=t + 5, tstp=t + 900, tsfp=t + 600),
        Lease(IPv4Address("192.0.2.12"), 1, BindingState.ACTIVE, b"\x04" * 6, start=t,
              end=t + 600, cltt=t, tstp=t + 900, tsfp=t + 900),
    ]
    with SqliteLeaseStore(str(tmp_path / "s.db")) as store:
        store.commit(leases)
    with SqliteLeaseStore(str(tmp_path / "s.db")) as store:
        loaded = store.load()
    assert loaded == leases  # values unchanged
    a, b, c = loaded
    assert a.cltt is a.start and a.tstp is a.end and a.tsfp is a.end
    assert b.cltt is not b.start and b.tstp is not b.end and b.tsfp is b.end
    assert c.tsfp is c.tstp and c.tstp is not c.end


@pytest.mark.parametrize("value", [IPv4Address("192.0.2.1"), ipv4(0xC0000201), "192.0.2.1",
                                   0xC0000201])
def test_ipv4_option_encoding_is_unchanged(value: object) -> None:
    msg = fw.FailoverMessage(fw.MessageType.BNDACK, 5, 7)
    msg.add(fw.OptionCode.ASSIGNED_IP_ADDRESS, value)  # type: ignore[arg-type]
    data = fw.encode(msg)
    assert data[-4:] == bytes([192, 0, 2, 1])
    back = fw.decode(data)
    assert back.options == [(fw.OptionCode.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.1"))]
    assert type(back.options[0]) is fw.Option


@pytest.mark.parametrize("dialect", ["isc", "windows"])
def test_batch_check_fast_path_agrees(dialect: fw.Dialect) -> None:
    digest = fw.MessageDigest(2, bytes(32))
    ok = fw.FailoverMessage(fw.MessageType.BNDUPD, 1)
    ok.add(fw.OptionCode.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.1"))
    ok.add(fw.OptionCode.BINDING_STATUS, 2)
    assert fw.batch_violation(ok, dialect) is None
    ok.add(fw.OptionCode.MESSAGE_DIGEST, digest)
    assert fw.batch_violation(ok, dialect) is None
    early = fw.FailoverMessage(fw.MessageType.BNDUPD, 1)
    early.add(fw.OptionCode.MESSAGE_DIGEST, digest)
    early.add(fw.OptionCode.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.1"))
    expected = "message-digest must be the last option for ISC" if dialect == "isc" else None
    assert fw.batch_violation(early, dialect) == expected
    # a repeated option still takes the full check
    twice = fw.FailoverMessage(fw.MessageType.STATE, 1)
    twice.add(fw.OptionCode.SERVER_STATE, 1)
    twice.add(fw.OptionCode.SERVER_STATE, 1)
    assert fw.batch_violation(twice, dialect) == f"option {fw.OptionCode.SERVER_STATE} repeated"
