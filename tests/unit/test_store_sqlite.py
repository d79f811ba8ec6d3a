"""SqliteLeaseStore: round trip of every field, upsert, meta, one transaction per commit,
refusal of damaged or foreign files. (Crash and write-ahead-log damage: test_store_crash.py.)"""

from __future__ import annotations

import math
import os
import random
import sqlite3
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.config.schema import StoreSection
from tandem.errors import StoreError
from tandem.leases.model import BindingState, Lease
from tandem.store import open_store
from tandem.store.sqlite import SCHEMA_VERSION, SqliteLeaseStore, inspect_wal


def lease(n: int, **kw: object) -> Lease:
    base: dict[str, object] = dict(
        address=IPv4Address(0xC0000200 + n),  # 192.0.2.n
        subnet_id=1,
        state=BindingState.ACTIVE,
        hwaddr=bytes([0, 0x11, 0x22, 0x33, 0x44, n & 0xFF]),
        htype=1,
        client_id=b"\x01" + bytes(6),
        hostname=f"host-{n}",
        start=1.7e9,
        end=1.7e9 + 3600,
        cltt=1.7e9,
        tstp=1.7e9 + 1800,
        tsfp=1.7e9 + 900,
        relay_info=b"\x01\x04abcd",
    )
    base.update(kw)
    return Lease(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteLeaseStore]:
    s = SqliteLeaseStore(str(tmp_path / "leases.db"))
    yield s
    s.close()


def by_addr(leases: list[Lease]) -> dict[IPv4Address, Lease]:
    return {x.address: x for x in leases}


# -- round trip -----------------------------------------------------------------------------

times = st.floats(allow_nan=False)  # infinities and subnormals included
leases_st = st.builds(
    Lease,
    address=st.integers(0, 2**32 - 1).map(IPv4Address),
    subnet_id=st.integers(-(2**63), 2**63 - 1),
    state=st.sampled_from(BindingState),
    hwaddr=st.binary(max_size=64),
    htype=st.integers(0, 255),
    client_id=st.none() | st.binary(max_size=64),
    hostname=st.none() | st.text(max_size=64),
    start=times,
    end=times,
    cltt=times,
    tstp=times,
    tsfp=times,
    relay_info=st.none() | st.binary(max_size=300),
)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteLeaseStore]:
    s = SqliteLeaseStore(str(tmp_path_factory.mktemp("store") / "leases.db"))
    yield s
    s.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(leases_st, max_size=8))
def test_every_field_round_trips_and_latest_wins(
    shared_store: SqliteLeaseStore, batch: list[Lease]
) -> None:
    # Several examples share one store: each commit must replace what earlier ones wrote.
    shared_store.commit(batch)
    loaded = by_addr(shared_store.load())
    for want in by_addr(batch).values():  # within a batch the last lease for an address wins
        got = loaded[want.address]
        assert got == want
        assert type(got.state) is BindingState


def test_reopen_after_close_returns_the_same_leases(tmp_path: Path) -> None:
    path = str(tmp_path / "a" / "b" / "leases.db")  # parents are created
    batch = [
        lease(n, state=BindingState(1 + n % 7), hostname=None if n % 3 else "x") for n in range(50)
    ]
    with SqliteLeaseStore(path) as s:
        s.commit(batch)
        s.set_meta("failover.state", "NORMAL")
    assert not os.path.exists(path + "-wal")  # a clean close checkpoints the log away
    with SqliteLeaseStore(path) as s:
        assert s.load() == sorted(batch, key=lambda x: int(x.address))
        assert s.get_meta("failover.state") == "NORMAL"


def test_upsert_replaces_and_load_returns_latest(store: SqliteLeaseStore) -> None:
    store.commit([lease(1), lease(2)])
    store.commit([lease(2, state=BindingState.RELEASED, hostname=None, end=5.0)])
    got = by_addr(store.load())
    assert len(got) == 2
    assert got[lease(1).address] == lease(1)
    assert got[lease(2).address] == lease(2, state=BindingState.RELEASED, hostname=None, end=5.0)


def test_last_lease_for_an_address_in_one_batch_wins(store: SqliteLeaseStore) -> None:
    store.commit([lease(7, hostname="first"), lease(7, hostname="second")])
    assert [x.hostname for x in store.load()] == ["second"]


