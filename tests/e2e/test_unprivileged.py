"""The server runs without full root (docs/security.md): a hot-standby pair of real
``tandem serve`` processes, each started as ``nobody:nogroup`` with only CAP_NET_BIND_SERVICE
and CAP_NET_RAW (ambient, bounding set reduced to those two, no-new-privs) -- what
dist/tandem.service gives the dedicated user. Both bind UDP 67 and TCP 647 in their
namespaces, talk failover over mutual TLS (certificates made with ``openssl`` here), reach
NORMAL, and the primary answers a real client (udhcpc).

Topology: LAN 192.0.2.0/24 (bridge in "lan"), failover link 198.51.100.0/24 (a veth pair).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .clients import BOUND_EVENTS, Udhcpc
from .conftest import require
from .netns import Lab, Netns, wait_for
from .servers import TANDEM, ServerSpec, SubnetSpec, TandemServer

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

USER, GROUP = "nobody", "nogroup"
UNIT = Path(__file__).resolve().parents[2] / "dist" / "tandem.service"
_CAP_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13}


def unit_caps() -> list[str]:
    """The capabilities dist/tandem.service grants (the test runs with exactly those)."""
    (line,) = [ln for ln in UNIT.read_text().splitlines()
               if ln.startswith("AmbientCapabilities=")]
    return line.split("=", 1)[1].split()


CAPS = ",".join(c.removeprefix("CAP_").lower() for c in unit_caps())
CAP_MASK = sum(1 << _CAP_BITS[c] for c in unit_caps())
LAN_IP = {"primary": "192.0.2.2", "secondary": "192.0.2.3"}
FO_IP = {"primary": "198.51.100.2", "secondary": "198.51.100.3"}
STATE_LINE = re.compile(r"FAILOVER_STATE_CHANGED from=(\S+) to=(\S+)")


def setpriv_argv() -> list[str]:
    caps = ",".join(f"+{c}" for c in CAPS.split(","))
    return ["setpriv", f"--reuid={USER}", f"--regid={GROUP}", "--clear-groups",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
            f"--bounding-set=-all,{caps}", "--no-new-privs", "--"]


class UnprivilegedServer(TandemServer):
    """A pair member whose files live in a directory the unprivileged user owns."""

    def __init__(self, ns: Netns, role: str, home: Path, logs: Path):
        self.role = role
        self.kind = role
        self.home = home
        spec = ServerSpec(LAN_IP[role], "eth0",
                          (SubnetSpec("192.0.2.0/24", ("192.0.2.100", "192.0.2.149"), 60),))
        super().__init__(ns, spec, home)

    def render(self) -> str:
        partner = "secondary" if self.role == "primary" else "primary"
        return super().render() + "\n".join([
            "",
            "[failover]",
            'name = "tdm-e2e-unprivileged"',
            f'role = "{self.role}"',
            f'listen_address = "{FO_IP[self.role]}"',
            f'peer_address = "{FO_IP[partner]}"',
            "mclt_s = 10",
            f'tls_cert_file = "{self.home}/{self.role}.crt"',
            f'tls_key_file = "{self.home}/{self.role}.key"',
            f'tls_ca_file = "{self.home}/{partner}.crt"',
            "",
        ])

    def command(self) -> list[str]:
        return [*setpriv_argv(), str(TANDEM), "serve", "-c", str(self.config_path)]

    def reached(self, state: str) -> bool:
        assert self.proc is not None
        return any(to == state for _f, to in STATE_LINE.findall(self.proc.output()))


def make_cert(directory: Path, name: str) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(directory / f"{name}.key"), "-out",
         str(directory / f"{name}.crt"), "-days", "2", "-subj", f"/CN={name}"],
        check=True, capture_output=True, timeout=30,
    )


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_unprivileged_pair_binds_67_and_647_over_tls_and_answers_a_client(lab: Lab) -> None:
    require("setpriv", "openssl", "udhcpc")
    nobody = pwd.getpwnam(USER)
    # pytest's tmp dirs are root-only (0700): the servers' homes live in a /tmp dir of ours
    base = Path(tempfile.mkdtemp(prefix="tdm-e2e-priv-", dir="/tmp"))
    lab.on_close(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    lan = lab.netns("lan")
    lab.bridge(lan)
    servers: dict[str, UnprivilegedServer] = {}
    nss: dict[str, Netns] = {}
    for role in ("primary", "secondary"):
        nss[role] = ns = lab.netns(role[:4])
        lab.plug(lan, "br0", ns, address=f"{LAN_IP[role]}/24")
    nss["primary"].ip("link", "add", "fo0", "type", "veth", "peer", "name", "fo0",
                      "netns", nss["secondary"].name)
    for role, ns in nss.items():
        ns.ip("addr", "add", f"{FO_IP[role]}/24", "dev", "fo0")
        ns.ip("link", "set", "fo0", "up")
    for role in ("primary", "secondary"):
        make_cert(base, role)
    for role in ("primary", "secondary"):
        home = base / role
        home.mkdir()
        for other in ("primary", "secondary"):
            shutil.copy(base / f"{other}.crt", home / f"{other}.crt")
        shutil.copy(base / f"{role}.key", home / f"{role}.key")
        servers[role] = UnprivilegedServer(nss[role], role, home, lab.workdir)
        for path in (home, *home.iterdir()):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        (home / f"{role}.key").chmod(0o600)
    cns = lab.netns("cli")
    lab.plug(lan, "br0", cns, mac="02:00:00:e2:e2:01")
    try:
        for role in ("secondary", "primary"):
            servers[role].start()  # waits for UDP 67 to be bound
        for role, srv in servers.items():
            assert srv.proc is not None
            st = proc_status(srv.proc.pid)
            assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, st["Uid"]
            assert st["Gid"].split() == [str(nobody.pw_gid)] * 4, st["Gid"]
            for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
                assert int(st[key], 16) == CAP_MASK, (role, key, st[key])
            assert st["NoNewPrivs"] == "1"
            assert srv.ns.udp_bound(67), f"{role}: UDP 67 not bound"
            ns = srv.ns
            wait_for(lambda ns=ns, role=role: f"{FO_IP[role]}:647" in ns.sh(  # type: ignore[misc]
                "ss", "-H", "-t", "-l", "-n", "sport = :647"), 20, f"{role} to listen on 647")
        wait_for(lambda: all(s.reached("NORMAL") for s in servers.values()), 90,
                 "both unprivileged servers to reach NORMAL over TLS")
        for srv in servers.values():
            assert srv.proc is not None
            assert "tls=True" in srv.proc.output() or "tls=true" in srv.proc.output()
        client = Udhcpc(cns, base)
        client.start()
        ev = client.wait_event(BOUND_EVENTS, 60)
        assert ev.address.startswith("192.0.2.1"), ev
        leases = {le.address: le for le in servers["primary"].leases()}
        assert ev.address in leases and leases[ev.address].state == "ACTIVE"
    except BaseException:
        for role, srv in servers.items():
            print(f"--- {role}\n{srv.log_tail(60)}")
        raise
