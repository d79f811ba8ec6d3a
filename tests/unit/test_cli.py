"""The command line: exit codes, problem listings, the lease table (real files in tmp_path)."""

from __future__ import annotations

import json
import logging
import sys
import time
import types
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from _build import EXPECT_COMPILED
from typer.testing import CliRunner

import tandem
from tandem import __version__
from tandem.build import HOT_MODULES
from tandem.cli import app
from tandem.config import Config
from tandem.leases.model import BindingState, Lease
from tandem.store.sqlite import SqliteLeaseStore

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

GOOD = """
[store]
path = "{store}"

[[subnets]]
prefix = "192.0.2.0/24"
pools = [{{ start = "192.0.2.10", end = "192.0.2.109" }}]
exclusions = [{{ start = "192.0.2.50", end = "192.0.2.59" }}]

[[subnets]]
prefix = "198.51.100.0/24"
pools = [{{ start = "198.51.100.10", end = "198.51.100.19" }}]
"""

BAD = """
colour = "blue"
[[subnets]]
prefix = "192.0.2.0/24"
pools = [{ start = "192.0.2.50", end = "192.0.2.10" }]
reservations = [{ ip_address = "198.51.100.1", hw_address = "00:11:22:33:44:55" }]
"""


def write(tmp_path: Path, text: str, name: str = "tandem.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def good_config(tmp_path: Path) -> Path:
    return write(tmp_path, GOOD.format(store=tmp_path / "leases.db"))


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    hot = len(HOT_MODULES)  # test_compiled_build checks this list against the Makefile's
    build = f"compiled with mypyc: {hot} hot modules" if EXPECT_COMPILED else "pure Python"
    assert result.stdout.strip() == f"tandem {__version__} ({build})"


def test_check_config_ok(tmp_path: Path) -> None:
    path = good_config(tmp_path)
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "OK: 2 subnets, 100 pool addresses"
    assert not (tmp_path / "leases.db").exists()  # checking creates nothing


@pytest.mark.parametrize("name", ["tandem.toml", "relay.toml"])
def test_check_config_examples(name: str) -> None:
    result = runner.invoke(app, ["check-config", str(ROOT / "examples" / name)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 2 subnets, ")


def test_check_config_lists_every_problem_prefixed_by_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{path}: colour: unknown setting"]
    path = write(tmp_path, BAD.replace('colour = "blue"\n', ""))
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}: subnets[0].pools[0]: start 192.0.2.50 is after end 192.0.2.10",
        f"{path}: subnets[0].reservations[0].ip_address: 198.51.100.1 is outside 192.0.2.0/24",
    ]


def test_check_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 1
    assert result.stdout.strip() == f"{path}: cannot read file: No such file or directory"


def test_check_config_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = \n")
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 1
    assert result.stdout.strip() == f"{path}: line 2, column 8: TOML syntax error: invalid value"


def fake_service(monkeypatch: pytest.MonkeyPatch, run: Callable[[Config], int]) -> None:
    """Stand in for ``tandem.service`` (the CLI imports it inside ``serve``), so these tests
    exercise only the CLI and do not depend on the service's own imports."""
    module = types.ModuleType("tandem.service")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tandem.service", module)
    monkeypatch.setattr(tandem, "service", module, raising=False)


def test_serve_with_bad_config_exits_2_without_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[Config] = []

    def fake_run(cfg: Config) -> int:
        called.append(cfg)
        return 0

    fake_service(monkeypatch, fake_run)
    path = write(tmp_path, BAD.replace('colour = "blue"\n', ""))
    result = runner.invoke(app, ["serve", "-c", str(path)])
    assert result.exit_code == 2
    assert called == []
    assert f"{path}: subnets[0].pools[0]: start 192.0.2.50 is after end 192.0.2.10" in (
        result.stderr.splitlines()
    )
    assert len(result.stderr.splitlines()) == 2


def test_serve_runs_the_service_and_returns_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[Config] = []

    def fake_run(cfg: Config) -> int:
        called.append(cfg)
        return 3

    fake_service(monkeypatch, fake_run)
    logger = logging.getLogger("tandem")
    old_level = logger.level
    try:
        result = runner.invoke(
            app, ["serve", "--config", str(good_config(tmp_path)), "--log-level", "warning"]
        )
        assert logger.level == logging.WARNING, (result.output, result.exception)
    finally:
        logger.setLevel(old_level)
    assert result.exit_code == 3, result.output
    assert len(called) == 1
    assert called[0].subnets[1].prefix.exploded == "198.51.100.0/24"


def test_serve_rejects_unknown_log_level(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "-c", str(good_config(tmp_path)), "--log-level", "loud"])
    assert result.exit_code == 2


