"""The operator control channel: the pure request handler (a table of requests and replies,
virtual time), the socket of a real server on loopback, and the CLI against a running
server (a failover pair in a background thread: stop the primary, then ``partner-down`` on
the standby). Every wait on a real socket or thread is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from _build import EXPECTED_BUILD
from _configs import previous_on_startup_timeout
from typer.testing import CliRunner

from tandem.api.control import COUNTERS, ControlHandler, request, state_name
from tandem.cli import app
from tandem.config import Config, load, load_text
from tandem.dhcp.engine import Engine
from tandem.errors import StoreError
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.machine import LogRecord
from tandem.failover.peer import META_STATE_KEY, FailoverPeer
from tandem.failover.states import Input
from tandem.leases.model import BindingState, Lease
from tandem.service import Server
from tandem.sim.server import MemoryStore, build_engine
from tandem.wire.failover import ServerState

S = ServerState
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
NOW = 1_700_000_000.0


# ---------------------------------------------------------------- the pure handler


class FakeServer:
    """The ControlTarget surface of tandem.service.Server, over a real engine/peer."""

    def __init__(self, config: Config, stored: tuple[ServerState, float] | None = None) -> None:
        self.store = MemoryStore()
        if stored is not None:
            self.store.meta[META_STATE_KEY] = json.dumps(
                {"state": int(stored[0]), "since": stored[1]})
        self.stats: Counter[str] = Counter(rx=7, tx_offer=3, tx_ack=2, surprise=1)
        self.listeners: list[Callable[[LogRecord], None]] = []
        self.partner_down_calls = 0
        self.failover_peer: FailoverPeer | None = None
        if config.failover is None:
            self.engine: Engine = build_engine(config, None, self.store, NOW)
        else:
            engines: list[Engine] = []

            def make_engine(policy: HotStandbyPolicy) -> Engine:
                engines.append(build_engine(config, policy, self.store, NOW))
                return engines[-1]

            self.failover_peer = FailoverPeer(config, self.store, NOW, make_engine,
                                              log=self._record)
            self.engine = engines[0]

    def _record(self, record: LogRecord) -> None:
        for fn in self.listeners:
            fn(record)

    def on_failover_record(self, fn: Callable[[LogRecord], None]) -> None:
        self.listeners.append(fn)

    @property
    def failover_peers(self) -> dict[str, FailoverPeer]:
        peer = self.failover_peer
        return {peer.fo.name: peer} if peer is not None else {}

    def partner_down(self, relationship: str | None = None) -> bool:
        self.partner_down_calls += 1
        peer = self.failover_peer
        return peer.partner_down(NOW + 100) if peer is not None else False


def standalone() -> FakeServer:
    srv = FakeServer(load(ROOT / "examples" / "tandem.toml"))
    for i, end in enumerate((NOW + 600, NOW + 1, NOW - 1)):  # two active, one expired
        srv.engine.table.put(Lease(address=IPv4Address("192.0.2.200") + i, subnet_id=1,
                                   state=BindingState.ACTIVE, hwaddr=bytes(6), end=end))
    return srv


def standby(stored: tuple[ServerState, float] | None) -> FakeServer:
    srv = FakeServer(previous_on_startup_timeout(ROOT / "examples" / "hot-standby-standby.toml"),
                     stored)
    peer = srv.failover_peer
    assert peer is not None
    peer.handle_timer(NOW + 20)  # past the STARTUP timer, no partner: the stored state
    return srv


def ask(handler: ControlHandler, line: bytes, now: float = NOW) -> dict[str, Any]:
    out = handler.handle_line(line, now)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    reply = json.loads(out)
    assert isinstance(reply, dict)
    return reply


@pytest.mark.parametrize(("line", "error"), [
    (b"status", "bad request: not JSON"),
    (b"\xff\xfe{}", "bad request: not JSON"),
    (b"[1, 2]", "bad request: expected an object"),
    (b'"status"', "bad request: expected an object"),
    (b'{"cmd": "status"}', 'bad request: no "command"'),
    (b'{"command": 3}', 'bad request: no "command"'),
    (b'{"command": "reboot"}', "unknown command 'reboot' (known: status, partner-down)"),
    (b'{"command": "partner-down"}', "this server has no [failover] section"),
])
def test_bad_requests_get_error_replies(line: bytes, error: str) -> None:
    srv = standalone()
    reply = ask(ControlHandler(srv), line)
    assert reply["ok"] is False
    assert reply["error"].startswith(error), reply
    assert srv.partner_down_calls == 0


def test_status_of_a_standalone_server() -> None:
    reply = ask(ControlHandler(standalone()), b'{"command": "status"}\n')
    assert reply["ok"] is True
    assert reply["now"] == NOW
    # the build this test run imports (test_compiled_build checks which one that is)
    assert reply["build"] == EXPECTED_BUILD
    assert reply["failover"] is None
    assert reply["leases"] == {"active": 2, "known": 3}
    assert list(reply["counters"]) == list(COUNTERS)
    assert reply["counters"]["rx"] == 7 and reply["counters"]["tx_ack"] == 2
    assert reply["counters"]["commits"] == 0  # missing counters are 0
    assert "surprise" not in reply["counters"]
    # time is an argument: an hour later the short lease has expired as well
    later = ask(ControlHandler(standalone()), b'{"command": "status"}', NOW + 3600)
    assert later["leases"] == {"active": 0, "known": 3}


def test_status_of_a_standby_in_communications_interrupted() -> None:
    srv = standby((S.COMMUNICATIONS_INTERRUPTED, NOW - 50))
    reply = ask(ControlHandler(srv), b'{"command": "status"}')
    fo = reply["failover"]
    assert fo["role"] == "secondary" and fo["mode"] == "hot-standby"
    assert fo["state"] == "COMMUNICATIONS-INTERRUPTED"
    assert fo["since"] == NOW - 50  # the stored start of the state survives the restart
    assert fo["connected"] is False and fo["partner_state"] is None
    assert fo["service"] == "own-pool"
    assert fo["all_free_usable_at"] is None
    peer = srv.failover_peer
    assert peer is not None
    free, backup = peer.reserve_counts()
    assert fo["reserve"] == {"free": free, "backup": backup} and free > 0


def test_partner_down_is_the_way_out_of_a_waiting_startup() -> None:
    # Tandem's default STARTUP timeout ("wait"): a restarted server that does not hear its
    # partner serves no one; the operator who knows the partner is down says so.
    srv = FakeServer(load(ROOT / "examples" / "hot-standby-standby.toml"), (S.NORMAL, NOW - 50))
    peer = srv.failover_peer
    assert peer is not None
    peer.handle_timer(NOW + 20)
    handler = ControlHandler(srv)
    status = ask(handler, b'{"command": "status"}')["failover"]
    assert status["state"] == "STARTUP" and status["service"] == "none"
    assert status["startup_waiting_since"] == NOW + 20
    reply = ask(handler, b'{"command": "partner-down"}')
    assert reply == {"ok": True, "changed": True, "state": "PARTNER-DOWN", "previous": "STARTUP"}
    assert ask(handler, b'{"command": "status"}')["failover"]["startup_waiting_since"] is None


def test_status_text_says_a_startup_is_waiting_and_what_to_do() -> None:
    from tandem.cli import _status_text

    srv = FakeServer(load(ROOT / "examples" / "hot-standby-standby.toml"), (S.NORMAL, NOW - 50))
    peer = srv.failover_peer
    assert peer is not None
    handler = ControlHandler(srv)
    assert "WAITING" not in "\n".join(_status_text(ask(handler, b'{"command": "status"}')))
    peer.handle_timer(NOW + 20)
    text = "\n".join(_status_text(ask(handler, b'{"command": "status"}')))
    assert "state:    STARTUP" in text and "serving:  none" in text
    assert "WAITING  for the partner since" in text and "tandem partner-down" in text


def test_partner_down_moves_to_partner_down_then_is_idempotent() -> None:
    srv = standby((S.COMMUNICATIONS_INTERRUPTED, NOW - 50))
    handler = ControlHandler(srv)
    reply = ask(handler, b'{"command": "partner-down"}')
    assert reply == {"ok": True, "changed": True, "state": "PARTNER-DOWN",
                     "previous": "COMMUNICATIONS-INTERRUPTED"}
    status = ask(handler, b'{"command": "status"}')["failover"]
    assert status["state"] == "PARTNER-DOWN"
    assert status["since"] == NOW + 100  # the time of the command (FakeServer's clock)
    assert status["all_free_usable_at"] == NOW + 100 + status["mclt_s"]
    again = ask(handler, b'{"command": "partner-down"}')
    assert again == {"ok": True, "changed": False, "state": "PARTNER-DOWN",
                     "previous": "PARTNER-DOWN"}
    assert srv.partner_down_calls == 2


def test_partner_down_refused_says_why() -> None:
    srv = standby((S.COMMUNICATIONS_INTERRUPTED, NOW - 50))
    peer = srv.failover_peer
    assert peer is not None
    assert peer.pause(NOW + 30) and peer.state is S.PAUSED
    reply = ask(ControlHandler(srv), b'{"command": "partner-down"}')
    assert reply["ok"] is False and reply["changed"] is False
    assert reply["state"] == "PAUSED"
    assert reply["error"] == "partner-down refused in PAUSED: PAUSED is left only by a restart"


def test_partner_down_that_cannot_be_recorded_says_why_and_status_shows_the_alarm() -> None:
    srv = standby((S.COMMUNICATIONS_INTERRUPTED, NOW - 50))
    handler = ControlHandler(srv)
    assert ask(handler, b'{"command": "status"}')["failover"]["state_write"]["ok"] is True

    def full(key: str, value: str) -> None:
        raise StoreError("database or disk is full")

    srv.store.set_meta = full  # type: ignore[method-assign]
    reply = ask(handler, b'{"command": "partner-down"}')
    assert reply["ok"] is False and reply["state"] == "COMMUNICATIONS-INTERRUPTED"
    assert "not recorded" in reply["error"] and "disk is full" in reply["error"]
    status = ask(handler, b'{"command": "status"}')
    sw = status["failover"]["state_write"]
    assert sw == {"ok": False, "alarm": "FAILOVER_STATE_WRITE_FAILED",
                  "failing_since": NOW + 100, "error": "database or disk is full",
                  "pending": "PARTNER-DOWN"}
    assert status["failover"]["state"] == "COMMUNICATIONS-INTERRUPTED"


def test_a_failing_command_is_an_error_reply() -> None:
    srv = standalone()

    class Broken:
        @property
        def table(self) -> Any:
            raise RuntimeError("server not started")

    srv.engine = Broken()  # type: ignore[assignment]
    reply = ask(ControlHandler(srv), b'{"command": "status"}')
    assert reply == {"ok": False, "error": "internal error in status: server not started"}


def test_state_names_use_the_drafts_spelling() -> None:
    assert state_name(S.COMMUNICATIONS_INTERRUPTED) == "COMMUNICATIONS-INTERRUPTED"
    assert state_name(S.RECOVER_WAIT) == "RECOVER-WAIT"
    assert state_name(None) is None


# ---------------------------------------------------------------- a real server's socket


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def standalone_toml(tmp_path: Path, control: Path | str, port: int | None = None) -> str:
    return f"""
