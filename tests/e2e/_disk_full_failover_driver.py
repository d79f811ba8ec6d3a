"""Failover-state disk-full driver for tests/e2e/test_disk_full.py; run as root inside a
private mount namespace (``unshare --mount --propagation private``).

``python _disk_full_failover_driver.py WORKDIR`` mounts a 2 MiB tmpfs on WORKDIR/fs (visible
only in this namespace; gone with it) and puts the lease store of a hot-standby *secondary*
there, whose stored failover state says NORMAL (a restart after an outage of the primary,
which is not there: nothing listens at its address). STARTUP ends (shortened to 1 s here)
in COMMUNICATIONS-INTERRUPTED; the automatic switchover to PARTNER-DOWN is due 6 s later.
Before then the file system is filled until SQLite cannot write. The switchover must not
happen while its state cannot be recorded: the server stays in COMMUNICATIONS-INTERRUPTED
with the FAILOVER_STATE_WRITE_FAILED alarm; once the filler is deleted the same process
records PARTNER-DOWN and enters it. Prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from _disk_full_driver import fill  # the sibling driver (this script's directory is on sys.path)

from tandem.api.control import ControlHandler
from tandem.config import Config, Pool, ServerSection, StoreSection, Subnet
from tandem.config.schema import FailoverSection
from tandem.errors import StoreError
from tandem.failover.machine import FailoverMachine
from tandem.failover.peer import META_STATE_KEY
from tandem.service import Server
from tandem.store import open_store
from tandem.wire.failover import ServerState

ME, PARTNER = "127.0.0.1", "127.0.0.3"
FS_SIZE = "2m"
SWITCHOVER_S = 6


class Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), record.levelno))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ME, 0))
        return int(s.getsockname()[1])


def stored_state(cfg: Config) -> int | None:
    st = open_store(cfg.store)
    try:
        raw = st.get_meta(META_STATE_KEY)
    finally:
        st.close()
    return int(json.loads(raw)["state"]) if raw else None


async def until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)  # polling state the server's own timers change
    return True


async def main(workdir: Path) -> dict[str, Any]:
    fs = workdir / "fs"
    fs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tandem-test",
                    str(fs)], check=True)
    cfg = Config(
        server=ServerSection(listen_address=IPv4Address(ME), port=16767, client_port=16768,
                             raw_replies=False, control_socket=""),
        store=StoreSection(path=str(fs / "leases.db")),
        subnets=[Subnet(id=1, prefix=IPv4Network("192.0.2.0/24"),
                        pools=[Pool(start=IPv4Address("192.0.2.10"),
                                    end=IPv4Address("192.0.2.250"))])],
        failover=FailoverSection(
            name="disk-full", role="secondary", listen_address=IPv4Address(ME),
            listen_port=free_port(), peer_address=IPv4Address(PARTNER), mclt_s=300,
            state_switchover_interval_s=SWITCHOVER_S, startup_timeout_action="previous"),
    )
    # the previous run ended in NORMAL (so STARTUP leads to COMMUNICATIONS-INTERRUPTED)
    st = open_store(cfg.store)
    try:
        st.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.NORMAL),
                                                "since": time.time() - 1000}))
    finally:
        st.close()
    # STARTUP is 15 s (not configurable): 1 s here, to keep the test short; on its timeout
    # the driver resumes the previous state ("previous") to reach COMMUNICATIONS-INTERRUPTED
    defaults = FailoverMachine.__init__.__kwdefaults__
    assert defaults is not None
    defaults["startup_s"] = 1.0
    handler = Events()
    logging.getLogger("tandem").addHandler(handler)
    logging.getLogger("tandem").setLevel(logging.INFO)
    server = Server(cfg)
    await server.start()
    control = ControlHandler(server)
    out: dict[str, Any] = {}
    try:
        peer = server.failover_peer
        assert peer is not None
        ci = ServerState.COMMUNICATIONS_INTERRUPTED
        if not await until(lambda: peer.state is ci, 10):
            out["error"] = f"never reached COMMUNICATIONS-INTERRUPTED ({peer.state.name})"
            return out
        ci_since = time.monotonic()
        out["filler_bytes"] = fill(fs / "filler", leave_free=0)
        # use up what SQLite can still write (WAL slack) with throw-away meta rows
        probes = 0
        for n in range(2000):
            try:
                server.store.set_meta(f"test.filler.{n}", "x" * 8192)
            except StoreError as exc:
                out["probe_error"] = str(exc)
                break
            probes += 1
        out["probe_writes"] = probes
        df = os.statvfs(fs)
        out["free_bytes_while_full"] = df.f_bavail * df.f_frsize
        if time.monotonic() - ci_since > SWITCHOVER_S - 1:
            out["error"] = "filling took longer than the switchover interval"
            return out
        # the switchover comes due while the disk is full
        m = peer.m
        if not await until(lambda: m.persist_failing_since is not None, SWITCHOVER_S + 3):
            out["error"] = f"no failed state write (state {peer.state.name})"
            return out
        await asyncio.sleep(2.5)  # retries keep failing; the state stays
        out["state_while_full"] = peer.state.name
        out["status_while_full"] = control.status(time.time())["failover"]
        out["counters_while_full"] = {
            k: v for k, v in control.status(time.time())["counters"].items()
            if k.startswith("failover_state_write")}
        out["persist_failures_while_full"] = m.persist_failures
        # space returns: the same process records PARTNER-DOWN and enters it
        os.unlink(fs / "filler")
        pd = ServerState.PARTNER_DOWN
        out["partner_down_after_space"] = await until(lambda: peer.state is pd, 5)
        out["status_after"] = control.status(time.time())["failover"]["state_write"]
        out["recoveries"] = m.persist_recoveries
    finally:
        await server.stop()
        out["stored_state_after"] = stored_state(cfg)
        out["events"] = [(line.split()[0], level) for line, level in handler.lines
                         if line.startswith(("FAILOVER_STATE_WRITE", "INTERNAL_ERROR"))]
        subprocess.run(["umount", str(fs)], check=False)
    return out


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1])))
    print(json.dumps(result, default=str))
