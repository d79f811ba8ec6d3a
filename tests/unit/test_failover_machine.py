"""FailoverMachine (src/tandem/failover/machine.py): one entry point, persistence before
acting, timers, restart semantics, and the spec's sequences in virtual time.

Spec = /work/shared/docs/failover-protocol.md §6; hot-standby.md §2-4.
"""

from __future__ import annotations

from typing import Any

import pytest

from tandem.failover.machine import (
    INPUT_REFUSED,
    PERSIST_RETRY_S,
    STARTUP_WAITING,
    STATE_CHANGED,
    STATE_WRITE_FAILED,
    STATE_WRITE_RECOVERED,
    FailoverMachine,
    LogRecord,
)
from tandem.failover.states import (
    NOT_STORED,
    PARTNER_INPUT,
    STATES,
    TABLE,
    Effect,
    Input,
    Kind,
    ServiceLevel,
    decide,
    partner_input,
)
from tandem.wire.failover import ServerState

S = ServerState
I = Input  # noqa: E741
CI, PD, PC = S.COMMUNICATIONS_INTERRUPTED, S.PARTNER_DOWN, S.POTENTIAL_CONFLICT
RI, CD, RW, RD = S.RESOLUTION_INTERRUPTED, S.CONFLICT_DONE, S.RECOVER_WAIT, S.RECOVER_DONE
MCLT = 300.0


class Store:
    """The persist callback: remembers every write; can be told to fail."""

    def __init__(self) -> None:
        self.writes: list[tuple[ServerState, float]] = []
        self.fail = False

    def __call__(self, state: ServerState, stos: float) -> None:
        if self.fail:
            raise OSError("disk full")
        self.writes.append((state, stos))

    @property
    def last(self) -> tuple[ServerState, float] | None:
        return self.writes[-1] if self.writes else None


def make(
    role: str = "primary",
    initial: tuple[ServerState, float] | None = None,
    switchover: float | None = None,
    **kw: Any,
) -> tuple[FailoverMachine, Store]:
    store = Store()
    m = FailoverMachine(role, MCLT, switchover, store, initial, **kw)  # type: ignore[arg-type]
    return m, store


def changes(m: FailoverMachine) -> list[ServerState]:
    return [r.to_state for r in m.records if r.event == STATE_CHANGED]


# ------------------------------------------------------------------------ reaching states

# From a first-run machine at t=0: the inputs (with time) that put it into each state.
Step = tuple[Input, float]
PATHS: dict[ServerState, list[Step]] = {
    S.STARTUP: [],
    S.RECOVER: [(I.PARTNER_RECOVER, 1)],
    RD: [(I.PARTNER_RECOVER, 1), (I.UPDDONE_RECEIVED, 2)],
    S.NORMAL: [(I.PARTNER_RECOVER, 1), (I.UPDDONE_RECEIVED, 2), (I.PARTNER_RECOVER_DONE, 3)],
}
PATHS[CI] = [*PATHS[S.NORMAL], (I.COMM_LOST, 10)]
PATHS[PD] = [*PATHS[CI], (I.OPERATOR_PARTNER_DOWN, 20)]
PATHS[PC] = [*PATHS[CI], (I.PARTNER_PARTNER_DOWN, 20)]
PATHS[RI] = [*PATHS[PC], (I.COMM_LOST, 30)]
PATHS[CD] = [*PATHS[PC], (I.UPDDONE_RECEIVED, 30)]  # primary only
PATHS[S.PAUSED] = [*PATHS[S.NORMAL], (I.OPERATOR_PAUSE, 10)]
PATHS[S.SHUTDOWN] = [*PATHS[S.NORMAL], (I.OPERATOR_SHUTDOWN, 10)]


def machine_in(state: ServerState, role: str = "primary") -> tuple[FailoverMachine, Store]:
    if state is RW:  # restart while recovering: the MCLT wait is not over yet
        m, store = make(role, initial=(S.RECOVER, 1000.0))
        m.handle(I.PARTNER_NORMAL, 1001, partner_stos=0)
        m.handle(I.UPDDONE_RECEIVED, 1002)
    else:
        m, store = make(role)
        for inp, t in PATHS[state]:
            m.handle(inp, t, partner_stos=0)
    assert m.state is state
    return m, store


