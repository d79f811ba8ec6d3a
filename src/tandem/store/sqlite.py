"""The embedded default lease store: one SQLite file in WAL mode with ``synchronous=FULL``.

Durability: :meth:`SqliteLeaseStore.commit` writes the whole batch as ONE transaction; in WAL
mode with ``synchronous=FULL`` the commit appends the changed pages to ``<path>-wal`` and
fsyncs that file once before returning. A lease passed to a ``commit`` that returned survives
``kill -9`` and, as far as the disk honours fsync, power loss.

Damage: before SQLite touches a store that was not shut down cleanly, :func:`inspect_wal`
reads the write-ahead log the way SQLite's recovery does (salts and cumulative checksums). A
torn or garbage tail is what a crash leaves behind: SQLite recovers every transaction up to it
and we log ``STORE_WAL_TAIL_DISCARDED``. Damage that would make SQLite silently drop committed
transactions (a bad WAL header, or more than one commit after the first bad frame) raises
:class:`~tandem.errors.StoreError` and leaves every file untouched. The main file is checked
with ``PRAGMA quick_check`` at open. See docs/store.md for the reasoning and the admin steps.

Threads: the connection is opened with ``check_same_thread=False`` so the service may hand the
store to one worker thread; a store instance must be used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sqlite3
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from itertools import islice
from typing import Any, Final

from tandem.errors import StoreError
from tandem.leases.model import BindingState, Lease
from tandem.wire.addr import ip_int

SCHEMA_VERSION = 1
MIN_SQLITE = (3, 37, 0)  # STRICT tables
BUSY_TIMEOUT_MS = 2000
# Checkpoint the WAL into the main file every ~1 MB (default 1000 pages = 4 MB): bounds the
# work of the WAL check after a crash (about 0.07 s per MB here) at the price of one extra
# fsync pair every few hundred commits.
WAL_AUTOCHECKPOINT_PAGES = 256  # another writer (an admin's sqlite3 shell) holding the write lock

log = logging.getLogger("tandem.store")

_SCHEMA = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL
) STRICT;
CREATE TABLE leases (
    address    INTEGER PRIMARY KEY,  -- IPv4 address as an unsigned 32-bit integer
    subnet_id  INTEGER NOT NULL,
    state      INTEGER NOT NULL,     -- BindingState (draft-12 numbering)
    hwaddr     BLOB    NOT NULL,
    htype      INTEGER NOT NULL,
    client_id  BLOB,
    hostname   TEXT,
    start      REAL    NOT NULL,     -- seconds since the epoch
    "end"      REAL    NOT NULL,
    cltt       REAL    NOT NULL,
    tstp       REAL    NOT NULL,
    tsfp       REAL    NOT NULL,
    relay_info BLOB
) STRICT;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
"""

_COLUMNS = (
    'address, subnet_id, state, hwaddr, htype, client_id, hostname, start, "end", cltt, '
    "tstp, tsfp, relay_info"
)
_SELECT = f"SELECT {_COLUMNS} FROM leases ORDER BY address"
# A commit writes its rows with multi-row INSERTs of these sizes (largest first; at most 256
# leases are turned into parameters at a time), not one statement per row: each statement
# is one sqlite3_step and one round of the sqlite3 module's per-statement work (binding,
# releasing and retaking the GIL). Measured in process: store CPU 3.8 -> 3.3 µs per DORA
# (bench/profile_engine.py --group 67). A few fixed sizes keep the prepared statements few
# (the module caches them by text); 256 x 13 parameters is far below SQLite's limit.
_CHUNKS: Final = (256, 64, 16, 4, 1)
_NCOLS: Final = _COLUMNS.count(",") + 1  # values per row (13)
_ROW: Final = "(" + ",".join("?" * _NCOLS) + ")"
# (values per statement, its SQL), largest first
_STATEMENTS: Final = tuple(
    (n * _NCOLS, f"INSERT OR REPLACE INTO leases ({_COLUMNS}) VALUES " + ",".join([_ROW] * n))
    for n in _CHUNKS
)

_RESTORE_HINT = (
    "Tandem has not modified it. Stop the server, copy the file(s) aside, then either restore "
    "the last backup (see docs/store.md, 'Backup and restore') or salvage it with "
    "`sqlite3 {path} .recover | sqlite3 {path}.recovered` and point store.path at the result"
)


