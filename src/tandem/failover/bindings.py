"""Binding ownership, the standby reserve, binding-state transitions and BNDUPD conflict
resolution (failover-protocol.md §1.2, §5.2, §5.4, §9; draft-12 §5.4, §5.11, §7.1.3): pure.

Ownership of an *available* address: FREE = the primary may allocate it, BACKUP = the
secondary may. Either may allocate the partner's addresses only in PARTNER-DOWN once the MCLT
has passed since entering it (and since the address's last PET). EXPIRED / RELEASED / RESET
addresses go to a *different* client only after the partner acknowledged that state (they
become FREE then) or, in PARTNER-DOWN, MCLT after everything the partner may know.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address

from tandem.failover.mclt import partner_down_reuse_time
from tandem.leases.model import BindingState, Lease
from tandem.wire.failover import BindingStatus, RejectReason, ServerState


class Role(Enum):
    """This server's role in the relationship (hot standby: primary = active)."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


_FREE = BindingState.FREE
_BACKUP = BindingState.BACKUP
_ACTIVE = BindingState.ACTIVE
_EXPIRED = BindingState.EXPIRED
_RELEASED = BindingState.RELEASED
_RESET = BindingState.RESET
_ABANDONED = BindingState.ABANDONED

#: States in which a server allocates from its own pool (draft-12 §8.3 "own").
ALLOCATING_STATES = frozenset(
    {
        ServerState.NORMAL,
        ServerState.COMMUNICATIONS_INTERRUPTED,
        ServerState.PARTNER_DOWN,
        ServerState.RESOLUTION_INTERRUPTED,
        ServerState.CONFLICT_DONE,
    }
)


def own_free_state(role: Role) -> BindingState:
    """The available state this role owns: FREE for the primary, BACKUP for the secondary."""
    return _FREE if role is Role.PRIMARY else _BACKUP


def may_allocate(
    lease: Lease,
    role: Role,
    state: ServerState,
    now: float,
    mclt_s: int,
    *,
    partner_down_since: float | None = None,
) -> bool:
    """May this server bind ``lease.address`` to a client it is not bound to (§1.2, §5.2, §7.4)?

    ``partner_down_since`` is the start time of PARTNER-DOWN (required to use the partner's
    addresses there; without it they stay unusable). An ACTIVE lease whose end has passed
    counts as EXPIRED (its expiry is not acknowledged yet)."""
    if state not in ALLOCATING_STATES:
        return False
    if role is Role.SECONDARY and state is ServerState.CONFLICT_DONE:
        return False  # CONFLICT-DONE is a primary-only state
    st = lease.state
    if st is _ABANDONED or (st is _ACTIVE and lease.end > now):
        return False
    if st is own_free_state(role):
        return True
    if state is not ServerState.PARTNER_DOWN or partner_down_since is None:
        return False  # partner-owned, or transitional awaiting the partner's ACK
    if st is _FREE or st is _BACKUP:
        # ISC: now > max(stos, recv_pet) + MCLT
        return now >= partner_down_reuse_time(partner_down_since, mclt_s, acked_pet=lease.tsfp)
    # EXPIRED / RELEASED / RESET / ended ACTIVE: MCLT beyond everything the partner may know
    ready = partner_down_reuse_time(
        partner_down_since, mclt_s, lease_end=lease.end, sent_pet=lease.tstp, acked_pet=lease.tsfp
    )
    return now >= ready


_OWN_ONLY = {Role.PRIMARY: (_FREE,), Role.SECONDARY: (_BACKUP,)}
_PARTNER_DOWN_ALL = {
    Role.PRIMARY: (_FREE, _BACKUP, _EXPIRED, _RELEASED, _RESET),
    Role.SECONDARY: (_BACKUP, _FREE, _EXPIRED, _RELEASED, _RESET),
}