def test_empty_commit_and_empty_store(store: SqliteLeaseStore) -> None:
    store.commit([])
    assert store.load() == []


def test_meta_get_set_overwrite_and_missing(store: SqliteLeaseStore) -> None:
    assert store.get_meta("nope") is None
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")
    store.set_meta("unicode", "état\n")
    assert store.get_meta("k") == "v2"
    assert store.get_meta("unicode") == "état\n"


def test_open_store_from_config(tmp_path: Path) -> None:
    s = open_store(StoreSection(path=str(tmp_path / "x.db")))
    try:
        assert isinstance(s, SqliteLeaseStore)
        s.commit([lease(1)])
        assert s.load() == [lease(1)]
    finally:
        s.close()


def test_closed_store_raises_store_error_and_close_is_idempotent(tmp_path: Path) -> None:
    s = SqliteLeaseStore(str(tmp_path / "x.db"))
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.load()
    with pytest.raises(StoreError, match="closed"):
        s.commit([lease(1)])


def test_schema_is_what_the_docs_say(store: SqliteLeaseStore) -> None:
    store.commit([lease(3)])
    conn = store._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: fsync per commit
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        row = raw.execute(
            "SELECT typeof(address), address, typeof(hwaddr), typeof(client_id), "
            'typeof(relay_info), typeof(state), state, typeof("end") FROM leases'
        ).fetchone()
    assert row == ("integer", 0xC0000203, "blob", "blob", "blob", "integer", 2, "real")


# -- one commit = one transaction -----------------------------------------------------------


def test_one_commit_of_100_leases_is_one_transaction(store: SqliteLeaseStore) -> None:
    store.commit([lease(0)])
    before = inspect_wal(store.path + "-wal")
    assert before is not None
    store.commit([lease(n, hostname=f"h{n}") for n in range(100)])
    after = inspect_wal(store.path + "-wal")
    assert after is not None
    assert after.commits == before.commits + 1  # one commit record (and one fsync) for 100


def test_a_bad_lease_in_the_middle_leaves_none_of_the_batch(store: SqliteLeaseStore) -> None:
    store.commit([lease(1, hostname="old")])
    batch = [lease(1, hostname="new"), lease(2), lease(3, end=math.nan), lease(4)]
    with pytest.raises(StoreError, match="no lease of this batch was stored") as info:
        store.commit(batch)
    assert store.path in str(info.value)
    assert store.load() == [lease(1, hostname="old")]
    store.commit([lease(5)])  # the store is usable afterwards
    assert len(store.load()) == 2


# A commit writes its rows in multi-row INSERTs of 256, 64, 16, 4 and 1 rows (sqlite.py,
# _CHUNKS): sizes around every boundary, with an address repeated inside one statement and
# across statements (the later lease must win either way), in ONE transaction.
@pytest.mark.parametrize("size", [3, 4, 5, 63, 64, 65, 80, 255, 256, 257, 341, 600])
def test_batches_across_the_statement_sizes_store_every_lease_last_one_winning(
    store: SqliteLeaseStore, size: int
) -> None:
    store.commit([lease(0, hostname="before")])
    before = inspect_wal(store.path + "-wal")
    assert before is not None
    distinct = max(1, size * 2 // 3)  # about a third of the rows repeat an address
    batch = [
        lease(i % distinct, address=IPv4Address(0xC6336400 + i % distinct), hostname=f"v{i}",
              end=1.7e9 + i)
        for i in range(size)
    ]
    store.commit(batch)
    after = inspect_wal(store.path + "-wal")
    assert after is not None and after.commits == before.commits + 1
    want = {x.address: x for x in [lease(0, hostname="before"), *batch]}  # last one wins
    assert store.load() == sorted(want.values(), key=lambda x: int(x.address))


def test_a_bad_lease_in_a_later_statement_leaves_none_of_the_batch(
    store: SqliteLeaseStore,
) -> None:
    # 400 rows = statements of 256, 64, 64, 16; the bad row sits in the third.
    store.commit([lease(1, hostname="old")])
    batch = [lease(n, address=IPv4Address(0xC6336400 + n)) for n in range(400)]
    batch[330] = lease(330, address=IPv4Address(0xC6336400 + 330), end=math.nan)
    with pytest.raises(StoreError, match="no lease of this batch was stored"):
        store.commit(batch)
    assert store.load() == [lease(1, hostname="old")]


@pytest.mark.parametrize(
    "bad",
    [
        {"address": "192.0.2.9"},  # not an IPv4Address
        {"subnet_id": 2**64},  # does not fit SQLite's 64-bit integer
        {"hwaddr": "00:11:22"},  # text where bytes belong (STRICT table)
    ],
)
def test_values_of_the_wrong_type_raise_store_error(
    store: SqliteLeaseStore, bad: dict[str, object]
) -> None:
    # The optional compiled build checks a Lease's field types when it is built (TypeError
    # before the store sees it); the pure-Python package leaves it to the store.
    compiled = os.environ.get("TANDEM_EXPECT_COMPILED") == "1"
    with pytest.raises((StoreError, TypeError) if compiled else StoreError):
        store.commit([lease(1), lease(2, **bad)])
    assert store.load() == []


def test_an_exception_from_the_callers_iterable_rolls_back(store: SqliteLeaseStore) -> None:
    def gen() -> Iterator[Lease]:
        yield lease(1)
        yield lease(2)
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError, match="engine bug"):
        store.commit(gen())
    assert store.load() == []
    store.commit([lease(3)])
    assert store.load() == [lease(3)]


