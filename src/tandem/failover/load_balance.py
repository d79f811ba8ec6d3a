"""The load-balance failover policy and the FREE/BACKUP split (failover-protocol.md §1.3,
§8.2-§8.3, §9; hot-standby.md "Load-balance mode"; RFC 3074): pure.

:class:`LoadBalancePolicy` is the engine's :class:`~tandem.failover.policy.Policy` for a
load-balance pair. It shares everything but the answer matrix with
:class:`~tandem.failover.hot_standby.HotStandbyPolicy` (allocation per ownership, MCLT lease
times, binding updates):

* **NORMAL** (:func:`lb_answers`): a client whose RFC 3074 bucket this server owns is answered;
  a client of the partner's buckets is ignored, unless its ``secs`` exceeds
  ``load_balance_max_seconds`` (RFC 3074 delayed service, ISC ``load balance max seconds``;
  0 = never) for the broadcast kinds (DISCOVER, INIT-REBOOT, REBINDING, INFORM). Messages that
  name this server — a SELECTING REQUEST (server identifier; the engine drops one naming the
  partner), RELEASE, DECLINE — are answered whoever owns the bucket, so a client served
  through delayed service can finish its exchange. A unicast RENEWING is load-balanced too,
  as Windows does (draft-12 and ISC answer every renewal): a partner's client that this
  server leased to (delayed service, or during an outage) is not renewed here; at T2 it
  rebinds by broadcast and the bucket's owner, which holds the binding, answers. That is how
  the split comes back after an outage (docs/decisions.md).
* **Other states** (:data:`LB_ANSWERS`): the draft-12 matrix with both servers able to serve
  (no hot-standby "standby only answers broadcasts" rule): COMMUNICATIONS-INTERRUPTED,
  PARTNER-DOWN and RESOLUTION-INTERRUPTED answer everything (own pool, MCLT leases),
  CONFLICT-DONE the primary only, RECOVER-DONE renewals and rebinds only, the rest nothing.

Pool balance (:func:`plan_balance`): available addresses are split FREE (primary) / BACKUP
(secondary) in proportion to the bucket shares — the secondary holds
``floor(available * secondary_percent / 100)`` — and nothing moves while the split is within
:data:`MISBALANCE_PERCENT` of the available addresses (ISC's ``max-lease-misbalance``). When it
is off by more, the primary moves exactly enough addresses to reach the target: FREE -> BACKUP
(preferring addresses whose last client hashes to the secondary, then never-used ones) or
BACKUP -> FREE (preferring the primary's clients' old addresses, then never-used ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from tandem.failover.bindings import Role, never_leased
from tandem.failover.hot_standby import HotStandbyPolicy, StateView
from tandem.failover.lb_hash import BUCKETS, lease_bucket, message_bucket, primary_buckets
from tandem.failover.policy import RequestKind
from tandem.leases.model import BindingState, Lease
from tandem.wire.addr import ipv4
from tandem.wire.dhcp import DhcpMessage
from tandem.wire.failover import ServerState

__all__ = [
    "LB_ANSWERS",
    "MISBALANCE_PERCENT",
    "BalancePlan",
    "LoadBalancePolicy",
    "lb_answers",
    "plan_balance",
    "split_plan",
]

#: Allowed drift of the FREE/BACKUP split before addresses move, in % of the available
#: (FREE + BACKUP) addresses; ISC's ``max-lease-misbalance`` default. At least 1 address.
MISBALANCE_PERCENT = 15

_K = RequestKind
_ALL = frozenset(RequestKind)
_NONE: frozenset[RequestKind] = frozenset()
_RENEW_REBIND = frozenset({_K.RENEWING, _K.REBINDING})
#: NORMAL: addressed to this server by the client (server identifier / unicast to us).
_ADDRESSED = frozenset({_K.SELECTING, _K.RELEASE, _K.DECLINE})
#: NORMAL: broadcast kinds that delayed service (``secs``) may take over.
_DELAYABLE = frozenset({_K.DISCOVER, _K.INIT_REBOOT, _K.REBINDING, _K.INFORM})

_P, _S = Role.PRIMARY, Role.SECONDARY
_St = ServerState

#: (my state, my role) -> request kinds answered outside NORMAL. Absent pairs: none.
LB_ANSWERS: dict[tuple[ServerState, Role], frozenset[RequestKind]] = {
    (_St.COMMUNICATIONS_INTERRUPTED, _P): _ALL,
    (_St.COMMUNICATIONS_INTERRUPTED, _S): _ALL,
    (_St.PARTNER_DOWN, _P): _ALL,
    (_St.PARTNER_DOWN, _S): _ALL,
    (_St.RESOLUTION_INTERRUPTED, _P): _ALL,
    (_St.RESOLUTION_INTERRUPTED, _S): _ALL,
    (_St.CONFLICT_DONE, _P): _ALL,
    (_St.CONFLICT_DONE, _S): _NONE,  # a primary-only state
    (_St.RECOVER_DONE, _P): _RENEW_REBIND,
    (_St.RECOVER_DONE, _S): _RENEW_REBIND,
}


def lb_answers(
    state: ServerState,
    role: Role,
    kind: RequestKind,
    *,
    mine: bool,
    secs: int = 0,
    max_seconds: int = 0,
) -> bool:
    """Whether a load-balance server answers (see the module docstring). ``mine``: the
    client's bucket is this server's; ``secs``: the message's secs field."""
    if state is not ServerState.NORMAL:
        return kind in LB_ANSWERS.get((state, role), _NONE)
    if mine or kind in _ADDRESSED:
        return True
    return kind in _DELAYABLE and max_seconds > 0 and secs > max_seconds