@pytest.mark.parametrize(
    ("state", "role"),
    [
        (s, r)
        for s in STATES
        for r in ("primary", "secondary")
        if not (s is CD and r == "secondary")  # CONFLICT-DONE is primary-only
    ],
    ids=lambda v: v.name if isinstance(v, ServerState) else v,
)
def test_every_state_input_pair_through_the_machine(state: ServerState, role: str) -> None:
    for inp in Input:
        m, store = machine_in(state, role)
        before_writes = len(store.writes)
        before_records = len(m.records)
        now = m.state_since + 10_000.0  # late enough for every guarded timer
        # refused: a REFUSE cell, or an operator command none of whose branches holds
        refused = decide(state, inp, m.facts(now), m.previous_state).kind is Kind.REFUSE
        t = m.handle(inp, now, partner_stos=now - 1)
        if t is None:
            assert m.state is state, inp
            assert len(store.writes) == before_writes or state is S.SHUTDOWN
            new = m.records[before_records:]
            assert all(r.event == INPUT_REFUSED for r in new)
            assert len(new) == (1 if refused else 0), inp
            assert refused or _cell_kind(state, inp) is not Kind.REFUSE
            continue
        assert t.from_state is state and t.to_state is m.state and t.input is inp
        assert m.state in STATES
        if t.changed:
            assert m.records[-1].event == STATE_CHANGED
            assert (m.records[-1].from_state, m.records[-1].to_state) == (state, t.to_state)
            if t.to_state not in NOT_STORED:
                assert store.last == (t.to_state, m.state_since)
        else:
            assert t.effects, inp


def _cell_kind(state: ServerState, inp: Input) -> Kind:
    return TABLE[state][inp].kind


def test_machine_agrees_with_decide() -> None:
    m, _ = machine_in(CI)
    d = decide(CI, I.PARTNER_PARTNER_DOWN, m.facts(50.0))
    t = m.handle(I.PARTNER_PARTNER_DOWN, 50.0)
    assert t is not None and d.next is t.to_state is PC


# ------------------------------------------------------------------------ guards & timers


def test_partner_down_all_addresses_only_after_mclt() -> None:
    m, _ = machine_in(CI)
    assert m.all_free_usable_at is None and not m.may_use_all_addresses(10_000)
    m.handle(I.OPERATOR_PARTNER_DOWN, 1000.0)
    assert m.state is PD and m.state_since == 1000.0
    assert m.all_free_usable_at == 1000.0 + MCLT
    assert m.service_level is ServiceLevel.PARTNER_DOWN
    assert not m.may_use_all_addresses(1000.0 + MCLT - 0.001)
    assert m.may_use_all_addresses(1000.0 + MCLT)


def test_automatic_partner_down_is_off_by_default() -> None:
    m, _ = machine_in(CI)
    assert m.get_timer() is None
    assert m.handle_timer(1e9) is None
    assert m.handle(I.SWITCHOVER_TIMER_EXPIRED, 1e9) is None
    assert m.state is CI


def test_automatic_partner_down_after_the_switchover_interval() -> None:
    m, store = make(switchover=600.0)
    for inp, t in PATHS[CI]:
        m.handle(inp, t, partner_stos=0)
    since = m.state_since
    assert m.get_timer() == since + 600.0
    assert m.handle_timer(since + 599.0) is None
    assert m.handle(I.SWITCHOVER_TIMER_EXPIRED, since + 599.0) is None  # guard: not elapsed
    t = m.handle_timer(since + 600.0)
    assert t is not None and t.to_state is PD and "switchover" in t.reason
    assert store.last == (PD, since + 600.0)
    assert m.all_free_usable_at == since + 600.0 + MCLT
    assert m.get_timer() is None


def test_reconnect_before_switchover_cancels_it() -> None:
    m, _ = make(switchover=600.0)
    for inp, t in PATHS[CI]:
        m.handle(inp, t, partner_stos=0)
    m.handle(I.PARTNER_COMMUNICATIONS_INTERRUPTED, 100.0)
    assert m.state is S.NORMAL and m.get_timer() is None


