"""The failover server-state machine as data (draft-ietf-dhc-failover-12 §9; spec §6).

Everything a server state decides lives here, as tables:

* :data:`TABLE` — ``(my state, input) -> Cell``. A cell is IGNORE (no transition, nothing to
  do), REFUSE (an operator command this state does not accept; logged), or GO with one or
  more :class:`Branch` es tried in order; the first whose named :class:`Guard` s all hold wins.
  A branch that names its own state is a "stay" that still has effects (e.g. send UPDREQ).
  A branch with ``reevaluate`` moves to its state and then looks the same input up again
  from there ("go through COMMUNICATIONS-INTERRUPTED and re-evaluate", spec §6.6 NORMAL row;
  "enter previous-state, then apply the comm-OK transition", §6.4 step 4).
* :data:`ON_ENTRY` — effects of entering a state (spec §6.6: "on entry: primary sends UPDREQ").
* :data:`SERVICE_LEVEL` — what each state may serve (spec §6.2, draft-12 column).
* :data:`COMM_FAILED` — the communications-failed successor of each state (spec §6.3).
* :data:`RESTART` — which state a server restarting with a stored state comes back to after
  STARTUP (spec §6.4 step 2).

:func:`decide` is the pure lookup (table + guards) that :class:`~tandem.failover.machine.
FailoverMachine` runs; the machine adds persistence, logging, timers and bookkeeping.

Inputs are what the peer layer observed: the partner's state from a STATE message (one input
per partner state, plus ``PARTNER_STARTUP`` for a STATE with the STARTUP flag and
``PARTNER_UNKNOWN`` for a value we do not know), link events, operator commands, UPDDONE, and
the three timers. "Communications OK" is the partner's STATE arriving (draft-12 §9.3.2 step
4), so ``CONNECTED`` alone moves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal, TypeAlias

from tandem.wire.failover import ServerState

S = ServerState
Role: TypeAlias = Literal["primary", "secondary"]
StartupTimeoutAction: TypeAlias = Literal["previous", "wait", "partner-down"]
PREVIOUS: Literal["previous"] = "previous"  # Branch.next: the stored previous-state (§6.4)

#: Every server state of spec §6.1 (UNKNOWN is a wire value, not a state).
STATES: tuple[ServerState, ...] = (
    S.STARTUP,
    S.NORMAL,
    S.COMMUNICATIONS_INTERRUPTED,
    S.PARTNER_DOWN,
    S.RECOVER,
    S.RECOVER_WAIT,
    S.RECOVER_DONE,
    S.POTENTIAL_CONFLICT,
    S.CONFLICT_DONE,
    S.RESOLUTION_INTERRUPTED,
    S.PAUSED,
    S.SHUTDOWN,
)
#: Left only by a restart (spec §6.6 PAUSED / SHUTDOWN rows).
TERMINAL: frozenset[ServerState] = frozenset({S.PAUSED, S.SHUTDOWN})
#: Announced to the partner but not written as the stored state: a restart must come back to
#: the state *before* PAUSED/SHUTDOWN (spec §6.6), and the store holds one (state, STOS) pair.
NOT_STORED: frozenset[ServerState] = frozenset({S.STARTUP, S.PAUSED, S.SHUTDOWN})


class Input(Enum):
    # The partner's state, from STATE (or CONNECT/CONNECTACK followed by STATE).
    PARTNER_STARTUP = "partner-startup"  # STATE with the STARTUP server-flag
    PARTNER_NORMAL = "partner-normal"
    PARTNER_COMMUNICATIONS_INTERRUPTED = "partner-communications-interrupted"
    PARTNER_PARTNER_DOWN = "partner-partner-down"
    PARTNER_POTENTIAL_CONFLICT = "partner-potential-conflict"
    PARTNER_RECOVER = "partner-recover"
    PARTNER_RECOVER_WAIT = "partner-recover-wait"
    PARTNER_RECOVER_DONE = "partner-recover-done"
    PARTNER_RESOLUTION_INTERRUPTED = "partner-resolution-interrupted"
    PARTNER_CONFLICT_DONE = "partner-conflict-done"
    PARTNER_PAUSED = "partner-paused"
    PARTNER_SHUTDOWN = "partner-shutdown"
    PARTNER_UNKNOWN = "partner-unknown"  # a state value we do not know: no transition (§6.1)
    # Link.
    CONNECTED = "connected"  # CONNECT/CONNECTACK done; the partner's STATE is still to come
    COMM_LOST = "comm-lost"  # TCP dropped, tReceive expired, or DISCONNECT
    # Update protocol.
    UPDDONE_RECEIVED = "upddone-received"  # the partner answered all of our UPDREQ(ALL)
    # Operator.
    OPERATOR_PARTNER_DOWN = "operator-partner-down"
    OPERATOR_SHUTDOWN = "operator-shutdown"
    OPERATOR_PAUSE = "operator-pause"
    # Timers (FailoverMachine.handle_timer produces these).
    STARTUP_TIMER_EXPIRED = "startup-timer-expired"
    SWITCHOVER_TIMER_EXPIRED = "switchover-timer-expired"  # auto partner-down (safe period)
    RECOVER_WAIT_EXPIRED = "recover-wait-expired"  # MCLT since going down has passed


#: Partner state -> the input its STATE message is.
PARTNER_INPUT: dict[ServerState, Input] = {
    S.STARTUP: Input.PARTNER_STARTUP,
    S.NORMAL: Input.PARTNER_NORMAL,
    S.COMMUNICATIONS_INTERRUPTED: Input.PARTNER_COMMUNICATIONS_INTERRUPTED,
    S.PARTNER_DOWN: Input.PARTNER_PARTNER_DOWN,
    S.POTENTIAL_CONFLICT: Input.PARTNER_POTENTIAL_CONFLICT,
    S.RECOVER: Input.PARTNER_RECOVER,
    S.RECOVER_WAIT: Input.PARTNER_RECOVER_WAIT,
    S.RECOVER_DONE: Input.PARTNER_RECOVER_DONE,
    S.RESOLUTION_INTERRUPTED: Input.PARTNER_RESOLUTION_INTERRUPTED,
    S.CONFLICT_DONE: Input.PARTNER_CONFLICT_DONE,
    S.PAUSED: Input.PARTNER_PAUSED,
    S.SHUTDOWN: Input.PARTNER_SHUTDOWN,
    S.UNKNOWN: Input.PARTNER_UNKNOWN,
}
INPUT_PARTNER: dict[Input, ServerState] = {v: k for k, v in PARTNER_INPUT.items()}
PARTNER_INPUTS: frozenset[Input] = frozenset(PARTNER_INPUT.values())
TIMER_INPUT: dict[ServerState, Input] = {
    S.STARTUP: Input.STARTUP_TIMER_EXPIRED,
    S.COMMUNICATIONS_INTERRUPTED: Input.SWITCHOVER_TIMER_EXPIRED,
    S.RECOVER_WAIT: Input.RECOVER_WAIT_EXPIRED,
}


def partner_input(state: int, startup_flag: bool = False) -> Input:
    """The input for a received STATE: ``state`` is option 24's value (any int)."""
    if startup_flag:
        return Input.PARTNER_STARTUP
    try:
        return PARTNER_INPUT[ServerState(state)]
    except ValueError:
        return Input.PARTNER_UNKNOWN


