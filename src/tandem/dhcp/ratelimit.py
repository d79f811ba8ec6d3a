"""Rate limits on client traffic: token buckets per client and per relay (pure logic).

Two limits guard the engine against floods (see ``docs/reliability.md``, "Abuse and bounds"):

* **per client** (client identifier, else hardware address): every DISCOVER and REQUEST of
  one client spends a token of that client's bucket. A client stuck in a loop cannot keep
  the server busy or churn addresses.
* **per relay** (giaddr; directly attached clients share one bucket per receiving
  interface): a DISCOVER or REQUEST from a client the server knows nothing of -- no lease
  record, no offer held -- spends a token of its relay's bucket. A flood from random MACs
  therefore produces at most ``relay_burst + relay_new_clients_per_s * t`` offers in ``t``
  seconds, so at most ``relay_burst + relay_new_clients_per_s * lease.offer_hold_s``
  addresses are held by such offers at any time. Known clients (renewals, a rebooting
  population) never wait for it.

A third guard protects a failover standby's **reserve** (``ReserveGuard``): while a hot-standby
server may allocate only from its BACKUP reserve (the secondary in COMMUNICATIONS-INTERRUPTED,
or in PARTNER-DOWN before the MCLT has passed), the offers one relay (same key as above)
holds on a subnet's reserve addresses may number at most ``share`` of that reserve. An offer
ends when its client REQUESTs it (the address is then leased), when the client chooses
another server, or after ``lease.offer_hold_s``. A flood of DISCOVERs from random hardware
addresses -- which never REQUEST -- therefore holds at most that share, however fast it
comes, and the rest of the reserve stays for the subnet's other relays; a client that
completes its DORA holds its offer for milliseconds, so legitimate clients, even a burst of
them behind one relay, take the reserve as before. A flood that completes DORA takes leases
like legitimate clients do: that is what the relay limit is for.

A bucket of capacity ``burst`` refills at ``rate`` tokens per second; a rate of 0 turns that
limit off. Memory is bounded: at most ``max_clients`` client buckets and ``max_relays`` relay
buckets are kept; the least recently used one is dropped first (a dropped bucket would have
been refilled by the time a real client comes back; a flood from many keys is what the relay
limit is for). No clock: ``now`` (seconds) is an argument.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from math import floor

__all__ = ["RateLimiter", "ReserveGuard", "TokenBuckets"]


class TokenBuckets:
    """Token buckets keyed by anything hashable, least recently used evicted beyond
    ``max_keys``. ``allow(key, now)`` spends one token if there is one."""

    __slots__ = ("_buckets", "burst", "evicted", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if rate < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be >= 0, burst >= 1, max_keys >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = int(max_keys)
        self.evicted = 0
        # key -> [tokens, time of last update]; order = least recently used first
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: Hashable, now: float) -> float:
        """Tokens ``key`` would have at ``now`` (a full bucket for an unknown key)."""
        b = self._buckets.get(key)
        if b is None:
            return self.burst
        return min(self.burst, b[0] + max(0.0, now - b[1]) * self.rate)

    def allow(self, key: Hashable, now: float) -> bool:
        buckets = self._buckets
        b = buckets.get(key)
        if b is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
                self.evicted += 1
            buckets[key] = [self.burst - 1.0, now]
            return True
        buckets.move_to_end(key)
        elapsed = now - b[1]
        tokens = b[0]
        if elapsed > 0:  # a clock that steps back refills nothing (and takes nothing)
            tokens = min(self.burst, tokens + elapsed * self.rate)
            b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return True
        b[0] = tokens
        return False


class RateLimiter:
    """The per-client and per-relay limits of the module docstring.

    :meth:`admit` answers ``None`` (go ahead) or which limit refused: ``"client"`` or
    ``"relay"``. A message the relay limit refuses spends no client token (so a flood the
    relay limit stops creates no client buckets).
    """

    __slots__ = ("clients", "relays")

    def __init__(
        self,
        *,
        client_rate: float,
        client_burst: int,
        relay_rate: float,
        relay_burst: int,
        max_clients: int,
        max_relays: int,
    ) -> None:
        self.clients = (
            TokenBuckets(client_rate, client_burst, max_clients) if client_rate > 0 else None
        )
        self.relays = TokenBuckets(relay_rate, relay_burst, max_relays) if relay_rate > 0 else None

    @property
    def enabled(self) -> bool:
        return self.clients is not None or self.relays is not None

    def admit(self, client: Hashable, relay: Hashable, new_client: bool, now: float) -> str | None:
        """May this message be handled? ``new_client``: the server has no record of the
        client (no lease, no offer), so it spends a token of its relay's bucket too."""
        relays = self.relays
        if new_client and relays is not None and not relays.allow(relay, now):
            return "relay"
        clients = self.clients
        if clients is not None and not clients.allow(client, now):
            return "client"
        return None

    def tracked(self) -> tuple[int, int]:
        """(client buckets, relay buckets) held now."""
        return (
            len(self.clients) if self.clients is not None else 0,
            len(self.relays) if self.relays is not None else 0,
        )



