"""The server under test: Tandem (``tandem serve -c FILE``) or, with
``TANDEM_E2E_SERVER=kea``, kea-dhcp4 as a stand-in that proves the harness itself.

Tests describe the server neutrally (:class:`ServerSpec`); each driver renders its own
configuration and reads its own lease store back as :class:`StoredLease` records.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .netns import Netns, Proc, wait_for

ROOT = Path(__file__).resolve().parents[2]
TANDEM = ROOT / ".venv" / "bin" / "tandem"


def server_kind() -> str:
    kind = os.environ.get("TANDEM_E2E_SERVER", "tandem").strip().lower()
    if kind not in ("tandem", "kea"):
        raise ValueError(f"TANDEM_E2E_SERVER must be 'tandem' or 'kea', not {kind!r}")
    return kind


@dataclass(frozen=True)
class SubnetSpec:
    prefix: str
    pool: tuple[str, str]
    lease_time_s: int = 3600
    renew_time_s: int | None = None
    rebind_time_s: int | None = None
    relay_addresses: tuple[str, ...] = ()
    routers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerSpec:
    server_id: str
    interface: str
    subnets: tuple[SubnetSpec, ...]


@dataclass(frozen=True)
class StoredLease:
    address: str
    hwaddr: str  # "aa:bb:cc:dd:ee:ff", lower case, "" when none
    state: str  # Tandem BindingState name: ACTIVE, RELEASED, FREE, ...
    raw: dict[str, object] = field(default_factory=dict, compare=False)


def _norm_mac(value: object) -> str:
    text = str(value or "").strip().lower().replace("-", ":")
    if text and ":" not in text and len(text) % 2 == 0:
        text = ":".join(text[i : i + 2] for i in range(0, len(text), 2))
    return text


class Server:
    kind = "?"

    def __init__(self, ns: Netns, spec: ServerSpec, workdir: Path):
        self.ns = ns
        self.spec = spec
        self.workdir = workdir
        self.proc: Proc | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def start(self, timeout: float = 30) -> None:
        self.starts += 1
        self.proc = self.ns.spawn(
            f"server-{self.kind}-{self.starts}", *self.command(), env=self.env()
        )
        proc = self.proc
        wait_for(
            lambda: (not proc.alive()) or self.ns.udp_bound(67),
            timeout,
            f"{self.kind} to bind UDP port 67",
        )
        if not proc.alive():
            raise RuntimeError(f"{self.kind} exited at start:\n{proc.tail(40)}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def log_tail(self, lines: int = 40) -> str:
        return self.proc.tail(lines) if self.proc else ""

    def leases(self) -> list[StoredLease]:
        raise NotImplementedError


# --- Tandem --------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _toml_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


class TandemServer(Server):
    kind = "tandem"

    def __init__(self, ns: Netns, spec: ServerSpec, workdir: Path):
        super().__init__(ns, spec, workdir)
        self.config_path = workdir / "tandem.toml"
        self.store_path = workdir / "leases.sqlite"
        self.config_path.write_text(self.render())

    def render(self) -> str:
        s = self.spec
        out = [
            "[server]",
            f"server_id = {_toml_str(s.server_id)}",
            f"interfaces = {_toml_list([s.interface])}",
            f"control_socket = {_toml_str(str(self.workdir / 'control.sock'))}",
            "",
            "[store]",
            f"path = {_toml_str(str(self.store_path))}",
            "",
            "[lease]",
            "min_lease_time_s = 10",
            "",
        ]
        for sub in s.subnets:
            out += [
                "[[subnets]]",
                f"prefix = {_toml_str(sub.prefix)}",
                f"pools = [{{ start = {_toml_str(sub.pool[0])}, end = {_toml_str(sub.pool[1])} }}]",
                f"lease_time_s = {sub.lease_time_s}",
            ]
            if sub.renew_time_s is not None:
                out.append(f"renew_time_s = {sub.renew_time_s}")
            if sub.rebind_time_s is not None:
                out.append(f"rebind_time_s = {sub.rebind_time_s}")
            if sub.relay_addresses:
                out.append(f"relay_addresses = {_toml_list(sub.relay_addresses)}")
            if sub.routers:
                out += ["[subnets.options]", f"routers = {_toml_list(sub.routers)}"]
            out.append("")
        return "\n".join(out)

    def command(self) -> list[str]:
        return [str(TANDEM), "serve", "-c", str(self.config_path)]

    def start(self, timeout: float = 30) -> None:
        super().start(timeout)
        # the server runs the build this test run claims to test (make test-compiled runs
        # some of these tests with PYTHONPATH=build/compiled, which the server inherits)
        proc = self.proc
        assert proc is not None
        wait_for(lambda: "SERVER_STARTED" in proc.output() or not proc.alive(), 10,
                 "tandem to log SERVER_STARTED")
        started = [x for x in proc.output().splitlines() if "SERVER_STARTED" in x]
        build = "compiled" if os.environ.get("TANDEM_EXPECT_COMPILED") == "1" else "pure"
        assert started and f"build={build}" in started[-1], started

    def leases(self) -> list[StoredLease]:
        proc = subprocess.run(
            [str(TANDEM), "leases", "-c", str(self.config_path), "--json", "--all"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"tandem leases failed ({proc.returncode}): {proc.stderr}")
        data = json.loads(proc.stdout)
        if isinstance(data, dict):  # {"leases": [...]} or similar
            data = data.get("leases", data)
        result = []
        for row in data:
            state = row.get("state", row.get("binding_state", ""))
            if isinstance(state, int):
                from tandem.leases.model import BindingState

                state = BindingState(state).name
            result.append(
                StoredLease(
                    address=str(row.get("address") or row.get("ip_address")),
                    hwaddr=_norm_mac(row.get("mac", row.get("hwaddr", ""))),
                    state=str(state).upper().split(".")[-1],
                    raw=row,
                )
            )
        return result


# --- kea-dhcp4 (stand-in) --------------------------------------------------------------


class KeaServer(Server):
    kind = "kea"

    def __init__(self, ns: Netns, spec: ServerSpec, workdir: Path):
        super().__init__(ns, spec, workdir)
        self.config_path = workdir / "kea-dhcp4.json"
        self.lease_file = workdir / "kea-leases4.csv"
        self.run_dir = workdir / "kea-run"
        self.run_dir.mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self.render(), indent=2))

    def render(self) -> dict[str, object]:
        s = self.spec
        subnets = []
        for i, sub in enumerate(s.subnets, 1):
            entry: dict[str, object] = {
                "id": i,
                "subnet": sub.prefix,
                "pools": [{"pool": f"{sub.pool[0]} - {sub.pool[1]}"}],
                "valid-lifetime": sub.lease_time_s,
            }
            if sub.renew_time_s is not None:
                entry["renew-timer"] = sub.renew_time_s
            if sub.rebind_time_s is not None:
                entry["rebind-timer"] = sub.rebind_time_s
            if sub.relay_addresses:
                entry["relay"] = {"ip-addresses": list(sub.relay_addresses)}
            if sub.routers:
                entry["option-data"] = [{"name": "routers", "data": ", ".join(sub.routers)}]
            subnets.append(entry)
        return {
            "Dhcp4": {
                "interfaces-config": {"interfaces": [s.interface], "dhcp-socket-type": "raw"},
                "lease-database": {
                    "type": "memfile",
                    "persist": True,
                    "name": str(self.lease_file),
                    "lfc-interval": 0,
                },
                "server-tag": "tdm-e2e",
                "subnet4": subnets,
                "loggers": [
                    {
                        "name": "kea-dhcp4",
                        "severity": "INFO",
                        "output_options": [{"output": "stdout"}],
                    }
                ],
            }
        }

    def command(self) -> list[str]:
        return ["kea-dhcp4", "-c", str(self.config_path)]

    def env(self) -> dict[str, str]:
        return {"KEA_PIDFILE_DIR": str(self.run_dir), "KEA_LOCKFILE_DIR": str(self.run_dir)}

    def leases(self) -> list[StoredLease]:
        latest: dict[str, StoredLease] = {}
        if not self.lease_file.exists():
            return []
        with self.lease_file.open() as fh:
            for row in csv.DictReader(fh):
                # memfile appends; the last row per address wins. A deleted (released)
                # lease is written with valid_lifetime 0; state 2 is expired-reclaimed.
                if row["valid_lifetime"] == "0" or row["state"] == "2":
                    state = "RELEASED"
                elif row["state"] == "1":
                    state = "ABANDONED"
                else:
                    state = "ACTIVE"
                latest[row["address"]] = StoredLease(
                    row["address"], _norm_mac(row["hwaddr"]), state, dict(row)
                )
        return list(latest.values())


def make_server(ns: Netns, spec: ServerSpec, workdir: Path) -> Server:
    if server_kind() == "kea":
        return KeaServer(ns, spec, workdir)
    return TandemServer(ns, spec, workdir)
