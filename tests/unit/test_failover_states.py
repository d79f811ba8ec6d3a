"""The failover server-state tables (src/tandem/failover/states.py) against the spec.

Spec = /work/shared/docs/failover-protocol.md (§6 = draft-12 §9 semantics). Each expected row
cites the section it comes from.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import pytest

from tandem.failover.states import (
    COMM_FAILED,
    GUARDS,
    INPUT_PARTNER,
    PARTNER_INPUT,
    PREVIOUS,
    RESTART,
    SERVICE_LEVEL,
    STATES,
    TABLE,
    TERMINAL,
    Effect,
    Facts,
    Guard,
    Input,
    Kind,
    ServiceLevel,
    decide,
    entry_effects,
    partner_input,
)
from tandem.wire.failover import ServerState

S = ServerState
I = Input  # noqa: E741
E = Effect

BASE = Facts(
    role="primary",
    now=1000.0,
    mclt_s=300.0,
    state_since=0.0,
    partner_state=None,
    partner_stos=None,
    connected=True,
    ever_in_contact=True,
    storage_lost=False,
    update_request_sent=False,
    recover_wait_until=None,
    switchover_interval_s=None,
    startup_deadline=None,
    startup_timeout_action="previous",
    last_operation_at=None,
    previous_state=S.RECOVER,
)


def facts(**kw: Any) -> Facts:
    return dataclasses.replace(BASE, **kw)


# ------------------------------------------------------------------------ structure


def test_states_are_the_spec_states_with_wire_codes() -> None:
    # §6.1: every state, with draft-12 codes (RECOVER-WAIT = ISC's 254).
    assert set(STATES) == set(ServerState) - {S.UNKNOWN}
    assert S.NORMAL == 2 and S.RECOVER_WAIT == 254 and S.CONFLICT_DONE == 11


def test_every_state_has_a_cell_for_every_input() -> None:
    assert set(TABLE) == set(STATES)
    for state in STATES:
        assert set(TABLE[state]) == set(Input), state


def test_every_guard_has_a_function() -> None:
    assert set(GUARDS) == set(Guard)


def test_partner_input_mapping() -> None:
    # §6.1: 254 = RECOVER-WAIT; unknown values mean "no transition", never an error;
    # §6.3: a STATE with server-flags bit 0 is a partner in STARTUP.
    assert partner_input(254) is I.PARTNER_RECOVER_WAIT
    assert partner_input(2) is I.PARTNER_NORMAL
    assert partner_input(99) is I.PARTNER_UNKNOWN
    assert partner_input(0) is I.PARTNER_UNKNOWN
    assert partner_input(4, startup_flag=True) is I.PARTNER_STARTUP
    assert set(PARTNER_INPUT) == set(ServerState)
    assert {INPUT_PARTNER[PARTNER_INPUT[s]] for s in ServerState} == set(ServerState)


SERVICE_EXPECTED = {  # §6.2, draft-12 column
    S.STARTUP: ServiceLevel.NONE,
    S.NORMAL: ServiceLevel.BALANCED,
    S.COMMUNICATIONS_INTERRUPTED: ServiceLevel.OWN_POOL,
    S.PARTNER_DOWN: ServiceLevel.PARTNER_DOWN,
    S.POTENTIAL_CONFLICT: ServiceLevel.NONE,
    S.RESOLUTION_INTERRUPTED: ServiceLevel.OWN_POOL,
    S.CONFLICT_DONE: ServiceLevel.ALL,
    S.RECOVER: ServiceLevel.NONE,
    S.RECOVER_WAIT: ServiceLevel.NONE,
    S.RECOVER_DONE: ServiceLevel.RENEW_REBIND_ONLY,
    S.PAUSED: ServiceLevel.NONE,
    S.SHUTDOWN: ServiceLevel.NONE,
}


def test_service_level_per_state() -> None:
    assert SERVICE_LEVEL == SERVICE_EXPECTED


def test_communications_failed_successors() -> None:
    # §6.3 table
    assert COMM_FAILED[S.NORMAL] is S.COMMUNICATIONS_INTERRUPTED
    assert COMM_FAILED[S.POTENTIAL_CONFLICT] is S.RESOLUTION_INTERRUPTED
    for s in STATES:
        if s not in (S.NORMAL, S.POTENTIAL_CONFLICT):
            assert COMM_FAILED[s] is s
    # §6.4 step 2: restart = communications-failed successor of the stored state
    assert RESTART[S.NORMAL] is S.COMMUNICATIONS_INTERRUPTED
    assert RESTART[S.PARTNER_DOWN] is S.PARTNER_DOWN
    assert RESTART[S.RECOVER_WAIT] is S.RECOVER_WAIT


def test_comm_lost_cells_follow_the_comm_failed_table() -> None:
    for state in STATES:
        if state is S.STARTUP:
            continue
        d = decide(state, I.COMM_LOST, facts(connected=False))
        assert d.next is COMM_FAILED[state], state


# ------------------------------------------------------------------------ every pair

FACT_VARIANTS = [
    facts(),
    facts(role="secondary"),
    facts(ever_in_contact=False, connected=False),
    facts(partner_state=S.CONFLICT_DONE, role="secondary", update_request_sent=True),
    facts(recover_wait_until=500.0, switchover_interval_s=60.0, startup_deadline=10.0),
    facts(recover_wait_until=5000.0, startup_timeout_action="wait"),
    facts(startup_deadline=10.0, startup_timeout_action="partner-down", ever_in_contact=False),
    facts(partner_stos=900.0, last_operation_at=800.0, previous_state=S.PARTNER_DOWN),
]


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
def test_every_state_input_pair_is_decided(state: ServerState) -> None:
    for inp in Input:
        cell = TABLE[state][inp]
        for f in FACT_VARIANTS:
            for previous in (S.RECOVER, S.COMMUNICATIONS_INTERRUPTED, S.PARTNER_DOWN):
                d = decide(state, inp, f, previous)
                assert d.kind in (Kind.GO, Kind.IGNORE, Kind.REFUSE)
                assert d.next in STATES
                if d.kind is not Kind.GO:
                    assert d.next is state and d.effects == ()
                else:
                    assert d.next is not state or d.effects, (state, inp)
                if cell.kind is Kind.REFUSE:
                    assert d.kind is Kind.REFUSE and inp.name.startswith("OPERATOR_")
                if state in TERMINAL:
                    assert d.next in TERMINAL  # left only by a restart (§6.6)


def test_operator_commands_are_never_silently_ignored_where_they_mean_something() -> None:
    # Operator partner-down is either done, refused (and logged), or "already there".
    for state in STATES:
        cell = TABLE[state][I.OPERATOR_PARTNER_DOWN]
        assert cell.kind in (Kind.GO, Kind.REFUSE) or state is S.PARTNER_DOWN, state


def _edges(state: ServerState, role: str) -> set[ServerState]:
    out: set[ServerState] = set()
    for inp in Input:
        cell = TABLE[state][inp]
        for b in cell.branches:
            if Guard.ROLE_IS_PRIMARY in b.guards and role != "primary":
                continue
            if Guard.ROLE_IS_SECONDARY in b.guards and role != "secondary":
                continue
            restart = set(RESTART.values())
            if role == "secondary":  # a secondary never stores CONFLICT-DONE
                restart.discard(S.CONFLICT_DONE)
            firsts = restart if b.next == PREVIOUS else {b.next}
            for first in firsts:
                assert isinstance(first, ServerState)
                out.add(first)
                if b.reevaluate:
                    for b2 in TABLE[first][inp].branches:
                        if b2.next != PREVIOUS:
                            assert isinstance(b2.next, ServerState)
                            out.add(b2.next)
    return out


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_every_non_terminal_state_has_a_way_to_normal(role: str) -> None:
    for start in STATES:
        if start in TERMINAL or (start is S.CONFLICT_DONE and role == "secondary"):
            continue
        seen = {start}
        queue = deque([start])
        while queue:
            s = queue.popleft()
            for n in _edges(s, role):
                if n not in seen:
                    seen.add(n)
                    queue.append(n)
        assert S.NORMAL in seen, (role, start)


def test_secondary_never_reaches_conflict_done() -> None:
    # §6.6: CONFLICT-DONE is a primary-only state.
    seen = {S.STARTUP}
    queue = deque([S.STARTUP])
    while queue:
        for n in _edges(queue.popleft(), "secondary"):
            if n not in seen:
                seen.add(n)
                queue.append(n)
    assert S.CONFLICT_DONE not in seen
    assert S.NORMAL in seen


# ------------------------------------------------------------------------ expected rows

CI, PD, PC = S.COMMUNICATIONS_INTERRUPTED, S.PARTNER_DOWN, S.POTENTIAL_CONFLICT
RI, CD, RW, RD = S.RESOLUTION_INTERRUPTED, S.CONFLICT_DONE, S.RECOVER_WAIT, S.RECOVER_DONE
Row = tuple[ServerState, Input, dict[str, Any], ServerState, set[Effect]]

EXPECTED: list[Row] = [
    # §6.6 NORMAL row (draft-12 §9.6)
    (S.NORMAL, I.PARTNER_PAUSED, {}, CI, set()),
    (S.NORMAL, I.PARTNER_SHUTDOWN, {}, PD, set()),
    (S.NORMAL, I.PARTNER_NORMAL, {}, S.NORMAL, set()),
    (S.NORMAL, I.PARTNER_PARTNER_DOWN, {}, PC, {E.REQUEST_UPDATES}),  # via COMM-INT
    (S.NORMAL, I.PARTNER_POTENTIAL_CONFLICT, {}, PC, set()),  # "unexpected change" via CI
    (S.NORMAL, I.PARTNER_CONFLICT_DONE, {}, PC, set()),
    (S.NORMAL, I.PARTNER_RESOLUTION_INTERRUPTED, {}, PC, set()),
    (S.NORMAL, I.PARTNER_RECOVER, {}, CI, set()),  # via CI: CI + RECOVER = stay
    (S.NORMAL, I.PARTNER_STARTUP, {}, S.NORMAL, set()),
    (S.NORMAL, I.COMM_LOST, {"connected": False}, CI, set()),  # §6.3
    (S.NORMAL, I.OPERATOR_PARTNER_DOWN, {}, PD, set()),  # §6.6 external command
    (S.NORMAL, I.PARTNER_UNKNOWN, {}, S.NORMAL, set()),  # §6.1 no transition
    # §6.6 COMMUNICATIONS-INTERRUPTED row (draft-12 §9.7)
    (CI, I.PARTNER_NORMAL, {}, S.NORMAL, {E.SEND_PENDING_UPDATES}),
    (CI, I.PARTNER_COMMUNICATIONS_INTERRUPTED, {}, S.NORMAL, set()),
    (CI, I.PARTNER_RECOVER, {}, CI, set()),
    (CI, I.PARTNER_RECOVER_DONE, {}, S.NORMAL, set()),
    (CI, I.PARTNER_PARTNER_DOWN, {}, PC, set()),
    (CI, I.PARTNER_POTENTIAL_CONFLICT, {}, PC, set()),
    (CI, I.PARTNER_CONFLICT_DONE, {}, PC, set()),
    (CI, I.PARTNER_RESOLUTION_INTERRUPTED, {}, PC, set()),
    (CI, I.PARTNER_PAUSED, {}, CI, set()),
    (CI, I.PARTNER_SHUTDOWN, {}, PD, set()),
    (CI, I.OPERATOR_PARTNER_DOWN, {}, PD, set()),
    # §6.6 / §6.8 safe period: only when configured and elapsed
    (CI, I.SWITCHOVER_TIMER_EXPIRED, {"switchover_interval_s": 600.0}, PD, set()),
    (CI, I.SWITCHOVER_TIMER_EXPIRED, {}, CI, set()),
    (CI, I.SWITCHOVER_TIMER_EXPIRED, {"switchover_interval_s": 6000.0}, CI, set()),
    # §6.6 PARTNER-DOWN row (draft-12 §9.4)
    (PD, I.PARTNER_STARTUP, {}, PD, set()),
    (PD, I.PARTNER_NORMAL, {}, PC, {E.REQUEST_UPDATES}),
    (PD, I.PARTNER_COMMUNICATIONS_INTERRUPTED, {}, PC, set()),
    (PD, I.PARTNER_PARTNER_DOWN, {}, PC, set()),
    (PD, I.PARTNER_POTENTIAL_CONFLICT, {}, PC, set()),
    (PD, I.PARTNER_RESOLUTION_INTERRUPTED, {}, PC, set()),
    (PD, I.PARTNER_CONFLICT_DONE, {}, PC, set()),
    (PD, I.PARTNER_RECOVER, {}, PD, set()),
    (PD, I.PARTNER_RECOVER_WAIT, {}, PD, set()),
    (PD, I.PARTNER_SHUTDOWN, {}, PD, set()),
    (PD, I.PARTNER_PAUSED, {}, PD, set()),
    (PD, I.PARTNER_RECOVER_DONE, {}, S.NORMAL, set()),
    (PD, I.COMM_LOST, {"connected": False}, PD, set()),
    # §6.6 RECOVER row (draft-12 §9.5)
    (S.RECOVER, I.PARTNER_POTENTIAL_CONFLICT, {}, PC, set()),
    (S.RECOVER, I.PARTNER_RESOLUTION_INTERRUPTED, {}, PC, set()),
    (S.RECOVER, I.PARTNER_CONFLICT_DONE, {}, PC, set()),
    (S.RECOVER, I.PARTNER_NORMAL, {}, S.RECOVER, {E.REQUEST_UPDATES}),
    (S.RECOVER, I.PARTNER_PARTNER_DOWN, {"ever_in_contact": False}, S.RECOVER,
     {E.REQUEST_ALL_UPDATES}),  # never talked to partner => UPDREQALL
    (S.RECOVER, I.PARTNER_NORMAL, {"storage_lost": True}, S.RECOVER, {E.REQUEST_ALL_UPDATES}),
    (S.RECOVER, I.PARTNER_NORMAL, {"update_request_sent": True}, S.RECOVER, set()),
    (S.RECOVER, I.UPDDONE_RECEIVED, {"recover_wait_until": 5000.0}, RW, set()),
    (S.RECOVER, I.UPDDONE_RECEIVED, {"recover_wait_until": 300.0}, RD, set()),  # wait done
    (S.RECOVER, I.COMM_LOST, {"connected": False}, S.RECOVER, set()),
    (S.RECOVER, I.OPERATOR_PARTNER_DOWN, {}, S.RECOVER, set()),  # refused
    # §6.6 RECOVER-WAIT row: no reaction to the partner; timer ⇒ RECOVER-DONE
    (RW, I.PARTNER_NORMAL, {}, RW, set()),
    (RW, I.PARTNER_CONFLICT_DONE, {}, RW, set()),
    (RW, I.RECOVER_WAIT_EXPIRED, {"recover_wait_until": 1000.0}, RD, set()),
    (RW, I.RECOVER_WAIT_EXPIRED, {"recover_wait_until": 1000.5}, RW, set()),
    # §6.6 RECOVER-DONE row
    (RD, I.PARTNER_NORMAL, {}, S.NORMAL, {E.SEND_PENDING_UPDATES, E.REBALANCE_POOL}),
    (RD, I.PARTNER_RECOVER_DONE, {}, S.NORMAL, set()),
    (RD, I.PARTNER_PARTNER_DOWN, {}, RD, set()),
    (RD, I.COMM_LOST, {"connected": False}, RD, set()),
    (RD, I.PARTNER_SHUTDOWN, {}, PD, set()),  # ISC column (draft silent)
    # §6.6 POTENTIAL-CONFLICT row (draft-12 §9.10)
    (PC, I.UPDDONE_RECEIVED, {}, CD, set()),  # primary
    (PC, I.UPDDONE_RECEIVED, {"role": "secondary", "partner_state": CD}, S.NORMAL, set()),
    (PC, I.UPDDONE_RECEIVED, {"role": "secondary", "partner_state": PC}, PC, set()),  # spurious
    (PC, I.PARTNER_CONFLICT_DONE, {"role": "secondary"}, PC, {E.REQUEST_UPDATES}),
    (PC, I.PARTNER_CONFLICT_DONE, {"role": "primary"}, PC, set()),
    (PC, I.PARTNER_NORMAL, {}, PC, set()),  # no ISC "panic" SHUTDOWN
    (PC, I.COMM_LOST, {"connected": False}, RI, set()),
    (PC, I.OPERATOR_PARTNER_DOWN, {}, PC, set()),  # refused: go through RI
    # §6.6 RESOLUTION-INTERRUPTED row (draft-12 §9.11)
    (RI, I.PARTNER_NORMAL, {}, PC, {E.REQUEST_UPDATES}),  # comm restored; primary asks
    (RI, I.PARTNER_POTENTIAL_CONFLICT, {"role": "secondary"}, PC, set()),
    (RI, I.PARTNER_PAUSED, {}, RI, set()),
    (RI, I.OPERATOR_PARTNER_DOWN, {}, PD, set()),
    (RI, I.COMM_LOST, {"connected": False}, RI, set()),
    # §6.6 CONFLICT-DONE row (draft-12 §9.12)
    (CD, I.PARTNER_NORMAL, {}, S.NORMAL, set()),
    (CD, I.PARTNER_POTENTIAL_CONFLICT, {}, CD, set()),
    (CD, I.COMM_LOST, {"connected": False}, CD, set()),
    # §6.6 PAUSED / SHUTDOWN: left only by restart
    (S.PAUSED, I.PARTNER_NORMAL, {}, S.PAUSED, set()),
    (S.PAUSED, I.OPERATOR_SHUTDOWN, {}, S.SHUTDOWN, set()),
    (S.SHUTDOWN, I.PARTNER_NORMAL, {}, S.SHUTDOWN, set()),
    (S.SHUTDOWN, I.PARTNER_PARTNER_DOWN, {}, S.SHUTDOWN, {E.STORE_RECOVER_AS_PREVIOUS}),
    # operator shutdown / pause from anywhere not terminal
    (S.NORMAL, I.OPERATOR_SHUTDOWN, {}, S.SHUTDOWN, set()),
    (PD, I.OPERATOR_PAUSE, {}, S.PAUSED, set()),
    (S.STARTUP, I.OPERATOR_SHUTDOWN, {}, S.SHUTDOWN, set()),
]


@pytest.mark.parametrize(
    ("state", "inp", "over", "expected", "effects"),
    EXPECTED,
    ids=[f"{r[0].name}-{r[1].name}-{i}" for i, r in enumerate(EXPECTED)],
)
def test_expected_transition(
    state: ServerState,
    inp: Input,
    over: dict[str, Any],
    expected: ServerState,
    effects: set[Effect],
) -> None:
    d = decide(state, inp, facts(**over))
    assert d.next is expected
    assert effects <= set(d.effects) or effects <= _with_entry(d, facts(**over))


def _with_entry(d: Any, f: Facts) -> set[Effect]:
    return set(d.effects) | (set(entry_effects(d.next, f)) if d.next is not None else set())


# §6.4 step 4 (STARTUP): previous-state, then the comm-OK transition from there.
STARTUP_ROWS: list[tuple[ServerState, Input, dict[str, Any], ServerState]] = [
    (CI, I.PARTNER_NORMAL, {}, S.NORMAL),  # stored NORMAL -> CI -> partner NORMAL -> NORMAL
    (CI, I.PARTNER_COMMUNICATIONS_INTERRUPTED, {}, S.NORMAL),
    (CI, I.PARTNER_PAUSED, {}, CI),
    (PD, I.PARTNER_RECOVER, {}, PD),  # PARTNER-DOWN persists
    (PD, I.PARTNER_NORMAL, {}, PC),
    (RW, I.PARTNER_NORMAL, {}, RW),
    (S.RECOVER, I.PARTNER_NORMAL, {}, S.RECOVER),
    (RI, I.PARTNER_POTENTIAL_CONFLICT, {}, PC),
    # partner in PARTNER-DOWN: after my last operation => RECOVER, else POTENTIAL-CONFLICT
    (CI, I.PARTNER_PARTNER_DOWN, {"partner_stos": 900.0, "last_operation_at": 800.0},
     S.RECOVER),
    (CI, I.PARTNER_PARTNER_DOWN, {"partner_stos": 700.0, "last_operation_at": 800.0}, PC),
    (CI, I.PARTNER_PARTNER_DOWN, {"partner_stos": 900.0}, PC),  # my last op unknown: safe
    (S.RECOVER, I.PARTNER_PARTNER_DOWN, {}, S.RECOVER),  # we were recovering anyway
    (CI, I.PARTNER_STARTUP, {}, CI),  # partner starting too: previous-state, no 2nd step
    (PD, I.PARTNER_UNKNOWN, {}, S.STARTUP),
    # §6.4 step 5: STARTUP timer
    (CI, I.STARTUP_TIMER_EXPIRED, {"startup_deadline": 1000.0}, CI),
    (CI, I.STARTUP_TIMER_EXPIRED, {"startup_deadline": 1001.0}, S.STARTUP),  # not yet
    (CI, I.STARTUP_TIMER_EXPIRED,
     {"startup_deadline": 10.0, "startup_timeout_action": "wait"}, S.STARTUP),
    (S.RECOVER, I.STARTUP_TIMER_EXPIRED,
     {"startup_deadline": 10.0, "startup_timeout_action": "partner-down",
      "ever_in_contact": False}, PD),  # commissioning
    (CI, I.STARTUP_TIMER_EXPIRED,
     {"startup_deadline": 10.0, "startup_timeout_action": "partner-down"}, CI),
]


@pytest.mark.parametrize(("previous", "inp", "over", "expected"), STARTUP_ROWS)
def test_startup_rows(
    previous: ServerState, inp: Input, over: dict[str, Any], expected: ServerState
) -> None:
    d = decide(S.STARTUP, inp, facts(previous_state=previous, **over), previous)
    assert d.next is expected


def test_normal_via_comm_interrupted_is_reported() -> None:
    d = decide(S.NORMAL, I.PARTNER_PARTNER_DOWN, facts())
    assert d.via == (CI,)
    assert "COMMUNICATIONS-INTERRUPTED" in d.reason


def test_guard_mclt_since_partner_down() -> None:
    g = GUARDS[Guard.MCLT_SINCE_PARTNER_DOWN_PASSED]
    assert not g(facts(state_since=800.0, now=1099.0))
    assert g(facts(state_since=800.0, now=1100.0))