def test_recover_wait_lasts_mclt_from_going_down() -> None:
    # Stored RECOVER since t=1000 (we went down then): RECOVER-WAIT ends at 1000 + MCLT.
    m, store = make(initial=(S.RECOVER, 1000.0))
    t = m.handle(I.PARTNER_NORMAL, 1100.0, partner_stos=0)
    assert t is not None and m.state is S.RECOVER
    assert Effect.REQUEST_ALL_UPDATES in t.effects  # never finished recovering: UPDREQALL
    assert m.state_since == 1000.0  # same stored state, same STOS
    m.handle(I.UPDDONE_RECEIVED, 1150.0)
    assert m.state is RW and m.state_since == 1000.0  # ISC keeps STOS
    assert store.last == (RW, 1000.0)
    assert m.get_timer() == 1000.0 + MCLT
    assert m.handle(I.PARTNER_NORMAL, 1200.0) is None  # no reaction to the partner
    m.handle(I.COMM_LOST, 1250.0)  # timer keeps running while disconnected
    assert m.handle_timer(1299.0) is None and m.state is RW
    assert m.handle(I.RECOVER_WAIT_EXPIRED, 1299.0) is None  # guard: not yet
    t = m.handle_timer(1300.0)
    assert t is not None and t.to_state is RD and m.service_level is ServiceLevel.RENEW_REBIND_ONLY


def test_first_run_skips_recover_wait() -> None:
    # §6.4 step 1: first run = RECOVER with time-of-failure 0; §6.7 "fresh pair".
    m, _ = make()
    t = m.handle(I.PARTNER_RECOVER, 5000.0, partner_stos=5000.0)
    assert t is not None and t.to_state is S.RECOVER and Effect.REQUEST_ALL_UPDATES in t.effects
    t = m.handle(I.UPDDONE_RECEIVED, 5001.0)
    assert t is not None and t.to_state is RD


def test_startup_timer_previous() -> None:
    # draft-12 §9.3.2 step 5 / ISC: on timeout, the previous state (NORMAL -> COMM-INT).
    m, _ = make(initial=(S.NORMAL, 100.0), startup_s=15.0, startup_timeout_action="previous")
    assert m.get_timer() is None  # not started
    m.start(1000.0)
    assert m.get_timer() == 1015.0
    assert m.handle_timer(1014.0) is None
    t = m.handle_timer(1015.0)
    assert t is not None and t.to_state is CI and m.service_level is ServiceLevel.OWN_POOL


def test_startup_timeout_waits_by_default_and_says_so() -> None:
    # The default: a restarted server that does not hear its partner serves nothing (the
    # partner may have been put in PARTNER-DOWN meanwhile); the timer fires once to log it.
    m, _ = make(initial=(S.NORMAL, 100.0))
    assert m.startup_timeout_action == "wait"
    m.start(1000.0)
    assert m.get_timer() == 1015.0
    assert m.handle_timer(1015.0) is None
    assert m.state is S.STARTUP and m.service_level is ServiceLevel.NONE
    assert [r.event for r in m.records] == [STARTUP_WAITING]
    assert "declare partner-down" in m.records[-1].reason
    assert m.get_timer() is None  # no busy timer while waiting
    assert m.startup_waiting_since == 1015.0
    assert m.handle_timer(1e6) is None and len(m.records) == 1
    # the partner's STATE still ends STARTUP the usual way
    t = m.handle(I.PARTNER_NORMAL, 2000.0, partner_stos=50.0)
    assert t is not None and t.to_state is S.NORMAL


def test_startup_wait_leaves_by_operator_partner_down() -> None:
    m, _ = make(initial=(S.NORMAL, 100.0))
    m.start(1000.0)
    m.handle_timer(1015.0)
    t = m.handle(I.OPERATOR_PARTNER_DOWN, 1100.0)
    assert t is not None and t.to_state is PD and m.state is PD


def test_startup_operator_partner_down_refused_when_recovering() -> None:
    # A server whose database is behind its partner's (RECOVER after contact), or that never
    # met its partner (first run: knows none of its bindings), may not take the whole pool
    # on an operator's word from STARTUP, as RECOVER refuses it too.
    for m, _ in (make(initial=(S.RECOVER, 100.0), ever_in_contact=True), make()):
        m.start(1000.0)
        assert m.handle(I.OPERATOR_PARTNER_DOWN, 1100.0) is None
        assert m.state is S.STARTUP and m.records[-1].event == INPUT_REFUSED


def test_startup_wait_resumes_partner_down() -> None:
    # A server that was in PARTNER-DOWN (its partner already down) resumes it on timeout.
    m, _ = make(initial=(S.PARTNER_DOWN, 100.0))
    m.start(1000.0)
    t = m.handle_timer(1015.0)
    assert t is not None and t.to_state is PD and m.state is PD


