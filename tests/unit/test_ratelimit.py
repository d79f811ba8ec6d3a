"""Rate limits (tandem.dhcp.ratelimit) and their hook in the engine: token buckets per client
and per relay, bounded memory, and a random-MAC DISCOVER flood against a hot-standby standby
in COMMUNICATIONS-INTERRUPTED that must not drain its reserve -- by the relay limit when one
is configured, by the reserve guard with the default config (virtual time throughout)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network
from math import floor

import pytest

from tandem.config import load_text
from tandem.config.schema import (
    Config,
    LeaseTimes,
    LimitsSection,
    Pool,
    ServerSection,
    Subnet,
)
from tandem.dhcp.engine import STATS_NAMES, Engine
from tandem.dhcp.ratelimit import RateLimiter, ReserveGuard, TokenBuckets
from tandem.dhcp.types import Outcome, RxInfo
from tandem.failover.bindings import Role
from tandem.failover.hot_standby import HotStandbyPolicy, StateView
from tandem.failover.load_balance import LoadBalancePolicy
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import FLAG_BROADCAST, DhcpMessage, MessageType
from tandem.wire.failover import ServerState

IP = IPv4Address
T0 = 1_700_000_000.0
S = ServerState

# ---------------------------------------------------------------- token buckets


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    b = TokenBuckets(rate=2.0, burst=5, max_keys=10)
    assert [b.allow("k", T0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert not b.allow("k", T0 + 0.4)  # 0.8 token so far
    assert b.allow("k", T0 + 0.5)  # 1.0 token
    assert not b.allow("k", T0 + 0.5)
    # a long pause refills to the burst, not beyond
    assert [b.allow("k", T0 + 100) for _ in range(6)] == [True] * 5 + [False]
    assert b.tokens("other", T0) == 5.0  # an unknown key has a full bucket


def test_bucket_ignores_a_clock_stepping_back() -> None:
    b = TokenBuckets(rate=1.0, burst=2, max_keys=10)
    assert b.allow("k", T0) and b.allow("k", T0)
    assert not b.allow("k", T0 - 50)  # no refill from negative time
    assert not b.allow("k", T0)  # and nothing was borrowed from the future
    assert b.allow("k", T0 + 1)


def test_buckets_are_bounded_and_evict_least_recently_used() -> None:
    b = TokenBuckets(rate=1.0, burst=1, max_keys=100)
    for i in range(10_000):
        b.allow(i, T0)
        assert len(b) <= 100
    assert len(b) == 100 and b.evicted == 9_900
    assert not b.allow(9_999, T0)  # the newest are still tracked (and empty)
    assert b.allow(0, T0)  # the oldest was evicted: a fresh, full bucket


def test_bucket_rejects_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=-1, burst=1, max_keys=1)
    with pytest.raises(ValueError):
        TokenBuckets(rate=1, burst=0, max_keys=1)
    with pytest.raises(ValueError):
        TokenBuckets(rate=1, burst=1, max_keys=0)


def test_limiter_relay_applies_to_new_clients_only_and_spends_no_client_token() -> None:
    lim = RateLimiter(client_rate=1, client_burst=3, relay_rate=1, relay_burst=2,
                      max_clients=10, max_relays=10)
    assert lim.admit(b"a", "r", True, T0) is None
    assert lim.admit(b"b", "r", True, T0) is None
    assert lim.admit(b"c", "r", True, T0) == "relay"
    assert lim.tracked() == (2, 1)  # the refused one left no client bucket
    # a known client is never held up by its relay, only by its own bucket
    assert [lim.admit(b"a", "r", False, T0) for _ in range(3)] == [None, None, "client"]
    assert lim.admit(b"c", "other-relay", True, T0) is None  # buckets are per relay


def test_rate_zero_turns_a_limit_off() -> None:
    lim = RateLimiter(client_rate=0, client_burst=1, relay_rate=0, relay_burst=1,
                      max_clients=1, max_relays=1)
    assert not lim.enabled
    eng = Engine(Config(limits=LimitsSection(client_rate_per_s=0, relay_new_clients_per_s=0)))
    assert eng.limiter is None


def test_limits_config_defaults_and_validation() -> None:
    cfg = load_text("")
    lim = cfg.limits
    assert (lim.client_rate_per_s, lim.client_burst) == (2.0, 16)
    assert (lim.relay_new_clients_per_s, lim.relay_burst) == (2000.0, 20000)
    cfg = load_text("[limits]\nrelay_new_clients_per_s = 1\nrelay_burst = 20\n")
    assert cfg.limits.relay_burst == 20
    from tandem.errors import ConfigError

    with pytest.raises(ConfigError, match=r"limits\.client_burst"):
        load_text("[limits]\nclient_burst = 0\n")
    with pytest.raises(ConfigError, match="limits"):
        load_text("[limits]\nclient_rate_per_s = -1\n")
    with pytest.raises(ConfigError, match=r"limits\.client_burst: 1 is below 2"):
        load_text("[limits]\nclient_burst = 1\n")
    assert load_text("[limits]\nclient_burst = 1\nclient_rate_per_s = 0\n").limits.client_burst == 1
    assert lim.reserve_share_per_relay == 0.25
    with pytest.raises(ConfigError) as err:
        load_text("[limits]\nreserve_share_per_relay = 1.5\nclient_rate_per_s = -1\n")
    assert "limits.reserve_share_per_relay: must be at most 1" in str(err.value)
    assert "limits.client_rate_per_s: must be at least 0" in str(err.value)  # every problem
    assert load_text("[limits]\nreserve_share_per_relay = 0\n").limits.reserve_share_per_relay == 0


# ---------------------------------------------------------------- through the engine

NET = "192.0.2."
STANDBY_ID = IP("192.0.2.2")
RELAY = IP("192.0.2.254")
RELAY2 = IP("192.0.2.253")  # a second relay (router) on the same subnet
POOL = [IP(NET + str(n)) for n in range(10, 110)]  # 100 addresses
RESERVE = POOL[:20]  # the standby's BACKUP reserve
MCLT = 300
HOLD = 30


def config(limits: LimitsSection) -> Config:
    return Config(
        server=ServerSection(server_id=STANDBY_ID),
        lease=LeaseTimes(default_lease_time_s=600, max_lease_time_s=600, offer_hold_s=HOLD),
        limits=limits,
        subnets=[
            Subnet(prefix=IPv4Network("192.0.2.0/24"), pools=[Pool(start=POOL[0], end=POOL[-1])])
        ],
    )


class Standby:
    """The standby's engine + hot-standby policy in COMMUNICATIONS-INTERRUPTED with a 20 %
    reserve; every message arrives through one relay."""

    def __init__(self, limits: LimitsSection, policy: type[HotStandbyPolicy] = HotStandbyPolicy,
                 view: StateView | None = None) -> None:
        self.view = view or StateView(S.COMMUNICATIONS_INTERRUPTED, T0 - 100, S.NORMAL)
        self.policy = policy(Role.SECONDARY, MCLT, lambda: self.view)
        self.engine = Engine(config(limits), self.policy)
        self.engine.load([Lease(a, 1, BindingState.BACKUP) for a in RESERVE], T0)
        self.rx = RxInfo(src_ip=RELAY, src_port=67, interface="e", local_ip=STANDBY_ID)

    def send(self, mt: MessageType, hw: bytes, now: float, relay: IPv4Address = RELAY,
             **kw: object) -> Outcome:
        opts: dict[int, bytes] = {53: bytes((mt,))}
        req = kw.pop("requested", None)
        if isinstance(req, IPv4Address):
            opts[50] = req.packed
            opts[54] = STANDBY_ID.packed
        m = DhcpMessage(chaddr=hw + bytes(10), giaddr=relay, hops=1, options=opts,
                        **kw)  # type: ignore[arg-type]
        return self.engine.handle(m, self.rx, now)

    def run_timers(self, now: float) -> None:
        t = self.engine.get_timer()
        while t is not None and t <= now:
            self.engine.handle_timer(t)
            t = self.engine.get_timer()

    def held_reserve(self) -> int:
        """Reserve addresses not available to a new client (held by an offer or bound)."""
        return sum(1 for a in RESERVE if int(a) in self.engine._offers or _bound(self, a))


def _bound(w: Standby, a: IPv4Address) -> bool:
    le = w.engine.table.get_ip(a)
    return le is not None and le.state is BindingState.ACTIVE


def _flood(w: Standby, n: int, seconds: float, seed: int = 1) -> int:
    """``n`` DISCOVERs from random MACs spread evenly over ``seconds``; returns the most
    reserve addresses held at any moment."""
    rng = random.Random(seed)
    most = 0
    for i in range(n):
        now = T0 + seconds * i / n
        w.run_timers(now)
        w.send(MessageType.DISCOVER, b"\x02" + rng.randbytes(5), now, flags=FLAG_BROADCAST)
        most = max(most, w.held_reserve())
    return most


def test_stats_names_include_the_rate_counters() -> None:
    assert "drop_rate_client" in STATS_NAMES and "drop_rate_relay" in STATS_NAMES


def test_random_mac_flood_cannot_drain_the_standbys_reserve() -> None:
    """The relay limit alone (the reserve guard off) when it is configured low."""
    rate, burst = 0.2, 5
    w = Standby(LimitsSection(relay_new_clients_per_s=rate, relay_burst=burst,
                              reserve_share_per_relay=0))
    # a client the standby already knows (it holds the primary's binding for it)
    known_hw, known_addr = b"\x02\x00\x00\x00\x00\x01", POOL[60]
    w.engine.load([Lease(known_addr, 1, BindingState.ACTIVE, hwaddr=known_hw,
                         start=T0 - 100, end=T0 + 500, cltt=T0 - 100)], T0)
    w.policy.received(known_addr, T0 + 800)
    most = _flood(w, 10_000, 10.0)
    st = w.engine.stats
    bound = burst + rate * 10.0
    assert st["rx_discover"] == 10_000
    assert 0 < st["tx_offer"] <= bound  # at most the configured number of offers
    assert st["drop_rate_relay"] == 10_000 - st["tx_offer"]
    assert st["pool_exhausted"] == 0
    assert most <= bound < len(RESERVE)  # never more than that of the reserve held
    # the known client rebinding in the middle of the flood is not held up by its relay
    out = w.send(MessageType.REQUEST, known_hw, T0 + 10, ciaddr=known_addr,
                 flags=FLAG_BROADCAST)
    assert out.replies and out.replies[0].msg.message_type is MessageType.ACK
    # offered-but-not-requested addresses return after the offer hold
    w.run_timers(T0 + 10 + HOLD + 1)
    assert st["offer_expired"] == st["tx_offer"]
    assert w.held_reserve() == 0
    # and a genuine new client still finds the whole reserve
    out = w.send(MessageType.DISCOVER, b"\x02\xaa\xbb\xcc\xdd\xee", T0 + 10 + HOLD + 1)
    assert out.replies and out.replies[0].msg.yiaddr in RESERVE


def test_without_the_relay_limit_the_same_flood_drains_the_reserve() -> None:
    """The control case: the protection above is the limit's doing."""
    w = Standby(LimitsSection(relay_new_clients_per_s=0, reserve_share_per_relay=0))
    most = _flood(w, 2_000, 10.0)
    assert most == len(RESERVE)
    assert w.engine.stats["tx_offer"] == len(RESERVE)
    assert w.engine.stats["pool_exhausted"] > 0


