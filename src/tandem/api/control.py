"""Operator control channel: newline-delimited JSON over a Unix-domain socket.

One request per line, one reply per line, any number of requests per connection::

    {"command": "status"}        -> {"ok": true, "now": ..., "leases": {...}, "counters": {...},
                                     "failover": null | {"state": "NORMAL", ...},
                                     "relationships": [{"name": ..., "state": ...}, ...]}
    {"command": "partner-down"}  -> {"ok": true, "changed": true, "state": "PARTNER-DOWN", ...}
    {"command": "partner-down", "force": true}  (also while the partner is connected)
    {"command": "partner-down", "relationship": "site-a"}  (needed with several)

``failover`` is the relationship of a server that has exactly one (null otherwise);
``relationships`` lists every relationship of the server (empty when standalone).

A failed request answers ``{"ok": false, "error": "..."}`` (bad JSON, unknown command,
partner-down without ``[failover]`` or refused by the state machine); nothing a client sends
reaches the event loop's exception handler.

Three parts:

* :class:`ControlHandler` (pure): request object -> reply dict, given a :class:`ControlTarget`
  (the running server: counters, engine, failover peer, the partner-down command) and ``now``.
* :class:`ControlServer` (asyncio): the socket (mode 0600, parent directory created, a stale
  socket file replaced, a live one left alone), one task per connection.
* :func:`request` (blocking client, for the CLI).

Failover states are spelled as in the draft (``COMMUNICATIONS-INTERRUPTED``), times are
epoch seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tandem.build import build_kind
from tandem.config.validate import failover_subnets, subnet_id
from tandem.failover.machine import FailoverMachine, LogRecord
from tandem.failover.peer import FailoverPeer
from tandem.leases.table import LeaseTable
from tandem.log import event, get_logger
from tandem.wire.failover import ServerState

__all__ = [
    "COMMANDS",
    "COUNTERS",
    "MAX_REQUEST_BYTES",
    "ControlHandler",
    "ControlServer",
    "ControlTarget",
    "ControlUnreachable",
    "request",
    "state_name",
]

log = get_logger("control")

COMMANDS = ("status", "partner-down")
# The counters ``status`` reports (the server's full Counter has dozens; these answer
# "is it serving?"). Missing ones are reported as 0.
COUNTERS = (
    "rx", "tx", "rx_discover", "rx_request", "tx_offer", "tx_ack", "tx_nak", "acks_sent",
    "commits", "pool_exhausted", "rx_malformed", "drop_policy", "store_write_failed",
    "acks_withheld", "internal_errors", "store_recoveries", "drop_rate_client",
    "drop_rate_relay", "drop_rate_reserve", "failover_skew_refusals",
    "failover_tls_handshake_failed", "failover_refused_not_partner",
    "failover_state_write_failed", "failover_state_write_recoveries",
)
MAX_REQUEST_BYTES = 64 * 1024  # a request line longer than this ends the connection
SOCKET_MODE = 0o600
DIR_MODE = 0o755
CLIENT_TIMEOUT_S = 5.0


def _skew(peer: FailoverPeer) -> float | None:
    conn = peer.conn
    skew = conn.clock_skew_s if conn is not None else None
    return round(skew, 3) if skew is not None else None


def _state_write(m: FailoverMachine) -> dict[str, Any]:
    failing = m.persist_failing_since is not None
    return {
        "ok": not failing,
        "alarm": "FAILOVER_STATE_WRITE_FAILED" if failing else None,
        "failing_since": m.persist_failing_since,
        "error": m.persist_error,
        "pending": state_name(m.persist_pending),
    }


def state_name(state: ServerState | None) -> str | None:
    """``COMMUNICATIONS_INTERRUPTED`` -> ``COMMUNICATIONS-INTERRUPTED`` (the draft's words)."""
    return state.name.replace("_", "-") if state is not None else None


class _HasTable(Protocol):
    @property
    def table(self) -> LeaseTable: ...


class ControlTarget(Protocol):
    """What the handler needs from the running server (``tandem.service.Server``)."""

    @property
    def stats(self) -> Mapping[str, int]: ...

    @property
    def engine(self) -> _HasTable: ...

    @property
    def failover_peer(self) -> FailoverPeer | None: ...

    @property
    def failover_peers(self) -> Mapping[str, FailoverPeer]: ...

    def partner_down(self, relationship: str | None = None) -> bool: ...

    def on_failover_record(self, fn: Callable[[LogRecord], None]) -> None: ...


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


class ControlHandler:
    """Pure request handling: :meth:`handle_line` (bytes in, bytes out) and :meth:`handle`
    (a decoded request -> the reply). Never raises for anything a client can send."""

    def __init__(self, target: ControlTarget) -> None:
        self.target = target
        self._refusal: LogRecord | None = None
        target.on_failover_record(self._on_record)

    def _on_record(self, record: LogRecord) -> None:
        if record.event in ("FAILOVER_INPUT_REFUSED", "FAILOVER_STATE_WRITE_FAILED"):
            self._refusal = record

    def handle_line(self, line: bytes, now: float) -> bytes:
        """One request line -> one reply line (JSON, newline-terminated)."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            reply = _error(f"bad request: not JSON ({exc})")
        else:
            reply = self.handle(req, now)
        return json.dumps(reply, separators=(",", ":")).encode() + b"\n"

    def handle(self, req: object, now: float) -> dict[str, Any]:
        if not isinstance(req, dict):
            return _error('bad request: expected an object such as {"command": "status"}')
        command = req.get("command")
        if not isinstance(command, str):
            return _error('bad request: no "command"')
        try:
            if command == "status":
                return self.status(now)
            if command == "partner-down":
                name = req.get("relationship")
                if name is not None and not isinstance(name, str):
                    return _error('bad request: "relationship" must be a string')
                return self.partner_down(now, force=req.get("force") is True, relationship=name)
        except Exception as exc:  # a bug or a failing store must not kill the connection
            log.exception("INTERNAL_ERROR in control command %s", command)
            return _error(f"internal error in {command}: {exc}")
        return _error(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")

    # -- commands ----------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        t = self.target
        stats = t.stats
        table = t.engine.table
        active = sum(1 for lease in table if lease.is_active(now))
        return {
            "ok": True,
            "now": now,
            "build": build_kind(),
            "leases": {"active": active, "known": len(table)},
            "counters": {name: int(stats.get(name, 0)) for name in COUNTERS},
            "failover": self._failover_status(now),
            "relationships": [
                self._peer_status(peer, now) for peer in self.target.failover_peers.values()
            ],
            # {"ok": false, "alarm": "STORE_WRITE_FAILED", ...} while commits fail
            "store": getattr(t, "store_health", None),
        }

    def _failover_status(self, now: float) -> dict[str, Any] | None:
        peer = self.target.failover_peer
        if peer is None:
            return None
        return self._peer_status(peer, now)

    def _peer_status(self, peer: FailoverPeer, now: float) -> dict[str, Any]:
        m = peer.m
        free, backup = peer.reserve_counts()
        fo = peer.fo
        return {
            "name": fo.name,
            "role": fo.role,
            "mode": fo.mode,
            "state": state_name(m.state),
            "since": m.state_since,
            "previous": state_name(m.previous),
            "partner_state": state_name(m.partner_state),
            "partner_since": m.partner_stos,
            "connected": m.connected,
            "service": m.service_level.value,
            # STARTUP past its timer without the partner ("wait"): since when; else None
            "startup_waiting_since": m.startup_waiting_since,
            "mclt_s": fo.mclt_s,
            # PARTNER-DOWN: when the whole pool (the partner's addresses too) becomes usable
            "all_free_usable_at": m.all_free_usable_at,
            "reserve": {"free": free, "backup": backup},
            "subnets": [subnet_id(peer.config, i) for i in failover_subnets(peer.config)],
            # partner clock minus ours (s, smoothed) on the current connection; None before
            "clock_skew_s": _skew(peer),
            "max_clock_skew_s": peer.fo.max_clock_skew_s,
            # {"ok": false, "alarm": "FAILOVER_STATE_WRITE_FAILED", ...} while the state
            # cannot be recorded (the server stays in the state it recorded last)
            "state_write": _state_write(m),
        }

    def partner_down(
        self, now: float, force: bool = False, relationship: str | None = None
    ) -> dict[str, Any]:
        peers = self.target.failover_peers
        if not peers:
            return _error("this server has no [failover] section: partner-down does not apply")
        if relationship is None:
            if len(peers) > 1:
                return _error(
                    "this server is in several failover relationships "
                    f"({', '.join(peers)}): name one (--relationship NAME)")
            relationship = next(iter(peers))
        peer = peers.get(relationship)
        if peer is None:
            return _error(f"no failover relationship named {relationship!r} "
                          f"(known: {', '.join(peers)})")
        before = peer.state
        if peer.m.connected and not force:
            # The draft allows it from NORMAL, but with the partner alive and in touch both
            # would serve the whole pool: refuse unless the operator insists.
            refused = _error(
                f"the partner is connected ({state_name(peer.m.partner_state)}): it is not "
                "down; partner-down now would let both servers hand out the same addresses "
                "(force it only if you are sure)")
            refused.update(changed=False, state=state_name(before), previous=state_name(before))
            return refused
        self._refusal = None
        changed = (self.target.partner_down(relationship) if len(peers) > 1
                   else self.target.partner_down())
        after = peer.state
        reply: dict[str, Any] = {
            "ok": after is ServerState.PARTNER_DOWN,
            "changed": changed,
            "state": state_name(after),
            "previous": state_name(before),
        }
        if len(peers) > 1:
            reply["relationship"] = relationship
        if not reply["ok"]:
            why = self._refusal.reason if self._refusal is not None else "ignored"
            reply["error"] = f"partner-down refused in {state_name(before)}: {why}"
        self._refusal = None
        return reply


# -- the asyncio server ----------------------------------------------------------------


class ControlServer:
    """Serves a :class:`ControlHandler` on a Unix-domain socket at ``path``."""

    def __init__(self, path: str, handler: ControlHandler, now: Callable[[], float]) -> None:
        self.path = path
        self.handler = handler
        self._now = now
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Create the socket (0600) and listen. Raises OSError (directory not creatable, a
        non-socket file in the way, another server listening on the path)."""
        sock = _bind_unix(self.path)
        try:
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(
                self._serve_client, sock=sock, limit=MAX_REQUEST_BYTES
            )
        except BaseException:
            sock.close()
            self._unlink_own()
            raise
        event(log, logging.INFO, "CONTROL_SOCKET_LISTENING", path=self.path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        await server.wait_closed()
        self._unlink_own()

    def _unlink_own(self) -> None:
        """Remove the socket file if it is still ours (not a later server's)."""
        if self._inode is None:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        self._inode = None

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(json.dumps(_error(
                        f"bad request: longer than {MAX_REQUEST_BYTES} bytes")).encode() + b"\n")
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(self.handler.handle_line(line, self._now()))
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception:  # never to the loop's exception handler
            log.exception("INTERNAL_ERROR in control connection")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _bind_unix(path: str) -> socket.socket:
    """A bound, listening-ready Unix socket at ``path`` with mode 0600."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket; not replacing it")
        if _is_live(path):
            raise OSError(f"{path} is in use by a running server")
        os.unlink(p)  # stale: left by a server that did not stop cleanly
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The umask makes the file 0600 from its creation (no window with looser rights);
        # the chmod repeats it whatever the umask did.
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, SOCKET_MODE)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_live(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


# -- the blocking client ---------------------------------------------------------------


class ControlUnreachable(Exception):
    """The control socket could not be reached (no server, no permission, no answer)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot reach the server's control socket {path}: {reason}")
        self.path = path
        self.reason = reason


def request(
    path: str, command: str, timeout: float = CLIENT_TIMEOUT_S, **args: Any
) -> dict[str, Any]:
    """Send one command (with ``args`` as extra fields), return the decoded reply.
    Raises :class:`ControlUnreachable`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlUnreachable(path, "no such socket (is the server running?)") from None
        except ConnectionRefusedError:
            raise ControlUnreachable(path, "connection refused (is the server running?)") from None
        except PermissionError:
            raise ControlUnreachable(
                path, "permission denied (the socket is for root only)") from None
        except OSError as exc:
            raise ControlUnreachable(path, exc.strerror or str(exc)) from None
        buf = b""
        try:
            sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            raise ControlUnreachable(path, f"no answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlUnreachable(path, exc.strerror or str(exc)) from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlUnreachable(path, "the connection closed without a valid answer") from None
    if not isinstance(reply, dict):
        raise ControlUnreachable(path, "the answer is not a JSON object")
    return reply