def usable_states(
    role: Role,
    state: ServerState,
    now: float,
    mclt_s: int,
    *,
    partner_down_since: float | None = None,
) -> tuple[BindingState, ...]:
    """The available states :func:`may_allocate` can allow now, own first: nothing outside
    :data:`ALLOCATING_STATES`; the role's own state (FREE / BACKUP); in PARTNER-DOWN from
    STOS + MCLT on also the partner's state and EXPIRED / RELEASED / RESET (each address
    then still waits for its own PETs and end, see :func:`may_allocate`)."""
    if state not in ALLOCATING_STATES:
        return ()
    if role is Role.SECONDARY and state is ServerState.CONFLICT_DONE:
        return ()
    if (
        state is ServerState.PARTNER_DOWN
        and partner_down_since is not None
        and now >= partner_down_since + mclt_s
    ):
        return _PARTNER_DOWN_ALL[role]
    return _OWN_ONLY[role]


# --------------------------------------------------------------------------------------------
# Standby reserve (hot-standby.md 4.3; failover-protocol.md §9.3, §9.4)
# --------------------------------------------------------------------------------------------


def reserve_target(free_count: int, backup_count: int, reserve_pct: float) -> int:
    """How many available addresses the standby should hold as BACKUP:
    ``floor((FREE + BACKUP) * reserve_pct / 100)`` (§9.4, Windows "ReservePercent" of the
    scope's free addresses)."""
    if not 0 <= reserve_pct <= 100:
        raise ValueError(f"reserve_pct must be within 0..100, not {reserve_pct}")
    return math.floor((free_count + backup_count) * reserve_pct / 100 + 1e-9)


def rebalance_delta(
    free_count: int, backup_count: int, reserve_pct: float, tolerance: int = 0
) -> int:
    """Addresses the primary should move: > 0 FREE -> BACKUP (top the reserve up), < 0
    BACKUP -> FREE (take surplus back), 0 when ``|want - BACKUP| <= tolerance``.

    A top-up never exceeds the FREE count (the target is a share of FREE + BACKUP)."""
    delta = reserve_target(free_count, backup_count, reserve_pct) - backup_count
    return 0 if abs(delta) <= tolerance else delta


def may_rebalance(role: Role, state: ServerState) -> bool:
    """Only the primary moves ownership, and only in NORMAL (§9.1, §9.4)."""
    return role is Role.PRIMARY and state is ServerState.NORMAL


def never_leased(lease: Lease | None) -> bool:
    """An address no client ever had (no record, or a record without client or CLTT)."""
    return lease is None or (lease.cltt == 0 and not lease.hwaddr and lease.client_id is None)


def choose_for_backup(
    candidates: Iterable[tuple[IPv4Address, Lease | None]], n: int
) -> list[IPv4Address]:
    """Pick ``n`` FREE addresses to give the standby: never-leased ones first (lowest address
    first), then previously used ones, least recently ended first (4.3). Candidates that are
    not FREE (or that have a record in another state) are skipped."""
    if n <= 0:
        return []
    fresh: list[IPv4Address] = []
    used: list[tuple[float, IPv4Address]] = []
    for addr, lease in candidates:
        if lease is not None and lease.state is not _FREE:
            continue
        if never_leased(lease):
            fresh.append(addr)
        else:
            assert lease is not None
            used.append((lease.end, addr))
    fresh.sort()
    used.sort()
    return (fresh + [a for _e, a in used])[:n]


def choose_for_reclaim(
    candidates: Iterable[tuple[IPv4Address, Lease | None]], n: int
) -> list[IPv4Address]:
    """Pick ``n`` BACKUP addresses to take back (surplus reserve): previously used ones first,
    then never-leased, highest address first (the reverse of :func:`choose_for_backup`)."""
    if n <= 0:
        return []
    fresh: list[IPv4Address] = []
    used: list[tuple[float, IPv4Address]] = []
    for addr, lease in candidates:
        if lease is None or lease.state is not _BACKUP:
            continue
        if never_leased(lease):
            fresh.append(addr)
        else:
            used.append((lease.end, addr))
    fresh.sort(reverse=True)
    used.sort()
    return ([a for _e, a in used] + fresh)[:n]


