"""Crash and damage: kill -9 loses no reported commit; a damaged write-ahead log is either
recovered up to the damage or refused with a StoreError, never silently truncated.

The "crash state" of a store is the pair (main file, -wal file) as a killed process leaves
them; copying both while the store is still open (no checkpoint has run) produces it."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import ModuleType

import pytest

from tandem.errors import StoreError
from tandem.leases.model import BindingState, Lease
from tandem.store.sqlite import SqliteLeaseStore, inspect_wal

WRITER = Path(__file__).with_name("_store_writer.py")


def _writer_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_store_writer", WRITER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _crash_copy(src: str, dest_dir: Path) -> str:
    """The files a kill -9 would leave: main file + WAL, no shared-memory index."""
    dest_dir.mkdir(exist_ok=True)
    dest = str(dest_dir / "leases.db")
    shutil.copyfile(src, dest)
    if os.path.exists(src + "-wal"):
        shutil.copyfile(src + "-wal", dest + "-wal")
    return dest


def _load(path: str) -> dict[int, Lease]:
    with SqliteLeaseStore(path) as s:
        return {int(x.address): x for x in s.load()}


# -- kill -9 ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(30)  # the bound the brief asks for; typical run 5-10 s
def test_every_reported_commit_survives_sigkill(tmp_path: Path) -> None:
    writer = _writer_module()
    seed = 20240611
    rng = random.Random(seed)
    db = str(tmp_path / "leases.db")
    expected: dict[int, Lease] = {}
    next_batch = 0
    kills = in_flight_landed = in_flight_lost = 0
    while kills < 24:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), db, str(seed), str(next_batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        fd = proc.stdout.fileno()
        out = b""
        try:
            if kills % 6 == 5:
                # Now and then kill during start-up / recovery / schema creation.
                time.sleep(rng.uniform(0.0, 0.12))
            else:
                want = rng.randint(1, 30)
                while out.count(b"\n") < want:
                    ready, _, _ = select.select([fd], [], [], 10.0)
                    chunk = os.read(fd, 65536) if ready else b""
                    if not chunk:
                        pytest.fail(f"writer stopped: {proc.stderr.read().decode()[-2000:]}")
                    out += chunk
                # A random point inside the next commit (which takes about a millisecond).
                spin_until = time.perf_counter() + rng.uniform(0.0, 0.002)
                while time.perf_counter() < spin_until:
                    pass
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        kills += 1
        while chunk := os.read(fd, 65536):  # what it printed before it died
            out += chunk
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert "Traceback" not in stderr, stderr
        # A line without its newline was not reported.
        reported = [int(t) for t in out.decode().split("\n")[:-1]]
        assert reported == list(range(next_batch, next_batch + len(reported)))
        for batch_id in reported:
            for x in writer.make_batch(seed, batch_id):
                expected[int(x.address)] = x
        in_flight = reported[-1] + 1 if reported else next_batch
        # Verify on a copy, so the next writer itself recovers the crashed files.
        loaded = _load(_crash_copy(db, tmp_path / f"check{kills}"))
        batch = writer.make_batch(seed, in_flight)
        landed = all(loaded.get(int(x.address)) == x for x in batch)
        lost = all(loaded.get(int(x.address)) == expected.get(int(x.address)) for x in batch)
        assert landed != lost, f"batch {in_flight} is half committed"
        if landed:
            in_flight_landed += 1
            for x in batch:
                expected[int(x.address)] = x
            next_batch = in_flight + 1
        else:
            in_flight_lost += 1
            next_batch = in_flight
        assert loaded == expected, f"after kill {kills}: reported commits missing or altered"
    assert next_batch > 100  # the test did real work
    print(
        f"kills={kills} batches={next_batch} in-flight committed={in_flight_landed} "
        f"not committed={in_flight_lost}"
    )


# -- write-ahead log damage -----------------------------------------------------------------

PAGE = 4096
FRAME = 24 + PAGE


def _batch(k: int) -> list[Lease]:
    return [
        Lease(
            address=IPv4Address(0xC6336400 + k * 40 + i),  # 198.51.100.x, disjoint per batch
            subnet_id=k + 1,
            state=BindingState.ACTIVE,
            hwaddr=bytes([k, i, 1, 2, 3, 4]),
            client_id=bytes([1, k, i]),
            hostname=f"batch{k}-{i}",
            start=1.7e9 + k,
            end=1.7e9 + k + 3600.5,
            cltt=1.7e9 + k,
            relay_info=bytes(200),  # big rows: each batch spans several pages
        )
        for i in range(40)
    ]


@pytest.fixture
def crashed(tmp_path: Path) -> tuple[str, list[int]]:
    """A crash state holding 5 committed batches in the WAL; returns (path, the WAL frame
    number that ends each batch)."""
    s = SqliteLeaseStore(str(tmp_path / "live" / "leases.db"))
    ends = []
    try:
        for k in range(5):
            s.commit(_batch(k))
            report = inspect_wal(s.path + "-wal")
            assert report is not None
            ends.append(report.last_commit)
        path = _crash_copy(s.path, tmp_path / "crash")
        # Our reading of the log agrees with SQLite's: schema + 5 commits, an unbroken chain.
        report = inspect_wal(path + "-wal")
        assert report is not None and report.header_ok
        assert (report.commits, report.last_commit) == (6, ends[4])
        assert report.valid_frames == report.total_frames == ends[4]
        assert report.break_reason == "end of file" and report.discarded_frames == 0
    finally:
        s.close()
    assert ends == sorted(set(ends)) and ends[0] >= 1
    assert ends[4] - ends[3] >= 2  # the last transaction has a frame before its commit frame
    return path, ends


def _expect_batches(path: str, present: range) -> None:
    loaded = _load(path)
    want = {int(x.address): x for k in present for x in _batch(k)}
    assert loaded == want


def _snapshot(path: str) -> tuple[bytes, bytes]:
    return Path(path).read_bytes(), Path(path + "-wal").read_bytes()


def test_undamaged_crash_state_recovers_everything(crashed: tuple[str, list[int]]) -> None:
    _expect_batches(crashed[0], range(5))


def test_garbage_after_the_wal_end_is_ignored(crashed: tuple[str, list[int]]) -> None:
    path, _ = crashed
    with open(path + "-wal", "ab") as f:
        f.write(random.Random(1).randbytes(3 * FRAME + 100))
    _expect_batches(path, range(5))


def test_torn_last_transaction_keeps_everything_before_it(
    crashed: tuple[str, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    path, ends = crashed
    # Cut the WAL in the middle of the last transaction's second frame.
    os.truncate(path + "-wal", 32 + (ends[3] + 1) * FRAME + 1000)
    with caplog.at_level(logging.INFO, logger="tandem.store"):
        _expect_batches(path, range(4))
    assert "STORE_WAL_TAIL_DISCARDED" in caplog.text


def test_damaged_frame_in_last_transaction_recovers_the_rest_and_warns(
    crashed: tuple[str, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    path, ends = crashed
    # First frame of the last transaction: page bytes garbled, its commit frame intact after.
    off = 32 + ends[3] * FRAME + 24 + 100
    with open(path + "-wal", "r+b") as f:
        f.seek(off)
        f.write(b"\xff" * 64)
    with caplog.at_level(logging.INFO, logger="tandem.store"):
        _expect_batches(path, range(4))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "STORE_WAL_TAIL_DISCARDED" in warnings[0].getMessage()
    assert "commit_records_discarded=1" in warnings[0].getMessage()


def test_damage_before_later_commits_is_refused_untouched_then_admin_recovers(
    crashed: tuple[str, list[int]],
) -> None:
    path, ends = crashed
    off = 32 + ends[0] * FRAME + 24 + 100  # inside batch 1; batches 2, 3, 4 follow
    with open(path + "-wal", "r+b") as f:
        f.seek(off)
        f.write(b"\x00\x01" * 50)
    before = _snapshot(path)
    with pytest.raises(StoreError) as info:
        SqliteLeaseStore(path)
    msg = str(info.value)
    assert path + "-wal" in msg and "damaged" in msg and "4 commit records" in msg
    assert "wal_checkpoint(TRUNCATE)" in msg
    assert _snapshot(path) == before  # nothing was written, nothing deleted
    assert not os.path.exists(path + "-shm")  # SQLite was never let near the files
    # The documented way to keep what precedes the damage:
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    _expect_batches(path, range(1))


def test_damaged_wal_header_is_refused_untouched(crashed: tuple[str, list[int]]) -> None:
    path, _ = crashed
    with open(path + "-wal", "r+b") as f:
        f.seek(8)
        f.write(b"\x12\x34\x56\x78")  # the page size field; the header checksum now fails
    before = _snapshot(path)
    with pytest.raises(StoreError, match="header is damaged") as info:
        SqliteLeaseStore(path)
    assert path + "-wal" in str(info.value)
    assert _snapshot(path) == before


def test_a_wal_torn_while_being_created_is_harmless(tmp_path: Path) -> None:
    path = str(tmp_path / "leases.db")
    with SqliteLeaseStore(path) as s:
        s.commit(_batch(0))  # checkpointed into the main file by close()
    Path(path + "-wal").write_bytes(b"\x37\x7f\x06")  # 3 bytes of a header
    _expect_batches(path, range(1))