class LoadBalancePolicy(HotStandbyPolicy):
    """The engine's failover policy for one load-balance relationship.

    ``primary_percent`` is the primary's share of the clients (buckets
    ``0 .. round(2.56 * p) - 1``); ``max_seconds`` the delayed-service threshold."""

    def __init__(
        self,
        role: Role | str,
        mclt_s: int,
        state_provider: Callable[[], ServerState | StateView],
        *,
        primary_percent: float = 50,
        max_seconds: int = 0,
    ) -> None:
        super().__init__(role, mclt_s, state_provider)
        if max_seconds < 0:
            raise ValueError("max_seconds must not be negative")
        self.primary_percent = primary_percent
        self.primary_buckets = primary_buckets(primary_percent)
        if self.role is Role.PRIMARY:
            self.my_buckets = self.primary_buckets
        else:
            self.my_buckets = frozenset(range(BUCKETS)) - self.primary_buckets
        self.max_seconds = max_seconds
        #: NORMAL decisions: "mine" (own bucket), "delayed" (partner's bucket, secs over the
        #: threshold), "addressed" (partner's client, a kind that names a server: SELECTING /
        #: RELEASE / DECLINE, passed on; the engine drops those naming the partner),
        #: "ignored" (partner's client, not answered).
        self.lb_stats: dict[str, int] = dict.fromkeys(
            ("mine", "delayed", "addressed", "ignored"), 0
        )

    @property
    def secondary_percent(self) -> float:
        return 100 - self.primary_percent

    def is_mine(self, msg: DhcpMessage) -> bool:
        """Whether the client's bucket is this server's."""
        return message_bucket(msg) in self.my_buckets

    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        state = self.view(now).state
        mine = self.is_mine(msg)
        ok = lb_answers(
            state,
            self.role,
            kind,
            mine=mine,
            secs=msg.secs,
            max_seconds=self.max_seconds,
        )
        if state is ServerState.NORMAL:
            if not ok:
                self.lb_stats["ignored"] += 1
            elif mine:
                self.lb_stats["mine"] += 1
            elif kind in _ADDRESSED:
                self.lb_stats["addressed"] += 1
            else:
                self.lb_stats["delayed"] += 1
        return ok


# --------------------------------------------------------------------------------------------
# FREE / BACKUP split (failover-protocol.md §9)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BalancePlan:
    """What the primary should move to bring the split to its target."""

    free: int  # available addresses the primary owns (pending reclaims counted here)
    backup: int  # available addresses the secondary owns
    target_backup: int
    tolerance: int
    to_backup: tuple[IPv4Address, ...] = ()
    to_free: tuple[IPv4Address, ...] = ()

    @property
    def delta(self) -> int:
        """> 0: the secondary should get this many more; < 0: hold this many too many."""
        return self.target_backup - self.backup

    @property
    def balanced(self) -> bool:
        return abs(self.delta) <= self.tolerance