# --------------------------------------------------------------------------------------------
# Binding-state transitions (failover-protocol.md §5.2; draft-12 Figure 5.11-1)
# --------------------------------------------------------------------------------------------


class Guard(Enum):
    """What a transition needs besides being in the table."""

    ALWAYS = "always"
    PARTNER_ACK = "partner acknowledged the EXPIRED/RELEASED/RESET (or PARTNER-DOWN + MCLT)"
    REWIND = "same client and the expiry/release was not reported to the partner yet"


_ALL = tuple(BindingState)

TRANSITIONS: dict[tuple[BindingState, BindingState], Guard] = {
    (_FREE, _ACTIVE): Guard.ALWAYS,
    (_FREE, _BACKUP): Guard.ALWAYS,  # the primary gives it to the secondary
    (_BACKUP, _ACTIVE): Guard.ALWAYS,
    (_BACKUP, _FREE): Guard.ALWAYS,  # the primary takes it back (secondary rejects if leased)
    (_ACTIVE, _ACTIVE): Guard.ALWAYS,  # renewal / extension
    (_ACTIVE, _EXPIRED): Guard.ALWAYS,
    (_ACTIVE, _RELEASED): Guard.ALWAYS,
    (_EXPIRED, _FREE): Guard.PARTNER_ACK,
    (_RELEASED, _FREE): Guard.PARTNER_ACK,
    (_RESET, _FREE): Guard.PARTNER_ACK,
    (_EXPIRED, _BACKUP): Guard.PARTNER_ACK,  # ISC: MAC affinity / reserved addresses
    (_RELEASED, _BACKUP): Guard.PARTNER_ACK,
    (_RESET, _BACKUP): Guard.PARTNER_ACK,
    (_EXPIRED, _ACTIVE): Guard.REWIND,
    (_RELEASED, _ACTIVE): Guard.REWIND,
    **{(s, _ABANDONED): Guard.ALWAYS for s in _ALL},  # decline / detected conflict
    **{(s, _RESET): Guard.ALWAYS for s in _ALL},  # operator command; ABANDONED reclaim
}


def transition_allowed(
    old: BindingState,
    new: BindingState,
    *,
    partner_acked: bool = False,
    partner_down_mclt_passed: bool = False,
    same_client_unreported: bool = False,
) -> bool:
    """Whether a binding may move from ``old`` to ``new`` (§5.2). Staying in a state is
    always allowed (no transition)."""
    if old is new:
        return True
    guard = TRANSITIONS.get((old, new))
    if guard is None:
        return False
    if guard is Guard.PARTNER_ACK:
        return partner_acked or partner_down_mclt_passed
    if guard is Guard.REWIND:
        return same_client_unreported
    return True


# --------------------------------------------------------------------------------------------
# Conflict resolution on a received BNDUPD (failover-protocol.md §5.4; draft-12 Fig. 7.1.3-1)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: see docs/decisions.md (hot per-binding objects)
class ReceivedBinding:
    """The parts of one BNDUPD address group that the conflict rules need.

    ``None`` means the option was absent. Times are epoch seconds."""

    address: IPv4Address
    status: BindingStatus
    cltt: float | None = None
    lease_end: float | None = None  # option 13
    pet: float | None = None  # option 18
    stos: float | None = None  # option 25
    hwaddr: bytes = b""
    htype: int = 1
    client_id: bytes | None = None
    hostname: str | None = None
    reserved: bool = False  # R flag


@dataclass(slots=True)  # not frozen: see docs/decisions.md (hot per-binding objects)
class Decision:
    """The answer to one received binding: ACK (``accept``) and store ``lease``, or reject."""

    accept: bool
    reject_reason: RejectReason | None
    lease: Lease | None  # what to store when accepted
    rule: str  # the table cell that decided, for logs and tests