def test_startup_timer_wait_and_commissioning() -> None:
    m, _ = make(startup_timeout_action="partner-down")  # first run, partner never seen
    m.start(0.0)
    t = m.handle_timer(15.0)
    assert t is not None and t.to_state is PD


def test_update_request_is_sent_once_per_connection() -> None:
    m, _ = make(initial=(S.RECOVER, 0.0))
    t = m.handle(I.PARTNER_NORMAL, 10.0)
    assert t is not None and t.effects
    assert m.handle(I.PARTNER_NORMAL, 11.0) is None  # outstanding: not again
    m.handle(I.COMM_LOST, 12.0)
    t = m.handle(I.PARTNER_NORMAL, 13.0)  # redo on reconnect (§6.6 RECOVER)
    assert t is not None and set(t.effects) & {Effect.REQUEST_UPDATES, Effect.REQUEST_ALL_UPDATES}


# ------------------------------------------------------------------------ persistence


@pytest.mark.parametrize(
    ("state", "inp"),
    [
        (S.NORMAL, I.COMM_LOST),
        (CI, I.OPERATOR_PARTNER_DOWN),
        (PD, I.PARTNER_RECOVER_DONE),
        (S.STARTUP, I.PARTNER_RECOVER),
        (PC, I.UPDDONE_RECEIVED),
        (S.SHUTDOWN, I.PARTNER_PARTNER_DOWN),
    ],
)
def test_persist_failure_leaves_state_unchanged(state: ServerState, inp: Input) -> None:
    """A state that cannot be recorded is not acted on: no change, no STATE_CHANGED, the
    alarm raised (one FAILOVER_STATE_WRITE_FAILED record, counted, shown); the next write
    that works clears it."""
    m, store = machine_in(state)
    since, n_records, n_writes = m.state_since, len(m.records), len(store.writes)
    store.fail = True
    assert m.handle(inp, 5000.0, partner_stos=4000.0) is None
    assert (m.state, m.state_since) == (state, since)
    assert len(store.writes) == n_writes
    new = m.records[n_records:]
    assert [r.event for r in new] == [STATE_WRITE_FAILED]
    wanted = new[0].to_state  # SHUTDOWN stays SHUTDOWN, but records RECOVER as previous
    assert new[0].from_state is state and (wanted is not state or state is S.SHUTDOWN)
    assert "disk full" in new[0].reason
    assert m.persist_failures == 1 and m.persist_failing_since == 5000.0
    assert m.persist_error == "disk full"
    assert m.persist_pending is (wanted if wanted is not state else None)
    store.fail = False
    t = m.handle(inp, 5000.5, partner_stos=4000.0)
    assert t is not None and store.writes[n_writes:]  # written this time
    after = [r.event for r in m.records[n_records + 1 :]]
    assert after == [STATE_WRITE_RECOVERED] + ([STATE_CHANGED] if t.changed else [])
    assert m.persist_failing_since is None and m.persist_pending is None
    assert m.persist_recoveries == 1 and m.get_timer() != 5001.0  # no retry left behind


def _fail(m: FailoverMachine, store: Store, inp: Input, now: float) -> None:
    store.fail = True
    assert m.handle(inp, now, partner_stos=0) is None


def test_a_failed_state_write_is_retried_by_the_timer_and_recovers_without_restart() -> None:
    m, store = machine_in(S.NORMAL)
    _fail(m, store, I.COMM_LOST, 100.0)
    assert m.state is S.NORMAL and not m.connected  # stays in what it recorded
    assert m.get_timer() == 100.0 + PERSIST_RETRY_S
    for k in range(1, 25):  # the disk stays full for 24 s: one retry a second
        assert m.handle_timer(100.0 + k - 0.5) is None  # not before the retry time
        assert m.handle_timer(100.0 + k) is None
        assert m.state is S.NORMAL and m.get_timer() == 100.0 + k + PERSIST_RETRY_S
    assert m.persist_failures == 25
    failed = [r for r in m.records if r.event == STATE_WRITE_FAILED]
    assert [r.at for r in failed] == [100.0, 110.0, 120.0]  # logged at most every 10 s
    assert m.persist_failing_since == 100.0
    store.fail = False  # space again
    t = m.handle_timer(125.0)
    assert t is not None and t.to_state is CI and m.state is CI
    assert store.last == (CI, 125.0)  # recorded, then acted on
    assert m.persist_failing_since is None and m.persist_recoveries == 1
    rec = [r for r in m.records if r.event == STATE_WRITE_RECOVERED]
    assert len(rec) == 1 and "25.0 s" in rec[0].reason