# -- write-ahead log inspection ---------------------------------------------------------

_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums in little / big endian word order
_WAL_HEADER = 32
_FRAME_HEADER = 24


@dataclass(frozen=True, slots=True)
class WalReport:
    """What SQLite's recovery will make of ``<db>-wal``.

    The first ``valid_frames`` frames form an unbroken checksum chain (``commits`` of them
    end a transaction); SQLite keeps frames ``1..last_commit`` (1-based; 0 = none).
    ``break_reason`` says why the chain ended: "end of file", "partial frame" (a frame cut
    short), "stale frame" (salts of an earlier generation of the log: normal after the log
    was restarted), "bad checksum" (a torn write or damage). ``discarded_frames`` counts
    frames of this generation after ``last_commit`` (SQLite drops them);
    ``commits_after_break`` counts commit frames of this generation from the break on:
    committed work that SQLite would drop silently.
    """

    header_ok: bool
    size: int
    page_size: int
    total_frames: int
    valid_frames: int
    commits: int
    last_commit: int
    break_reason: str
    discarded_frames: int
    commits_after_break: int


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum (walChecksumBytes) over ``data`` (length a multiple of 8),
    continuing from (s0, s1). About 0.3 s per 4 MB on the reference machine; it runs only
    when a store was not closed cleanly."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    it = iter(words)
    for x0, x1 in zip(it, it, strict=True):
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1


def inspect_wal(wal_path: str) -> WalReport | None:
    """Read ``wal_path`` like SQLite's WAL recovery does; ``None`` if missing or empty."""
    try:
        with open(wal_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    size = len(data)
    if size == 0:
        return None
    bad_header = WalReport(False, size, 0, 0, 0, 0, 0, "bad header", 0, 0)
    if size < _WAL_HEADER:
        return bad_header
    magic, version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:32])
    big = magic == _WAL_MAGIC[1]
    if not (
        magic in _WAL_MAGIC
        and version == 3007000
        and 512 <= page_size <= 65536
        and page_size & (page_size - 1) == 0
        and _checksum(data[:24], 0, 0, big) == (c0, c1)
    ):
        return bad_header
    frame_size = _FRAME_HEADER + page_size
    total = (size - _WAL_HEADER) // frame_size
    s0, s1 = c0, c1
    valid = last_commit = commits = 0
    reason = "partial frame" if size > _WAL_HEADER + total * frame_size else "end of file"
    for i in range(total):
        off = _WAL_HEADER + i * frame_size
        pgno, commit, fs1, fs2, fc0, fc1 = struct.unpack(">6I", data[off : off + 24])
        if (fs1, fs2) != (salt1, salt2) or pgno == 0:
            reason = "stale frame"
            break
        s0, s1 = _checksum(data[off : off + 8] + data[off + 24 : off + frame_size], s0, s1, big)
        if (s0, s1) != (fc0, fc1):
            reason = "bad checksum"
            break
        valid = i + 1
        if commit:
            last_commit = i + 1
            commits += 1
    discarded = after = 0
    for j in range(last_commit, total):
        off = _WAL_HEADER + j * frame_size
        _pg, commit, fs1, fs2 = struct.unpack(">4I", data[off : off + 16])
        if (fs1, fs2) == (salt1, salt2):
            discarded += 1
            if commit and j >= valid:
                after += 1
    return WalReport(
        True, size, page_size, total, valid, commits, last_commit, reason, discarded, after
    )