_KIND_OF = {
    BindingState.ACTIVE: "ACTIVE",
    BindingState.EXPIRED: "EXPIRED",
    BindingState.RELEASED: "RELEASED",
    BindingState.FREE: "FREE/BACKUP",
    BindingState.BACKUP: "FREE/BACKUP",
    BindingState.RESET: "RESET",
    BindingState.ABANDONED: "ABANDONED",
}
_RECEIVED_KIND = {
    BindingStatus.ACTIVE: "ACTIVE",
    BindingStatus.EXPIRED: "EXPIRED",
    BindingStatus.RELEASED: "RELEASED",
    BindingStatus.FREE: "FREE/BACKUP",
    BindingStatus.BACKUP: "FREE/BACKUP",
    BindingStatus.RESET: "RESET/ABANDONED",
    BindingStatus.ABANDONED: "RESET/ABANDONED",
}

# receiver row -> received column -> rule ("accept", "accept5", "time1", "time2", "time3",
# "reject4", "accept6"); the §5.4 table except two mirror cells: ACTIVE x RESET/ABANDONED,
# which the draft accepts unconditionally, is "accept6" here (accept unless the local ACTIVE
# binding is newer than the update, :func:`_not_older`), and ABANDONED x ACTIVE, which the
# draft rejects (4), is "time1" (a binding the partner made after our ABANDONED wins). Both
# sides then keep the newer of a decline and a lease that crossed (docs/decisions.md).
CONFLICT_TABLE: dict[str, dict[str, str]] = {
    "ACTIVE": {
        "ACTIVE": "accept5",
        "EXPIRED": "time2",
        "RELEASED": "time1",
        "FREE/BACKUP": "time2",
        # draft-12: "accept". Departure: not over a newer local binding (see _not_older).
        "RESET/ABANDONED": "accept6",
    },
    "EXPIRED": {
        "ACTIVE": "time1",
        "EXPIRED": "accept",
        "RELEASED": "accept",
        "FREE/BACKUP": "accept",
        "RESET/ABANDONED": "accept",
    },
    "RELEASED": {
        "ACTIVE": "time1",
        "EXPIRED": "time1",
        "RELEASED": "accept",
        "FREE/BACKUP": "accept",
        "RESET/ABANDONED": "accept",
    },
    "FREE/BACKUP": dict.fromkeys(
        ("ACTIVE", "EXPIRED", "RELEASED", "FREE/BACKUP", "RESET/ABANDONED"), "accept"
    ),
    "RESET": {
        "ACTIVE": "time3",
        "EXPIRED": "accept",
        "RELEASED": "accept",
        "FREE/BACKUP": "accept",
        "RESET/ABANDONED": "accept",
    },
    "ABANDONED": {
        # draft-12: "reject4". Departure: a newer ACTIVE wins (the mirror of accept6).
        "ACTIVE": "time1",
        "EXPIRED": "reject4",
        "RELEASED": "reject4",
        "FREE/BACKUP": "reject4",
        "RESET/ABANDONED": "accept",
    },
}


def _later(received: float | None, local: float) -> bool:
    """§5.4: a BNDUPD without CLTT is never later; one with CLTT is later than a local
    binding without one (``local == 0``)."""
    if received is None:
        return False
    return local == 0 or received > local


def _not_older(received: ReceivedBinding, local: Lease) -> bool:
    """accept6 (ACTIVE x RESET/ABANDONED): the update is not older than the local ACTIVE
    binding. Its time is max(CLTT, start-time-of-state); an update carrying neither is
    accepted (the draft's "accept"), as is one from the same second as the local CLTT (the
    wire's granularity). Rejected: a RESET/ABANDONED the partner recorded before the binding
    we hold was made -- e.g. a client declined the address at the partner during a
    partition and then leased it again from us: the partner's ABANDONED would make us forget
    a lease we ACKed after the decline (DST seed 119)."""
    times = [t for t in (received.cltt, received.stos) if t is not None]
    if not times or local.cltt == 0:
        return True
    return max(times) >= int(local.cltt)


def _release_of_current(local: Lease, received: ReceivedBinding) -> bool:
    """A RELEASED for the same client whose CLTT is not older than ours (at the wire's
    one-second granularity). ISC dhcpd does not refresh the CLTT on DHCPRELEASE: its
    RELEASED carries the CLTT of the binding's last renewal, i.e. exactly ours when the two
    stores are in sync, which draft §5.4's strict "later" (time(1)) would reject."""
    return (
        received.status is BindingStatus.RELEASED
        and received.cltt is not None
        and received.cltt >= int(local.cltt)
        and same_client(local, received)
    )


