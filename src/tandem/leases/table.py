"""In-memory lease table: leases by address and by client, and free addresses per subnet.

Addresses are handled as ``int`` inside the table (``int(IPv4Address)``); the leases
themselves keep :class:`~ipaddress.IPv4Address`.

* :class:`LeaseTable` holds every known :class:`~tandem.leases.model.Lease` by address and
  indexes the ones associated with a client by :func:`client_key`. Leases are mutable: after
  changing a lease's client fields call :meth:`LeaseTable.put` again so the index follows.
* :class:`AddressPool` holds the allocatable addresses of one subnet compactly: never-used
  addresses are enumerated lazily by a cursor over the pool ranges (a /16 costs nothing to
  create), addresses that became free again are kept in three FIFO queues, "free" (no client
  association: FREE leases, lapsed offers), "backup" (BACKUP leases: the failover
  secondary's reserve, kept apart so that a server that may not use them never pops them)
  and "reusable" (EXPIRED/RELEASED leases of some client, least recently freed first). An
  address is in at most one queue. Every operation is O(1) amortised; ``contains`` is
  O(log ranges). The queues are hints: the caller validates an address it pops.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address

from tandem.leases.model import Lease
from tandem.wire.addr import ip_int, ipv4

ClientKey = bytes

__all__ = [
    "AddressPool",
    "ClientKey",
    "LeaseTable",
    "PoolAddresses",
    "client_key",
    "copy_lease",
    "lease_key",
    "merge_ranges",
    "subtract_ranges",
]


def client_key(client_id: bytes | None, htype: int, hwaddr: bytes) -> ClientKey | None:
    """How the server recognises a client: its client identifier (option 61) when it sent
    one, else its hardware type and address. ``None`` when there is neither."""
    if client_id:
        return b"C" + client_id
    if hwaddr:
        return b"H" + bytes((htype & 0xFF,)) + hwaddr
    return None


def lease_key(lease: Lease) -> ClientKey | None:
    """The client a lease is associated with (``None``: no association)."""
    return client_key(lease.client_id, lease.htype, lease.hwaddr)


def copy_lease(lease: Lease) -> Lease:
    """A snapshot of ``lease`` (faster than :func:`dataclasses.replace`)."""
    return Lease(
        lease.address,
        lease.subnet_id,
        lease.state,
        lease.hwaddr,
        lease.htype,
        lease.client_id,
        lease.hostname,
        lease.start,
        lease.end,
        lease.cltt,
        lease.tstp,
        lease.tsfp,
        lease.relay_info,
    )


class LeaseTable:
    """Every known lease, by address and by client key.

    Memory (bench/scale.py: ~1M leases): a client with one lease (nearly all of them) is
    indexed by the lease itself, not by a one-element list; a second lease of the same client
    turns the entry into a list (and back when it goes)."""

    __slots__ = ("_by_addr", "_by_client", "_key_of")

    def __init__(self) -> None:
        self._by_addr: dict[int, Lease] = {}
        self._key_of: dict[int, ClientKey] = {}
        self._by_client: dict[ClientKey, Lease | list[Lease]] = {}

    def __len__(self) -> int:
        return len(self._by_addr)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._by_addr.values()))

    def __contains__(self, address: int) -> bool:
        return address in self._by_addr

    def get(self, address: int) -> Lease | None:
        return self._by_addr.get(address)

    def get_ip(self, address: IPv4Address) -> Lease | None:
        return self._by_addr.get(ip_int(address))

    def put(self, lease: Lease) -> None:
        """Insert or replace the lease for ``lease.address`` and re-index its client."""
        self.put_keyed(lease, lease_key(lease))

    def put_keyed(self, lease: Lease, new_key: ClientKey | None) -> None:
        """:meth:`put` when the caller already knows ``lease_key(lease)``."""
        a = ip_int(lease.address)
        old = self._by_addr.get(a)
        if old is not None and old is not lease:
            self._unindex(a, old)
        self._by_addr[a] = lease
        old_key = self._key_of.get(a)  # None when a different object was just unindexed
        if old_key == new_key:
            return
        if old_key is not None:
            self._unlink(old_key, lease)
            del self._key_of[a]
        if new_key is not None:
            by_client = self._by_client
            cur = by_client.get(new_key)
            if cur is None:
                by_client[new_key] = lease
            elif isinstance(cur, list):
                cur.append(lease)
            else:
                by_client[new_key] = [cur, lease]
            self._key_of[a] = new_key

    def remove(self, address: int) -> Lease | None:
        lease = self._by_addr.pop(address, None)
        if lease is not None:
            self._unindex(address, lease)
        return lease

    def for_client(self, key: ClientKey) -> list[Lease]:
        """The leases associated with a client (any state that keeps an association), in
        the order they were indexed. A new list: the caller may keep or change it."""
        cur = self._by_client.get(key)
        if cur is None:
            return []
        if isinstance(cur, list):
            return list(cur)
        return [cur]

    def key_of(self, address: int) -> ClientKey | None:
        """The client key the lease at ``address`` was last indexed under."""
        return self._key_of.get(address)

    def _unindex(self, a: int, lease: Lease) -> None:
        key = self._key_of.pop(a, None)
        if key is not None:
            self._unlink(key, lease)

    def _unlink(self, key: ClientKey, lease: Lease) -> None:
        by_client = self._by_client
        cur = by_client.get(key)
        if cur is None:
            return
        if not isinstance(cur, list):
            if cur is lease:
                del by_client[key]
            return
        for i, item in enumerate(cur):
            if item is lease:
                del cur[i]
                break
        if len(cur) == 1:
            by_client[key] = cur[0]
        elif not cur:
            del by_client[key]


def merge_ranges(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged, inclusive ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(s for s in spans if s[0] <= s[1]):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def subtract_ranges(
    ranges: Iterable[tuple[int, int]], holes: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``ranges`` minus ``holes`` (both inclusive), sorted and merged."""
    out: list[tuple[int, int]] = []
    hs = merge_ranges(holes)
    for lo, hi in merge_ranges(ranges):
        cur = lo
        for hlo, hhi in hs:
            if hhi < cur or hlo > hi:
                continue
            if hlo > cur:
                out.append((cur, hlo - 1))
            cur = max(cur, hhi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append((cur, hi))
    return out


class AddressPool:
    """The dynamically allocatable addresses of one subnet (see the module docstring)."""

    __slots__ = (
        "_backup",
        "_free",
        "_his",
        "_idx",
        "_los",
        "_next",
        "_reusable",
        "ranges",
        "size",
    )

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self.ranges = merge_ranges(ranges)
        self._los = [lo for lo, _ in self.ranges]
        self._his = [hi for _, hi in self.ranges]
        self.size = sum(hi - lo + 1 for lo, hi in self.ranges)
        self._idx = 0  # cursor: range index and next address never handed out by the cursor
        self._next = self.ranges[0][0] if self.ranges else 0
        self._free: OrderedDict[int, None] = OrderedDict()
        self._backup: OrderedDict[int, None] = OrderedDict()
        self._reusable: OrderedDict[int, None] = OrderedDict()

    def contains(self, a: int) -> bool:
        i = bisect_right(self._los, a) - 1
        return i >= 0 and a <= self._his[i]

    # -- never-used addresses ------------------------------------------------------------

    def next_fresh(self) -> int | None:
        """The next address the cursor has not handed out yet (``None``: cursor exhausted).
        The caller checks it is really unused (no lease, no offer, not reserved)."""
        ranges = self.ranges
        while self._idx < len(ranges):
            hi = ranges[self._idx][1]
            a = self._next
            if a <= hi:
                self._next = a + 1
                return a
            self._idx += 1
            if self._idx < len(ranges):
                self._next = ranges[self._idx][0]
        return None

    def passed(self, a: int) -> bool:
        """Whether the cursor already went past ``a`` (it will not hand it out again)."""
        if self._idx >= len(self.ranges):
            return True
        return a < self._next

    # -- addresses that became free again ------------------------------------------------

    def push_free(self, a: int) -> None:
        self._reusable.pop(a, None)
        self._backup.pop(a, None)
        self._free[a] = None

    def push_backup(self, a: int) -> None:
        self._free.pop(a, None)
        self._reusable.pop(a, None)
        self._backup[a] = None

    def push_reusable(self, a: int) -> None:
        self._free.pop(a, None)
        self._backup.pop(a, None)
        self._reusable[a] = None

    def discard(self, a: int) -> None:
        self._free.pop(a, None)
        self._backup.pop(a, None)
        self._reusable.pop(a, None)

    def pop_free(self) -> int | None:
        if self._free:
            return self._free.popitem(last=False)[0]
        return None

    def pop_backup(self) -> int | None:
        if self._backup:
            return self._backup.popitem(last=False)[0]
        return None

    def pop_reusable(self) -> int | None:
        if self._reusable:
            return self._reusable.popitem(last=False)[0]
        return None

    def queued(self) -> tuple[int, int]:
        """(free, reusable) queue lengths (hints; may include stale entries)."""
        return len(self._free), len(self._reusable)

    def queued_backup(self) -> int:
        """The backup queue's length (a hint; may include stale entries)."""
        return len(self._backup)

    def unvisited(self) -> int:
        """How many addresses the cursor has not handed out yet."""
        if self._idx >= len(self.ranges):
            return 0
        n = self._his[self._idx] - self._next + 1
        for lo, hi in self.ranges[self._idx + 1 :]:
            n += hi - lo + 1
        return max(n, 0)


class PoolAddresses:
    """A read-only mapping ``IPv4Address -> subnet id`` over address ranges: the pool
    addresses of a failover relationship without an object per address (a dict of 1,000,000
    ``IPv4Address`` keys cost ~160 bytes per address, bench/scale.py).

    Iteration order is the order the ranges were added (each ascending), as the dict it
    replaces iterated in insertion order. Ranges must not overlap (the configuration
    validation rejects overlapping pools); an address in two ranges maps to the first.
    """

    __slots__ = ("_his", "_los", "_sids", "_size", "_spans")

    def __init__(self, spans: Iterable[tuple[int, int, int]] = ()) -> None:
        # (lo, hi, subnet id), insertion order
        self._spans: list[tuple[int, int, int]] = [s for s in spans if s[0] <= s[1]]
        ordered = sorted(self._spans)
        if any(ordered[i][0] <= ordered[i - 1][1] for i in range(1, len(ordered))):
            seen: list[tuple[int, int]] = []  # overlaps (not from a valid config): slow path
            kept: list[tuple[int, int, int]] = []
            for lo, hi, sid in self._spans:
                kept.extend((a, b, sid) for a, b in subtract_ranges([(lo, hi)], seen))
                seen = merge_ranges([*seen, (lo, hi)])
            self._spans = kept
            ordered = sorted(kept)
        self._los = [lo for lo, _, _ in ordered]
        self._his = [hi for _, hi, _ in ordered]
        self._sids = [sid for _, _, sid in ordered]
        self._size = sum(hi - lo + 1 for lo, hi, _ in self._spans)

    def sid_of(self, a: int) -> int | None:
        """The subnet id of the pool address ``a`` (an int), ``None`` if not a pool address."""
        i = bisect_right(self._los, a) - 1
        if i >= 0 and a <= self._his[i]:
            return self._sids[i]
        return None

    def get(self, address: IPv4Address, default: int | None = None) -> int | None:
        sid = self.sid_of(ip_int(address))
        return default if sid is None else sid

    def __getitem__(self, address: IPv4Address) -> int:
        sid = self.sid_of(ip_int(address))
        if sid is None:
            raise KeyError(address)
        return sid

    def __contains__(self, address: object) -> bool:
        return isinstance(address, IPv4Address) and self.sid_of(ip_int(address)) is not None

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[IPv4Address]:
        mk = ipv4
        for lo, hi, _sid in self._spans:
            for a in range(lo, hi + 1):
                yield mk(a)

    def ints(self) -> Iterator[int]:
        """The addresses as ints, in iteration order (no object per address)."""
        for lo, hi, _sid in self._spans:
            yield from range(lo, hi + 1)