[server]
listen_address = "127.0.0.1"
port = {port or free_port("127.0.0.1")}
raw_replies = false
control_socket = "{control}"
[store]
path = "{tmp_path / 'leases.db'}"
[[subnets]]
prefix = "192.0.2.0/24"
pools = [{{ start = "192.0.2.10", end = "192.0.2.19" }}]
"""


def run_checked(body: Callable[[], Awaitable[None]], timeout: float = 20) -> None:
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        await asyncio.wait_for(body(), timeout=timeout)

    asyncio.run(main())
    assert errors == [], errors


async def roundtrip(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        out = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            out.append(json.loads(await asyncio.wait_for(reader.readline(), 5)))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


def test_server_serves_the_control_socket(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ctl.sock"  # the directory does not exist yet
    cfg = load_text(standalone_toml(tmp_path, path))

    async def body() -> None:
        server = Server(cfg)
        await server.start()
        try:
            mode = os.stat(path).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            status, bad, unknown, status2 = await roundtrip(
                path, b'{"command": "status"}\n', b"{oops\n", b'{"command": "x"}\n',
                b'{"command":"status"}\n')
            assert status["ok"] is True and status["failover"] is None
            assert status["leases"] == {"active": 0, "known": 0}
            assert bad["ok"] is False and "not JSON" in bad["error"]
            assert unknown["ok"] is False and "unknown command" in unknown["error"]
            assert status2["ok"] is True  # the connection survived the bad requests
            # a line beyond the limit ends that connection with an error, nothing else
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"x" * 100_000 + b"\n")
            reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert reply["ok"] is False and "longer than" in reply["error"]
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            writer.close()
            # a client that hangs up mid-request harms nothing
            _, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"command": "sta')
            writer.close()
            (pd,) = await roundtrip(path, b'{"command": "partner-down"}\n')
            assert pd == {"ok": False,
                          "error": "this server has no [failover] section: partner-down "
                                   "does not apply"}
        finally:
            await server.stop()
        assert not path.exists()  # removed on stop

    run_checked(body)


def test_stale_socket_replaced_live_one_and_other_files_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a crashed server's leftover: the file stays, nobody listens
    cfg = load_text(standalone_toml(tmp_path, path))
    cfg2 = load_text(standalone_toml(tmp_path / "two", path))
    (tmp_path / "two").mkdir()
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    cfg3 = load_text(standalone_toml(tmp_path / "three", regular))
    (tmp_path / "three").mkdir()

    async def body() -> None:
        first = Server(cfg)
        await first.start()
        try:
            (reply,) = await roundtrip(path, b'{"command": "status"}\n')
            assert reply["ok"] is True
            inode = os.stat(path).st_ino
            # a second server with the same path: it serves DHCP, leaves the socket alone
            with caplog.at_level(logging.WARNING, logger="tandem"):
                second, third = Server(cfg2), Server(cfg3)
                await second.start()
                await third.start()
            assert second.running and third.running
            failed = [r.getMessage() for r in caplog.records
                      if "CONTROL_SOCKET_FAILED" in r.getMessage()]
            assert len(failed) == 2, failed
            assert "in use by a running server" in failed[0]
            assert "is not a socket" in failed[1]
            await second.stop()
            await third.stop()
            assert os.stat(path).st_ino == inode  # still the first server's socket
            assert regular.read_text() == "keep me"
            (reply,) = await roundtrip(path, b'{"command": "status"}\n')
            assert reply["ok"] is True
        finally:
            await first.stop()

    run_checked(body)


def test_empty_control_socket_means_none(tmp_path: Path) -> None:
    cfg = load_text(standalone_toml(tmp_path, ""))

    async def body() -> None:
        server = Server(cfg)
        await server.start()
        await server.stop()
        assert list(tmp_path.iterdir()) == [tmp_path / "leases.db"]

    run_checked(body)


# ---------------------------------------------------------------- the CLI


class Background:
    """An event loop in a thread, running the servers; the test thread drives the CLI."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.errors.append(ctx))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 20) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    try:
        yield bg
    finally:
        bg.close()
    assert bg.errors == [], bg.errors


