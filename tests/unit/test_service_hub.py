"""A hub in two failover relationships as real services on loopback: one ``Server`` that is
the standby of two primaries, both partners connecting to the hub's one failover socket
(routed by source address), a stranger refused, ``tandem status`` showing every
relationship, and ``partner-down`` naming one. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from _configs import previous_on_startup_timeout
from typer.testing import CliRunner

from tandem.cli import app
from tandem.config import load
from tandem.net.peer_mux import MuxedPeerLink
from tandem.service import Server

runner = CliRunner()
HUB, PA, PB, STRANGER = "127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


SUBNETS = {
    1: ("192.0.2.0/24", "192.0.2.100", "192.0.2.199"),
    2: ("203.0.113.0/24", "203.0.113.100", "203.0.113.199"),
    3: ("198.51.100.0/24", "198.51.100.100", "198.51.100.119"),
}


def subnets_toml(ids: list[int]) -> str:
    out = ""
    for sid in ids:
        prefix, lo, hi = SUBNETS[sid]
        out += (f'[[subnets]]\nid = {sid}\nprefix = "{prefix}"\n'
                f'pools = [{{ start = "{lo}", end = "{hi}" }}]\n')
    return out


def server_toml(me: str, tmp: Path, name: str, dhcp_port: int) -> str:
    return f"""
[server]
listen_address = "{me}"
port = {dhcp_port}
raw_replies = false
control_socket = "{tmp / (name + '.sock')}"
[store]
path = "{tmp / name / 'leases.db'}"
"""


def relationship(array: bool, name: str, role: str, me: str, port_me: int, partner: str,
                 port_partner: int, subnets: list[int] | None) -> str:
    head = "[[failover]]" if array else "[failover]"
    sub = f"subnets = {subnets}\n" if subnets is not None else ""
    return f"""
{head}
name = "{name}"
role = "{role}"
listen_address = "{me}"
listen_port = {port_me}
peer_address = "{partner}"
peer_port = {port_partner}
mclt_s = 300
reserve_percent = 20
{sub}"""


class Background:
    """An event loop in a thread, running the servers; the test thread drives the CLI."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.errors.append(ctx))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 20) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
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


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    done = threading.Event()
    left = timeout
    while not cond():
        assert left > 0, f"timed out waiting for {what}"
        done.wait(0.05)
        left -= 0.05


