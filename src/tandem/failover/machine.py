"""The failover server-state machine: one entry point over the tables of :mod:`states`.

:class:`FailoverMachine` is pure: no I/O and no clock; ``now`` (epoch seconds) is an argument.
Every input goes through :meth:`FailoverMachine.handle`, which looks the (state, input) cell
up, evaluates its guards, writes (state, start-time-of-state) through ``persist`` *before*
changing anything, and logs ``FAILOVER_STATE_CHANGED`` with from, to, partner state and
reason.

A state that cannot be recorded is not acted on (draft-12 §9: stable storage first). If
``persist`` raises (disk full, I/O error), nothing changes -- the server stays in the last
state it recorded, serving as that state allows -- ``handle`` returns None, the machine logs
``FAILOVER_STATE_WRITE_FAILED`` (first failure, then at most every
:data:`PERSIST_LOG_INTERVAL_S`), counts it (``persist_failures``) and shows it
(``persist_failing_since``, ``persist_error``, ``persist_pending``). Every
:data:`PERSIST_RETRY_S` the timer retries: the input that failed, if it still describes the
link (a newer CONNECTED / COMM_LOST / partner STATE replaces it; an operator command is not
replayed -- the operator is told and asks again), else a rewrite of the recorded state as a
probe. State timers (STARTUP, switchover, RECOVER-WAIT) wait for the retry time too. The first
write that succeeds logs ``FAILOVER_STATE_WRITE_RECOVERED`` and clears the alarm; no restart
is needed.

Time-driven transitions come from :meth:`get_timer` / :meth:`handle_timer`: the STARTUP timer,
the state switchover interval (automatic COMMUNICATIONS-INTERRUPTED -> PARTNER-DOWN, off unless
configured) and the end of RECOVER-WAIT (MCLT after going down).

Restart (spec §6.3/§6.4): the machine always starts in STARTUP. ``initial`` is the stored
(state, STOS) of the previous run, or None on the first run. When STARTUP ends, the server
enters the previous-state: the stored state, replaced by its communications-failed successor
(NORMAL -> COMMUNICATIONS-INTERRUPTED, POTENTIAL-CONFLICT -> RESOLUTION-INTERRUPTED); a first
run enters RECOVER with time-of-failure 0, so its RECOVER-WAIT is already satisfied. A stored
state keeps its STOS (PARTNER-DOWN keeps counting its MCLT from when it was entered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tandem.failover.states import (
    INPUT_PARTNER,
    NOT_STORED,
    RESTART,
    SERVICE_LEVEL,
    STATES,
    TIMER_INPUT,
    Decision,
    Effect,
    Facts,
    Input,
    Kind,
    Role,
    ServiceLevel,
    StartupTimeoutAction,
    all_free_usable_at,
    decide,
    entry_effects,
)
from tandem.wire.failover import ServerState

S = ServerState

STATE_CHANGED = "FAILOVER_STATE_CHANGED"
INPUT_REFUSED = "FAILOVER_INPUT_REFUSED"
STATE_WRITE_FAILED = "FAILOVER_STATE_WRITE_FAILED"
STATE_WRITE_RECOVERED = "FAILOVER_STATE_WRITE_RECOVERED"
STARTUP_WAITING = "FAILOVER_STARTUP_WAITING"

#: While the state cannot be written, the write is retried this often (seconds).
PERSIST_RETRY_S = 1.0
#: ``FAILOVER_STATE_WRITE_FAILED`` is logged at most this often while failures last.
PERSIST_LOG_INTERVAL_S = 10.0

Persist = Callable[[ServerState, float], None]

_RECOVERING = (S.RECOVER, S.RECOVER_WAIT)
_COMM_INPUTS = (Input.CONNECTED, Input.COMM_LOST)
_OPERATOR_INPUTS = (Input.OPERATOR_PARTNER_DOWN, Input.OPERATOR_SHUTDOWN, Input.OPERATOR_PAUSE)
_NEVER = float("-inf")
_REQUESTS = (Effect.REQUEST_UPDATES, Effect.REQUEST_ALL_UPDATES)


@dataclass(frozen=True, slots=True)
class Transition:
    """What one :meth:`FailoverMachine.handle` call did (``changed`` False: a stay with
    effects, e.g. "send UPDREQ")."""

    from_state: ServerState
    to_state: ServerState
    input: Input
    at: float
    state_since: float  # STOS of ``to_state``
    effects: tuple[Effect, ...] = ()
    via: tuple[ServerState, ...] = ()
    reason: str = ""
    partner_state: ServerState | None = None

    @property
    def changed(self) -> bool:
        return self.from_state is not self.to_state


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One operator-facing event: ``FAILOVER_STATE_CHANGED`` or ``FAILOVER_INPUT_REFUSED``."""

    event: str
    at: float
    from_state: ServerState
    to_state: ServerState
    partner_state: ServerState | None
    input: Input
    reason: str

    def fields(self) -> dict[str, object]:
        return {
            "from": self.from_state.name,
            "to": self.to_state.name,
            "partner": self.partner_state.name if self.partner_state is not None else "-",
            "input": self.input.value,
            "reason": self.reason,
        }


