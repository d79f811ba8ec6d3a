"""MCLT rules (failover-protocol.md §7) against the hot-standby reference configuration
(hot-standby.md: MCLT 300 s, scope lease 600 s, T1 50 %, T2 87.5 %)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.failover.mclt import (
    allowed_lease_end,
    degraded_lease_time,
    in_recovery_caution,
    lease_time,
    partner_down_reuse_time,
    potential_expiration,
    recipe_lease_time,
)
from tandem.wire.failover import ServerState

MCLT = 300
LEASE = 600
T0 = 1_700_000_000.0
S = ServerState

# The timeline of hot-standby.md in absolute times.
PET_1_3 = T0 + LEASE + MCLT / 2  # BNDUPD after the first ACK (t0): now + desired + granted/2
T1 = T0 + MCLT / 2  # the client renews at half its 300 s lease
PET_1_5 = T1 + LEASE + LEASE / 2  # BNDUPD after the renewal (600 s granted)
T2_OF_1_5 = T1 + LEASE * 7 / 8  # rebinding time of the 600 s lease


# ---------------------------------------------------------------- the §7.3 recipe


@pytest.mark.parametrize(
    ("desired", "now", "mclt", "base", "expected"),
    [
        (600, T0, 300, 0.0, 300),  # new binding: nothing acknowledged
        (600, T0, 300, T0 - 1, 300),  # acknowledged PET already in the past
        (600, T0, 300, T0, 300),  # base == now counts as nothing acknowledged
        (200, T0, 300, 0.0, 200),  # desired <= MCLT: always granted
        (300, T0, 300, 0.0, 300),
        (600, T1, 300, PET_1_3, 600),  # 1.5: the renewal gets the full lease
        (600, T0, 300, T0 + 100, 400),  # base - now + MCLT
        (600, T0, 300, T0 + 100.7, 400),  # floored: never past base + MCLT
        (600, T0, 300, T0 + 301, 600),  # exactly enough acknowledged window
        # draft worked example (MCLT 1 h, desired 3 days): renewal at t0 + 0.5 h
        (3 * 86400, T0 + 1800, 3600, T0 + 3 * 86400 + 1800, 3 * 86400),
    ],
)
def test_recipe(desired: int, now: float, mclt: int, base: float, expected: int) -> None:
    assert recipe_lease_time(desired, now, mclt, base) == expected


@pytest.mark.parametrize(
    ("now", "desired", "granted", "expected"),
    [
        (T0, 600, 300, T0 + 750),  # 1.3 -> PET sent after the first ACK
        (T1, 600, 600, T1 + 900),  # 1.5: now + 1.5 * desired
        (T0, 3 * 86400, 3600, T0 + 3 * 86400 + 1800),  # draft worked example
        (T0, 100, 100, T0 + 150),
        (T0, 50, 200, T0 + 200),  # never below the lease end
    ],
)
def test_potential_expiration(now: float, desired: int, granted: int, expected: float) -> None:
    assert potential_expiration(now, desired, granted) == expected


def test_degraded_is_min_of_desired_and_mclt() -> None:
    assert degraded_lease_time(600, 300) == 300
    assert degraded_lease_time(200, 300) == 200


def test_allowed_lease_end_and_partner_down_reuse() -> None:
    assert allowed_lease_end(T0, 300, 0.0) == T0 + 300
    assert allowed_lease_end(T0, 300, T0 + 50) == T0 + 350
    assert partner_down_reuse_time(T0, 300) == T0 + 300
    assert partner_down_reuse_time(T0, 300, lease_end=T0 + 100) == T0 + 400
    assert partner_down_reuse_time(T0, 300, sent_pet=T0 + 900, acked_pet=T0 + 500) == T0 + 1200
    assert partner_down_reuse_time(T0, 300, acked_pet=T0 + 990) == T0 + 1290
    assert partner_down_reuse_time(T0 + 50, 300, lease_end=T0) == T0 + 350  # never before STOS


# ---------------------------------------------------------------- hot-standby.md expectations

# (expectation, state, previous, state since, now, base, expected lease time)
EXPECTATIONS = [
    ("1.3 first lease is MCLT", S.NORMAL, S.STARTUP, T0 - 5000, T0, 0.0, 300),
    ("1.5 renewal at T1 gets the scope lease", S.NORMAL, S.STARTUP, T0 - 5000, T1, PET_1_3, 600),
    ("1.5 also soon after a plain start-up", S.NORMAL, None, T0 - 10, T1, PET_1_3, 600),
    (
        "2.2 standby new client from reserve",
        S.COMMUNICATIONS_INTERRUPTED,
        S.NORMAL,
        T1,
        T1 + 60,
        0.0,
        300,
    ),
    (
        "2.3 standby rebinds a primary lease",
        S.COMMUNICATIONS_INTERRUPTED,
        S.NORMAL,
        T1 + 50,
        T2_OF_1_5,
        PET_1_5,
        300,
    ),
    (
        "2.4 standby rebinds its own lease",
        S.COMMUNICATIONS_INTERRUPTED,
        S.NORMAL,
        T0,
        T0 + 1000,
        T0 + 900,
        300,
    ),
    (
        "3.1 partner-down leases are MCLT",
        S.PARTNER_DOWN,
        S.COMMUNICATIONS_INTERRUPTED,
        T0,
        T0 + 5000,
        T0 + 9000,
        300,
    ),
    (
        "3.2 recovering primary renews (RECOVER-DONE)",
        S.RECOVER_DONE,
        S.RECOVER_WAIT,
        T0 + 9000,
        T0 + 9010,
        T0 + 9500,
        300,
    ),
    (
        "3.2 recovering primary renews (NORMAL < MCLT)",
        S.NORMAL,
        S.RECOVER_DONE,
        T0 + 9000,
        T0 + 9100,
        T0 + 9500,
        300,
    ),
    (
        "3.3 primary answers the standby's client",
        S.NORMAL,
        S.RECOVER_DONE,
        T0 + 9000,
        T0 + 9299,
        T0 + 9900,
        300,
    ),
    (
        "4.2 MCLT after recovery has passed",
        S.NORMAL,
        S.RECOVER_DONE,
        T0 + 9000,
        T0 + 9300,
        T0 + 9900,
        600,
    ),
    (
        "4.2 caution after PARTNER-DOWN -> NORMAL too",
        S.NORMAL,
        S.PARTNER_DOWN,
        T0 + 9000,
        T0 + 9100,
        T0 + 9900,
        300,
    ),
    (
        "RESOLUTION-INTERRUPTED caps at MCLT",
        S.RESOLUTION_INTERRUPTED,
        S.POTENTIAL_CONFLICT,
        T0,
        T0 + 10,
        T0 + 9900,
        300,
    ),
    (
        "CONFLICT-DONE caps at MCLT",
        S.CONFLICT_DONE,
        S.POTENTIAL_CONFLICT,
        T0,
        T0 + 10,
        T0 + 9900,
        300,
    ),
]


@pytest.mark.parametrize(
    ("name", "state", "previous", "since", "now", "base", "expected"),
    EXPECTATIONS,
    ids=[e[0] for e in EXPECTATIONS],
)
def test_reference_expectations(
    name: str,
    state: ServerState,
    previous: ServerState | None,
    since: float,
    now: float,
    base: float,
    expected: int,
) -> None:
    got = lease_time(LEASE, now, MCLT, base, state, state_since=since, previous=previous)
    assert got == expected
    assert now + got <= allowed_lease_end(now, MCLT, base)


def test_2_3_needs_the_degraded_rule() -> None:
    """The draft recipe alone would give the standby's rebinding client 600 s (hot-standby.md
    2.3 wants MCLT): the state rule, not the arithmetic, makes the difference."""
    assert recipe_lease_time(LEASE, T2_OF_1_5, MCLT, PET_1_5) == 600


@pytest.mark.parametrize(
    ("state", "previous", "since", "now", "expected"),
    [
        (S.NORMAL, S.RECOVER_DONE, T0, T0 + 299.9, True),
        (S.NORMAL, S.RECOVER_DONE, T0, T0 + 300, False),
        (S.NORMAL, S.COMMUNICATIONS_INTERRUPTED, T0, T0, True),
        (S.NORMAL, S.STARTUP, T0, T0, False),
        (S.NORMAL, None, T0, T0, False),
        (S.NORMAL, S.UNKNOWN, T0, T0, False),
        (S.RECOVER_DONE, S.RECOVER_WAIT, T0, T0, False),  # not NORMAL: the state rule applies
    ],
)
def test_recovery_caution(
    state: ServerState, previous: ServerState | None, since: float, now: float, expected: bool
) -> None:
    assert in_recovery_caution(state, since, previous, now, MCLT) is expected


def test_zero_desired_is_passed_through() -> None:
    assert lease_time(0, T0, MCLT, 0.0, S.NORMAL) == 0


# ---------------------------------------------------------------- the invariant

_times = st.floats(min_value=T0 - 1e6, max_value=T0 + 1e6, allow_nan=False)


@given(
    base=st.one_of(st.just(0.0), _times),
    now=_times,
    desired=st.integers(min_value=1, max_value=10 * 86400),
    mclt=st.integers(min_value=1, max_value=86400),
    state=st.sampled_from(list(ServerState)),
    previous=st.one_of(st.none(), st.sampled_from(list(ServerState))),
    since_ago=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_never_past_mclt_beyond_what_the_partner_acknowledged(
    base: float,
    now: float,
    desired: int,
    mclt: int,
    state: ServerState,
    previous: ServerState | None,
    since_ago: float,
) -> None:
    granted = lease_time(
        desired, now, mclt, base, state, state_since=now - since_ago, previous=previous
    )
    assert 1 <= granted <= desired
    assert now + granted <= mclt + max(now, base)
    pet = potential_expiration(now, desired, granted)
    assert pet >= now + granted