class ReserveGuard:
    """How many of a subnet's reserve addresses one relay's offers may hold at once (see the
    module docstring): ``max(1, floor(share * reserve))``, where ``reserve`` is the largest
    reserve size :meth:`admit` was told about for that subnet (the reserve is fullest when an
    outage starts, which is when the guard first looks).

    The guard does not see offers end (REQUESTed, withdrawn, lapsed): it keeps what
    :meth:`record` gave it and asks ``live(offer)`` when it counts. Entries are recorded in
    time order and all offers last the same hold, so dead ones are dropped from the front on
    every call; a full count (``O(limit)``) runs only when the relay is at its limit, and
    after a count that found every offer live not again for :data:`RECOUNT_S`. Relays are
    least recently used evicted beyond ``max_keys`` (the evicted relay's offers then count
    for nothing until they end).
    """

    __slots__ = ("_held", "_reserve", "evicted", "max_keys", "share")

    #: At its limit, a relay's offers are counted again at most this often (seconds).
    RECOUNT_S = 1.0

    def __init__(self, share: float, max_keys: int) -> None:
        if not 0 < share <= 1 or max_keys < 1:
            raise ValueError("share must be in (0, 1], max_keys >= 1")
        self.share = float(share)
        self.max_keys = int(max_keys)
        self.evicted = 0
        # (relay, subnet) -> [offers in the order recorded, time of the last full count that
        # found every offer live];
        # least recently used first
        self._held: OrderedDict[tuple[Hashable, Hashable], tuple[deque[object], list[float]]]
        self._held = OrderedDict()
        self._reserve: dict[Hashable, int] = {}  # subnet -> largest reserve seen

    def __len__(self) -> int:
        return len(self._held)

    def limit(self, subnet: Hashable) -> int:
        """Offers one relay may hold in ``subnet``'s reserve (0 before it was seen)."""
        size = self._reserve.get(subnet, 0)
        return max(1, floor(self.share * size)) if size else 0

    def held(self, relay: Hashable, subnet: Hashable) -> int:
        """Offers recorded for ``relay`` in ``subnet`` (dead ones included until counted)."""
        got = self._held.get((relay, subnet))
        return len(got[0]) if got is not None else 0

    def admit(
        self,
        relay: Hashable,
        subnet: Hashable,
        reserve: int,
        live: Callable[[object], bool],
        now: float,
    ) -> bool:
        """May ``relay`` hold one more reserve address of ``subnet`` with an offer?
        ``reserve``: the subnet's reserve size as the caller sees it (a hint; the largest
        one seen counts). If yes, the caller makes the offer and passes it to :meth:`record`."""
        if reserve > self._reserve.get(subnet, 0):
            self._reserve[subnet] = reserve
        limit = self.limit(subnet)
        got = self._held.get((relay, subnet))
        if got is None:
            return limit > 0
        offers, counted = got
        while offers and not live(offers[0]):
            offers.popleft()
        if len(offers) < limit:
            return True
        if now - counted[0] < self.RECOUNT_S and now >= counted[0]:
            return False  # a count just now found every offer live
        alive = [o for o in offers if live(o)]
        if len(alive) < len(offers):
            offers.clear()
            offers.extend(alive)
            counted[0] = float("-inf")
        else:
            counted[0] = now
        return len(offers) < limit

    def record(self, relay: Hashable, subnet: Hashable, offer: object) -> None:
        """``relay`` now holds ``offer`` (an address of ``subnet``'s reserve)."""
        held = self._held
        key = (relay, subnet)
        got = held.get(key)
        if got is None:
            if len(held) >= self.max_keys:
                held.popitem(last=False)
                self.evicted += 1
            got = held[key] = (deque(), [float("-inf")])
        else:
            held.move_to_end(key)
        got[0].append(offer)