def test_state_timers_wait_while_the_state_cannot_be_written() -> None:
    m, store = machine_in(S.NORMAL)
    m.switchover_interval_s = 50.0
    m.handle(I.COMM_LOST, 100.0)
    assert m.state is CI and m.get_timer() == 150.0
    store.fail = True
    assert m.handle_timer(150.0) is None  # switchover to PARTNER-DOWN: not recorded
    assert m.state is CI and m.persist_pending is PD
    assert m.get_timer() == 151.0  # not at once again (no busy loop on a full disk)
    store.fail = False
    t = m.handle_timer(151.0)
    assert t is not None and m.state is PD and store.last == (PD, 151.0)


def test_a_newer_link_event_replaces_the_failed_input() -> None:
    """COMM_LOST could not be recorded; the link came back before the disk did: the retry
    must not take the server to COMMUNICATIONS-INTERRUPTED, it only probes the store by
    rewriting the state it has recorded."""
    m, store = machine_in(S.NORMAL)
    stored = store.last
    _fail(m, store, I.COMM_LOST, 100.0)
    m.handle(I.CONNECTED, 100.5)
    m.handle(I.PARTNER_NORMAL, 100.6, partner_stos=0)
    assert m.state is S.NORMAL and m.connected
    store.fail = False
    assert m.handle_timer(101.0) is None
    assert m.state is S.NORMAL and store.last == stored and m.persist_failing_since is None


def test_an_operator_command_that_could_not_be_recorded_is_not_replayed() -> None:
    m, store = machine_in(CI)
    _fail(m, store, I.OPERATOR_PARTNER_DOWN, 100.0)
    assert m.state is CI and m.records[-1].event == STATE_WRITE_FAILED
    store.fail = False
    assert m.handle_timer(101.0) is None  # the probe works: the alarm clears...
    assert m.state is CI and m.persist_failing_since is None  # ...and CI stays
    assert m.handle(I.OPERATOR_PARTNER_DOWN, 102.0) is not None and m.state is PD


def test_persist_happens_before_the_change_is_visible() -> None:
    seen: list[tuple[ServerState, ServerState]] = []
    holder: dict[str, FailoverMachine] = {}

    def persist(state: ServerState, stos: float) -> None:
        seen.append((holder["m"].state, state))

    m = FailoverMachine("primary", MCLT, None, persist)
    holder["m"] = m
    for inp, t in PATHS[CI]:
        m.handle(inp, t, partner_stos=0)
    assert seen[-1] == (S.NORMAL, CI)  # persist saw the old state still in force


def test_paused_and_shutdown_keep_the_state_before_them_stored() -> None:
    m, store = machine_in(S.NORMAL)
    m.handle(I.OPERATOR_PAUSE, 50.0)
    assert m.state is S.PAUSED and store.last is not None and store.last[0] is S.NORMAL
    assert m.service_level is ServiceLevel.NONE
    # a restart comes back to the state before PAUSED (§6.6), comm-failed (§6.4 step 2)
    m2, _ = make(initial=store.last)
    assert m2.previous_state is CI


def test_shutdown_stores_recover_when_partner_goes_partner_down() -> None:
    m, store = machine_in(S.SHUTDOWN)
    t = m.handle(I.PARTNER_PARTNER_DOWN, 60.0, partner_stos=59.0)
    assert t is not None and not t.changed and Effect.STORE_RECOVER_AS_PREVIOUS in t.effects
    assert store.last == (S.RECOVER, 60.0) and m.state is S.SHUTDOWN
    m2, _ = make(initial=store.last)
    assert m2.previous_state is S.RECOVER


RESTARTS = [  # stored state -> previous-state after STARTUP (§6.3 / §6.4 step 2)
    (S.NORMAL, CI, False),
    (CI, CI, True),
    (PD, PD, True),  # PARTNER-DOWN persists, with its STOS
    (S.RECOVER, S.RECOVER, True),
    (RW, RW, True),
    (RD, RD, True),
    (PC, RI, False),
    (RI, RI, True),
    (CD, CD, True),
    (S.PAUSED, S.RECOVER, False),  # never stored by us; unknown state before => RECOVER
    (S.SHUTDOWN, S.RECOVER, False),
]


