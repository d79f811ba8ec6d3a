"""The benchmark's parsers (bench/dora.py): perfdhcp reports, lease files of the anchors."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import dora  # noqa: E402

PERFDHCP_RENEW = """\
Running: perfdhcp -4 -g single -l bench0 -r 1000 -R 25000 -p 3 -n 3000 -d 1 -f 1000
***Rate statistics***
Rate: 999.123 4-way exchanges/second, expected rate: 1000

***Statistics for: DISCOVER-OFFER***
sent packets: 2999
received packets: 2998
drops: 1
min delay: 0.050 ms
avg delay: 0.180 ms
max delay: 2.400 ms

***Statistics for: REQUEST-ACK***
sent packets: 2998
received packets: 2996
drops: 2
avg delay: 2.270 ms
max delay: 5.600 ms

***Statistics for: REQUEST-ACK (renewal)***
sent packets: 2993
received packets: 2991
drops: 2
avg delay: 1.000 ms
max delay: 3.000 ms
"""


def test_parse_perfdhcp_keeps_dora_and_renewal_sections_apart() -> None:
    parsed = dora.parse_perfdhcp(PERFDHCP_RENEW)
    assert parsed["rate"] == 999.123
    assert parsed["do"]["sent"] == 2999 and parsed["do"]["avg_ms"] == 0.18
    assert parsed["ra"]["received"] == 2996 and parsed["ra"]["max_ms"] == 5.6
    assert parsed["request_ack_renewal"] == {
        "sent": 2993.0, "received": 2991.0, "drops": 2.0, "avg_ms": 1.0, "max_ms": 3.0}


def test_dhcpd_lease_file_last_record_per_address_wins(tmp_path: Path) -> None:
    f = tmp_path / "dhcpd.leases"
    f.write_text(
        "lease 198.18.1.1 {\n  binding state active;\n  hardware ethernet 00:0c:01:02:03:04;\n}\n"
        "lease 198.18.1.2 {\n  binding state active;\n  hardware ethernet 00:0c:01:02:03:05;\n}\n"
        "lease 198.18.1.2 {\n  binding state free;\n}\n"
        "lease 198.18.1.3 {\n  binding state backup;\n}\n"
    )
    assert dora.dhcpd_bindings(f) == {("198.18.1.1", "00:0c:01:02:03:04")}


def test_kea_memfile_active_unexpired_last_line_wins(tmp_path: Path) -> None:
    later = int(time.time()) + 3600
    f = tmp_path / "leases4.csv"
    f.write_text(
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,"
        "hostname,state,user_context\n"
        f"198.18.1.1,00:0c:01:02:03:04,,3600,{later},1,0,0,,0,\n"
        f"198.18.1.2,00:0c:01:02:03:05,,3600,{later},1,0,0,,0,\n"
        f"198.18.1.2,00:0c:01:02:03:05,,3600,{later},1,0,0,,1,\n"  # then declined (1)
        f"198.18.1.3,00:0c:01:02:03:06,,3600,{int(time.time()) - 5},1,0,0,,0,\n"  # expired
    )
    assert dora.kea_memfile_bindings(f) == {("198.18.1.1", "00:0c:01:02:03:04")}


def test_binding_agreement_reports_what_the_standby_misses() -> None:
    got = dora.binding_agreement({(1, b"a"), (2, b"b")}, {(1, b"a"), (3, b"c")})
    assert got == {"primary_bindings": 2, "standby_bindings": 2, "standby_missing": 1,
                   "standby_extra": 1, "standby_has_all": False}


def test_the_rcvbuf_shim_gives_perfdhcps_udp_sockets_the_buffer(tmp_path: Path) -> None:
    """bench/shim/rcvbuf.c, preloaded as bench/dora.py preloads it into perfdhcp, raises the
    receive buffer of every AF_INET datagram socket and leaves other sockets alone."""
    import argparse
    import os
    import shutil
    import socket
    import subprocess

    import pytest

    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the shim")
    want = 1024 * 1024
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    if os.geteuid() != 0 and rmem_max < want:
        pytest.skip("not root (SO_RCVBUFFORCE) and net.core.rmem_max is below 1 MiB")
    lib = dora.build_rcvbuf_shim(tmp_path)
    assert lib is not None and lib.exists()
    opts = argparse.Namespace(client_rcvbuf=want, rcvbuf_shim=lib)
    env = {**os.environ, **(dora.client_env(opts) or {})}
    probe = (
        "import socket\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "print(u.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),"
        " t.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    udp, tcp = int(out[0]), int(out[1])
    assert udp >= want  # the kernel reports twice what was set
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert tcp == plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        plain.close()
    assert dora.client_env(argparse.Namespace(client_rcvbuf=0, rcvbuf_shim=lib)) is None


def test_interleave_needs_fixed_rates() -> None:
    import pytest

    with pytest.raises(SystemExit):
        dora.parse_args(["--interleave"])
    opts = dora.parse_args(["--interleave", "--rates", "1000,2000", "--systems", "tandem,kea"])
    assert opts.interleave and opts.rates == [1000, 2000]


def test_update_results_replaces_its_own_section_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Results\n\nsearch table\n\n"
                    "## Scale: 1 lease\n\nold\n")
    dora.update_results(path, ["## Single servers interleaved", "", "first", ""])
    dora.update_results(path, ["## Scale: 1 lease", "", "new", ""])
    dora.update_results(path, ["## Single servers interleaved", "", "second", ""])
    text = path.read_text()
    assert text.count("## Single servers interleaved") == 1
    assert "second" in text and "first" not in text
    assert "new" in text and "old" not in text
    assert text.index("## Results") < text.index("## Scale: 1 lease") < text.index("second")
    assert "search table" in text


def test_interleave_alternates_the_systems_and_drops_one_after_two_failed_rates(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """The orchestration of --interleave, without namespaces or perfdhcp: at each rate one
    trial of every system in turn; a system that failed two rates in a row is not tried
    higher; its sustained rate is its best passing one, its first failing the lowest."""
    import argparse
    import types

    capacity = {"a": 2000, "b": 1000}
    calls: list[tuple[str, int]] = []

    def fake_trial(system: Any, topo: Any, scenario: Any, rate: int, opts: Any,
                   workroot: Path) -> Any:
        calls.append((system.name, rate))
        return types.SimpleNamespace(rate=rate, passed=rate <= capacity[system.name])

    def fake_result(system: Any, scenario: Any, trials: list[Any], best: Any,
                    worst: int | None, stop: str) -> dict[str, Any]:
        return {"name": system.name, "rates": [t.rate for t in trials],
                "sustained_rate": best.rate if best is not None else 0, "worst": worst,
                "stop": stop}

    monkeypatch.setattr(dora, "make_topology", lambda system: object())
    monkeypatch.setattr(dora, "remove_topology", lambda topo: None)
    monkeypatch.setattr(dora, "run_trial", fake_trial)
    monkeypatch.setattr(dora, "search_result", fake_result)
    scenario = dora.SCENARIOS["dora"]
    jobs: Any = [(types.SimpleNamespace(name="a"), scenario),
                 (types.SimpleNamespace(name="b"), scenario)]
    opts = argparse.Namespace(rates=[500, 1000, 1500, 2000, 2500, 3000], duration=1, repeat=1)
    a, b = dora.interleaved(jobs, opts, tmp_path, time.monotonic() + 3600)
    assert calls[:6] == [("a", 500), ("b", 500), ("a", 1000), ("b", 1000), ("a", 1500),
                         ("b", 1500)]
    assert b == {"name": "b", "rates": [500, 1000, 1500, 2000], "sustained_rate": 1000,
                 "worst": 1500, "stop": "fixed rates, interleaved"}
    assert a["rates"] == [500, 1000, 1500, 2000, 2500, 3000]
    assert (a["sustained_rate"], a["worst"]) == (2000, 2500)
    assert ("b", 2500) not in calls