def test_one_client_flooding_is_held_to_its_own_bucket() -> None:
    w = Standby(LimitsSection(client_rate_per_s=2, client_burst=16))
    hw = b"\x02\x00\x00\x00\x00\x07"
    for _ in range(100):
        w.send(MessageType.DISCOVER, hw, T0)
    st = w.engine.stats
    assert st["tx_offer"] == 16 and st["drop_rate_client"] == 84
    # 2 tokens a second: 5 s later, 10 more
    for _ in range(20):
        w.send(MessageType.DISCOVER, hw, T0 + 5)
    assert st["tx_offer"] == 26
    # REQUESTs spend the same bucket
    out = w.send(MessageType.REQUEST, hw, T0 + 5, requested=RESERVE[0])
    assert out.replies == [] and st["drop_rate_client"] == 84 + 10 + 1


def test_engine_limiter_memory_is_bounded() -> None:
    w = Standby(LimitsSection(max_tracked_clients=50, relay_new_clients_per_s=0))
    rng = random.Random(3)
    for i in range(5_000):
        w.send(MessageType.DISCOVER, b"\x02" + rng.randbytes(5), T0 + i * 0.01)
    assert w.engine.limiter is not None
    assert w.engine.limiter.tracked() == (50, 0)


# ---------------------------------------------------------------- the reserve guard