class Effect(Enum):
    """What the peer layer must do besides sending STATE (which every change implies)."""

    REQUEST_UPDATES = "send-updreq"  # UPDREQ: what the partner has not sent us yet
    REQUEST_ALL_UPDATES = "send-updreqall"  # UPDREQALL: storage lost / never talked to partner
    SEND_PENDING_UPDATES = "send-pending-updates"  # (re)send un-ACKed BNDUPDs (entering NORMAL)
    REBALANCE_POOL = "rebalance-pool"  # FREE/BACKUP balance (primary pushes / secondary asks)
    STORE_RECOVER_AS_PREVIOUS = "store-recover-as-previous"  # SHUTDOWN, partner went PD (§6.6)


class ServiceLevel(Enum):
    """Which clients a state serves (spec §6.2, draft-12 column)."""

    NONE = "none"
    BALANCED = "balanced"  # NORMAL: per mode / hash buckets (spec §8)
    OWN_POOL = "own-pool"  # all clients, no load balancing, own pool only, MCLT rule
    PARTNER_DOWN = "partner-down"  # all; own pool; whole pool after STOS + MCLT
    ALL = "all"  # CONFLICT-DONE: fully responsive (own pool, MCLT rule)
    RENEW_REBIND_ONLY = "renew-rebind-only"  # RECOVER-DONE