def same_client(local: Lease, received: ReceivedBinding) -> bool:
    """Both name the same client: client-id when both have one, else hardware address."""
    if local.client_id is not None and received.client_id is not None:
        return local.client_id == received.client_id
    return local.hwaddr == received.hwaddr and local.htype == received.htype


def _stored(local: Lease | None, received: ReceivedBinding, subnet_id: int) -> Lease:
    """The lease to store after accepting ``received``."""
    lease = local.copy() if local is not None else Lease(received.address, subnet_id)
    lease.state = BindingState(int(received.status))
    if received.hwaddr or received.client_id is not None:
        lease.hwaddr = received.hwaddr
        lease.htype = received.htype
        lease.client_id = received.client_id
    if received.hostname is not None:
        lease.hostname = received.hostname
    if received.cltt is not None:
        lease.cltt = received.cltt
    if received.lease_end is not None:
        if received.status is BindingStatus.ACTIVE and received.cltt is not None:
            lease.start = received.cltt
        lease.end = received.lease_end
    if received.pet is not None:
        lease.tsfp = received.pet  # ISC: the received PET becomes the base, even if lower
    return lease


def resolve_update(
    local: Lease | None,
    received: ReceivedBinding,
    now: float,
    *,
    role: Role,
    subnet_id: int = 0,
    local_stos: float | None = None,
    in_relationship: bool = True,
    locally_reserved: bool = False,
) -> Decision:
    """Decide a received binding update against the local binding (§5.4).

    ``local`` None = no record: treated as an available (FREE/BACKUP) address.
    ``local_stos`` is the local binding's start time of state (time(3)); when unknown the
    local CLTT stands in for it. ``subnet_id`` is used for a new record."""
    if not in_relationship:
        return Decision(False, RejectReason.ILLEGAL_IP_ADDRESS, None, "not in relationship")
    if (
        received.status is BindingStatus.ACTIVE
        and not received.hwaddr
        and received.client_id is None
    ):
        return Decision(False, RejectReason.MISSING_BINDING_INFO, None, "missing client")
    if received.status is BindingStatus.BACKUP and received.reserved and not locally_reserved:
        return Decision(False, RejectReason.IP_NOT_RESERVED, None, "reserved flag")
    row = "FREE/BACKUP" if local is None else _KIND_OF[local.state]
    col = _RECEIVED_KIND[received.status]
    rule = CONFLICT_TABLE[row][col]
    cell = f"{row} x {col}: {rule}"
    ok: bool
    reason: RejectReason | None = None
    if rule == "accept":
        ok = True
    elif rule == "accept5":
        assert local is not None
        ok = same_client(local, received) or role is Role.SECONDARY
        reason = None if ok else RejectReason.FATAL_CONFLICT
    elif rule == "reject4":
        ok, reason = False, RejectReason.LESS_CRITICAL_BINDING_INFO
    elif rule == "accept6":
        assert local is not None
        ok = _not_older(received, local)
        reason = None if ok else RejectReason.OUTDATED_BINDING_INFO
    else:
        assert local is not None
        if rule == "time1":
            ok = _later(received.cltt, local.cltt) or _release_of_current(local, received)
        elif rule == "time2":
            ok = now > local.end
        else:  # time3
            stos = local_stos if local_stos is not None else local.cltt
            ok = _later(received.cltt, stos)
        reason = None if ok else RejectReason.OUTDATED_BINDING_INFO
    if not ok:
        return Decision(False, reason, None, cell)
    return Decision(True, None, _stored(local, received, subnet_id), cell)


def count_states(leases: Sequence[Lease]) -> dict[BindingState, int]:
    """How many leases are in each binding state (every state present, zero if none)."""
    counts = dict.fromkeys(BindingState, 0)
    for lease in leases:
        counts[lease.state] += 1
    return counts