class _Held:
    """A stand-in offer for the guard: live until ended."""

    def __init__(self) -> None:
        self.live = True


def _alive(o: object) -> bool:
    return isinstance(o, _Held) and o.live


def test_reserve_guard_holds_a_relay_to_its_share_of_live_offers() -> None:
    g = ReserveGuard(share=0.25, max_keys=10)
    assert g.limit("sn") == 0  # a subnet not seen yet
    held = []
    for _ in range(5):
        assert g.admit("r", "sn", 20, _alive, T0)
        held.append(_Held())
        g.record("r", "sn", held[-1])
    assert g.limit("sn") == 5
    assert not g.admit("r", "sn", 15, _alive, T0)  # its share is held
    assert g.admit("r2", "sn", 15, _alive, T0)  # another relay has its own share,
    assert g.limit("sn") == 5  # of the largest reserve seen (15 left does not shrink it)
    assert g.admit("r", "other-subnet", 20, _alive, T0)  # per subnet too
    held[2].live = False  # one offer REQUESTed (or lapsed) in the middle, after a count
    assert not g.admit("r", "sn", 15, _alive, T0 + 0.5)  # that found all live: not recounted
    assert g.admit("r", "sn", 15, _alive, T0 + 1.0)  # for a second
    g.record("r", "sn", _Held())
    assert not g.admit("r", "sn", 15, _alive, T0 + 5)
    for h in held:
        h.live = False
    assert g.admit("r", "sn", 15, _alive, T0 + 5)  # the front ended: no full count needed
    assert g.held("r", "sn") == 1
    tiny = ReserveGuard(share=0.01, max_keys=10)
    assert tiny.admit("r", "sn", 3, _alive, T0) and tiny.limit("sn") == 1  # at least 1
    with pytest.raises(ValueError):
        ReserveGuard(share=0, max_keys=1)
    with pytest.raises(ValueError):
        ReserveGuard(share=1.5, max_keys=1)