def status(conf: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["status", "-c", str(conf), "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert isinstance(reply, dict)
    return reply


def states(conf: Path) -> dict[str, str]:
    return {r["name"]: r["state"] for r in status(conf)["relationships"]}


def test_hub_with_two_primaries_on_one_failover_socket(
    tmp_path: Path, background: Background
) -> None:
    dhcp_port = free_port("127.0.0.1")
    fo = {ip: free_port(ip, socket.SOCK_STREAM) for ip in (HUB, PA, PB)}
    hub_conf, a_conf, b_conf = (tmp_path / f"{n}.toml" for n in ("hub", "a", "b"))
    hub_conf.write_text(
        server_toml(HUB, tmp_path, "hub", dhcp_port) + subnets_toml([1, 2, 3])
        + relationship(True, "site-a", "secondary", HUB, fo[HUB], PA, fo[PA], [1])
        + relationship(True, "site-b", "secondary", HUB, fo[HUB], PB, fo[PB], [2]))
    a_conf.write_text(
        server_toml(PA, tmp_path, "a", dhcp_port) + subnets_toml([1])
        + relationship(False, "site-a", "primary", PA, fo[PA], HUB, fo[HUB], None))
    b_conf.write_text(
        server_toml(PB, tmp_path, "b", dhcp_port) + subnets_toml([2])
        + relationship(False, "site-b", "primary", PB, fo[PB], HUB, fo[HUB], None))
    hub, a, b = Server(load(hub_conf)), Server(load(a_conf)), Server(load(b_conf))
    background.run(hub.start())
    try:
        links = hub.failover_links
        assert set(links) == {"site-a", "site-b"}
        assert all(isinstance(link, MuxedPeerLink) for link in links.values())
        background.run(a.start())
        background.run(b.start())
        wait_for(lambda: states(hub_conf) == {"site-a": "NORMAL", "site-b": "NORMAL"},
                 "both relationships NORMAL at the hub")
        wait_for(lambda: all(r["reserve"]["backup"] == 20
                             for r in status(hub_conf)["relationships"]),
                 "each relationship's reserve at the hub")
        reply = status(hub_conf)
        assert reply["failover"] is None  # several: see "relationships"
        rels = {r["name"]: r for r in reply["relationships"]}
        assert rels["site-a"]["subnets"] == [1] and rels["site-b"]["subnets"] == [2]
        assert all(r["connected"] and r["partner_state"] == "NORMAL" for r in rels.values())
        assert rels["site-a"]["reserve"] == {"free": 80, "backup": 20}
        # each primary sees one relationship, with the hub as its partner
        assert status(a_conf)["failover"]["name"] == "site-a"
        assert status(b_conf)["failover"]["state"] == "NORMAL"
        # each link carried its own partner's connection; the stranger was refused
        assert links["site-a"].stats["connections"] == 1
        assert links["site-b"].stats["connections"] == 1
        with socket.create_connection((HUB, fo[HUB]), timeout=5,
                                      source_address=(STRANGER, 0)) as s:
            s.settimeout(5)
            with contextlib.suppress(ConnectionResetError):  # reset: closed at once too
                assert s.recv(10) == b""  # closed at once
        wait_for(lambda: links["site-a"].stats["refused_not_partner"] == 1, "the refusal")
        text = runner.invoke(app, ["status", "-c", str(hub_conf)])
        assert text.exit_code == 0, text.output
        assert 'failover "site-a": secondary (standby), hot-standby, MCLT 300 s' in text.stdout
        assert 'failover "site-b": secondary (standby), hot-standby, MCLT 300 s' in text.stdout
        assert "  subnets:  1" in text.stdout and "  subnets:  2" in text.stdout

        # site A's primary goes away: only that relationship leaves NORMAL
        background.run(a.stop())
        wait_for(lambda: states(hub_conf) == {"site-a": "COMMUNICATIONS-INTERRUPTED",
                                              "site-b": "NORMAL"}, "site-a interrupted")
        result = runner.invoke(app, ["partner-down", "-c", str(hub_conf)])
        assert result.exit_code == 1
        assert "several failover relationships (site-a, site-b)" in result.stderr
        result = runner.invoke(app, ["partner-down", "-c", str(hub_conf), "-r", "site-b"])
        assert result.exit_code == 1 and "the partner is connected (NORMAL)" in result.stderr
        result = runner.invoke(app, ["partner-down", "-c", str(hub_conf), "-r", "nope"])
        assert result.exit_code == 1 and "no failover relationship named 'nope'" in result.stderr
        result = runner.invoke(app, ["partner-down", "-c", str(hub_conf), "-r", "site-a"])
        assert result.exit_code == 0, result.output
        assert result.stdout == "state: PARTNER-DOWN (was COMMUNICATIONS-INTERRUPTED)\n"
        assert states(hub_conf) == {"site-a": "PARTNER-DOWN", "site-b": "NORMAL"}
        # each relationship's state is stored under its own key
        meta = {k: hub.store.get_meta(f"failover.state/{k}") for k in ("site-a", "site-b")}
        assert all(v is not None for v in meta.values())
        assert hub.store.get_meta("failover.state") is None
    finally:
        for srv in (b, a, hub):
            background.run(srv.stop())


class HubTarget:
    """The control handler's view of a hub (a FailoverSet over the hub example)."""

    def __init__(self) -> None:
        from tandem.failover.policy import Policy
        from tandem.failover.relationships import FailoverSet
        from tandem.sim.server import MemoryStore, build_engine

        cfg = previous_on_startup_timeout(
            Path(__file__).resolve().parents[2] / "examples" / "hub-standby.toml")
        self.store = MemoryStore()
        engines: list[Any] = []

        def make_engine(policy: Policy) -> Any:
            engines.append(build_engine(cfg, policy, self.store, NOW))
            return engines[-1]

        self.fs = FailoverSet(cfg, self.store, NOW, make_engine)
        self.fs.handle_timer(NOW + 30)  # no partners: RECOVER for both
        self.engine = engines[0]
        self.stats: dict[str, int] = {}
        self.calls: list[str | None] = []

    @property
    def failover_peer(self) -> None:
        return None

    @property
    def failover_peers(self) -> dict[str, Any]:
        return self.fs.peers

    def partner_down(self, relationship: str | None = None) -> bool:
        self.calls.append(relationship)
        return self.fs.peers[relationship or ""].partner_down(NOW + 40)

    def on_failover_record(self, fn: Callable[[Any], None]) -> None:
        return None


NOW = 1_700_000_000.0


def test_control_handler_of_a_hub() -> None:
    from tandem.api.control import ControlHandler

    target = HubTarget()
    handler = ControlHandler(target)  # type: ignore[arg-type]
    status = handler.handle({"command": "status"}, NOW + 30)
    assert status["failover"] is None
    assert [(r["name"], r["subnets"], r["role"]) for r in status["relationships"]] == [
        ("site-a", [1], "secondary"), ("site-b", [2], "secondary")]
    assert handler.handle({"command": "partner-down"}, NOW) == {
        "ok": False, "error": "this server is in several failover relationships (site-a, "
        "site-b): name one (--relationship NAME)"}
    assert handler.handle({"command": "partner-down", "relationship": 3}, NOW) == {
        "ok": False, "error": 'bad request: "relationship" must be a string'}
    assert target.calls == []
    reply = handler.handle({"command": "partner-down", "relationship": "site-b"}, NOW)
    assert target.calls == ["site-b"]
    assert reply["relationship"] == "site-b" and reply["previous"] == "RECOVER"
    # the draft refuses partner-down in RECOVER: nothing changed, in either relationship
    assert reply["ok"] is False and reply["changed"] is False
    assert {r.name: r.peer.state.name for r in target.fs.relationships} == {
        "site-a": "RECOVER", "site-b": "RECOVER"}