def tolerance_of(available: int, misbalance_percent: float = MISBALANCE_PERCENT) -> int:
    """Allowed drift: ``floor(available * misbalance% / 100)``, at least 1."""
    return max(1, math.floor(available * misbalance_percent / 100 + 1e-9))


def split_plan(
    n_free: int,
    n_backup: int,
    *,
    secondary_percent: float,
    misbalance_percent: float = MISBALANCE_PERCENT,
) -> BalancePlan:
    """The split's target for ``n_free`` FREE (pending reclaims included) and ``n_backup``
    BACKUP addresses, without moves: when it is :attr:`~BalancePlan.balanced` that is the
    whole plan (the peer counts first and calls :func:`plan_balance` only when it is not:
    a count allocates nothing per address)."""
    total = n_free + n_backup
    target = math.floor(total * secondary_percent / 100 + 1e-9)
    return BalancePlan(n_free, n_backup, target, tolerance_of(total, misbalance_percent))


def plan_balance(
    candidates: Iterable[tuple[int, Lease | None]],
    *,
    primary_buckets: frozenset[int],
    secondary_percent: float,
    pending_free: Iterable[int | IPv4Address] = (),
    misbalance_percent: float = MISBALANCE_PERCENT,
) -> BalancePlan:
    """The moves that bring the FREE/BACKUP split to ``secondary_percent`` % BACKUP when it
    is off by more than the tolerance (none otherwise).

    ``candidates``: every pool address (as an int) with its record (None: never used, FREE).
    ``pending_free``: BACKUP addresses already being taken back (a BNDUPD FREE in flight);
    they count as FREE and are not chosen again. Addresses are ints here and an address
    object is made only for the ones chosen: the peer plans over every pool address on
    entering NORMAL, on a POOLREQ and every minute in it, on the event loop (by address
    object a 1,000,000-address pool took 0.64-0.76 s; bench/reserve_scan.py)."""
    if not 0 <= secondary_percent <= 100:
        raise ValueError(f"secondary_percent must be within 0..100, not {secondary_percent}")
    pending = {int(a) for a in pending_free}
    fresh: list[int] = []  # no record: FREE, never used
    free: list[tuple[int, Lease]] = []  # FREE with a record
    backup: list[tuple[int, Lease]] = []
    n_pending = 0
    free_st, backup_st = BindingState.FREE, BindingState.BACKUP
    for a, lease in candidates:
        if lease is None:
            fresh.append(a)
        elif lease.state is free_st:
            free.append((a, lease))
        elif lease.state is backup_st:
            if a in pending:
                n_pending += 1
            else:
                backup.append((a, lease))
    n_free = len(fresh) + len(free) + n_pending
    plan = split_plan(n_free, len(backup), secondary_percent=secondary_percent,
                      misbalance_percent=misbalance_percent)
    if plan.balanced:
        return plan
    delta = plan.delta

    def affinity(lease: Lease) -> bool | None:
        """True: the last client hashes to the primary; None: no client."""
        b = lease_bucket(lease.client_id, lease.hwaddr)
        return None if b is None else b in primary_buckets

    if delta > 0:
        # secondary's clients' old addresses (least recently ended first), then never used
        # (lowest first), then the rest (least recently ended first)
        first: list[tuple[float, int]] = []
        never: list[int] = fresh
        rest: list[tuple[float, int]] = []
        for a, lease in free:
            if affinity(lease) is False:
                first.append((lease.end, a))
            elif never_leased(lease):
                never.append(a)
            else:
                rest.append((lease.end, a))
        first.sort()
        chosen = [a for _, a in first[:delta]]
        if len(chosen) < delta:
            never.sort()
            chosen += never[: delta - len(chosen)]
        if len(chosen) < delta:
            rest.sort()
            chosen += [a for _, a in rest[: delta - len(chosen)]]
        return replace(plan, to_backup=tuple(ipv4(a) for a in chosen))

    # primary's clients' old addresses, then never used (highest first), then the rest
    def take_key(item: tuple[int, Lease]) -> tuple[int, float, int]:
        a, lease = item
        aff = affinity(lease)
        if aff is True:
            return (0, lease.end, a)
        if never_leased(lease):
            return (1, 0.0, -a)
        return (2, lease.end, a)

    taken = sorted(backup, key=take_key)[:-delta]
    return replace(plan, to_free=tuple(ipv4(a) for a, _ in taken))
