"""The DHCP engine: one client message in, replies and changed leases out (RFC 2131).

Pure logic: no sockets, no clock. ``now`` (epoch seconds) is an argument; the engine says
when it next needs to run (:meth:`Engine.get_timer`) and what time changed
(:meth:`Engine.handle_timer`). Every lease the engine changes is in ``Outcome.changed`` and
must be committed before ``Outcome.replies`` are sent.

Statistics (``Engine.stats``, a Counter whose names are all present from the start; see
``STATS_NAMES``):

=========================  ================================================================
rx_discover ... rx_inform  client messages received, by type (rx_decline, rx_release too)
request_selecting          REQUESTs classified per RFC 2131 §4.3.2 (also request_init_reboot,
                           request_renewing, request_rebinding)
tx_offer, tx_ack, tx_nak   replies produced (tx_ack includes ACKs to INFORM)
drop_bad_message           not a BOOTREQUEST, server message type, or a required field missing
drop_bootp                 no DHCP message type (plain BOOTP is not served)
drop_no_subnet             no configured subnet for the client's link
drop_no_server_id          neither server.server_id nor the receiving address is known
drop_not_for_us            server identifier names another server (SELECTING/DECLINE/RELEASE)
drop_policy                the failover policy said not to answer (may_answer)
drop_policy_allocate       a REQUEST for an address the policy may not allocate (no reply)
drop_unknown_client        INIT-REBOOT from a client we have no record of (RFC: silent)
drop_not_on_network        RENEWING for an address outside every subnet (silent)
drop_decline_mismatch      DECLINE for an address that is not the client's lease
drop_release_mismatch      RELEASE for an address that is not the client's active lease
pool_exhausted             DISCOVER left unanswered: no allocatable address
offer_expired              offer holds that lapsed (address back to the pool)
offer_withdrawn            offer holds dropped because the client chose another server
declined, released         leases abandoned by DECLINE / released by RELEASE
expired, probation_ended   leases moved by time: ACTIVE->EXPIRED, ABANDONED->FREE
reclaimed                  REQUEST ACKed for an address we had no binding of for this client
superseded                 a client's other ACTIVE lease in the subnet ended by a new binding
applied                    a binding taken from outside the engine (:meth:`Engine.apply`)
drop_rate_client           DISCOVER/REQUEST over the client's rate limit (``[limits]``)
drop_rate_relay            DISCOVER/REQUEST of an unknown client over its relay's limit
drop_rate_reserve          DISCOVER unanswered: its relay's offers already hold its share of
                           the subnet's failover reserve (``[limits]``, hot-standby standby)
=========================  ================================================================

Events (``Outcome.event``): ``POOL_EXHAUSTED`` (a subnet had no address for a client; at most
once per ``server.log_burst_interval_s`` per subnet) and ``ADDRESS_DECLINED`` (a client
reported an address in use; it is in probation for ``lease.decline_probation_s``).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from heapq import heapify, heappop, heappush
from ipaddress import IPv4Address
from typing import Final

from tandem.config.schema import Config
from tandem.dhcp.options import link_selection
from tandem.dhcp.ratelimit import RateLimiter, ReserveGuard
from tandem.dhcp.subnets import ReservationInfo, SubnetInfo, compile_subnets
from tandem.dhcp.types import BROADCAST_IP, Outcome, Reply, RxInfo
from tandem.failover.load_balance import LoadBalancePolicy
from tandem.failover.policy import (
    ANY_AVAILABLE,
    Policy,
    RequestKind,
    StandalonePolicy,
    usable_states,
)
from tandem.failover.router import PolicyRouter
from tandem.leases.model import BindingState, Lease
from tandem.leases.table import ClientKey, LeaseTable, client_key, copy_lease
from tandem.wire.addr import ip_int
from tandem.wire.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    OPT_CLIENT_ID,
    OPT_HOSTNAME,
    OPT_LEASE_TIME,
    OPT_MESSAGE,
    OPT_MESSAGE_TYPE,
    OPT_PARAMETER_REQUEST_LIST,
    OPT_REBINDING_TIME,
    OPT_RELAY_AGENT_INFO,
    OPT_RENEWAL_TIME,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    ZERO_IP,
    DhcpMessage,
    MessageType,
    encode_options,
)

__all__ = [
    "EVENT_ADDRESS_DECLINED",
    "EVENT_POOL_EXHAUSTED",
    "STATS_NAMES",
    "Engine",
    "classify_request",
    "deliver",
]

_NO_SNAME: Final = bytes(64)  # a reply's empty sname and file fields
_NO_FILE: Final = bytes(128)

EVENT_POOL_EXHAUSTED: Final = "POOL_EXHAUSTED"
EVENT_ADDRESS_DECLINED: Final = "ADDRESS_DECLINED"

STATS_NAMES: Final[tuple[str, ...]] = (
    "rx_discover",
    "rx_request",
    "rx_decline",
    "rx_release",
    "rx_inform",
    "request_selecting",
    "request_init_reboot",
    "request_renewing",
    "request_rebinding",
    "tx_offer",
    "tx_ack",
    "tx_nak",
    "drop_bad_message",
    "drop_bootp",
    "drop_no_subnet",
    "drop_no_server_id",
    "drop_not_for_us",
    "drop_policy",
    "drop_policy_allocate",
    "drop_unknown_client",
    "drop_not_on_network",
    "drop_decline_mismatch",
    "drop_release_mismatch",
    "pool_exhausted",
    "offer_expired",
    "offer_withdrawn",
    "declined",
    "released",
    "expired",
    "probation_ended",
    "reclaimed",
    "superseded",
    "applied",
    "drop_rate_client",
    "drop_rate_relay",
    "drop_rate_reserve",
)

_ACTIVE: Final = BindingState.ACTIVE
_EXPIRED: Final = BindingState.EXPIRED
_RELEASED: Final = BindingState.RELEASED
_ABANDONED: Final = BindingState.ABANDONED
_FREE: Final = BindingState.FREE
_BACKUP: Final = BindingState.BACKUP
_ASSOCIATED: Final = (_ACTIVE, _EXPIRED, _RELEASED)  # states that keep a client association
_REUSABLE_LIKE: Final = (_EXPIRED, _RELEASED, BindingState.RESET)

# Outcomes of the one address check every path shares (see Engine._check).
_BOUND: Final = 0  # the client's own unexpired ACTIVE lease
_AVAILABLE: Final = 1  # may be bound to this client if the policy allows
_CONFLICT: Final = 2  # bound/reserved/offered to another client, not in a pool, in probation
_OFF_NET: Final = 3  # not inside the selected subnet


# How many addresses the policy may refuse per tier before a DISCOVER gives up.
_REFUSAL_BUDGET: Final = 64

_MT_OFFER: Final = bytes((MessageType.OFFER,))
_MT_ACK: Final = bytes((MessageType.ACK,))
_MT_NAK: Final = bytes((MessageType.NAK,))
_PACK_I: Final = struct.Struct("!I").pack
_UNPACK_I: Final = struct.Struct("!I").unpack
# Enum attribute lookups cost ~150 ns each: bind the members once.
_DISCOVER: Final = RequestKind.DISCOVER
_SELECTING: Final = RequestKind.SELECTING
_INIT_REBOOT: Final = RequestKind.INIT_REBOOT
_RENEWING: Final = RequestKind.RENEWING
_REBINDING: Final = RequestKind.REBINDING
_K_DECLINE: Final = RequestKind.DECLINE
_K_RELEASE: Final = RequestKind.RELEASE
_K_INFORM: Final = RequestKind.INFORM


def _ip_opt(opts: dict[int, bytes], code: int) -> int | None:
    """An address option as an int (``None``: absent or not 4 bytes)."""
    v = opts.get(code)
    if v is None or len(v) != 4:
        return None
    return int.from_bytes(v, "big")


class _Offer:
    __slots__ = ("addr", "expires", "key", "subnet")

    def __init__(self, addr: int, key: ClientKey, subnet: SubnetInfo, expires: float) -> None:
        self.addr = addr
        self.key = key
        self.subnet = subnet
        self.expires = expires


def classify_request(msg: DhcpMessage, to_unicast: bool) -> RequestKind | None:
    """RFC 2131 §4.3.2: which kind of DHCPREQUEST this is (``None``: none of them).

    With ciaddr set, a REQUEST the client unicast to us is RENEWING and a broadcast one is
    REBINDING. A relayed one (giaddr set) reached the relay as a broadcast -- relays only
    forward broadcasts -- so it is REBINDING even though the relay unicast it to us.
    """
    opts = msg.options
    if OPT_SERVER_ID in opts:
        return _SELECTING
    if not ip_int(msg.ciaddr):
        return _INIT_REBOOT if _ip_opt(opts, OPT_REQUESTED_IP) is not None else None
    return _RENEWING if to_unicast and not ip_int(msg.giaddr) else _REBINDING


def deliver(
    request: DhcpMessage,
    reply: DhcpMessage,
    *,
    nak: bool,
    server_port: int,
    client_port: int,
    raw_replies: bool = True,
    interface: str = "",
) -> Reply:
    """Where a reply goes, RFC 2131 §4.1 (and §4.3.2 for DHCPNAK).

    Relayed -> the relay (giaddr) at the server port; NAK -> broadcast; client has an
    address (ciaddr) -> unicast to it; broadcast bit, no yiaddr, or no packet socket allowed
    (``raw_replies`` false) -> broadcast; otherwise unicast to yiaddr at chaddr without ARP.
    """
    if request.giaddr != ZERO_IP:
        return Reply(reply, request.giaddr, server_port, interface)
    if nak:
        return Reply(reply, BROADCAST_IP, client_port, interface)
    if request.ciaddr != ZERO_IP:
        return Reply(reply, request.ciaddr, client_port, interface)
    if request.flags & FLAG_BROADCAST or reply.yiaddr == ZERO_IP or not raw_replies:
        return Reply(reply, BROADCAST_IP, client_port, interface)
    return Reply(reply, reply.yiaddr, client_port, interface, True, request.hwaddr)


_FAR_SPAN: Final = 64  # seconds per bucket of the far lease timer tier (a power of two: exact)
_FAR_LIMIT: Final = 1 << 62  # lease ends outside +-this (inf, ...) stay in the near tier
_RELAY_CACHE_MAX: Final = 4096  # relay address -> subnet (the subnets do not change)
_TAIL_CACHE_MAX: Final = 256  # distinct PRLs remembered per option set and reply kind


# A reply's tail (see _reply_tail): its options in order, and their TLVs when the reply's
# options can be laid out as encode() would without its help (None: they cannot).
_Tail = tuple[tuple[tuple[int, bytes], ...], bytes | None]
_TLV_MT: Final = bytes((OPT_MESSAGE_TYPE, 1))
_TLV_SID: Final = bytes((OPT_SERVER_ID, 4))
_TLV_LT: Final = bytes((OPT_LEASE_TIME, 4))
_TLV_T1: Final = bytes((OPT_RENEWAL_TIME, 4))
_TLV_T2: Final = bytes((OPT_REBINDING_TIME, 4))
# Codes whose place in a reply is not their place in the tail: echoed last (61, 82), or
# placed by encode() itself (52).
_NOT_PRE_ENCODED: Final = frozenset((OPT_CLIENT_ID, OPT_RELAY_AGENT_INFO, 52))


def _reply_tail(optset: dict[int, bytes], prl: bytes, timed: bool) -> _Tail:
    """The options a reply carries after message type, server id and (``timed``) the
    three times, in order: the subnet mask, then the PRL's options in its order (none:
    all of the option set's), each once and never one of the fixed ones; with their
    encoding (see _Tail)."""
    fixed = {OPT_MESSAGE_TYPE, OPT_SERVER_ID}
    if timed:
        fixed |= {OPT_LEASE_TIME, OPT_RENEWAL_TIME, OPT_REBINDING_TIME}
    o: dict[int, bytes] = {}
    mask = optset.get(OPT_SUBNET_MASK)
    if mask is not None and OPT_SUBNET_MASK not in fixed:
        o[OPT_SUBNET_MASK] = mask
    for c in prl if prl else optset:
        if c not in o and c not in fixed:
            v = optset.get(c)
            if v is not None:
                o[c] = v
    items = tuple(o.items())
    wire: bytes | None = None
    if not any(c in _NOT_PRE_ENCODED or not 0 < c < 255 for c in o):
        wire = encode_options(items)
    return items, wire


class Engine:
    """The DHCPv4 server logic for all configured subnets (see the module docstring)."""

    def __init__(self, config: Config, policy: Policy | None = None) -> None:
        self.config = config
        self.policy: Policy = policy if policy is not None else StandalonePolicy()
        # StandalonePolicy says yes to everything: skip building throw-away leases for it.
        self._trusting = type(self.policy) is StandalonePolicy
        # Several relationships (or subnets served alone beside one): the policy per subnet.
        self._router = self.policy if isinstance(self.policy, PolicyRouter) else None
        self.subnets = compile_subnets(config)
        self._reserved = self.subnets.reserved
        self.table = LeaseTable()
        self.stats: Counter[str] = Counter(dict.fromkeys(STATS_NAMES, 0))
        self._offers: dict[int, _Offer] = {}  # address -> hold
        self._offer_of: dict[ClientKey, _Offer] = {}  # client -> hold
        # Timers. Offer holds (few, short): a heap of (deadline, address). Lease ends
        # (ACTIVE: expiry, ABANDONED: end of probation; one per lease, so memory counts)
        # in two tiers. Far: 64-second span -> list of addresses, and a heap of the spans
        # (~8 bytes per lease). Near (deadlines before ``_horizon``, filled from the far
        # tier one span at a time when get_timer/handle_timer reach it): exact deadline -> address
        # or list of addresses, and a heap of those deadlines. Stale entries (a lease
        # renewed, released, an offer taken) are dropped lazily: an entry is due only while
        # the lease's end / the hold's expiry still equals its deadline.
        self._heap: list[tuple[float, int]] = []  # offer holds: (expires, address)
        self._due_heap: list[float] = []  # near: distinct lease deadlines
        self._due: dict[float, int | list[int]] = {}  # near: deadline -> address(es)
        self._far_heap: list[int] = []  # far: distinct spans (deadline // _FAR_SPAN)
        self._far: dict[int, list[int]] = {}  # far: span -> addresses
        self._horizon = -_FAR_LIMIT  # deadlines from here on go to the far tier
        lt = config.lease
        self._min_lt = lt.min_lease_time_s
        self._max_lt = lt.max_lease_time_s
        self._hold_s = lt.offer_hold_s
        self._probation_s = lt.decline_probation_s
        srv = config.server
        self._server_id = srv.server_id
        self._port = srv.port
        self._client_port = srv.client_port
        self._raw = srv.raw_replies
        self._burst_s = srv.log_burst_interval_s
        self._sid_pair = (srv.server_id, srv.server_id.packed) if srv.server_id else None
        lim = config.limits
        limiter = RateLimiter(
            client_rate=lim.client_rate_per_s,
            client_burst=lim.client_burst,
            relay_rate=lim.relay_new_clients_per_s,
            relay_burst=lim.relay_burst,
            max_clients=lim.max_tracked_clients,
            max_relays=lim.max_tracked_relays,
        )
        self.limiter: RateLimiter | None = limiter if limiter.enabled else None
        share = lim.reserve_share_per_relay
        self.reserve_guard = ReserveGuard(share, lim.max_tracked_relays) if share > 0 else None
        self._relay_subnet: dict[int, SubnetInfo | None] = {}
        # _reply: id(option set) -> (option set, {PRL: tail} with times, ... without)
        self._tails: dict[
            int, tuple[dict[int, bytes], dict[bytes, _Tail], dict[bytes, _Tail]]
        ] = {}
        self._dispatch: dict[int, Callable[[DhcpMessage, RxInfo, float, Outcome], None]]
        self._dispatch = {
            MessageType.DISCOVER: self._discover,
            MessageType.REQUEST: self._request,
            MessageType.DECLINE: self._decline,
            MessageType.RELEASE: self._release,
            MessageType.INFORM: self._inform,
        }

    # ------------------------------------------------------------------ public API

    def load(self, leases: Iterable[Lease], now: float) -> None:
        """Take the leases read from the store at startup (the engine owns them from now).
        Leases whose time ran out while the server was down are moved by the next
        :meth:`handle_timer` (``get_timer`` then returns a past deadline)."""
        reusable: list[tuple[float, int]] = []
        far = self._far
        far_heap = self._far_heap
        horizon = self._horizon
        for lease in leases:
            self.table.put(lease)
            a = ip_int(lease.address)
            st = lease.state
            if st is _ACTIVE or st is _ABANDONED:
                end = lease.end
                if horizon <= end < _FAR_LIMIT:
                    sec = int(end // _FAR_SPAN)
                    lst = far.get(sec)
                    if lst is None:
                        far[sec] = [a]
                        far_heap.append(sec)
                    else:
                        lst.append(a)
                else:
                    self._lease_timer(end, a)
                continue
            sn = self._pool_subnet(a)
            if sn is None:
                continue
            if st is _FREE:
                sn.pool.push_free(a)
            elif st is _BACKUP:
                sn.pool.push_backup(a)
            elif st in _REUSABLE_LIKE:
                reusable.append((lease.end, a))
        reusable.sort()
        for _end, a in reusable:
            sn = self._pool_subnet(a)
            if sn is not None:
                sn.pool.push_reusable(a)
        heapify(far_heap)

    def apply(self, lease: Lease, now: float) -> Lease:
        """Take a binding decided outside the engine as this server's record of
        ``lease.address``: a binding update accepted from the failover partner, an ownership
        move (FREE <-> BACKUP), acknowledged failover times (tstp/tsfp).

        Indexes, pool queues and timers follow; an offer held on the address is withdrawn
        when the address is now bound (ACTIVE) or unusable (ABANDONED). The policy is not
        told (the change came from the failover side). Returns a snapshot to commit.
        """
        a = ip_int(lease.address)
        own = copy_lease(lease)
        st = own.state
        off = self._offers.get(a)
        if off is not None and (st is _ACTIVE or st is _ABANDONED):
            del self._offers[a]
            if self._offer_of.get(off.key) is off:
                del self._offer_of[off.key]
            self.stats["offer_withdrawn"] += 1
        self.table.put(own)
        self._discard_from_pool(a)
        if st is _ACTIVE or st is _ABANDONED:
            self._lease_timer(own.end, a)
        else:
            self._return_to_pool(a)
        self.stats["applied"] += 1
        return copy_lease(own)

    def handle(self, msg: DhcpMessage, rx: RxInfo, now: float) -> Outcome:
        """Handle one client message received at ``now``."""
        out = Outcome()
        if msg.op != BOOTREQUEST:
            self.stats["drop_bad_message"] += 1
            return out
        raw = msg.options.get(OPT_MESSAGE_TYPE)
        if raw is None:
            self.stats["drop_bootp"] += 1
            return out
        opts = msg.options
        handler = self._dispatch.get(raw[0]) if len(raw) == 1 else None
        if handler is None:
            self.stats["drop_bad_message"] += 1
            return out
        # A client identifier or relay agent information option longer than 255 octets is
        # malformed (RFC 2132 §9.14, RFC 3046 §2.0); the reply echoes both, so such a
        # request could get a reply that does not fit a 576-byte datagram (found by fuzzing).
        cid = opts.get(OPT_CLIENT_ID)
        rai = opts.get(OPT_RELAY_AGENT_INFO)
        if (cid is not None and len(cid) > 255) or (rai is not None and len(rai) > 255):
            self.stats["drop_bad_message"] += 1
            return out
        handler(msg, rx, now, out)
        return out

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` has work (epoch s), or ``None``."""
        d = self._next_lease_deadline()
        o = self._next_offer_deadline()
        if o is None or (d is not None and d <= o):
            return d
        return o

    def handle_timer(self, now: float) -> list[Lease]:
        """Expire leases and offer holds due at ``now``; returns the leases to commit.

        Order: by deadline; at equal deadlines leases before offer holds; then by address."""
        changed: list[Lease] = []
        stats = self.stats
        get = self.table.get
        while True:
            d = self._next_lease_deadline()
            o = self._next_offer_deadline()
            if d is not None and d <= now and (o is None or d <= o):
                heappop(self._due_heap)
                b = self._due.pop(d)
                for a in sorted(set(b)) if isinstance(b, list) else (b,):
                    lease = get(a)
                    if lease is None or lease.end != d:
                        continue
                    if lease.state is _ACTIVE:
                        lease.state = _EXPIRED  # the association stays: reuse preference
                        stats["expired"] += 1
                    elif lease.state is _ABANDONED:  # probation over
                        lease.state = _FREE
                        stats["probation_ended"] += 1
                    else:
                        continue
                    self._return_to_pool(a)
                    changed.append(self._changed(lease, now))
            elif o is not None and o <= now:
                _, a = heappop(self._heap)
                self._drop_offer(self._offers[a])
                stats["offer_expired"] += 1
            else:
                return changed

    def leases(self) -> Iterator[Lease]:
        """Snapshots of every known lease."""
        for lease in self.table:
            yield copy_lease(lease)

    # ------------------------------------------------------------------ message handlers

    def _sid(self, rx: RxInfo) -> tuple[IPv4Address, bytes] | None:
        """Our server identifier for this message (configured, else the receiving address)."""
        pair = self._sid_pair
        if pair is not None:
            return pair
        ip = rx.local_ip
        return (ip, ip.packed) if ip is not None else None

    def _may_answer(self, msg: DhcpMessage, rx: RxInfo, kind: RequestKind, now: float) -> bool:
        """Ask the policy (failover: is this message ours to answer?); counted if not. With
        several failover relationships the policy of the client's subnet decides."""
        router = self._router
        if router is None and self._trusting:
            return True  # StandalonePolicy.may_answer: always
        policy = self.policy
        if router is not None:
            sn = self._select_subnet(msg, rx, inform=kind is _K_INFORM)
            policy = router.policy_for_subnet(sn.id if sn is not None else None)
        if policy.may_answer(msg, kind, now):
            return True
        self.stats["drop_policy"] += 1
        return False

    def _within_limits(self, msg: DhcpMessage, rx: RxInfo, key: ClientKey, now: float) -> bool:
        """The ``[limits]`` token buckets (see :mod:`tandem.dhcp.ratelimit`); counted if not.
        A client is new to its relay's bucket when we hold no lease record or offer for it."""
        limiter = self.limiter
        assert limiter is not None
        gi = ip_int(msg.giaddr)
        relay: object = gi if gi else rx.interface
        new = key not in self._offer_of and not self.table.for_client(key)
        verdict = limiter.admit(key, relay, new, now)
        if verdict is None:
            return True
        self.stats["drop_rate_client" if verdict == "client" else "drop_rate_relay"] += 1
        return False

    def _reserve_relay(
        self,
        guard: ReserveGuard,
        msg: DhcpMessage,
        rx: RxInfo,
        key: ClientKey,
        a: int,
        sn: SubnetInfo,
        now: float,
    ) -> tuple[object] | bool | None:
        """The reserve guard (:class:`~tandem.dhcp.ratelimit.ReserveGuard`), asked before
        reserve address ``a`` is offered: ``None`` -- not guarded (the address is already
        offered to this client, or the server is not restricted to its reserve); ``False``
        -- refused (counted); else ``(relay,)``, the key the new offer counts against."""
        off = self._offer_of.get(key)
        if off is not None and off.addr == a:
            return None
        router = self._router
        policy = self.policy if router is None else router.policy_for_subnet(sn.id)
        if isinstance(policy, LoadBalancePolicy) or _FREE in usable_states(policy, now):
            # not restricted to a reserve: standalone, a primary, PARTNER-DOWN after the
            # MCLT; load balance: BACKUP is the secondary's half of the pool, not a reserve
            return None
        gi = ip_int(msg.giaddr)
        relay: object = gi if gi else rx.interface
        offers = self._offers

        def live(o: object) -> bool:
            return isinstance(o, _Offer) and offers.get(o.addr) is o and o.expires > now

        if guard.admit(relay, sn.id, sn.pool.queued_backup() + 1, live, now):
            return (relay,)
        self.stats["drop_rate_reserve"] += 1
        return False

    def _admit(
        self, msg: DhcpMessage, rx: RxInfo, kind: RequestKind, now: float
    ) -> tuple[tuple[IPv4Address, bytes], SubnetInfo] | None:
        """The common gate of DISCOVER and INFORM: the policy lets us answer, we have a
        server identifier, and the message belongs to one of our subnets (counted if not)."""
        stats = self.stats
        if not self._may_answer(msg, rx, kind, now):
            return None
        sid = self._sid_pair or self._sid(rx)
        if sid is None:
            stats["drop_no_server_id"] += 1
            return None
        sn = self._select_subnet(msg, rx, inform=kind is _K_INFORM)
        if sn is None:
            stats["drop_no_subnet"] += 1
            return None
        return sid, sn

    def _discover(self, msg: DhcpMessage, rx: RxInfo, now: float, out: Outcome) -> None:
        stats = self.stats
        stats["rx_discover"] += 1
        ready = self._admit(msg, rx, _DISCOVER, now)
        if ready is None:
            return
        sid, sn = ready
        opts = msg.options
        cid = opts.get(OPT_CLIENT_ID) or None
        hlen = msg.hlen
        hw = msg.chaddr[: hlen if hlen < 16 else 16]
        key = client_key(cid, msg.htype, hw)
        if key is None:
            stats["drop_bad_message"] += 1
            return
        if self.limiter is not None and not self._within_limits(msg, rx, key, now):
            return
        res = self._usable_reservation(sn, cid, hw, key, now) if sn.has_reservations else None
        choice = self._choose(opts, key, sn, res, now)
        if choice is None and res is not None:
            stats["drop_policy_allocate"] += 1  # the policy refused the reserved address
            return
        if choice is None:
            stats["pool_exhausted"] += 1
            last = sn.last_exhausted_event
            if last is None or now - last >= self._burst_s:
                sn.last_exhausted_event = now
                out.event = EVENT_POOL_EXHAUSTED
            return
        a, lease = choice
        guard = self.reserve_guard
        guarded: tuple[object] | bool | None = None
        if guard is not None and res is None and lease is not None and lease.state is _BACKUP:
            guarded = self._reserve_relay(guard, msg, rx, key, a, sn, now)
            if guarded is False:
                sn.pool.push_backup(a)  # back to its queue, untouched
                return
        times = self._times(sn, opts, a, lease, now)
        self._hold(a, key, sn, now)
        if guard is not None and isinstance(guarded, tuple):
            guard.record(guarded[0], sn.id, self._offers[a])
        yiaddr = lease.address if lease is not None else IPv4Address(a)
        optset = res.options if res is not None and res.address == a else sn.options
        reply = self._reply(msg, _MT_OFFER, sid[1], yiaddr, ZERO_IP, times, optset)
        out.replies.append(self._deliver(msg, reply, False, rx))
        stats["tx_offer"] += 1

    def _request(self, msg: DhcpMessage, rx: RxInfo, now: float, out: Outcome) -> None:
        stats = self.stats
        stats["rx_request"] += 1
        opts = msg.options
        kind = classify_request(msg, rx.to_unicast)
        if kind is None:
            stats["drop_bad_message"] += 1
            return
        if kind is _SELECTING:
            stats["request_selecting"] += 1
        elif kind is _INIT_REBOOT:
            stats["request_init_reboot"] += 1
        elif kind is _RENEWING:
            stats["request_renewing"] += 1
        else:
            stats["request_rebinding"] += 1
        if not self._may_answer(msg, rx, kind, now):
            return
        sidp = self._sid_pair or self._sid(rx)
        if sidp is None:
            stats["drop_no_server_id"] += 1
            return
        sid = sidp[1]
        cid = opts.get(OPT_CLIENT_ID) or None
        hlen = msg.hlen
        hw = msg.chaddr[: hlen if hlen < 16 else 16]
        key = client_key(cid, msg.htype, hw)
        if key is None:
            stats["drop_bad_message"] += 1
            return
        if self.limiter is not None and not self._within_limits(msg, rx, key, now):
            return
        if kind is _SELECTING and opts[OPT_SERVER_ID] != sid:
            # The client chose another server: release what we offered it.
            off = self._offer_of.get(key)
            if off is not None:
                self._drop_offer(off)
                stats["offer_withdrawn"] += 1
            stats["drop_not_for_us"] += 1
            return
        sn = self._select_subnet(msg, rx)
        if sn is None:
            stats["drop_no_subnet"] += 1
            return
        res = self._usable_reservation(sn, cid, hw, key, now) if sn.has_reservations else None
        rq = opts.get(OPT_REQUESTED_IP)  # _ip_opt, inline
        requested = int.from_bytes(rq, "big") if rq is not None and len(rq) == 4 else None
        ciaddr = ip_int(msg.ciaddr)

        a: int
        if kind is _SELECTING:
            if requested is None:
                requested = ciaddr or None
            if requested is None:
                self._nak(msg, rx, sid, "no requested address", out)
                return
            a = requested
            off = self._offer_of.get(key)
            if off is not None and off.subnet is sn and off.addr != a and off.expires > now:
                self._nak(msg, rx, sid, "requested address was not offered", out)
                return
        elif kind is _INIT_REBOOT:
            assert requested is not None
            a = requested
            if not sn.contains(a):
                self._nak(msg, rx, sid, "wrong network", out)
                return
            known = self._known_addresses(key, sn, res)
            if not known:
                # RFC 2131 §4.3.2: no record of the client -> silent. But an address that is
                # bound to or reserved for another client is NAKed (as ISC dhcpd does).
                if self._taken_by_other(a, key, now):
                    self._nak(msg, rx, sid, "address in use by another client", out)
                else:
                    stats["drop_unknown_client"] += 1
                return
            if a not in known:
                self._nak(msg, rx, sid, "not your address", out)
                return
        else:  # RENEWING / REBINDING
            a = ciaddr
            if not sn.contains(a):
                if kind is _RENEWING:
                    stats["drop_not_on_network"] += 1
                else:
                    self._nak(msg, rx, sid, "wrong network", out)
                return

        verdict = self._check(a, key, sn, res, now)
        if verdict == _OFF_NET:
            self._nak(msg, rx, sid, "wrong network", out)
            return
        if verdict == _CONFLICT:
            self._nak(msg, rx, sid, "requested address not available", out)
            return
        table = self.table
        lease = table.get(a)
        if verdict == _AVAILABLE and not (self._trusting or self._may_allocate(a, sn, lease, now)):
            stats["drop_policy_allocate"] += 1
            return
        if (kind is _RENEWING or kind is _REBINDING) and (lease is None or table.key_of(a) != key):
            stats["reclaimed"] += 1  # a lease we had lost (or never had): ISC does the same
        times = self._times(sn, opts, a, lease, now)
        bound = self._bind(a, key, cid, hw, sn, res, msg, times[0], now, out)
        optset = res.options if res is not None and res.address == a else sn.options
        reply = self._reply(msg, _MT_ACK, sid, bound.address, msg.ciaddr, times, optset)
        out.replies.append(self._deliver(msg, reply, False, rx))
        stats["tx_ack"] += 1

    def _decline(self, msg: DhcpMessage, rx: RxInfo, now: float, out: Outcome) -> None:
        stats = self.stats
        stats["rx_decline"] += 1
        if not self._may_answer(msg, rx, _K_DECLINE, now) or not self._for_us(msg, rx):
            return
        opts = msg.options
        key = client_key(opts.get(OPT_CLIENT_ID) or None, msg.htype, msg.hwaddr)
        a = _ip_opt(opts, OPT_REQUESTED_IP)
        if key is None or a is None:
            stats["drop_bad_message"] += 1
            return
        table = self.table
        lease = table.get(a)
        if lease is None or lease.state not in _ASSOCIATED or table.key_of(a) != key:
            stats["drop_decline_mismatch"] += 1
            return
        off = self._offer_of.get(key)
        if off is not None:
            self._drop_offer(off)
        lease.state = _ABANDONED
        lease.start = now
        lease.end = now + self._probation_s
        lease.cltt = now
        lease.hwaddr = b""
        lease.client_id = None
        lease.hostname = None
        lease.relay_info = None
        table.put(lease)
        self._discard_from_pool(a)
        self._lease_timer(lease.end, a)
        out.changed.append(self._changed(lease, now))
        out.event = EVENT_ADDRESS_DECLINED
        stats["declined"] += 1

    def _release(self, msg: DhcpMessage, rx: RxInfo, now: float, out: Outcome) -> None:
        stats = self.stats
        stats["rx_release"] += 1
        if not self._may_answer(msg, rx, _K_RELEASE, now) or not self._for_us(msg, rx):
            return
        key = client_key(msg.options.get(OPT_CLIENT_ID) or None, msg.htype, msg.hwaddr)
        a = ip_int(msg.ciaddr)
        table = self.table
        lease = table.get(a) if a else None
        if lease is None or lease.state is not _ACTIVE or key is None or table.key_of(a) != key:
            stats["drop_release_mismatch"] += 1
            return
        lease.state = _RELEASED  # the association stays: the client gets it back later
        lease.end = now
        lease.cltt = now
        table.put(lease)
        self._return_to_pool(a)
        out.changed.append(self._changed(lease, now))
        stats["released"] += 1

    def _inform(self, msg: DhcpMessage, rx: RxInfo, now: float, out: Outcome) -> None:
        stats = self.stats
        stats["rx_inform"] += 1
        ready = self._admit(msg, rx, _K_INFORM, now)
        if ready is None:
            return
        sid, sn = ready
        res = sn.reservation_for(msg.options.get(OPT_CLIENT_ID) or None, msg.hwaddr)
        optset = res.options if res is not None else sn.options
        reply = self._reply(msg, _MT_ACK, sid[1], ZERO_IP, msg.ciaddr, None, optset)
        out.replies.append(self._deliver(msg, reply, False, rx))
        stats["tx_ack"] += 1

    # ------------------------------------------------------------------ selection

    def _select_subnet(
        self, msg: DhcpMessage, rx: RxInfo, inform: bool = False
    ) -> SubnetInfo | None:
        """The client's subnet: link selection (RFC 3527 82.5 / RFC 3011 118), else the relay
        (giaddr), else -- for unicast messages (and INFORM) -- the client's own address, else
        the receiving interface's address, else the only subnet."""
        subnets = self.subnets
        opts = msg.options
        if OPT_RELAY_AGENT_INFO in opts or 118 in opts:
            link = link_selection(opts)
            if link is not None:
                return subnets.for_relay(ip_int(link))
        gi = ip_int(msg.giaddr)
        if gi:
            cache = self._relay_subnet
            if gi in cache:
                return cache[gi]
            if len(cache) >= _RELAY_CACHE_MAX:
                cache.clear()  # bounded: giaddr is the sender's choice
            sn = cache[gi] = subnets.for_relay(gi)
            return sn
        ci = ip_int(msg.ciaddr)
        if ci and (rx.to_unicast or inform):
            s = subnets.containing(ci)
            if s is not None:
                return s
        if rx.local_ip is not None:
            s = subnets.containing(ip_int(rx.local_ip))
            if s is not None:
                return s
        if len(subnets.all) == 1:
            return subnets.all[0]
        return None

    def _for_us(self, msg: DhcpMessage, rx: RxInfo) -> bool:
        """DECLINE/RELEASE: a server identifier naming another server -> not ours."""
        sid = self._sid(rx)
        if sid is None:
            self.stats["drop_no_server_id"] += 1
            return False
        named = msg.options.get(OPT_SERVER_ID)
        if named is not None and named != sid[1]:
            self.stats["drop_not_for_us"] += 1
            return False
        return True

    def _usable_reservation(
        self, sn: SubnetInfo, cid: bytes | None, hw: bytes, key: ClientKey, now: float
    ) -> ReservationInfo | None:
        """The client's reservation in ``sn`` if its address can be given to it now (not
        held by another client's unexpired lease or offer, not in decline probation)."""
        if not sn.has_reservations:
            return None
        res = sn.reservation_for(cid, hw)
        if res is None:
            return None
        a = res.address
        off = self._offers.get(a)
        if off is not None and off.key != key and off.expires > now:
            return None
        lease = self.table.get(a)
        if lease is None:
            return res
        if lease.state is _ABANDONED:
            return None
        if lease.state is _ACTIVE and lease.end > now and self.table.key_of(a) != key:
            return None
        return res

    def _check(
        self, a: int, key: ClientKey, sn: SubnetInfo, res: ReservationInfo | None, now: float
    ) -> int:
        """May address ``a`` be bound to client ``key`` in ``sn``? The one rule set shared by
        DISCOVER and every REQUEST kind (the policy is asked separately for _AVAILABLE)."""
        if not sn.contains(a):
            return _OFF_NET
        if res is not None:
            if a != res.address:
                return _CONFLICT  # a client with a reservation gets only that address
        elif a in self._reserved or not sn.pool.contains(a):
            return _CONFLICT
        off = self._offers.get(a)
        if off is not None and off.key != key and off.expires > now:
            return _CONFLICT
        lease = self.table.get(a)
        if lease is None:
            return _AVAILABLE
        st = lease.state
        if st is _ACTIVE and lease.end > now:
            return _BOUND if self.table.key_of(a) == key else _CONFLICT
        if st is _ABANDONED:
            return _CONFLICT
        return _AVAILABLE

    def _known_addresses(
        self, key: ClientKey, sn: SubnetInfo, res: ReservationInfo | None
    ) -> set[int]:
        """Addresses we have a record of for this client in ``sn`` (INIT-REBOOT)."""
        known = {ip_int(le.address) for le in self.table.for_client(key)}
        known = {a for a in known if sn.contains(a)}
        if res is not None:
            known.add(res.address)
        return known

    def _taken_by_other(self, a: int, key: ClientKey, now: float) -> bool:
        """Reserved for some client, or bound (unexpired ACTIVE) to another client."""
        if a in self._reserved:
            return True
        lease = self.table.get(a)
        return (
            lease is not None
            and lease.state is _ACTIVE
            and lease.end > now
            and self.table.key_of(a) != key
        )

    def _choose(
        self,
        opts: dict[int, bytes],
        key: ClientKey,
        sn: SubnetInfo,
        res: ReservationInfo | None,
        now: float,
    ) -> tuple[int, Lease | None] | None:
        """The address to offer: reservation; the client's current/previous binding; the
        address already offered to it; the requested address; a free pool address."""
        table = self.table
        if res is not None:
            a = res.address
            lease = table.get(a)
            if self._check(a, key, sn, res, now) == _BOUND or self._may_allocate(a, sn, lease, now):
                return a, lease
            return None
        # The client's own binding in this subnet, best first: ACTIVE, then most recent.
        best: Lease | None = None
        for le in table.for_client(key):
            if le.state not in _ASSOCIATED or not sn.contains(ip_int(le.address)):
                continue
            if best is None or (le.state is _ACTIVE, le.end) > (best.state is _ACTIVE, best.end):
                best = le
        if best is not None:
            a = ip_int(best.address)
            v = self._check(a, key, sn, None, now)
            if v == _BOUND or (v == _AVAILABLE and self._may_allocate(a, sn, best, now)):
                return a, best
        off = self._offer_of.get(key)
        if off is not None and off.subnet is sn and off.expires > now:
            a = off.addr
            lease = table.get(a)
            if self._check(a, key, sn, None, now) == _AVAILABLE and self._may_allocate(
                a, sn, lease, now
            ):
                return a, lease
        r = _ip_opt(opts, OPT_REQUESTED_IP)
        if r is not None:
            a = r
            lease = table.get(a)
            if self._check(a, key, sn, None, now) == _AVAILABLE and self._may_allocate(
                a, sn, lease, now
            ):
                return a, lease
        return self._allocate(sn, now)

    def _allocate(self, sn: SubnetInfo, now: float) -> tuple[int, Lease | None] | None:
        """A free pool address, from the queues of the kinds the policy may use now
        (``usable_states``, in its order; standalone: all of them): FREE = the free queue,
        then never-used addresses from the cursor; BACKUP = the backup queue (the failover
        secondary's reserve); EXPIRED/RELEASED/RESET = other clients' old addresses, least
        recently freed first. A server that may not use a kind never pops it. O(1)
        amortised; the policy may still refuse single addresses (put back afterwards)."""
        if self._trusting:
            order = ANY_AVAILABLE
        else:
            router = self._router
            policy = self.policy if router is None else router.policy_for_subnet(sn.id)
            order = usable_states(policy, now)
        pool = sn.pool
        refused_free: list[int] = []
        refused_backup: list[int] = []
        refused_reusable: list[int] = []
        found: tuple[int, Lease | None] | None = None
        reusable_done = False
        for st in order:
            if st is _FREE:
                # 1. addresses that went back to FREE, 2. never-used addresses
                found = self._take_queued(pool.pop_free, sn, refused_free, now)
                if found is None:
                    found = self._take_fresh(sn, refused_free, now)
            elif st is _BACKUP:
                found = self._take_queued(pool.pop_backup, sn, refused_backup, now)
            elif not reusable_done:
                # 3. other clients' expired / released addresses
                reusable_done = True
                found = self._take_queued(pool.pop_reusable, sn, refused_reusable, now)
            if found is not None:
                break
        for a in refused_free:
            pool.push_free(a)
        for a in refused_backup:
            pool.push_backup(a)
        for a in refused_reusable:
            pool.push_reusable(a)
        return found

    def _take_fresh(
        self, sn: SubnetInfo, refused: list[int], now: float
    ) -> tuple[int, Lease | None] | None:
        """The first usable never-used address from the pool's cursor; addresses the policy
        refuses are appended to ``refused`` (the caller queues them as free)."""
        pool = sn.pool
        table = self.table
        offers = self._offers
        reserved = self._reserved
        budget = len(refused) + _REFUSAL_BUDGET
        while len(refused) < budget:
            a = pool.next_fresh()
            if a is None:
                return None
            if a in reserved or a in offers or a in table:
                continue  # reserved, held, or known (a known lease sits in a queue)
            if self._may_allocate(a, sn, None, now):
                return a, None
            refused.append(a)
        return None

    def _take_queued(
        self,
        pop: Callable[[], int | None],
        sn: SubnetInfo,
        refused: list[int],
        now: float,
    ) -> tuple[int, Lease | None] | None:
        """The first usable address from one of the pool's queues; addresses the policy
        refuses are appended to ``refused`` (the caller puts them back)."""
        while len(refused) < _REFUSAL_BUDGET:
            a = pop()
            if a is None:
                return None
            if a in self._reserved or a in self._offers:
                continue
            lease = self.table.get(a)
            if lease is not None and (lease.state is _ABANDONED or lease.state is _ACTIVE):
                continue
            if self._may_allocate(a, sn, lease, now):
                return a, lease
            refused.append(a)
        return None

    def _may_allocate(self, a: int, sn: SubnetInfo, lease: Lease | None, now: float) -> bool:
        if self._trusting:
            return True
        if lease is None:
            lease = Lease(IPv4Address(a), sn.id)
        return self.policy.may_allocate(lease, now)

    def _times(
        self, sn: SubnetInfo, opts: dict[int, bytes], a: int, lease: Lease | None, now: float
    ) -> tuple[int, int, int]:
        """(lease time, T1, T2) in seconds for this client."""
        raw = opts.get(OPT_LEASE_TIME)
        t = _UNPACK_I(raw)[0] if raw is not None and len(raw) == 4 else sn.default_lease_s
        lo, hi = self._min_lt, self._max_lt
        t = lo if t < lo else t  # min(max(t, lo), hi) without the calls
        t = hi if t > hi else t
        if not self._trusting:
            if lease is None:
                lease = Lease(IPv4Address(a), sn.id)
            t = max(1, min(t, self.policy.max_lease_time(lease, t, now)))
        r1, r2 = sn.renew_s, sn.rebind_s
        t1 = r1 if r1 is not None and r1 < t else t // 2
        t2 = r2 if r2 is not None and r2 < t else t * 7 // 8
        if t1 >= t2:
            t1, t2 = t // 2, t * 7 // 8
        return t, t1, t2

    # ------------------------------------------------------------------ state changes

    def _hold(self, a: int, key: ClientKey, sn: SubnetInfo, now: float) -> None:
        """Hold address ``a`` for client ``key`` for ``lease.offer_hold_s``."""
        old = self._offer_of.get(key)
        if old is not None and old.addr != a:
            self._drop_offer(old)
        expires = now + self._hold_s
        if old is not None and old.addr == a:
            old.expires = expires
            old.subnet = sn
        else:
            stale = self._offers.get(a)  # another client's lapsed hold (timer not run yet)
            if stale is not None and self._offer_of.get(stale.key) is stale:
                del self._offer_of[stale.key]
            off = _Offer(a, key, sn, expires)
            self._offers[a] = off
            self._offer_of[key] = off
            sn.pool.discard(a)
        heappush(self._heap, (expires, a))

    def _drop_offer(self, off: _Offer) -> None:
        if self._offers.get(off.addr) is off:
            del self._offers[off.addr]
        if self._offer_of.get(off.key) is off:
            del self._offer_of[off.key]
        self._return_to_pool(off.addr)

    def _bind(
        self,
        a: int,
        key: ClientKey,
        cid: bytes | None,
        hw: bytes,
        sn: SubnetInfo,
        res: ReservationInfo | None,
        msg: DhcpMessage,
        lease_s: int,
        now: float,
        out: Outcome,
    ) -> Lease:
        """Make ``a`` the client's ACTIVE lease until ``now + lease_s``."""
        table = self.table
        lease = table.get(a)
        opts = msg.options
        raw_name = opts.get(OPT_HOSTNAME)
        hostname = raw_name.decode("utf-8", "replace").rstrip("\x00") if raw_name else None
        if hostname is None:
            if res is not None and res.address == a and res.hostname:
                hostname = res.hostname
            elif lease is not None and table.key_of(a) == key:
                hostname = lease.hostname
        rai = opts.get(OPT_RELAY_AGENT_INFO)
        end = now + lease_s
        if lease is not None and lease.state is _ACTIVE and lease.end > end and (
            table.key_of(a) == key
        ):
            # Never shorten the recorded end of a lease the client holds (a shorter grant,
            # e.g. the MCLT in COMMUNICATIONS-INTERRUPTED): if this ACK is lost or withheld,
            # the client keeps its old end, and the address must stay its own until then.
            end = lease.end
        if lease is None:
            lease = Lease(
                IPv4Address(a), sn.id, _ACTIVE, hw, msg.htype, cid, hostname, now, end, now
            )
            lease.relay_info = rai
        else:
            lease.subnet_id = sn.id
            lease.state = _ACTIVE
            lease.start = now
            lease.end = end
            lease.cltt = now
            lease.htype = msg.htype
            lease.hwaddr = hw
            lease.client_id = cid
            lease.hostname = hostname
            lease.relay_info = rai
        table.put_keyed(lease, key)
        off = self._offers.get(a)
        if off is not None:  # ours, or another client's that lapsed (timer not run yet)
            del self._offers[a]
            if self._offer_of.get(off.key) is off:
                del self._offer_of[off.key]
        other = self._offer_of.get(key)
        if other is not None:
            self._drop_offer(other)
        sn.pool.discard(a)
        self._lease_timer(lease.end, a)
        out.changed.append(self._changed(lease, now))
        # A client keeps one ACTIVE lease per subnet: end any other (e.g. after a new
        # reservation moved it). The association stays, as for an expiry.
        mine = table.for_client(key)
        for le in mine if len(mine) > 1 else ():
            if le is not lease and le.state is _ACTIVE and sn.contains(ip_int(le.address)):
                le.state = _EXPIRED
                le.end = now
                self._return_to_pool(ip_int(le.address))
                out.changed.append(self._changed(le, now))
                self.stats["superseded"] += 1
        return lease

    def _changed(self, lease: Lease, now: float) -> Lease:
        snap = copy_lease(lease)
        if not self._trusting:
            self.policy.lease_changed(snap, now)
        return snap

    def _pool_subnet(self, a: int) -> SubnetInfo | None:
        """The subnet whose dynamic pool holds ``a`` (None: not a pool address)."""
        sn = self.subnets.containing(a)
        if sn is None or a in self._reserved or not sn.pool.contains(a):
            return None
        return sn

    def _discard_from_pool(self, a: int) -> None:
        sn = self.subnets.containing(a)
        if sn is not None:
            sn.pool.discard(a)

    def _return_to_pool(self, a: int) -> None:
        """Queue ``a`` for allocation again if it is a free pool address."""
        sn = self._pool_subnet(a)
        if sn is None or a in self._offers:
            return
        lease = self.table.get(a)
        if lease is None:
            if sn.pool.passed(a):
                sn.pool.push_free(a)
            return
        st = lease.state
        if st is _FREE:
            sn.pool.push_free(a)
        elif st is _BACKUP:
            sn.pool.push_backup(a)
        elif st in _REUSABLE_LIKE:
            sn.pool.push_reusable(a)

    def _lease_timer(self, end: float, a: int) -> None:
        """Expire (ACTIVE) or end the probation of (ABANDONED) the lease of ``a`` at ``end``
        if that is still its end then. ``end`` should be the lease's own float (shared)."""
        if self._horizon <= end < _FAR_LIMIT:
            sec = int(end // _FAR_SPAN)
            lst = self._far.get(sec)
            if lst is None:
                self._far[sec] = [a]
                heappush(self._far_heap, sec)
            else:
                lst.append(a)
            return
        due = self._due
        b = due.get(end)
        if b is None:
            if end == end:  # a NaN end is never due (as before)
                due[end] = a
                heappush(self._due_heap, end)
        elif isinstance(b, list):
            b.append(a)
        else:
            due[end] = [b, a]

    def _lease_due(self, a: int, d: float) -> bool:
        lease = self.table.get(a)
        return (
            lease is not None
            and (lease.state is _ACTIVE or lease.state is _ABANDONED)
            and lease.end == d
        )

    def _next_lease_deadline(self) -> float | None:
        """The earliest deadline with a lease still due then (stale ones dropped)."""
        heap = self._due_heap
        due = self._due
        far_heap = self._far_heap
        while True:
            d: float | None = None
            while heap:
                h = heap[0]
                b = due[h]
                if isinstance(b, list):
                    for i, a in enumerate(b):
                        if self._lease_due(a, h):
                            if i:
                                del b[:i]
                            d = h
                            break
                elif self._lease_due(b, h):
                    d = h
                if d is not None:
                    break
                heappop(heap)
                del due[h]
            # The far tier's next second may hold an earlier (or equal) deadline.
            if not far_heap or (d is not None and d < far_heap[0] * _FAR_SPAN):
                return d
            self._materialize(heappop(far_heap))

    def _materialize(self, sec: int) -> None:
        """Move the far tier's span ``sec`` to the near tier (its live leases only)."""
        self._horizon = (sec + 1) * _FAR_SPAN
        get = self.table.get
        for a in self._far.pop(sec):
            lease = get(a)
            if lease is None or not (lease.state is _ACTIVE or lease.state is _ABANDONED):
                continue
            end = lease.end
            if int(end // _FAR_SPAN) == sec:  # else renewed since: another entry has it
                self._lease_timer(end, a)

    def _next_offer_deadline(self) -> float | None:
        """The earliest expiry of an offer hold still held (stale entries dropped)."""
        heap = self._heap
        offers = self._offers
        while heap:
            deadline, a = heap[0]
            off = offers.get(a)
            if off is not None and off.expires == deadline:
                return deadline
            heappop(heap)
        return None

    # ------------------------------------------------------------------ replies

    def _reply(
        self,
        msg: DhcpMessage,
        mt: bytes,
        sid: bytes,
        yiaddr: IPv4Address,
        ciaddr: IPv4Address,
        times: tuple[int, int, int] | None,
        optset: dict[int, bytes],
    ) -> DhcpMessage:
        opts = msg.options
        prl = opts.get(OPT_PARAMETER_REQUEST_LIST) or b""
        # The options after the fixed ones depend only on (optset, PRL, times or not):
        # computed once per combination (see _reply_tail), then copied in.
        cached = self._tails.get(id(optset))
        if cached is None or cached[0] is not optset:
            cached = self._tails[id(optset)] = (optset, {}, {})
        tails = cached[1] if times is not None else cached[2]
        tail = tails.get(prl)
        if tail is None:
            if len(tails) >= _TAIL_CACHE_MAX:
                tails.clear()  # bounded: clients choose their PRLs
            tail = tails[prl] = _reply_tail(optset, prl, times is not None)
        items, tail_wire = tail
        # The reply's option TLVs are built here as well (DhcpMessage.wire_options: encode()
        # then skips its per-option loop), when the layout is the plain one: the tail's
        # encoding is cached with it; message type, server id, times and the echoed client
        # identifier and relay agent information are added around it.
        wire: bytes | None = None
        if len(sid) != 4:
            tail_wire = None  # (a server id is an address: always 4 bytes)
        if times is not None:
            lt, rt, bt = _PACK_I(times[0]), _PACK_I(times[1]), _PACK_I(times[2])
            o: dict[int, bytes] = {
                OPT_MESSAGE_TYPE: mt,
                OPT_SERVER_ID: sid,
                OPT_LEASE_TIME: lt,
                OPT_RENEWAL_TIME: rt,
                OPT_REBINDING_TIME: bt,
            }
            if tail_wire is not None:
                wire = b"".join(
                    (_TLV_MT, mt, _TLV_SID, sid, _TLV_LT, lt, _TLV_T1, rt, _TLV_T2, bt, tail_wire)
                )
        else:
            o = {OPT_MESSAGE_TYPE: mt, OPT_SERVER_ID: sid}
            if tail_wire is not None:
                wire = b"".join((_TLV_MT, mt, _TLV_SID, sid, tail_wire))
        o.update(items)
        if OPT_CLIENT_ID in opts or OPT_RELAY_AGENT_INFO in opts or OPT_CLIENT_ID in o:
            self._echo(msg, o)
            if wire is not None:
                cid = o.get(OPT_CLIENT_ID)
                rai = o.get(OPT_RELAY_AGENT_INFO)
                if (cid is None or len(cid) <= 255) and (rai is None or len(rai) <= 255):
                    if cid is not None:
                        wire += bytes((OPT_CLIENT_ID, len(cid))) + cid
                    if rai is not None:
                        wire += bytes((OPT_RELAY_AGENT_INFO, len(rai))) + rai
                else:
                    wire = None
        # positional: keyword arguments cost ~0.25 µs more per reply
        return DhcpMessage(
            BOOTREPLY, msg.htype, msg.hlen, 0, msg.xid, 0, msg.flags,
            ciaddr, yiaddr, ZERO_IP, msg.giaddr, msg.chaddr, _NO_SNAME, _NO_FILE, o, wire,
        )

    @staticmethod
    def _echo(msg: DhcpMessage, o: dict[int, bytes]) -> None:
        """Client identifier (RFC 6842), then relay agent information last (RFC 3046)."""
        opts = msg.options
        cid = opts.get(OPT_CLIENT_ID)
        o.pop(OPT_CLIENT_ID, None)
        if cid is not None:
            o[OPT_CLIENT_ID] = cid
        rai = opts.get(OPT_RELAY_AGENT_INFO)
        o.pop(OPT_RELAY_AGENT_INFO, None)
        if rai is not None:
            o[OPT_RELAY_AGENT_INFO] = rai

    def _nak(self, msg: DhcpMessage, rx: RxInfo, sid: bytes, text: str, out: Outcome) -> None:
        o: dict[int, bytes] = {
            OPT_MESSAGE_TYPE: _MT_NAK,
            OPT_SERVER_ID: sid,
            OPT_MESSAGE: text.encode("ascii"),
        }
        self._echo(msg, o)
        flags = msg.flags | FLAG_BROADCAST if msg.giaddr != ZERO_IP else msg.flags
        reply = DhcpMessage(
            op=BOOTREPLY,
            htype=msg.htype,
            hlen=msg.hlen,
            hops=0,
            xid=msg.xid,
            secs=0,
            flags=flags,
            giaddr=msg.giaddr,
            chaddr=msg.chaddr,
            options=o,
        )
        out.replies.append(self._deliver(msg, reply, True, rx))
        self.stats["tx_nak"] += 1

    def _deliver(self, msg: DhcpMessage, reply: DhcpMessage, nak: bool, rx: RxInfo) -> Reply:
        # The common cases inline (relayed; not relayed, no address, no broadcast bit): see
        # deliver().
        gi = msg.giaddr
        if gi != ZERO_IP:
            return Reply(reply, gi, self._port, rx.interface)
        if (
            not nak
            and self._raw
            and not msg.flags & FLAG_BROADCAST
            and not ip_int(msg.ciaddr)
            and ip_int(reply.yiaddr)
        ):
            yi = reply.yiaddr
            hlen = msg.hlen
            hw = msg.chaddr[: hlen if hlen < 16 else 16]
            return Reply(reply, yi, self._client_port, rx.interface, True, hw)
        return deliver(
            msg,
            reply,
            nak=nak,
            server_port=self._port,
            client_port=self._client_port,
            raw_replies=self._raw,
            interface=rx.interface,
        )