@pytest.mark.parametrize(("stored", "previous", "same_stos"), RESTARTS)
def test_restart_from_each_stored_state(
    stored: ServerState, previous: ServerState, same_stos: bool
) -> None:
    m, store = make(initial=(stored, 1000.0), startup_timeout_action="previous")
    assert m.state is S.STARTUP and m.previous_state is previous
    assert m.service_level is ServiceLevel.NONE
    m.start(2000.0)
    t = m.handle_timer(2000.0 + 15.0)
    assert t is not None and t.to_state is previous
    assert m.state_since == (1000.0 if same_stos else 2015.0)
    assert store.last == (previous, m.state_since)
    # "wait" (the default): only a server that was in PARTNER-DOWN resumes on the timer.
    m, store = make(initial=(stored, 1000.0))
    m.start(2000.0)
    t = m.handle_timer(2000.0 + 15.0)
    assert m.state is (previous if previous is PD else S.STARTUP)
    assert (t is not None) == (previous is PD)


def test_restart_in_partner_down_keeps_the_mclt_clock() -> None:
    m, _ = make(initial=(PD, 1000.0))
    m.handle(I.PARTNER_RECOVER, 1100.0, partner_stos=1090.0)
    assert m.state is PD and m.all_free_usable_at == 1000.0 + MCLT


def test_secondary_with_stored_conflict_done_redoes_resolution() -> None:
    m, _ = make("secondary", initial=(CD, 1000.0))
    assert m.previous_state is RI


# ------------------------------------------------------------------------ logging


def test_state_change_is_logged_with_from_to_partner_and_reason() -> None:
    got: list[LogRecord] = []
    m = FailoverMachine("primary", MCLT, None, Store(), (S.NORMAL, 0.0), log=got.append)
    m.handle(I.PARTNER_NORMAL, 10.0, partner_stos=5.0)  # STARTUP -> CI -> NORMAL
    assert m.state is S.NORMAL
    m.handle(I.PARTNER_PARTNER_DOWN, 20.0, partner_stos=19.0)
    rec = got[-1]
    assert rec.event == STATE_CHANGED == "FAILOVER_STATE_CHANGED"
    assert (rec.from_state, rec.to_state, rec.partner_state) == (S.NORMAL, PC, PD)
    assert "via COMMUNICATIONS_INTERRUPTED" in rec.reason
    assert rec.fields()["to"] == "POTENTIAL_CONFLICT" and rec.fields()["partner"] == "PARTNER_DOWN"
    assert got == m.records


def test_refused_operator_command_is_logged() -> None:
    m, store = machine_in(S.RECOVER)
    n = len(store.writes)
    assert m.handle(I.OPERATOR_PARTNER_DOWN, 10.0) is None
    assert m.records[-1].event == INPUT_REFUSED and m.state is S.RECOVER
    assert len(store.writes) == n


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FailoverMachine("tertiary", MCLT, None, Store())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FailoverMachine("primary", 0, None, Store())
    with pytest.raises(ValueError):
        FailoverMachine("primary", MCLT, 0, Store())


# ------------------------------------------------------------------------ two servers


class Pair:
    """Two machines and an ideal link: STATE messages both ways, UPDREQ answered at once
    (BNDUPDs + UPDDONE) by a partner that is past STARTUP."""

    def __init__(self, p: FailoverMachine, s: FailoverMachine) -> None:
        self.m = {"primary": p, "secondary": s}
        self.up = True
        self.asked: set[str] = set()

    def other(self, role: str) -> str:
        return "secondary" if role == "primary" else "primary"

    def _note(self, role: str, t: Any) -> None:
        if t is not None and {Effect.REQUEST_UPDATES, Effect.REQUEST_ALL_UPDATES} & set(
            t.effects
        ):
            self.asked.add(role)

    def settle(self, now: float) -> None:
        assert self.up
        for _ in range(20):
            before = {r: (m.state, len(m.records)) for r, m in self.m.items()}
            for role in ("primary", "secondary"):
                src, dst = self.m[self.other(role)], self.m[role]
                if src.state is S.STARTUP:
                    inp = partner_input(src.previous_state, startup_flag=True)
                else:
                    inp = PARTNER_INPUT[src.state]
                self._note(role, dst.handle(inp, now, partner_stos=src.state_since))
            for role in list(self.asked):
                if self.m[self.other(role)].state is not S.STARTUP:
                    self.asked.discard(role)
                    self._note(role, self.m[role].handle(I.UPDDONE_RECEIVED, now))
            after = {r: (m.state, len(m.records)) for r, m in self.m.items()}
            if after == before and not self.asked:
                return
        raise AssertionError("did not settle")

    def cut(self, now: float) -> None:
        self.up = False
        self.asked.clear()
        for m in self.m.values():
            m.handle(I.COMM_LOST, now)