def test_reserve_guard_memory_is_bounded() -> None:
    g = ReserveGuard(share=0.5, max_keys=100)
    for i in range(5_000):
        assert g.admit(i, "sn", 20, _alive, T0)
        g.record(i, "sn", _Held())
        assert len(g) <= 100
    assert g.evicted == 4_900


def _dora(w: Standby, hw: bytes, now: float, relay: IPv4Address) -> IPv4Address:
    """DISCOVER + REQUEST through ``relay``; the address ACKed (fails the test if none)."""
    out = w.send(MessageType.DISCOVER, hw, now, relay=relay, flags=FLAG_BROADCAST)
    assert out.replies, "no OFFER"
    offered = out.replies[0].msg.yiaddr
    out = w.send(MessageType.REQUEST, hw, now, relay=relay, requested=offered,
                 flags=FLAG_BROADCAST)
    assert out.replies and out.replies[0].msg.message_type is MessageType.ACK
    return offered


def test_default_config_flood_leaves_the_reserve_to_the_other_relay() -> None:
    """10,000 random-MAC DISCOVERs in 10 s through one relay with the DEFAULT [limits]: the
    relay limit (2,000/s, burst 20,000) lets them all through; the reserve guard keeps that
    relay's offers to a quarter of the 20-address reserve, and clients behind the subnet's
    other relay are served during and after the flood."""
    w = Standby(LimitsSection())
    share = floor(LimitsSection().reserve_share_per_relay * len(RESERVE))
    assert share == 5
    rng = random.Random(7)
    most = 0
    served: list[IPv4Address] = []
    for i in range(10_000):
        now = T0 + 10.0 * i / 10_000
        w.run_timers(now)
        w.send(MessageType.DISCOVER, b"\x02" + rng.randbytes(5), now, flags=FLAG_BROADCAST)
        most = max(most, w.held_reserve() - len(served))
        if i % 1_000 == 500:  # a legitimate client behind the other relay, 10 times
            served.append(_dora(w, bytes((4, 0, 0, 0, 1, len(served))), now, RELAY2))
    st = w.engine.stats
    assert st["drop_rate_relay"] == 0 and st["drop_rate_client"] == 0  # defaults let it in
    assert st["tx_offer"] == share + len(served)  # the flood's share + the legitimate ones
    assert st["drop_rate_reserve"] == 10_000 - share
    assert st["pool_exhausted"] == 0
    assert most == share  # the flooder never held more than its share
    assert all(a in RESERVE for a in served) and len(set(served)) == 10
    # what is left of the reserve is at least the flooder's share, for the other relay
    free_now = len(RESERVE) - w.held_reserve()
    assert free_now == len(RESERVE) - share - len(served) >= share
    # once the flood stops its offers lapse: the whole rest is there again
    w.run_timers(T0 + 10 + HOLD + 1)
    assert w.held_reserve() == len(served)
    assert _dora(w, b"\x02\x99\x99\x99\x99\x99", T0 + 10 + HOLD + 1, RELAY) in RESERVE