class FailoverMachine:
    """The server state of one failover endpoint (relationship, role, partner)."""

    def __init__(
        self,
        role: Role,
        mclt_s: float,
        switchover_interval_s: float | None,
        persist: Persist,
        initial: tuple[ServerState, float] | None = None,
        *,
        log: Callable[[LogRecord], None] | None = None,
        startup_s: float = 15.0,
        startup_timeout_action: StartupTimeoutAction = "wait",
        last_operation_at: float | None = None,
        storage_lost_at: float | None = None,
        ever_in_contact: bool | None = None,
    ) -> None:
        """``initial``: the stored (state, STOS) of the previous run; None on the first run.

        ``last_operation_at``: the last time this server served or stored anything before the
        restart (e.g. the store's last commit time); compared with the partner's PARTNER-DOWN
        start to choose RECOVER over POTENTIAL-CONFLICT (§6.4 step 4). Unknown => the safe
        POTENTIAL-CONFLICT. ``storage_lost_at``: the operator says the lease database was lost
        at that time => RECOVER with that failure time, UPDREQALL. ``ever_in_contact``:
        default True when a stored state exists that is not a recovery state.
        """
        if role not in ("primary", "secondary"):
            raise ValueError(f"role must be 'primary' or 'secondary', got {role!r}")
        if mclt_s <= 0:
            raise ValueError("mclt_s must be > 0")
        if switchover_interval_s is not None and switchover_interval_s <= 0:
            raise ValueError("switchover_interval_s must be > 0 or None")
        self.role: Role = role
        self.mclt_s = float(mclt_s)
        self.switchover_interval_s = switchover_interval_s
        self.startup_s = startup_s
        self.startup_timeout_action: StartupTimeoutAction = startup_timeout_action
        self._persist = persist
        self._log = log
        self.records: list[LogRecord] = []
        self.last_operation_at = last_operation_at
        self.storage_lost = storage_lost_at is not None

        self._stored = initial  # what the store holds now
        self._recover_base: float | None  # "time I went down" for RECOVER-WAIT
        # draft-12: RECOVER-WAIT ends an MCLT after the time this server went down (its last
        # operation: every lease it ACKed was committed first, so no lease it handed out can
        # end later than that + MCLT beyond what the partner knew). ISC counts from entering
        # RECOVER instead, which keeps a returning primary away from its own clients for an
        # extra MCLT (hot-standby.md 3.2). Unknown => the time RECOVER is entered.
        self._went_down_at: float | None = last_operation_at if initial is not None else None
        if storage_lost_at is not None:
            self._previous, self._previous_stos = S.RECOVER, None
            self._recover_base = storage_lost_at
            self._since = storage_lost_at
        elif initial is None:
            # draft-12 §9.3.2 step 1: first run => RECOVER with time-of-failure 0, i.e. the
            # RECOVER-WAIT is already satisfied (-inf keeps that true in virtual time too).
            self._previous, self._previous_stos = S.RECOVER, None
            self._recover_base = _NEVER
            self._since = 0.0
        else:
            stored, stos = initial
            stored = ServerState(stored)
            self._previous = RESTART[stored]
            if self._previous is S.CONFLICT_DONE and role == "secondary":
                # CONFLICT-DONE is primary-only: a secondary's store cannot hold it honestly;
                # redo the conflict resolution.
                self._previous = S.RESOLUTION_INTERRUPTED
            self._previous_stos = stos if self._previous is stored else None
            self._recover_base = stos if self._previous in _RECOVERING else None
            self._since = stos  # ISC keeps STOS unchanged while in STARTUP
        if ever_in_contact is None:
            ever_in_contact = initial is not None and self._previous not in _RECOVERING
        self._ever_in_contact = ever_in_contact and not self.storage_lost

        self._state = S.STARTUP
        self._before: ServerState | None = None  # the state before the current one
        self._partner_state: ServerState | None = None
        self._partner_stos: float | None = None
        self._connected = False
        self._update_request_sent = False
        self._startup_deadline: float | None = None
        self._startup_waiting_since: float | None = None  # "wait": when the timer ran out

        # A state that could not be written (see the module docstring).
        self.persist_failures = 0  # failed writes, in total
        self.persist_recoveries = 0  # times writing worked again after failures
        self.persist_error: str | None = None  # the last error while failing
        self.persist_failing_since: float | None = None  # None: writes work
        self.persist_pending: ServerState | None = None  # the state it could not record
        self._retry: tuple[Input, float | None] | None = None  # input to apply again
        self._retry_at: float | None = None
        self._retried: Transition | None = None  # what the last retry did
        self._failed_input = Input.CONNECTED  # the input whose write failed last
        self._persist_logged_at = _NEVER

    # ---------------------------------------------------------------- properties

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def state_since(self) -> float:
        """Start time of the current state (draft STOS). In STARTUP: the stored state's."""
        return self._since

    @property
    def startup_waiting_since(self) -> float | None:
        """In STARTUP past the timer with ``startup_timeout_action = "wait"``: since when
        (the server serves no one until the partner answers or partner-down); else None."""
        return self._startup_waiting_since if self._state is S.STARTUP else None

    @property
    def previous(self) -> ServerState | None:
        """The state before the current one (None: none since this machine started)."""
        return self._before

    @property
    def previous_state(self) -> ServerState:
        """The previous-state STARTUP leads to; what STATE carries while in STARTUP (§6.3)."""
        return self._previous

    @property
    def stored(self) -> tuple[ServerState, float] | None:
        """What the store holds: the last (state, STOS) written through ``persist``."""
        return self._stored

    @property
    def partner_state(self) -> ServerState | None:
        return self._partner_state

    @property
    def partner_stos(self) -> float | None:
        return self._partner_stos

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def ever_in_contact(self) -> bool:
        return self._ever_in_contact

    @property
    def service_level(self) -> ServiceLevel:
        return SERVICE_LEVEL[self._state]

    @property
    def all_free_usable_at(self) -> float | None:
        """In PARTNER-DOWN: when the partner's available addresses become usable (STOS +
        MCLT, spec §7.4); None in every other state."""
        if self._state is not S.PARTNER_DOWN:
            return None
        return all_free_usable_at(self._since, self.mclt_s)

    def may_use_all_addresses(self, now: float) -> bool:
        at = self.all_free_usable_at
        return at is not None and now >= at

    @property
    def recover_wait_until(self) -> float | None:
        """When RECOVER-WAIT may end (time I went down + MCLT); None if not recovering."""
        if self._recover_base is None or self._state not in (S.STARTUP, *_RECOVERING):
            return None
        return self._recover_base + self.mclt_s

    # ---------------------------------------------------------------- timers

    def start(self, now: float) -> None:
        """Arm the STARTUP timer (call once, when the endpoint starts connecting)."""
        if self._state is S.STARTUP and self._startup_deadline is None:
            self._startup_deadline = now + self.startup_s

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` has something to do, or None."""
        deadline = self._state_timer()
        retry_at = self._retry_at
        if retry_at is None:
            return deadline
        # failing writes: retry (the failed input or a probe) then, state timers no sooner
        return retry_at if deadline is None else max(deadline, retry_at)

    def _state_timer(self) -> float | None:
        if self._state is S.STARTUP:
            return self._startup_deadline  # "wait": fires once, to say so (handle_timer)
        if self._state is S.COMMUNICATIONS_INTERRUPTED and self.switchover_interval_s:
            return self._since + self.switchover_interval_s
        if self._state is S.RECOVER_WAIT:
            return self.recover_wait_until
        return None

    def handle_timer(self, now: float) -> Transition | None:
        retry_at = self._retry_at
        if retry_at is not None:
            if now < retry_at or not self._retry_write(now):
                return None  # still failing: state timers wait for the next retry too
            if self._retried is not None:  # the failed input went through
                return self._retried
        deadline = self._state_timer()
        if deadline is None or now < deadline:
            return None
        t = self.handle(TIMER_INPUT[self._state], now)
        if t is None and self._state is S.STARTUP and self.persist_failing_since is None:
            self._startup_deadline = None  # "wait": keep waiting, no timer until contact
            self._startup_waiting_since = now
            self._record(
                STARTUP_WAITING, now, S.STARTUP, TIMER_INPUT[S.STARTUP],
                f"partner not heard for {self.startup_s:g} s; not serving clients until it "
                "answers (if it is really down, declare partner-down)",
            )
        return t

    def _retry_write(self, now: float) -> bool:
        """Writes are failing and the retry time came: apply the failed input again if it
        still holds (``self._retried`` = its transition), else rewrite the recorded state.
        True when writing worked (the alarm is cleared)."""
        self._retried = None
        pending, self._retry = self._retry, None
        if pending is not None:
            inp, partner_stos = pending
            partner = _partner_state_of(inp)
            still = (
                (inp is Input.COMM_LOST and not self._connected)
                or (inp is Input.CONNECTED and self._connected)
                or (partner is not None and self._connected and partner in (
                    self._partner_state, S.UNKNOWN))
                or (partner is None and inp not in _COMM_INPUTS)
            )
            if still:
                self._retried = self.handle(inp, now, partner_stos=partner_stos)
                if self.persist_failing_since is None:
                    return True  # written
                retry_at = self._retry_at
                if retry_at is not None and retry_at > now:
                    return False  # failed again (rescheduled)
                # nothing to write for it any more: probe instead
        stored = self._stored
        try:
            if stored is not None:
                self._persist(*stored)
        except Exception as exc:
            self._persist_failed(self._failed_input, None, now, self._state, exc)
            return False
        self._persist_recovered(now)
        return True

    # ---------------------------------------------------------------- the entry point

    def facts(self, now: float) -> Facts:
        return Facts(
            role=self.role,
            now=now,
            mclt_s=self.mclt_s,
            state_since=self._since,
            partner_state=self._partner_state,
            partner_stos=self._partner_stos,
            connected=self._connected,
            ever_in_contact=self._ever_in_contact,
            storage_lost=self.storage_lost,
            update_request_sent=self._update_request_sent,
            recover_wait_until=(
                self._recover_base + self.mclt_s if self._recover_base is not None else None
            ),
            switchover_interval_s=self.switchover_interval_s,
            startup_deadline=self._startup_deadline,
            startup_timeout_action=self.startup_timeout_action,
            last_operation_at=self.last_operation_at,
            previous_state=self._previous,
        )

    def handle(
        self, inp: Input, now: float, *, partner_stos: float | None = None
    ) -> Transition | None:
        """Apply one input. Returns the transition (or a stay with effects), None when the
        input is ignored or refused here. ``partner_stos``: start-time-of-state from the
        partner's STATE (for partner-state inputs)."""
        partner_state = _partner_state_of(inp)
        if self._retry is not None and (partner_state is not None or inp in _COMM_INPUTS):
            self._retry = None  # newer news of the link: the failed input is out of date
        if partner_state is not None:  # communications OK: the partner's STATE is in
            if partner_state is not S.UNKNOWN:
                self._partner_state = partner_state
                if partner_stos is not None:
                    self._partner_stos = partner_stos
            self._connected = True
        elif inp is Input.CONNECTED:
            self._connected = True
        elif inp is Input.COMM_LOST:
            self._connected = False
            self._update_request_sent = False
        elif inp is Input.UPDDONE_RECEIVED:
            self._update_request_sent = False

        facts = self.facts(now)
        decision = decide(self._state, inp, facts, self._previous)
        if partner_state not in (None, S.UNKNOWN, S.STARTUP):
            self._ever_in_contact = True
        if decision.kind is Kind.REFUSE:
            self._record(INPUT_REFUSED, now, self._state, inp, decision.reason)
            return None
        if decision.kind is Kind.IGNORE:
            return None
        try:
            return self._apply(decision, inp, now, facts)
        except _PersistFailed as failed:  # nothing changed (see _apply)
            replay = None if inp in _OPERATOR_INPUTS else (inp, partner_stos)
            self._persist_failed(inp, replay, now, decision.next, failed.error)
            return None

    def _persist_failed(
        self,
        inp: Input,
        replay: tuple[Input, float | None] | None,
        now: float,
        wanted: ServerState,
        exc: Exception,
    ) -> None:
        self.persist_failures += 1
        self.persist_error = str(exc) or type(exc).__name__
        if wanted is not self._state:
            self.persist_pending = wanted
        self._failed_input = inp
        if replay is not None:
            self._retry = replay
        self._retry_at = now + PERSIST_RETRY_S
        first = self.persist_failing_since is None
        if first:
            self.persist_failing_since = now
        if first or now - self._persist_logged_at >= PERSIST_LOG_INTERVAL_S:
            self._persist_logged_at = now
            self._record(STATE_WRITE_FAILED, now, wanted, inp,
                         f"state not recorded, not acted on ({self.persist_error}); "
                         f"staying in {self._state.name}, retrying every {PERSIST_RETRY_S:g} s")

    def _persist_recovered(self, now: float) -> None:
        since = self.persist_failing_since
        if since is None:
            return
        self.persist_recoveries += 1
        self.persist_failing_since = None
        self.persist_error = None
        self.persist_pending = None
        self._retry = None
        self._retry_at = None
        self._persist_logged_at = _NEVER
        self._record(STATE_WRITE_RECOVERED, now, self._state, self._failed_input,
                     f"state written again after {now - since:.1f} s")

    # ---------------------------------------------------------------- internals

    def _apply(self, d: Decision, inp: Input, now: float, facts: Facts) -> Transition:
        old = self._state
        nxt = d.next
        effects = list(d.effects)
        if nxt is not old:
            effects += [e for e in entry_effects(nxt, facts) if e not in effects]
        if Effect.REQUEST_ALL_UPDATES in effects and Effect.REQUEST_UPDATES in effects:
            effects.remove(Effect.REQUEST_UPDATES)

        if nxt is old:
            since = self._since
        elif nxt is S.RECOVER_WAIT:
            since = self._since  # ISC: STOS unchanged entering RECOVER-WAIT (timer survives)
        elif old is S.STARTUP and nxt is self._previous and self._previous_stos is not None:
            since = self._previous_stos  # back into the stored state: same STOS
        else:
            since = now

        # Durability before acting: nothing below runs if persist raises.
        wrote = False
        try:
            if Effect.STORE_RECOVER_AS_PREVIOUS in effects:
                self._persist(S.RECOVER, now)
                self._stored = (S.RECOVER, now)
                self._previous, self._previous_stos = S.RECOVER, now
                wrote = True
            if nxt is not old and nxt not in NOT_STORED:
                self._persist(nxt, since)
                self._stored = (nxt, since)
                wrote = True
        except Exception as exc:
            raise _PersistFailed(exc) from exc
        if wrote:
            self._persist_recovered(now)

        if nxt is not old:
            self._before = old
            self._state = nxt
            self._since = since
            self._update_request_sent = False
            if nxt is S.RECOVER and self._recover_base is None:
                down = self._went_down_at
                self._recover_base = since if down is None else min(down, since)
            if nxt is S.NORMAL:
                self._recover_base = None
                self._went_down_at = None  # a later RECOVER (no restart) counts from entering it
        if any(e in _REQUESTS for e in effects):
            self._update_request_sent = True

        t = Transition(
            from_state=old,
            to_state=nxt,
            input=inp,
            at=now,
            state_since=self._since,
            effects=tuple(effects),
            via=d.via,
            reason=d.reason,
            partner_state=self._partner_state,
        )
        if t.changed:
            reason = d.reason
            if d.via:
                reason += " (via " + ", ".join(s.name for s in d.via) + ")"
            self._record(STATE_CHANGED, now, nxt, inp, reason, old)
        return t

    def _record(
        self,
        event: str,
        now: float,
        to_state: ServerState,
        inp: Input,
        reason: str,
        from_state: ServerState | None = None,
    ) -> None:
        rec = LogRecord(
            event=event,
            at=now,
            from_state=from_state if from_state is not None else self._state,
            to_state=to_state,
            partner_state=self._partner_state,
            input=inp,
            reason=reason,
        )
        self.records.append(rec)
        if self._log is not None:
            self._log(rec)


class _PersistFailed(Exception):
    """``persist`` raised ``error``: the state was not recorded."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _partner_state_of(inp: Input) -> ServerState | None:
    return INPUT_PARTNER.get(inp)


__all__ = [
    "INPUT_REFUSED",
    "PERSIST_RETRY_S",
    "STATES",
    "STATE_CHANGED",
    "STATE_WRITE_FAILED",
    "STATE_WRITE_RECOVERED",
    "FailoverMachine",
    "LogRecord",
    "Persist",
    "Transition",
]