# ---- leases


def lease(address: str, state: BindingState, end: float, **kw: object) -> Lease:
    return Lease(
        address=IPv4Address(address),
        subnet_id=1,
        state=state,
        start=end - 3600,
        end=end,
        cltt=end - 3600,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def store_config(tmp_path: Path) -> tuple[Path, float]:
    now = time.time()
    store = SqliteLeaseStore(str(tmp_path / "leases.db"))
    try:
        store.commit(
            [
                lease(
                    "192.0.2.20",
                    BindingState.ACTIVE,
                    now + 7200,
                    hwaddr=bytes.fromhex("001122334455"),
                    hostname="alpha",
                ),
                lease(
                    "192.0.2.3",
                    BindingState.ACTIVE,
                    now + 90000,
                    hwaddr=bytes.fromhex("00112233aabb"),
                    client_id=bytes.fromhex("0100112233aabb"),
                ),
                lease("192.0.2.9", BindingState.ACTIVE, now - 60, hwaddr=b"\x02" * 6),
                lease("192.0.2.100", BindingState.FREE, 0.0 + 3600),
            ]
        )
    finally:
        store.close()
    return good_config(tmp_path), now


def test_leases_table_shows_active_leases_sorted_by_address(
    store_config: tuple[Path, float],
) -> None:
    path, now = store_config
    result = runner.invoke(app, ["leases", "-c", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for header in (
        "address",
        "state",
        "MAC",
        "client-id",
        "hostname",
        "starts",
        "ends",
        "remaining",
    ):
        assert header in out
    rows = [line for line in out.splitlines() if "192.0.2." in line]
    assert len(rows) == 2
    assert "192.0.2.3 " in rows[0] and "192.0.2.20 " in rows[1]  # numeric, not text order
    assert "00:11:22:33:aa:bb" in rows[0] and "01:00:11:22:33:aa:bb" in rows[0]
    assert "00:11:22:33:44:55" in rows[1] and "alpha" in rows[1] and "active" in rows[1]
    end_local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now + 7200))
    assert end_local in rows[1]
    # remaining is rounded up to the second; allow for a slow machine between commit and read
    assert "1d 1:00:00" in rows[0] or "1d 0:59:5" in rows[0]
    assert "2:00:00" in rows[1] or "1:59:5" in rows[1]
    assert "2 active leases" in out


def test_leases_all_includes_expired_and_free(store_config: tuple[Path, float]) -> None:
    path, _ = store_config
    result = runner.invoke(app, ["leases", "-c", str(path), "--all"])
    assert result.exit_code == 0, result.output
    rows = [line.split()[1] for line in result.stdout.splitlines() if "192.0.2." in line]
    assert rows == ["192.0.2.3", "192.0.2.9", "192.0.2.20", "192.0.2.100"]


def test_leases_json(store_config: tuple[Path, float]) -> None:
    path, now = store_config
    result = runner.invoke(app, ["leases", "-c", str(path), "--json", "--all"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["address"] for d in data] == ["192.0.2.3", "192.0.2.9", "192.0.2.20", "192.0.2.100"]
    first = data[0]
    assert first["state"] == "active"
    assert first["mac"] == "00:11:22:33:aa:bb"
    assert first["client_id"] == "01:00:11:22:33:aa:bb"
    assert first["ends"] == pytest.approx(now + 90000)
    assert 89000 < first["remaining_s"] <= 90000
    assert data[1]["remaining_s"] == 0
    result = runner.invoke(app, ["leases", "-c", str(path), "--json"])
    assert [d["address"] for d in json.loads(result.stdout)] == ["192.0.2.3", "192.0.2.20"]


def test_leases_without_a_store_does_not_create_one(tmp_path: Path) -> None:
    path = good_config(tmp_path)
    result = runner.invoke(app, ["leases", "-c", str(path)])
    assert result.exit_code == 1
    assert "no lease store at" in result.stderr
    assert not (tmp_path / "leases.db").exists()


def test_leases_empty_store(tmp_path: Path) -> None:
    SqliteLeaseStore(str(tmp_path / "leases.db")).close()
    result = runner.invoke(app, ["leases", "-c", str(good_config(tmp_path))])
    assert result.exit_code == 0
    assert result.stdout.strip() == "no active leases"


def test_leases_damaged_store_exits_1(tmp_path: Path) -> None:
    (tmp_path / "leases.db").write_bytes(b"this is not a database" * 100)
    result = runner.invoke(app, ["leases", "-c", str(good_config(tmp_path))])
    assert result.exit_code == 1
    assert "cannot read the lease store" in result.stderr


def test_leases_with_bad_config_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["leases", "-c", str(write(tmp_path, BAD))])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{tmp_path / 'tandem.toml'}: colour: unknown setting"


# ---- check-config --partner (failover)

PRIMARY_FO = """
[[subnets]]
prefix = "192.0.2.0/24"
pools = [{ start = "192.0.2.100", end = "192.0.2.199" }]

[failover]
name = "pair"
role = "primary"
listen_address = "192.0.2.2"
peer_address = "192.0.2.3"
mclt_s = 300
"""

SECONDARY_FO = (
    PRIMARY_FO.replace('"primary"', '"secondary"')
    .replace('listen_address = "192.0.2.2"', 'listen_address = "192.0.2.X"')
    .replace('peer_address = "192.0.2.3"', 'peer_address = "192.0.2.2"')
    .replace("192.0.2.X", "192.0.2.3")
)


def test_check_config_partner_examples_pass_together() -> None:
    primary = ROOT / "examples" / "hot-standby-primary.toml"
    standby = ROOT / "examples" / "hot-standby-standby.toml"
    result = runner.invoke(app, ["check-config", str(primary), "--partner", str(standby)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f'OK: {primary} (primary) and {standby} (secondary) are partners in "lan-hot-standby" '
        "(hot-standby, 1 shared subnet, 100 pool addresses)"
    ]
    result = runner.invoke(app, ["check-config", str(standby), "--partner", str(primary)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: {standby} (secondary) and {primary} (primary) ")


@pytest.mark.parametrize("name", ["hot-standby-primary.toml", "hot-standby-standby.toml"])
def test_check_config_single_failover_file_names_the_relationship(name: str) -> None:
    result = runner.invoke(app, ["check-config", str(ROOT / "examples" / name)])
    assert result.exit_code == 0, result.output
    role = "primary" if "primary" in name else "secondary"
    assert result.stdout.splitlines() == [
        f'OK: 1 subnet, 100 pool addresses; failover "lan-hot-standby" as {role} '
        "(hot-standby, 1 shared subnet, 100 pool addresses)"
    ]


def test_check_config_partner_mismatches_exit_1_with_every_line(tmp_path: Path) -> None:
    a = write(tmp_path, PRIMARY_FO, "a.toml")
    b = write(
        tmp_path,
        SECONDARY_FO.replace("mclt_s = 300", "mclt_s = 600").replace('"pair"', '"pear"'),
        "b.toml",
    )
    result = runner.invoke(app, ["check-config", str(a), "--partner", str(b)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f'failover.name: "pair" in {a}, "pear" in {b}; must be the same on both partners',
        f"failover.mclt_s: 300 in {a}, 600 in {b}; must be the same on both partners",
    ]


def test_check_config_partner_agrees_exit_0(tmp_path: Path) -> None:
    a = write(tmp_path, PRIMARY_FO, "a.toml")
    b = write(tmp_path, SECONDARY_FO, "b.toml")
    result = runner.invoke(app, ["check-config", str(a), "--partner", str(b)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f'OK: {a} (primary) and {b} (secondary) are partners in "pair" '
        "(hot-standby, 1 shared subnet, 100 pool addresses)"
    ]


def test_check_config_partner_lists_both_files_problems_and_does_not_compare(
    tmp_path: Path,
) -> None:
    a = write(tmp_path, PRIMARY_FO.replace("mclt_s = 300", "mclt_s = 0"), "a.toml")
    b = write(tmp_path, SECONDARY_FO + 'shared_secret = "hunter2"\n', "b.toml")
    result = runner.invoke(app, ["check-config", str(a), "--partner", str(b)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{a}: failover.mclt_s: must be at least 1, got 0",
        f"{b}: failover.shared_secret: is 7 bytes long; use at least 8",
    ]
    assert "hunter2" not in result.output


def test_check_config_partner_one_bad_file(tmp_path: Path) -> None:
    a = write(tmp_path, PRIMARY_FO, "a.toml")
    missing = tmp_path / "absent.toml"
    result = runner.invoke(app, ["check-config", str(a), "--partner", str(missing)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{missing}: cannot read file: No such file or directory"]


def test_check_config_partner_without_failover_section(tmp_path: Path) -> None:
    a = write(tmp_path, PRIMARY_FO, "a.toml")
    path = good_config(tmp_path)
    result = runner.invoke(app, ["check-config", str(a), "--partner", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"failover: {path} has no [failover] section"]