def _check_wal(path: str) -> None:
    """Refuse a write-ahead log whose recovery would silently drop committed transactions."""
    wal = path + "-wal"
    report = inspect_wal(wal)
    if report is None:
        return
    if not report.header_ok:
        if report.size <= _WAL_HEADER:
            return  # a log that was being created when the process died: holds no frames
        raise StoreError(
            f"{wal}: the write-ahead log header is damaged ({report.size} bytes); SQLite would "
            "ignore the whole log and silently drop every transaction committed since the last "
            "checkpoint. " + _RESTORE_HINT.format(path=path) + ". To accept the loss of the "
            "log's contents instead, move the -wal file away (keep a copy) and restart."
        )
    if report.commits_after_break >= 2:
        raise StoreError(
            f"{wal}: the write-ahead log is damaged at frame {report.valid_frames + 1} of "
            f"{report.total_frames} ({report.break_reason}) and {report.commits_after_break} "
            "commit records follow the damage; SQLite would silently drop those committed "
            "transactions. "
            + _RESTORE_HINT.format(path=path)
            + ". To keep everything committed before the damage and drop the rest, run "
            f"`sqlite3 {path} 'PRAGMA wal_checkpoint(TRUNCATE)'` (on a copy) and restart."
        )
    if report.discarded_frames or report.break_reason in ("bad checksum", "partial frame"):
        # An unfinished transaction (normal after kill -9), or the last commit torn by a
        # power loss / damaged: the two cannot be told apart, so say which it looks like.
        level = logging.WARNING if report.commits_after_break else logging.INFO
        log.log(
            level,
            "STORE_WAL_TAIL_DISCARDED path=%s kept_frames=%d discarded_frames=%d reason=%r "
            "commit_records_discarded=%d",
            wal,
            report.last_commit,
            report.discarded_frames,
            report.break_reason,
            report.commits_after_break,
        )


# -- the store ---------------------------------------------------------------------------


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flat_rows(leases: Iterable[Lease]) -> list[object]:
    """The column values of ``leases`` in one flat list, row after row, in the order of
    ``_COLUMNS`` (see _CHUNKS)."""
    out: list[object] = []
    extend = out.extend
    for x in leases:
        extend((
            ip_int(x.address),
            x.subnet_id,
            int(x.state),
            x.hwaddr,
            x.htype,
            x.client_id,
            x.hostname,
            x.start,
            x.end,
            x.cltt,
            x.tstp,
            x.tsfp,
            x.relay_info,
        ))
    return out