def test_without_the_guard_the_default_flood_drains_the_reserve() -> None:
    """The control case of the test above: the same flood with reserve_share_per_relay = 0
    (the defaults otherwise) holds all 20 addresses and the other relay's client gets
    nothing."""
    w = Standby(LimitsSection(reserve_share_per_relay=0))
    assert w.engine.reserve_guard is None
    most = _flood(w, 2_000, 10.0)
    assert most == len(RESERVE)
    out = w.send(MessageType.DISCOVER, b"\x04\x00\x00\x00\x00\x01", T0 + 10, relay=RELAY2,
                 flags=FLAG_BROADCAST)
    assert out.replies == []
    assert w.engine.stats["pool_exhausted"] > 0


def test_legitimate_clients_behind_one_relay_still_take_the_whole_reserve() -> None:
    """A DORA holds its offer for no time: 20 new clients at once through one relay get the
    20 reserve addresses with the guard on (hot-standby.md 2.2), and a retransmitted
    DISCOVER of a client holding an offer is not counted twice."""
    w = Standby(LimitsSection())
    hw = b"\x04\x00\x00\x00\x00\xff"
    first = w.send(MessageType.DISCOVER, hw, T0, flags=FLAG_BROADCAST).replies[0].msg.yiaddr
    for _ in range(10):  # retransmissions: the same offer, no new share spent
        out = w.send(MessageType.DISCOVER, hw, T0 + 1, flags=FLAG_BROADCAST)
        assert out.replies[0].msg.yiaddr == first
    assert w.engine.reserve_guard is not None
    assert w.engine.reserve_guard.held(int(RELAY), 1) == 1
    got = [_dora(w, bytes((4, 0, 0, 0, 0, n)), T0 + 2, RELAY) for n in range(19)]
    assert sorted({first, *got}) == RESERVE
    assert w.engine.stats["drop_rate_reserve"] == 0


def test_the_guard_is_off_when_the_server_is_not_restricted_to_its_reserve() -> None:
    """PARTNER-DOWN after the MCLT (the whole pool is usable) and a load-balance secondary
    (its BACKUP half of the pool is not a reserve): offers are not limited."""
    pd = StateView(S.PARTNER_DOWN, T0 - 2 * MCLT, S.COMMUNICATIONS_INTERRUPTED)
    lb = StateView(S.NORMAL, T0 - 100, S.COMMUNICATIONS_INTERRUPTED)
    for w, offers in ((Standby(LimitsSection(), view=pd), len(POOL)),
                      (Standby(LimitsSection(), policy=LoadBalancePolicy, view=lb), 20)):
        rng = random.Random(5)
        for i in range(400):
            w.send(MessageType.DISCOVER, b"\x02" + rng.randbytes(5), T0 + i * 0.01)
        assert w.engine.stats["drop_rate_reserve"] == 0
        # PARTNER-DOWN: the whole pool; load balance: the secondary's clients (about half
        # of 400) take all 20 of its BACKUP addresses
        assert w.engine.stats["tx_offer"] == offers
