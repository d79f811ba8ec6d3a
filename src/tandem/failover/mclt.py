"""MCLT rules (failover-protocol.md §7; draft-12 §5.2.1, §7.1.5, §9.8.3): pure functions.

The invariant every grant obeys::

    now + granted <= MCLT + max(now, base)        base = max(acknowledged PET, received PET)

(``Lease.tsfp`` holds ``base``: ISC keeps one value, "time sent from partner".)

* :func:`recipe_lease_time` is the §7.3 recipe (ISC ``ack_lease``): a new binding gets MCLT, a
  renewal whose PET the partner acknowledged gets the full desired time.
* :func:`lease_time` adds the hot-standby expectations: in every state but a settled NORMAL the
  grant is ``min(desired, MCLT)`` — COMMUNICATIONS-INTERRUPTED (hot-standby.md 2.2-2.4),
  PARTNER-DOWN (Windows example step 19), RECOVER-DONE and the first MCLT of NORMAL after a
  recovery (3.2, 3.3, 4.2). ``min(desired, MCLT)`` always satisfies the invariant.
* :func:`potential_expiration` is the PET to send in the BNDUPD after the DHCPACK:
  ``now + desired + granted / 2`` (never below the lease end).
"""

from __future__ import annotations

import math

from tandem.wire.failover import ServerState

# States whose lease grants follow the §7.3 recipe (the partner is known to be in touch).
# Every other state caps at MCLT.
_RECIPE_STATES = frozenset({ServerState.NORMAL})

# A NORMAL entered from one of these is a plain start-up, not a recovery (no caution period).
_NOT_A_RECOVERY = frozenset({None, ServerState.UNKNOWN, ServerState.STARTUP, ServerState.NORMAL})


def recipe_lease_time(desired_s: int, now: float, mclt_s: int, base: float) -> int:
    """The §7.3 recipe: the longest lease (<= ``desired_s``) allowed by the acknowledged base.

    ``base`` is max(acknowledged PET, received PET) (0 when the partner knows nothing)."""
    if desired_s <= mclt_s:
        return desired_s
    if base <= now:
        return mclt_s  # new binding, or nothing acknowledged still in the future
    if now + desired_s > base + mclt_s:
        # floor keeps now + granted <= base + MCLT with fractional times
        return max(1, math.floor(base - now + mclt_s))
    return desired_s


def degraded_lease_time(desired_s: int, mclt_s: int) -> int:
    """The grant in every state but a settled NORMAL: at most the MCLT."""
    return min(desired_s, mclt_s)


def in_recovery_caution(
    state: ServerState,
    state_since: float,
    previous: ServerState | None,
    now: float,
    mclt_s: int,
) -> bool:
    """True in the first MCLT of a NORMAL that followed a failure state (hot-standby.md 4.2).

    [silent spec] "After recovery" is read as: NORMAL was entered from any state other than
    STARTUP/unknown (RECOVER-DONE, COMMUNICATIONS-INTERRUPTED, PARTNER-DOWN, ...)."""
    return (
        state is ServerState.NORMAL
        and previous not in _NOT_A_RECOVERY
        and now < state_since + mclt_s
    )


def lease_time(
    desired_s: int,
    now: float,
    mclt_s: int,
    base: float,
    state: ServerState,
    *,
    state_since: float = 0.0,
    previous: ServerState | None = None,
) -> int:
    """The lease time this server may grant in ``state`` (see the module docstring).

    ``state_since`` is the start time of ``state`` (STOS); ``previous`` the state before it."""
    if desired_s < 1:
        return max(0, desired_s)
    if state not in _RECIPE_STATES or in_recovery_caution(
        state, state_since, previous, now, mclt_s
    ):
        return degraded_lease_time(desired_s, mclt_s)
    return recipe_lease_time(desired_s, now, mclt_s, base)


def potential_expiration(now: float, desired_s: int, granted_s: int) -> float:
    """PET for the BNDUPD sent after the DHCPACK (§7.3): ``now + desired + granted/2``.

    Never below the lease end ``now + granted`` (the draft's MUST)."""
    return max(now + desired_s + granted_s / 2, now + granted_s)


def allowed_lease_end(now: float, mclt_s: int, base: float) -> float:
    """The latest lease end the invariant allows: ``MCLT + max(now, base)``."""
    return mclt_s + max(now, base)


def partner_down_reuse_time(
    partner_down_since: float,
    mclt_s: int,
    *,
    lease_end: float = 0.0,
    sent_pet: float = 0.0,
    acked_pet: float = 0.0,
) -> float:
    """When, in PARTNER-DOWN, an address the partner owned or may have leased becomes usable by
    this server (§7.4): MCLT after max(STOS, lease end, every PET), never before STOS + MCLT."""
    return max(partner_down_since, lease_end, sent_pet, acked_pet) + mclt_s