class SqliteLeaseStore:
    """:class:`~tandem.store.base.LeaseStore` on one SQLite file (WAL, ``synchronous=FULL``).

    Opening creates the parent directory and the schema if missing, refuses damaged files
    (see the module docstring) and never deletes or rewrites a file it cannot read.
    """

    def __init__(self, path: str) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"{path}: SQLite {sqlite3.sqlite_version} is too old; the lease store needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer (Python's sqlite3 module links the "
                "system libsqlite3: upgrade it)"
            )
        self.path = path
        self._conn: sqlite3.Connection | None = None
        if path in ("", ":memory:") or path.startswith("file:"):
            raise StoreError(
                f"{path!r}: the lease store must be a file path (in-memory or URI stores are "
                "not durable)"
            )
        parent = os.path.dirname(os.path.abspath(path))
        created = False
        try:
            if not os.path.isdir(parent):
                os.makedirs(parent, mode=0o750, exist_ok=True)
                _fsync_dir(os.path.dirname(parent))
            if os.path.isdir(path):
                raise StoreError(f"{path}: is a directory; store.path must name a file")
            if not os.path.exists(path):
                # An empty file is an empty SQLite database; creating it ourselves sets the
                # mode (SQLite gives the -wal and -shm files the same mode).
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
                created = True
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot create the lease store ({exc.strerror or exc}); check that "
                "the directory exists or can be created and is writable by the server's user"
            ) from exc
        _check_wal(path)
        try:
            self._conn = sqlite3.connect(
                path, timeout=0, isolation_level=None, check_same_thread=False, cached_statements=16
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"{path}: cannot open the lease store ({exc}); check the path and permissions"
            ) from exc
        try:
            self._setup()
            if created:
                _fsync_dir(parent)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    # -- open ------------------------------------------------------------------------------

    def _damaged(self, what: str) -> StoreError:
        return StoreError(
            f"{self.path}: the lease store is damaged or not a Tandem lease store ({what}). "
            + _RESTORE_HINT.format(path=self.path)
        )

    def _setup(self) -> None:
        conn = self._require()
        try:
            # The first statement reads the header: a file that is not SQLite fails here.
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise self._damaged(str(exc)) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path}: cannot switch the lease store to WAL mode ({exc}); put "
                "store.path on a local filesystem the server can write"
            ) from exc
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{self.path}: SQLite refused WAL mode (journal_mode is {mode!r}); the lease "
                "store needs a local filesystem with shared-memory support (not a network "
                "filesystem, not ':memory:')"
            )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA foreign_keys=OFF")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        if sync != 2:
            raise StoreError(f"{self.path}: SQLite refused synchronous=FULL (got {sync})")
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
        except sqlite3.DatabaseError as exc:
            raise self._damaged(str(exc)) from exc
        if problems != ["ok"]:
            raise self._damaged("quick_check: " + "; ".join(problems))
        if not tables:
            self._create_schema()
            return
        if not {"schema_version", "leases", "meta"} <= tables:
            raise self._damaged(f"unexpected tables {sorted(tables)}")
        row = conn.execute("SELECT version FROM schema_version").fetchall()
        if len(row) != 1:
            raise self._damaged(f"schema_version holds {len(row)} rows, expected 1")
        version = row[0][0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: the lease store has schema version {version}, written by a newer "
                f"Tandem (this one reads version {SCHEMA_VERSION}); upgrade Tandem or restore a "
                "backup taken before the upgrade"
            )
        if version != SCHEMA_VERSION:  # no migrations yet: every version so far is 1
            raise self._damaged(f"unknown schema version {version}")

    def _create_schema(self) -> None:
        conn = self._require()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: cannot create the lease store schema ({exc})") from exc

    # -- helpers ---------------------------------------------------------------------------

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the lease store is closed")
        return self._conn

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite has rolled back on its own
                conn.execute("ROLLBACK")

    # -- LeaseStore ------------------------------------------------------------------------

    def load(self) -> list[Lease]:
        """Every lease, ordered by address.

        Memory (bench/scale.py, ~1M leases): rows are read one at a time (a ``fetchall`` of
        every row left its freed tuples as holes among the leases: ~150 bytes per lease of
        RSS that stayed), and equal times of one lease share one float object (``cltt`` is
        usually ``start``; ``tstp`` and ``tsfp`` are often ``end`` or each other).
        """
        conn = self._require()
        states = {int(s): s for s in BindingState}
        ip = IPv4Address
        out: list[Lease] = []
        append = out.append
        row: tuple[Any, ...] | None = None
        # Building ~10**5 objects triggers many pointless collections: about 20 % of the time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            try:
                cur = conn.execute(_SELECT)
                for row in cur:
                    (address, subnet_id, state, hwaddr, htype, client_id, hostname,
                     start, end, cltt, tstp, tsfp, relay_info) = row
                    if cltt == start:
                        cltt = start
                    if tstp == end:
                        tstp = end
                    if tsfp == tstp:
                        tsfp = tstp
                    elif tsfp == end:
                        tsfp = end
                    append(Lease(ip(address), subnet_id, states[state], hwaddr, htype,
                                 client_id, hostname, start, end, cltt, tstp, tsfp,
                                 relay_info))
            except sqlite3.DatabaseError as exc:
                raise self._damaged(f"reading leases: {exc}") from exc
            return out
        except (KeyError, ValueError, TypeError) as exc:
            raise self._damaged(f"a lease row cannot be read: {exc!r} in {row!r}") from exc
        finally:
            if gc_was_enabled:
                gc.enable()

    def commit(self, leases: Iterable[Lease]) -> None:
        """Upsert ``leases`` (keyed by address) in one transaction, one fsync of the WAL.

        If any lease cannot be stored, nothing of the batch is stored. Within one batch, the
        last lease for an address wins.
        """
        conn = self._require()
        try:
            conn.execute("BEGIN IMMEDIATE")
            execute = conn.execute
            it = iter(leases)
            while group := list(islice(it, _CHUNKS[0])):  # bounded memory for big batches
                values = _flat_rows(group)
                pos, total = 0, len(values)
                for width, sql in _STATEMENTS:
                    while total - pos >= width:
                        execute(sql, values[pos : pos + width])
                        pos += width
            conn.execute("COMMIT")
        except (sqlite3.Error, TypeError, ValueError, OverflowError, AttributeError) as exc:
            self._rollback()
            raise StoreError(
                f"{self.path}: commit failed, no lease of this batch was stored ({exc!r}); "
                "if this is a disk error, check free space and the kernel log"
            ) from exc
        except BaseException:  # e.g. the caller's iterable raised: undo the partial batch
            self._rollback()
            raise

    def get_meta(self, key: str) -> str | None:
        conn = self._require()
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: reading meta {key!r} failed ({exc})") from exc
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        conn = self._require()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: writing meta {key!r} failed ({exc})") from exc

    def close(self) -> None:
        """Close (checkpoints the WAL into the main file). Safe to call twice."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: closing the lease store failed ({exc})") from exc

    def __enter__(self) -> SqliteLeaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