def fresh_pair(**kw: Any) -> Pair:
    p = FailoverMachine("primary", MCLT, None, Store(), **kw)
    s = FailoverMachine("secondary", MCLT, None, Store(), **kw)
    return Pair(p, s)


def test_sequence_fresh_pair() -> None:
    # §6.7 "Fresh pair": RECOVER -> UPDREQ(ALL)/UPDDONE -> RECOVER-DONE -> NORMAL
    pair = fresh_pair()
    pair.settle(1.0)
    for m in pair.m.values():
        assert changes(m) == [S.RECOVER, RD, S.NORMAL]


def test_sequence_link_flap() -> None:
    # §6.7 "Link flap": NORMAL -> both COMM-INT -> reconnect -> both NORMAL
    pair = fresh_pair()
    pair.settle(1.0)
    pair.cut(10.0)
    assert {m.state for m in pair.m.values()} == {CI}
    pair.up = True
    pair.settle(20.0)
    for m in pair.m.values():
        assert changes(m)[-2:] == [CI, S.NORMAL]


def test_sequence_potential_conflict() -> None:
    # §6.7 "Potential conflict": both in PARTNER-DOWN (partition) -> both POTENTIAL-CONFLICT
    # -> primary UPDREQ/UPDDONE -> CONFLICT-DONE -> secondary UPDREQ/UPDDONE -> NORMAL -> NORMAL
    pair = fresh_pair()
    pair.settle(1.0)
    pair.cut(10.0)
    for m in pair.m.values():
        m.handle(I.OPERATOR_PARTNER_DOWN, 20.0)
    pair.up = True
    pair.settle(30.0)
    assert changes(pair.m["primary"])[3:] == [CI, PD, PC, CD, S.NORMAL]
    assert changes(pair.m["secondary"])[3:] == [CI, PD, PC, S.NORMAL]


def _crash_and_restart(pair: Pair, role: str, crash_at: float, back_at: float) -> None:
    old = pair.m[role]
    stored = old._persist.last  # type: ignore[attr-defined]
    new = FailoverMachine(
        role, MCLT, None, Store(), stored, last_operation_at=crash_at  # type: ignore[arg-type]
    )
    new.start(back_at)
    pair.m[role] = new


@pytest.mark.parametrize("crashed", ["primary", "secondary"])
def test_sequence_outage_with_partner_down_hot_standby_timeline(crashed: str) -> None:
    """§6.7 "Outage with PARTNER-DOWN" = hot-standby.md §2-4 as states, for the server that
    fails (hot-standby.md: the primary) and the survivor; also with the roles swapped."""
    survivor = "secondary" if crashed == "primary" else "primary"
    pair = fresh_pair()
    pair.settle(0.0)
    # §1: both NORMAL; the active answers (BALANCED = per mode).
    assert {m.state for m in pair.m.values()} == {S.NORMAL}
    # §2: the failing server dies at t=1000; the survivor notices (2.1) and serves its own
    # pool / renewals with MCLT leases (2.2-2.4).
    pair.cut(1000.0)
    sv = pair.m[survivor]
    assert sv.state is CI and sv.service_level is ServiceLevel.OWN_POOL
    assert not sv.may_use_all_addresses(1e9)
    # §3.1: operator partner-down at t=1100; the whole scope after MCLT in partner-down.
    sv.handle(I.OPERATOR_PARTNER_DOWN, 1100.0)
    assert sv.state is PD and sv.all_free_usable_at == 1100.0 + MCLT
    assert not sv.may_use_all_addresses(1399.0) and sv.may_use_all_addresses(1400.0)
    # §3: the failed server returns at t=2000: STARTUP, sees the partner in PARTNER-DOWN
    # (entered after its last operation) -> RECOVER, bulk update. It went down at 1000, more
    # than an MCLT ago, so RECOVER-WAIT is already satisfied (draft: the wait counts from the
    # time it went down): straight to RECOVER-DONE, and both NORMAL (hot-standby.md 3.2).
    _crash_and_restart(pair, crashed, crash_at=1000.0, back_at=2000.0)
    back = pair.m[crashed]
    assert back.service_level is ServiceLevel.NONE
    pair.up = True
    pair.settle(2000.0)
    # §4.1: back to normal operation.
    assert back.state is S.NORMAL and sv.state is S.NORMAL
    assert changes(back) == [S.RECOVER, RD, S.NORMAL]
    assert changes(sv) == [S.RECOVER, RD, S.NORMAL, CI, PD, S.NORMAL]