SERVICE_LEVEL: dict[ServerState, ServiceLevel] = {
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

#: Spec §6.3 "communications failed" successor (what COMM_LOST means in each state).
COMM_FAILED: dict[ServerState, ServerState] = {s: s for s in STATES} | {
    S.NORMAL: S.COMMUNICATIONS_INTERRUPTED,
    S.POTENTIAL_CONFLICT: S.RESOLUTION_INTERRUPTED,
}

#: Spec §6.4 step 2: stored state -> previous-state entered when STARTUP ends. A stored
#: PAUSED/SHUTDOWN/STARTUP/UNKNOWN (we never store those) means we do not know the state
#: before, so RECOVER (from that time) is the safe answer.
RESTART: dict[ServerState, ServerState] = {s: COMM_FAILED[s] for s in STATES} | {
    S.STARTUP: S.RECOVER,
    S.PAUSED: S.RECOVER,
    S.SHUTDOWN: S.RECOVER,
    S.UNKNOWN: S.RECOVER,
}


# --------------------------------------------------------------------------------------------
# Guards
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything a guard may look at (built by the machine for one decision)."""

    role: Role
    now: float
    mclt_s: float
    state_since: float  # STOS of my current state
    partner_state: ServerState | None  # last partner state seen (None: never)
    partner_stos: float | None  # the partner's start-time-of-state, from its STATE
    connected: bool
    ever_in_contact: bool  # have we ever had a STATE from this partner
    storage_lost: bool  # operator said our lease database was lost
    update_request_sent: bool  # UPDREQ(ALL) sent on this connection, UPDDONE not yet in
    recover_wait_until: float | None  # when RECOVER-WAIT may end (None: not recovering)
    switchover_interval_s: float | None  # None = automatic partner-down off
    startup_deadline: float | None  # when the STARTUP timer fires (None: not armed)
    startup_timeout_action: StartupTimeoutAction
    last_operation_at: float | None  # last time we served/stored anything before restart
    previous_state: ServerState  # the previous-state STARTUP leads to (§6.4)


class Guard(Enum):
    ROLE_IS_PRIMARY = "role is primary"
    ROLE_IS_SECONDARY = "role is secondary"
    CONNECTED = "connected to the partner"
    EVER_IN_CONTACT = "I have ever been in contact with the partner"
    NEVER_IN_CONTACT = "I have never been in contact with the partner"
    NEEDS_ALL_UPDATES = "storage lost or never in contact (UPDREQALL)"
    UPDATE_REQUEST_NOT_SENT = "no update request outstanding on this connection"
    PARTNER_IN_CONFLICT_DONE = "partner is in CONFLICT-DONE"
    PARTNER_DOWN_AFTER_MY_LAST_OPERATION = "partner entered PARTNER-DOWN after my last operation"
    PREVIOUS_STATE_IS_RECOVERING = "previous-state is RECOVER or RECOVER-WAIT"
    PREVIOUS_STATE_NOT_RECOVERING = "previous-state is neither RECOVER nor RECOVER-WAIT"
    PREVIOUS_STATE_IS_PARTNER_DOWN = "previous-state is PARTNER-DOWN"
    RECOVER_WAIT_ELAPSED = "MCLT since I went down has passed"
    RECOVER_WAIT_PENDING = "MCLT since I went down has not passed"
    SWITCHOVER_CONFIGURED = "automatic partner-down is configured"
    SWITCHOVER_ELAPSED = "state switchover interval since entering COMM-INT has passed"
    STARTUP_TIMER_ELAPSED = "startup timer has expired"
    STARTUP_TIMEOUT_WAITS = "configured to keep waiting in STARTUP"
    STARTUP_TIMEOUT_PARTNER_DOWN = "configured to go to PARTNER-DOWN after an unanswered STARTUP"
    MCLT_SINCE_PARTNER_DOWN_PASSED = "MCLT since start of partner-down has passed"


def _partner_down_after_my_last_operation(f: Facts) -> bool:
    # Unknown times => False, i.e. POTENTIAL-CONFLICT, the answer that cannot lose a lease.
    if f.partner_stos is None or f.last_operation_at is None:
        return False
    return f.partner_stos > f.last_operation_at


def _previous_state_recovering(f: Facts) -> bool:
    return f.previous_state in (S.RECOVER, S.RECOVER_WAIT)


def _recover_wait_elapsed(f: Facts) -> bool:
    return f.recover_wait_until is not None and f.now >= f.recover_wait_until


def _switchover_elapsed(f: Facts) -> bool:
    return (
        f.switchover_interval_s is not None
        and f.now >= f.state_since + f.switchover_interval_s
    )


GUARDS: dict[Guard, Callable[[Facts], bool]] = {
    Guard.ROLE_IS_PRIMARY: lambda f: f.role == "primary",
    Guard.ROLE_IS_SECONDARY: lambda f: f.role == "secondary",
    Guard.CONNECTED: lambda f: f.connected,
    Guard.EVER_IN_CONTACT: lambda f: f.ever_in_contact,
    Guard.NEVER_IN_CONTACT: lambda f: not f.ever_in_contact,
    Guard.NEEDS_ALL_UPDATES: lambda f: f.storage_lost or not f.ever_in_contact,
    Guard.UPDATE_REQUEST_NOT_SENT: lambda f: not f.update_request_sent,
    Guard.PARTNER_IN_CONFLICT_DONE: lambda f: f.partner_state is S.CONFLICT_DONE,
    Guard.PARTNER_DOWN_AFTER_MY_LAST_OPERATION: _partner_down_after_my_last_operation,
    Guard.PREVIOUS_STATE_IS_RECOVERING: _previous_state_recovering,
    Guard.PREVIOUS_STATE_NOT_RECOVERING: lambda f: not _previous_state_recovering(f),
    Guard.PREVIOUS_STATE_IS_PARTNER_DOWN: lambda f: f.previous_state is S.PARTNER_DOWN,
    Guard.RECOVER_WAIT_ELAPSED: _recover_wait_elapsed,
    Guard.RECOVER_WAIT_PENDING: lambda f: not _recover_wait_elapsed(f),
    Guard.SWITCHOVER_CONFIGURED: lambda f: f.switchover_interval_s is not None,
    Guard.SWITCHOVER_ELAPSED: _switchover_elapsed,
    Guard.STARTUP_TIMER_ELAPSED: lambda f: (
        f.startup_deadline is not None and f.now >= f.startup_deadline
    ),
    Guard.STARTUP_TIMEOUT_WAITS: lambda f: f.startup_timeout_action == "wait",
    Guard.STARTUP_TIMEOUT_PARTNER_DOWN: lambda f: f.startup_timeout_action == "partner-down",
    Guard.MCLT_SINCE_PARTNER_DOWN_PASSED: lambda f: f.now >= f.state_since + f.mclt_s,
}


def all_free_usable_at(partner_down_since: float, mclt_s: float) -> float:
    """When a server in PARTNER-DOWN may use the partner's available addresses (§7.4)."""
    return partner_down_since + mclt_s


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


class Kind(Enum):
    GO = "go"
    IGNORE = "ignore"  # no transition, nothing to do (the input means nothing here)
    REFUSE = "refuse"  # an operator command this state does not accept (logged)


@dataclass(frozen=True, slots=True)
class Branch:
    next: ServerState | Literal["previous"]
    effects: tuple[Effect, ...] = ()
    guards: tuple[Guard, ...] = ()
    reevaluate: bool = False  # after moving, look the same input up again from ``next``
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Cell:
    kind: Kind
    branches: tuple[Branch, ...] = ()
    reason: str = ""


IGNORE = Cell(Kind.IGNORE)


def _ignore(reason: str) -> Cell:
    return Cell(Kind.IGNORE, reason=reason)


def _refuse(reason: str) -> Cell:
    return Cell(Kind.REFUSE, reason=reason)


def _go(
    nxt: ServerState | Literal["previous"],
    *effects: Effect,
    guards: tuple[Guard, ...] = (),
    reevaluate: bool = False,
    reason: str = "",
) -> Cell:
    return Cell(Kind.GO, (Branch(nxt, effects, guards, reevaluate, reason),))


def _choose(*branches: Branch) -> Cell:
    return Cell(Kind.GO, branches)


P = Input  # short names inside the table only
_OP_SHUTDOWN = _go(S.SHUTDOWN, reason="operator shutdown")
_OP_PAUSE = _go(S.PAUSED, reason="operator pause")
_OP_PD_REFUSED = _refuse("partner-down is not allowed from this state")
def _stay_requesting(state: ServerState, reason: str) -> Cell:
    """Stay in ``state`` and send UPDREQALL/UPDREQ unless one is outstanding already."""
    return _choose(
        Branch(
            state,
            (Effect.REQUEST_ALL_UPDATES,),
            (Guard.UPDATE_REQUEST_NOT_SENT, Guard.NEEDS_ALL_UPDATES),
            reason=reason + "; UPDREQALL",
        ),
        Branch(
            state, (Effect.REQUEST_UPDATES,), (Guard.UPDATE_REQUEST_NOT_SENT,),
            reason=reason + "; UPDREQ",
        ),
    )


def _row(state: ServerState, cells: dict[Input, Cell]) -> dict[Input, Cell]:
    """Complete a row: every input gets a cell (IGNORE unless the row says otherwise)."""
    row = {i: IGNORE for i in Input}
    row[P.PARTNER_UNKNOWN] = _ignore("unknown partner state value: no transition (§6.1)")
    if state not in TERMINAL:
        row[P.OPERATOR_SHUTDOWN] = _OP_SHUTDOWN
        row[P.OPERATOR_PAUSE] = _OP_PAUSE
        row[P.OPERATOR_PARTNER_DOWN] = _OP_PD_REFUSED
    row.update(cells)
    return row


_ALL_PARTNER_KNOWN = [i for i in PARTNER_INPUTS if i not in (P.PARTNER_UNKNOWN,)]


def _startup_row() -> dict[Input, Cell]:
    # §6.4 step 4: on the partner's STATE enter previous-state, then apply the comm-OK
    # transition from there; a partner in PARTNER-DOWN sends us to RECOVER if it went down
    # after our last operation, else to POTENTIAL-CONFLICT.
    cells: dict[Input, Cell] = {
        i: _go(PREVIOUS, reevaluate=True, reason="partner state known: previous-state")
        for i in _ALL_PARTNER_KNOWN
    }
    cells[P.PARTNER_PARTNER_DOWN] = _choose(
        Branch(
            PREVIOUS, guards=(Guard.PREVIOUS_STATE_IS_RECOVERING,), reevaluate=True,
            reason="partner PARTNER-DOWN, we were recovering anyway: previous-state",
        ),
        Branch(
            S.RECOVER, guards=(Guard.PARTNER_DOWN_AFTER_MY_LAST_OPERATION,), reevaluate=True,
            reason="partner entered PARTNER-DOWN after my last operation",
        ),
        Branch(
            S.POTENTIAL_CONFLICT, reevaluate=True,
            reason="partner entered PARTNER-DOWN before my last operation (or unknown)",
        ),
    )
    # Partner in STARTUP too: its real state is not known yet. Leave STARTUP for the
    # previous-state without a second step (ISC leaves STARTUP on any STATE) so two servers
    # starting together do not both sit out their STARTUP timers. [questionable]
    cells[P.PARTNER_STARTUP] = _go(PREVIOUS, reason="partner is starting too: previous-state")
    # §6.4 step 5. "wait" (Tandem's default): a restarted server cannot know whether its
    # partner was put in PARTNER-DOWN while it was down; resuming a serving state without
    # hearing the partner could hand out addresses the partner now leases (docs/decisions.md,
    # "STARTUP timeout"). Only a server that was in PARTNER-DOWN itself resumes: its partner
    # was already down, and a partner that restarts meanwhile waits in STARTUP too.
    cells[P.STARTUP_TIMER_EXPIRED] = _choose(
        Branch(
            PREVIOUS,
            guards=(
                Guard.STARTUP_TIMER_ELAPSED,
                Guard.STARTUP_TIMEOUT_WAITS,
                Guard.PREVIOUS_STATE_IS_PARTNER_DOWN,
            ),
            reason="startup timeout, I was in PARTNER-DOWN: previous-state",
        ),
        Branch(S.STARTUP, guards=(Guard.STARTUP_TIMEOUT_WAITS,), reason="keep waiting"),
        Branch(
            S.PARTNER_DOWN,
            guards=(
                Guard.STARTUP_TIMER_ELAPSED,
                Guard.STARTUP_TIMEOUT_PARTNER_DOWN,
                Guard.NEVER_IN_CONTACT,
            ),
            reason="startup timeout, partner never seen (commissioning): partner-down",
        ),
        Branch(
            PREVIOUS, guards=(Guard.STARTUP_TIMER_ELAPSED,),
            reason="startup timeout: previous-state",
        ),
    )
    # The operator knows the partner is down (it is not answering): PARTNER-DOWN straight
    # from STARTUP, the way out of a "wait" STARTUP. Not when previous-state is RECOVER or
    # RECOVER-WAIT, which refuse it too: this server's database is behind its partner's, or
    # it never met the partner (first run) and knows none of its bindings (DST seed 7265: a
    # first-run server taking PARTNER-DOWN served with a clock far ahead and left bindings
    # the pair could not agree on). The draft's commissioning case is the setting
    # startup_timeout_action = "partner-down".
    cells[P.OPERATOR_PARTNER_DOWN] = _choose(
        Branch(S.PARTNER_DOWN, guards=(Guard.PREVIOUS_STATE_NOT_RECOVERING,),
               reason="operator partner-down in STARTUP"),
    )
    return _row(S.STARTUP, cells)


_VIA_CI = "unexpected partner state: through COMMUNICATIONS-INTERRUPTED"

TABLE: dict[ServerState, dict[Input, Cell]] = {
    S.STARTUP: _startup_row(),
    # ---- §6.6 NORMAL (draft-12 §9.6)
    S.NORMAL: _row(S.NORMAL, {
        P.PARTNER_NORMAL: _ignore("partner NORMAL"),
        P.PARTNER_COMMUNICATIONS_INTERRUPTED: _ignore(
            "partner COMM-INT: via COMM-INT it re-evaluates to NORMAL"),
        P.PARTNER_RECOVER_DONE: _ignore("partner RECOVER-DONE: it goes NORMAL on our STATE"),
        P.PARTNER_STARTUP: _ignore("STATE with STARTUP flag"),
        P.PARTNER_PAUSED: _go(S.COMMUNICATIONS_INTERRUPTED, reason="partner PAUSED"),
        P.PARTNER_SHUTDOWN: _go(S.PARTNER_DOWN, reason="partner SHUTDOWN"),
        P.PARTNER_PARTNER_DOWN: _go(S.COMMUNICATIONS_INTERRUPTED, reevaluate=True,
                                    reason=_VIA_CI),
        P.PARTNER_POTENTIAL_CONFLICT: _go(S.COMMUNICATIONS_INTERRUPTED, reevaluate=True,
                                          reason=_VIA_CI),
        P.PARTNER_RESOLUTION_INTERRUPTED: _go(S.COMMUNICATIONS_INTERRUPTED, reevaluate=True,
                                              reason=_VIA_CI),
        P.PARTNER_CONFLICT_DONE: _go(S.COMMUNICATIONS_INTERRUPTED, reevaluate=True,
                                     reason=_VIA_CI),
        P.PARTNER_RECOVER: _go(S.COMMUNICATIONS_INTERRUPTED, reevaluate=True, reason=_VIA_CI),
        P.PARTNER_RECOVER_WAIT: _go(S.COMMUNICATIONS_INTERRUPTED, reevaluate=True,
                                    reason=_VIA_CI),
        P.COMM_LOST: _go(S.COMMUNICATIONS_INTERRUPTED, reason="communications lost"),
        P.OPERATOR_PARTNER_DOWN: _go(S.PARTNER_DOWN, reason="operator partner-down"),
    }),
    # ---- §6.6 COMMUNICATIONS-INTERRUPTED (draft-12 §9.7)
    S.COMMUNICATIONS_INTERRUPTED: _row(S.COMMUNICATIONS_INTERRUPTED, {
        P.PARTNER_NORMAL: _go(S.NORMAL, reason="partner NORMAL"),
        P.PARTNER_COMMUNICATIONS_INTERRUPTED: _go(S.NORMAL, reason="partner COMM-INT"),
        P.PARTNER_RECOVER_DONE: _go(S.NORMAL, reason="partner RECOVER-DONE"),
        P.PARTNER_RECOVER: _ignore("partner RECOVER: stay, answer its UPDREQ"),
        P.PARTNER_RECOVER_WAIT: _ignore("partner RECOVER-WAIT: stay until RECOVER-DONE"),
        P.PARTNER_PAUSED: _ignore("partner PAUSED"),
        P.PARTNER_STARTUP: _ignore("STATE with STARTUP flag"),
        P.PARTNER_PARTNER_DOWN: _go(S.POTENTIAL_CONFLICT, reason="partner PARTNER-DOWN"),
        P.PARTNER_POTENTIAL_CONFLICT: _go(S.POTENTIAL_CONFLICT,
                                          reason="partner POTENTIAL-CONFLICT"),
        P.PARTNER_CONFLICT_DONE: _go(S.POTENTIAL_CONFLICT, reason="partner CONFLICT-DONE"),
        P.PARTNER_RESOLUTION_INTERRUPTED: _go(S.POTENTIAL_CONFLICT,
                                              reason="partner RESOLUTION-INTERRUPTED"),
        P.PARTNER_SHUTDOWN: _go(S.PARTNER_DOWN, reason="partner SHUTDOWN"),
        P.OPERATOR_PARTNER_DOWN: _go(S.PARTNER_DOWN, reason="operator partner-down"),
        P.SWITCHOVER_TIMER_EXPIRED: _go(
            S.PARTNER_DOWN, guards=(Guard.SWITCHOVER_CONFIGURED, Guard.SWITCHOVER_ELAPSED),
            reason="state switchover interval passed: automatic partner-down"),
    }),
    # ---- §6.6 PARTNER-DOWN (draft-12 §9.4)
    S.PARTNER_DOWN: _row(S.PARTNER_DOWN, {
        P.PARTNER_STARTUP: _ignore("STATE with STARTUP flag is ignored in PARTNER-DOWN"),
        **{i: _go(S.POTENTIAL_CONFLICT, reason=f"partner {INPUT_PARTNER[i].name}") for i in (
            P.PARTNER_NORMAL, P.PARTNER_COMMUNICATIONS_INTERRUPTED, P.PARTNER_PARTNER_DOWN,
            P.PARTNER_POTENTIAL_CONFLICT, P.PARTNER_RESOLUTION_INTERRUPTED,
            P.PARTNER_CONFLICT_DONE)},
        P.PARTNER_RECOVER: _ignore("partner RECOVER: stay, answer its UPDREQ"),
        P.PARTNER_RECOVER_WAIT: _ignore("partner RECOVER-WAIT"),
        P.PARTNER_SHUTDOWN: _ignore("partner SHUTDOWN"),
        P.PARTNER_PAUSED: _ignore("partner PAUSED"),
        P.PARTNER_RECOVER_DONE: _go(S.NORMAL, reason="partner RECOVER-DONE"),
        P.OPERATOR_PARTNER_DOWN: _ignore("already PARTNER-DOWN"),
    }),
    # ---- §6.6 RECOVER (draft-12 §9.5)
    S.RECOVER: _row(S.RECOVER, {
        **{i: _stay_requesting(S.RECOVER, f"partner {INPUT_PARTNER[i].name}") for i in (
            P.PARTNER_NORMAL, P.PARTNER_COMMUNICATIONS_INTERRUPTED, P.PARTNER_PARTNER_DOWN,
            P.PARTNER_RECOVER, P.PARTNER_RECOVER_WAIT, P.PARTNER_RECOVER_DONE,
            P.PARTNER_PAUSED, P.PARTNER_SHUTDOWN)},
        P.PARTNER_STARTUP: _ignore("STATE with STARTUP flag"),
        P.PARTNER_POTENTIAL_CONFLICT: _go(S.POTENTIAL_CONFLICT,
                                          reason="partner POTENTIAL-CONFLICT"),
        P.PARTNER_RESOLUTION_INTERRUPTED: _go(S.POTENTIAL_CONFLICT,
                                              reason="partner RESOLUTION-INTERRUPTED"),
        P.PARTNER_CONFLICT_DONE: _go(S.POTENTIAL_CONFLICT, reason="partner CONFLICT-DONE"),
        P.UPDDONE_RECEIVED: _choose(
            Branch(S.RECOVER_DONE, guards=(Guard.RECOVER_WAIT_ELAPSED,),
                   reason="UPDDONE; MCLT since going down already passed"),
            Branch(S.RECOVER_WAIT, reason="UPDDONE; wait MCLT since going down"),
        ),
    }),
    # ---- §6.6 RECOVER-WAIT (draft-12 §9.5.2): no reaction to the partner.
    S.RECOVER_WAIT: _row(S.RECOVER_WAIT, {
        P.RECOVER_WAIT_EXPIRED: _go(S.RECOVER_DONE, guards=(Guard.RECOVER_WAIT_ELAPSED,),
                                    reason="MCLT since going down passed"),
    }),
    # ---- §6.6 RECOVER-DONE (draft-12 §9.5.3)
    S.RECOVER_DONE: _row(S.RECOVER_DONE, {
        P.PARTNER_NORMAL: _go(S.NORMAL, reason="partner NORMAL"),
        P.PARTNER_RECOVER_DONE: _go(S.NORMAL, reason="partner RECOVER-DONE"),
        # ISC 4.4 (spec §6.6 deviation column); draft-12 is silent. [questionable]
        P.PARTNER_SHUTDOWN: _go(S.PARTNER_DOWN, reason="partner SHUTDOWN"),
    }),
    # ---- §6.6 POTENTIAL-CONFLICT (draft-12 §9.10)
    S.POTENTIAL_CONFLICT: _row(S.POTENTIAL_CONFLICT, {
        P.UPDDONE_RECEIVED: _choose(
            Branch(S.CONFLICT_DONE, guards=(Guard.ROLE_IS_PRIMARY,),
                   reason="primary: UPDDONE, conflicts resolved"),
            Branch(S.NORMAL, guards=(Guard.ROLE_IS_SECONDARY, Guard.PARTNER_IN_CONFLICT_DONE),
                   reason="secondary: UPDDONE from a primary in CONFLICT-DONE"),
        ),
        P.PARTNER_CONFLICT_DONE: _choose(
            Branch(S.POTENTIAL_CONFLICT, (Effect.REQUEST_UPDATES,),
                   (Guard.ROLE_IS_SECONDARY, Guard.UPDATE_REQUEST_NOT_SENT),
                   reason="secondary: primary reached CONFLICT-DONE; UPDREQ"),
        ),
        P.COMM_LOST: _go(S.RESOLUTION_INTERRUPTED, reason="communications lost"),
    }),
    # ---- §6.6 RESOLUTION-INTERRUPTED (draft-12 §9.11)
    S.RESOLUTION_INTERRUPTED: _row(S.RESOLUTION_INTERRUPTED, {
        **{i: _go(S.POTENTIAL_CONFLICT, reason="communications restored")
           for i in _ALL_PARTNER_KNOWN},
        P.PARTNER_STARTUP: _ignore("STATE with STARTUP flag"),
        # A paused / shut-down partner cannot resolve anything; keep serving. [questionable]
        P.PARTNER_PAUSED: _ignore("partner PAUSED"),
        P.PARTNER_SHUTDOWN: _ignore("partner SHUTDOWN"),
        P.OPERATOR_PARTNER_DOWN: _go(S.PARTNER_DOWN, reason="operator partner-down"),
    }),
    # ---- §6.6 CONFLICT-DONE (primary only; draft-12 §9.12)
    S.CONFLICT_DONE: _row(S.CONFLICT_DONE, {
        P.PARTNER_NORMAL: _go(S.NORMAL, reason="partner NORMAL"),
        # Draft-12 is silent; without it a primary whose partner never returns stays in
        # CONFLICT-DONE forever (a restart comes back to it). [questionable]
        P.OPERATOR_PARTNER_DOWN: _go(S.PARTNER_DOWN, reason="operator partner-down"),
    }),
    # ---- §6.6 PAUSED / SHUTDOWN: left only by a restart.
    S.PAUSED: _row(S.PAUSED, {
        P.OPERATOR_PARTNER_DOWN: _refuse("PAUSED is left only by a restart"),
        P.OPERATOR_PAUSE: _ignore("already PAUSED"),
        P.OPERATOR_SHUTDOWN: _go(S.SHUTDOWN, reason="operator shutdown"),
    }),
    S.SHUTDOWN: _row(S.SHUTDOWN, {
        P.OPERATOR_PARTNER_DOWN: _refuse("SHUTDOWN is left only by a restart"),
        P.OPERATOR_PAUSE: _refuse("SHUTDOWN is left only by a restart"),
        P.OPERATOR_SHUTDOWN: _ignore("already SHUTDOWN"),
        P.PARTNER_PARTNER_DOWN: _go(
            S.SHUTDOWN, Effect.STORE_RECOVER_AS_PREVIOUS,
            reason="partner went PARTNER-DOWN: restart in RECOVER"),
    }),
}


@dataclass(frozen=True, slots=True)
class EntryEffect:
    effects: tuple[Effect, ...]
    guards: tuple[Guard, ...] = ()


#: Effects of entering a state; for each state the first entry whose guards hold applies.
ON_ENTRY: dict[ServerState, tuple[EntryEffect, ...]] = {
    S.RECOVER: (
        EntryEffect((Effect.REQUEST_ALL_UPDATES,), (Guard.CONNECTED, Guard.NEEDS_ALL_UPDATES)),
        EntryEffect((Effect.REQUEST_UPDATES,), (Guard.CONNECTED,)),
    ),
    S.POTENTIAL_CONFLICT: (
        EntryEffect((Effect.REQUEST_UPDATES,), (Guard.ROLE_IS_PRIMARY, Guard.CONNECTED)),
        EntryEffect(
            (Effect.REQUEST_UPDATES,),
            (Guard.ROLE_IS_SECONDARY, Guard.CONNECTED, Guard.PARTNER_IN_CONFLICT_DONE),
        ),
    ),
    S.NORMAL: (EntryEffect((Effect.SEND_PENDING_UPDATES, Effect.REBALANCE_POOL)),),
}


# --------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` found. ``kind`` GO with ``next == state`` is a stay with effects."""

    kind: Kind
    next: ServerState
    effects: tuple[Effect, ...] = ()
    via: tuple[ServerState, ...] = ()  # states passed through without stopping
    reason: str = ""
    guards: tuple[Guard, ...] = ()  # guards that held on the chosen branch(es)


def holds(guards: tuple[Guard, ...], facts: Facts) -> bool:
    return all(GUARDS[g](facts) for g in guards)


def _pick(cell: Cell, facts: Facts) -> Branch | None:
    if cell.kind is not Kind.GO:
        return None
    for branch in cell.branches:
        if holds(branch.guards, facts):
            return branch
    return None


def entry_effects(state: ServerState, facts: Facts) -> tuple[Effect, ...]:
    for entry in ON_ENTRY.get(state, ()):
        if holds(entry.guards, facts):
            return entry.effects
    return ()


def decide(
    state: ServerState, inp: Input, facts: Facts, previous: ServerState = S.RECOVER
) -> Decision:
    """Look ``(state, inp)`` up and evaluate its guards. ``previous`` resolves PREVIOUS.

    Never raises for a state of :data:`STATES` and any :class:`Input`.
    """
    cell = TABLE[state][inp]
    if cell.kind is not Kind.GO:
        return Decision(cell.kind, state, reason=cell.reason)
    branch = _pick(cell, facts)
    if branch is None:
        # An operator command none of whose branches holds is refused (and logged as such).
        kind = Kind.REFUSE if inp.value.startswith("operator-") else Kind.IGNORE
        return Decision(kind, state, reason="no guard held: " + "; ".join(
            " & ".join(g.value for g in b.guards) for b in cell.branches))
    nxt = previous if branch.next == PREVIOUS else branch.next
    assert isinstance(nxt, ServerState)
    effects, guards, reason = branch.effects, branch.guards, branch.reason
    via: tuple[ServerState, ...] = ()
    if branch.reevaluate:
        second = _pick(TABLE[nxt][inp], facts)
        if second is not None and second.next != PREVIOUS:
            assert isinstance(second.next, ServerState)
            via = (nxt,) if second.next != nxt else ()
            effects = effects + second.effects
            guards = guards + second.guards
            reason = f"{reason}; then {second.reason}" if second.reason else reason
            nxt = second.next
    if nxt == state and not effects:
        return Decision(Kind.IGNORE, state, reason=reason)
    return Decision(Kind.GO, nxt, effects, via, reason, guards)