# -- refusing what is not a healthy store ---------------------------------------------------


def test_a_text_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    path.write_text("lease 192.0.2.1 { starts 1 2024/01/01 00:00:00; }\n" * 20)
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        SqliteLeaseStore(str(path))
    assert str(path) in str(info.value)
    assert "not a database" in str(info.value)
    assert path.read_bytes() == before
    assert not os.path.exists(str(path) + "-wal")


def _filled(path: Path, n: int = 3000) -> None:
    with SqliteLeaseStore(str(path)) as s:
        s.commit(
            [lease(i, address=IPv4Address(0xC6120000 + i), hostname=f"h{i}" * 5) for i in range(n)]
        )


@pytest.mark.parametrize("where", ["header", "middle page", "last page"])
def test_damaged_main_file_raises_store_error_naming_the_file(tmp_path: Path, where: str) -> None:
    path = tmp_path / "leases.db"
    _filled(path)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) % page == 0 and len(data) // page > 20
    offset = {
        "header": 0,
        "middle page": (len(data) // page // 2) * page,
        "last page": len(data) - page,
    }[where]
    data[offset : offset + page] = random.Random(7).randbytes(page)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info:
        SqliteLeaseStore(str(path))
    msg = str(info.value)
    assert str(path) in msg
    assert "backup" in msg and ".recover" in msg
    assert path.read_bytes() == bytes(data)  # never rewritten


def test_damaged_row_values_raise_store_error_on_load(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    with SqliteLeaseStore(str(path)) as s:
        s.commit([lease(1), lease(2)])
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE leases SET state = 99 WHERE address = ?", (int(lease(2).address),))
    with SqliteLeaseStore(str(path)) as s, pytest.raises(StoreError, match="cannot be read"):
        s.load()


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="customers"):
        SqliteLeaseStore(str(path))


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    SqliteLeaseStore(str(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer Tandem"):
        SqliteLeaseStore(str(path))


@pytest.mark.parametrize("path", [":memory:", "", "file:leases.db?mode=memory"])
def test_non_durable_paths_are_refused(path: str) -> None:
    with pytest.raises(StoreError, match="not durable"):
        SqliteLeaseStore(path)


def test_a_directory_as_the_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        SqliteLeaseStore(str(tmp_path))


def test_wal_mode_that_cannot_be_set_is_a_clear_error(tmp_path: Path) -> None:
    # Another process holds a read transaction on a rollback-journal database: SQLite cannot
    # switch it to WAL. We must say so at once instead of running without WAL.
    path = tmp_path / "leases.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN")
        other.execute("SELECT * FROM t").fetchall()
        with pytest.raises(StoreError, match="WAL") as info:
            SqliteLeaseStore(str(path))
        assert str(path) in str(info.value)
    finally:
        other.close()