@pytest.mark.parametrize("crashed", ["primary", "secondary"])
def test_a_server_back_within_an_mclt_of_going_down_waits_in_recover_wait(crashed: str) -> None:
    """RECOVER-WAIT lasts until an MCLT after the server went down (its last operation), not
    an MCLT after it came back: down at 1000, partner-down at 1010, back at 1100 -> RECOVER-WAIT
    until 1300, then RECOVER-DONE and NORMAL."""
    survivor = "secondary" if crashed == "primary" else "primary"
    pair = fresh_pair()
    pair.settle(0.0)
    pair.cut(1000.0)
    sv = pair.m[survivor]
    sv.handle(I.OPERATOR_PARTNER_DOWN, 1010.0)
    _crash_and_restart(pair, crashed, crash_at=1000.0, back_at=1100.0)
    back = pair.m[crashed]
    pair.up = True
    pair.settle(1100.0)
    assert back.state is RW and back.service_level is ServiceLevel.NONE
    assert sv.state is PD  # the survivor keeps serving while the partner recovers
    assert back.get_timer() == 1000.0 + MCLT
    assert back.handle_timer(1299.0) is None
    t = back.handle_timer(1300.0)
    assert t is not None and t.to_state is RD
    pair.settle(1300.0)
    assert back.state is S.NORMAL and sv.state is S.NORMAL
    assert changes(back) == [S.RECOVER, RW, RD, S.NORMAL]


def test_recover_wait_without_a_known_last_operation_counts_from_entering_recover() -> None:
    # A stored RECOVER state (previous run died while recovering): the base is that STOS.
    m = FailoverMachine("primary", MCLT, None, Store(), (S.RECOVER, 500.0))
    m.start(1000.0)
    assert m.recover_wait_until == 500.0 + MCLT


def test_outage_without_knowing_my_last_operation_goes_potential_conflict() -> None:
    # §6.4 step 4 with the comparison impossible: the safe answer, then resolution.
    pair = fresh_pair()
    pair.settle(0.0)
    pair.cut(1000.0)
    pair.m["secondary"].handle(I.OPERATOR_PARTNER_DOWN, 1100.0)
    stored = pair.m["primary"]._persist.last  # type: ignore[attr-defined]
    pair.m["primary"] = FailoverMachine("primary", MCLT, None, Store(), stored)
    pair.up = True
    pair.settle(2000.0)
    assert changes(pair.m["primary"]) == [PC, CD, S.NORMAL]
    assert changes(pair.m["secondary"])[-2:] == [PC, S.NORMAL]


def test_partner_shutdown_moves_normal_to_partner_down_and_back() -> None:
    # §6.6 NORMAL: partner SHUTDOWN => PARTNER-DOWN; the returning server then RECOVERs.
    pair = fresh_pair()
    pair.settle(0.0)
    p, s = pair.m["primary"], pair.m["secondary"]
    p.handle(I.OPERATOR_SHUTDOWN, 500.0)
    s.handle(PARTNER_INPUT[p.state], 500.0, partner_stos=500.0)
    assert s.state is PD and s.state_since == 500.0
    # the shut-down primary sees the partner go PARTNER-DOWN: stores RECOVER
    p.handle(PARTNER_INPUT[s.state], 501.0, partner_stos=s.state_since)
    pair.cut(502.0)
    _crash_and_restart(pair, "primary", crash_at=500.0, back_at=600.0)
    assert pair.m["primary"].previous_state is S.RECOVER
    pair.up = True
    pair.settle(600.0)
    assert pair.m["primary"].state is RW  # MCLT since RECOVER was stored (t=501)
    pair.m["primary"].handle_timer(801.0)
    pair.settle(801.0)
    assert {m.state for m in pair.m.values()} == {S.NORMAL}