def test_cli_status_and_partner_down_on_a_standalone_server(
    tmp_path: Path, background: Background
) -> None:
    path = tmp_path / "ctl.sock"
    conf = tmp_path / "tandem.toml"
    conf.write_text(standalone_toml(tmp_path, path))
    server = Server(load(conf))
    background.run(server.start())
    try:
        result = runner.invoke(app, ["status", "-c", str(conf)])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0] == "leases: 0 active, 0 known"
        assert lines[1] == "failover: none (standalone server)"
        assert lines[2].startswith("counters: rx 0, tx 0, ")
        assert lines[3] == "build:    " + EXPECTED_BUILD

        result = runner.invoke(app, ["status", "-c", str(conf), "--json"])
        assert result.exit_code == 0, result.output
        reply = json.loads(result.stdout)
        assert reply["ok"] is True and reply["failover"] is None

        result = runner.invoke(app, ["partner-down", "-c", str(conf)])
        assert result.exit_code == 1
        assert "no [failover] section" in result.stderr
    finally:
        background.run(server.stop())


def test_cli_server_not_reachable(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    conf = tmp_path / "tandem.toml"
    conf.write_text(standalone_toml(tmp_path, path))
    for command in ("status", "partner-down"):
        result = runner.invoke(app, [command, "-c", str(conf)])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert f"cannot reach the server's control socket {path}: no such socket" \
            in result.stderr
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    result = runner.invoke(app, ["status", "-c", str(conf)])
    assert result.exit_code == 2
    assert f"{path}: connection refused" in result.stderr
    conf.write_text(standalone_toml(tmp_path, ""))
    result = runner.invoke(app, ["status", "-c", str(conf)])
    assert result.exit_code == 2 and "control_socket is empty" in result.stderr


def test_client_timeout_is_unreachable(tmp_path: Path) -> None:
    from tandem.api.control import ControlUnreachable

    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen()  # accepts (in the kernel), never answers
        with pytest.raises(ControlUnreachable, match=r"no answer within 0\.05 s"):
            request(str(path), "status", timeout=0.05)


def test_cli_partner_down_refused_exits_1(tmp_path: Path) -> None:
    """A refusal from the server (canned: a real one is in the handler table above)."""
    path = tmp_path / "ctl.sock"
    conf = tmp_path / "tandem.toml"
    conf.write_text(standalone_toml(tmp_path, path))
    refused = {"ok": False, "changed": False, "state": "PAUSED", "previous": "PAUSED",
               "error": "partner-down refused in PAUSED: PAUSED is left only by a restart"}
    got: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen()
        srv.settimeout(10)

        def answer() -> None:
            conn, _ = srv.accept()
            with conn:
                got.append(conn.makefile("rb").readline())
                conn.sendall(json.dumps(refused).encode() + b"\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        result = runner.invoke(app, ["partner-down", "-c", str(conf)])
        t.join(10)
    assert got == [b'{"command": "partner-down"}\n']
    assert result.exit_code == 1
    assert result.stdout == "state: PAUSED\n"
    assert result.stderr == f"error: {refused['error']}\n"


# A hot-standby pair on loopback (the model: tests/e2e/test_failover_pair_loopback.py).
PRIMARY, STANDBY = "127.0.0.1", "127.0.0.5"


def pair_toml(role: str, me: str, partner: str, dhcp_port: int, fo: dict[str, int],
              tmp: Path) -> str:
    return f"""
[server]
listen_address = "{me}"
port = {dhcp_port}
raw_replies = false
control_socket = "{tmp / (role + '.sock')}"
[store]
path = "{tmp / role / 'leases.db'}"
[[subnets]]
prefix = "192.0.2.0/24"
pools = [{{ start = "192.0.2.100", end = "192.0.2.199" }}]
[failover]
name = "control-pair"
role = "{role}"
listen_address = "{me}"
listen_port = {fo[me]}
peer_address = "{partner}"
peer_port = {fo[partner]}
mclt_s = 300
reserve_percent = 20
"""


def cli_json(conf: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["status", "-c", str(conf), "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert isinstance(reply, dict)
    return reply


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll a condition that the servers' thread makes true (bounded)."""
    done = threading.Event()
    deadline = timeout
    step = 0.02
    while not cond():
        assert deadline > 0, f"timed out waiting for {what}"
        done.wait(step)
        deadline -= step


def test_cli_partner_down_on_the_standby_of_a_pair(
    tmp_path: Path, background: Background
) -> None:
    dhcp_port = free_port("127.0.0.2")
    fo = {PRIMARY: free_port(PRIMARY, socket.SOCK_STREAM),
          STANDBY: free_port(STANDBY, socket.SOCK_STREAM)}
    conf_p, conf_s = tmp_path / "primary.toml", tmp_path / "secondary.toml"
    conf_p.write_text(pair_toml("primary", PRIMARY, STANDBY, dhcp_port, fo, tmp_path))
    conf_s.write_text(pair_toml("secondary", STANDBY, PRIMARY, dhcp_port, fo, tmp_path))
    primary, standby_ = Server(load(conf_p)), Server(load(conf_s))
    background.run(primary.start())
    background.run(standby_.start())
    try:
        wait_for(lambda: cli_json(conf_s)["failover"]["state"] == "NORMAL"
                 and cli_json(conf_p)["failover"]["state"] == "NORMAL", "NORMAL on both")
        wait_for(lambda: cli_json(conf_s)["failover"]["reserve"]["backup"] == 20,
                 "the standby's reserve")
        fo_s = cli_json(conf_s)["failover"]
        assert fo_s["connected"] is True and fo_s["partner_state"] == "NORMAL"
        assert fo_s["role"] == "secondary"
        text = runner.invoke(app, ["status", "-c", str(conf_s)])
        assert text.exit_code == 0, text.output
        assert '  state:    NORMAL since ' in text.stdout
        assert "  partner:  NORMAL, connected" in text.stdout
        assert "  reserve:  80 free, 20 backup" in text.stdout
        assert 'failover "control-pair": secondary (standby), hot-standby, MCLT 300 s' \
            in text.stdout

        # refused while the partner is connected: it is not down
        result = runner.invoke(app, ["partner-down", "-c", str(conf_s)])
        assert result.exit_code == 1
        assert "the partner is connected (NORMAL)" in result.stderr
        assert cli_json(conf_s)["failover"]["state"] == "NORMAL"

        background.run(primary.stop())
        wait_for(lambda: cli_json(conf_s)["failover"]["state"] == "COMMUNICATIONS-INTERRUPTED",
                 "COMMUNICATIONS-INTERRUPTED at the standby")
        assert cli_json(conf_s)["failover"]["connected"] is False
        result = runner.invoke(app, ["partner-down", "-c", str(conf_p)])  # stopped: no socket
        assert result.exit_code == 2 and "primary.sock" in result.stderr

        result = runner.invoke(app, ["partner-down", "-c", str(conf_s)])
        assert result.exit_code == 0, result.output
        assert result.stdout == "state: PARTNER-DOWN (was COMMUNICATIONS-INTERRUPTED)\n"
        fo_s = cli_json(conf_s)["failover"]
        assert fo_s["state"] == "PARTNER-DOWN" and fo_s["service"] == "partner-down"
        assert fo_s["all_free_usable_at"] == fo_s["since"] + 300
        result = runner.invoke(app, ["partner-down", "-c", str(conf_s)])
        assert result.exit_code == 0 and result.stdout == "state: PARTNER-DOWN (unchanged)\n"
        assert standby_.failover_peer is not None
        assert standby_.failover_peer.state is S.PARTNER_DOWN
    finally:
        background.run(standby_.stop())
        background.run(primary.stop())


def test_partner_down_while_the_partner_is_connected_needs_force() -> None:
    srv = standby((S.COMMUNICATIONS_INTERRUPTED, NOW - 50))
    peer = srv.failover_peer
    assert peer is not None
    peer.m.handle(Input.CONNECTED, NOW + 10)
    assert peer.m.connected
    handler = ControlHandler(srv)
    refused = ask(handler, b'{"command": "partner-down"}')
    assert refused["ok"] is False and refused["changed"] is False
    assert "the partner is connected" in refused["error"]
    assert srv.partner_down_calls == 0 and peer.state is S.COMMUNICATIONS_INTERRUPTED
    forced = ask(handler, b'{"command": "partner-down", "force": true}')
    assert forced["ok"] is True and forced["state"] == "PARTNER-DOWN"
