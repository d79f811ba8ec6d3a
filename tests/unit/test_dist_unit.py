"""dist/tandem.service: a dedicated user, exactly the two capabilities the server needs
(tests/e2e/test_unprivileged.py runs the server with these and nothing else), and the
hardening docs/security.md promises; systemd-analyze finds nothing but the install path."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "dist" / "tandem.service"


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_runs_as_a_dedicated_user_with_two_capabilities_and_no_way_to_more() -> None:
    s = settings()
    assert s["User"] == ["tandem"] and s["Group"] == ["tandem"]
    caps = {"CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
    assert set(s["AmbientCapabilities"][0].split()) == caps
    assert set(s["CapabilityBoundingSet"][0].split()) == caps
    assert s["NoNewPrivileges"] == ["yes"]


def test_only_the_state_and_runtime_directories_are_writable() -> None:
    s = settings()
    assert s["ProtectSystem"] == ["strict"]
    assert s["StateDirectory"] == ["tandem"] and s["RuntimeDirectory"] == ["tandem"]
    assert "ReadWritePaths" not in s
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"):
        assert s[key] == ["yes"], key
    assert set(s["RestrictAddressFamilies"][0].split()) <= {
        "AF_INET", "AF_PACKET", "AF_UNIX", "AF_NETLINK"}


def test_the_default_paths_match_the_unit() -> None:
    from tandem.config.schema import ServerSection, StoreSection

    assert StoreSection().path.startswith("/var/lib/tandem/")  # StateDirectory=tandem
    assert ServerSection().control_socket.startswith("/run/tandem/")  # RuntimeDirectory


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_finds_only_the_install_path() -> None:
    proc = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                          text=True, timeout=60, check=False)
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                if ln.strip() and "/opt/tandem/.venv/bin/tandem" not in ln]
    assert problems == [], problems
