"""Several failover relationships in one config (``[[failover]]``, hub and spoke): the valid
hub example, every problem with its path, the single-table form still working, and the
partner comparison by relationship name."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.cli import app
from tandem.config import (
    FailoverSection,
    check_partners,
    failover_subnets,
    load,
    load_text,
    relationship_config,
    relationships,
    shared_relationships,
)
from tandem.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
runner = CliRunner()

SUBNETS = """
[[subnets]]
id = 1
prefix = "192.0.2.0/24"
pools = [{ start = "192.0.2.100", end = "192.0.2.199" }]
[[subnets]]
id = 2
prefix = "203.0.113.0/24"
pools = [{ start = "203.0.113.100", end = "203.0.113.199" }]
[[subnets]]
id = 3
prefix = "198.51.100.0/25"
pools = [{ start = "198.51.100.50", end = "198.51.100.99" }]
"""


def rel(name: str, peer: str, subnets: str | None, **extra: str) -> str:
    lines = [
        "[[failover]]",
        f'name = "{name}"',
        'role = "secondary"',
        'listen_address = "198.51.100.200"',
        f'peer_address = "{peer}"',
    ]
    if subnets is not None:
        lines.append(f"subnets = {subnets}")
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def hub(*rels: str) -> str:
    return SUBNETS + "".join(rels)


A = rel("site-a", "198.51.100.201", "[1]")
B = rel("site-b", "198.51.100.202", "[2]")


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except ConfigError as exc:
        return exc.problems
    return []


def test_hub_example_has_two_relationships_and_a_standalone_subnet() -> None:
    cfg = load(EXAMPLES / "hub-standby.toml")
    rels = relationships(cfg)
    assert [(r.name, r.role, r.subnets) for r in rels] == [
        ("site-a", "secondary", [1]),
        ("site-b", "secondary", [2]),
    ]
    assert failover_subnets(cfg) == [0, 1]  # subnets[2] (id 3) is served alone
    view = relationship_config(cfg, rels[1])
    assert view.failover == rels[1] and view.subnets == cfg.subnets
    assert failover_subnets(view) == [1]


def test_the_single_table_form_is_one_relationship_over_every_subnet() -> None:
    for name in ("hot-standby-primary.toml", "hot-standby-standby.toml",
                 "spoke-a-primary.toml", "spoke-b-primary.toml"):
        cfg = load(EXAMPLES / name)
        assert isinstance(cfg.failover, FailoverSection)
        assert relationships(cfg) == [cfg.failover]
        assert failover_subnets(cfg) == list(range(len(cfg.subnets)))
    assert relationships(load_text(SUBNETS)) == []


def test_one_array_entry_without_subnets_covers_every_subnet_as_before() -> None:
    cfg = load_text(hub(rel("only", "198.51.100.201", None)))
    assert isinstance(cfg.failover, list) and len(cfg.failover) == 1
    assert failover_subnets(cfg) == [0, 1, 2]


BAD: list[tuple[str, list[str]]] = [
    # ---- types inside the array: paths carry the index
    (hub(A, rel("site-b", "198.51.100.202", "[2]", mclt_s='"long"')),
     ['failover[1].mclt_s: expected an integer, got "long"']),
    (hub(A, rel("site-b", "198.51.100.202", "[2]", bogus="1")),
     ["failover[1].bogus: unknown setting"]),
    (hub(A, B.replace('name = "site-b"\n', "")),
     ["failover[1].name: required setting is missing"]),
    (hub(A, rel("site-b", "198.51.100.202", "[2]", shared_secret="12345")),
     ["failover[1].shared_secret: expected a string (the value is not shown)"]),
    ("failover = 3\n" + SUBNETS, ["failover: expected a table, got 3"]),
    ("failover = []\n" + SUBNETS,
     ["failover: an empty list of relationships; remove it or add [[failover]] tables"]),
    # ---- one relationship's own checks, with its index
    (hub(A, rel("site-b", "198.51.100.200", "[2]")),
     ["failover[1].peer_address: 198.51.100.200 is also failover[1].listen_address; the "
      "partner is another server with an address of its own"]),
    (hub(A, rel("site-b", "198.51.100.202", "[9]")),
     ["failover[1].subnets[0]: no subnet has id 9"]),
    (hub(A, rel("site-b", "198.51.100.202", "[2]", reserve_percent="5",
                mode='"load-balance"')),
     ['failover[1].reserve_percent: only used in hot-standby mode (mode is "load-balance"); '
      "remove it"]),
    (hub(A, rel("site-b", "198.51.100.202", "[2]", keepalive_interval_s="30")),
     ["failover[1].keepalive_interval_s: 30 must be less than failover[1].receive_timer_s "
      "(20, the isc default)"]),
    # ---- the relationships together
    (hub(A, rel("site-a", "198.51.100.202", "[2]")),
     ['failover[1].name: "site-a" is already the name of failover[0]']),
    (hub(A, rel("site-b", "198.51.100.202", None)),
     ["failover[1].subnets: required when there are several relationships (list the subnet "
      "ids this one covers)"]),
    (hub(A, rel("site-b", "198.51.100.202", "[2, 1]")),
     ['failover[1].subnets[1]: subnet 1 (192.0.2.0/24) is already in failover[0] ("site-a"); '
      "a subnet belongs to at most one relationship"]),
    (hub(A, rel("site-b", "198.51.100.201", "[2]")),
     ['failover[1].peer_address: 198.51.100.201:647 is already the partner of failover[0] '
      '("site-a"); each relationship has its own partner']),
    (hub(A, rel("site-b", "198.51.100.201", "[2]", peer_port="648")),
     ['failover[1].peer_address: 198.51.100.201 is also the partner address of failover[0] '
      '("site-a") on the same listen address and port (198.51.100.200:647): an incoming '
      "connection could not be told apart; give one of them its own listen_address or "
      "listen_port"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_each_bad_hub_config_reports_exactly_its_problems(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_same_partner_address_on_another_listen_port_is_fine() -> None:
    cfg = load_text(hub(A, rel("site-b", "198.51.100.201", "[2]", peer_port="648",
                               listen_port="648")))
    assert [r.name for r in relationships(cfg)] == ["site-a", "site-b"]


def test_every_problem_of_every_relationship_is_listed_at_once() -> None:
    text = hub(
        rel("x", "198.51.100.200", "[1, 7]"),
        rel("x", "198.51.100.202", "[1]"),
        rel("z", "198.51.100.203", None),
    )
    assert problems(text) == [
        "failover[0].peer_address: 198.51.100.200 is also failover[0].listen_address; the "
        "partner is another server with an address of its own",
        "failover[0].subnets[1]: no subnet has id 7",
        'failover[1].name: "x" is already the name of failover[0]',
        'failover[1].subnets[0]: subnet 1 (192.0.2.0/24) is already in failover[0] ("x"); a '
        "subnet belongs to at most one relationship",
        "failover[2].subnets: required when there are several relationships (list the subnet "
        "ids this one covers)",
    ]


# ---- partners, compared by relationship name


def test_hub_and_each_spoke_are_partners() -> None:
    hub_cfg = load(EXAMPLES / "hub-standby.toml")
    for spoke in ("spoke-a-primary.toml", "spoke-b-primary.toml"):
        spoke_cfg = load(EXAMPLES / spoke)
        assert check_partners(hub_cfg, spoke_cfg) == []
        assert check_partners(spoke_cfg, hub_cfg) == []
        (pair,) = shared_relationships(hub_cfg, spoke_cfg)
        assert pair[0].name == pair[1].name == spoke_cfg.failover.name  # type: ignore[union-attr]


def test_partner_mismatch_names_the_relationship() -> None:
    hub_cfg = load(EXAMPLES / "hub-standby.toml")
    text = (EXAMPLES / "spoke-b-primary.toml").read_text().replace("mclt_s = 300", "mclt_s = 600")
    assert check_partners(hub_cfg, load_text(text), names=("hub", "b")) == [
        'relationship "site-b": failover.mclt_s: 300 in hub, 600 in b; must be the same on '
        "both partners"
    ]


def test_no_relationship_in_common() -> None:
    hub_cfg = load(EXAMPLES / "hub-standby.toml")
    other = load(EXAMPLES / "hot-standby-primary.toml")
    assert check_partners(hub_cfg, other, names=("hub", "p")) == [
        'failover.name: no relationship is in both configs ("site-a", "site-b" in hub, '
        '"lan-hot-standby" in p)'
    ]


def test_cli_check_config_of_the_hub_and_with_a_spoke() -> None:
    hub_path = str(EXAMPLES / "hub-standby.toml")
    result = runner.invoke(app, ["check-config", hub_path])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        'OK: 3 subnets, 250 pool addresses; failover "site-a" as secondary (hot-standby, 1 '
        'shared subnet, 100 pool addresses); failover "site-b" as secondary (hot-standby, 1 '
        "shared subnet, 100 pool addresses)\n"
    )
    spoke = str(EXAMPLES / "spoke-b-primary.toml")
    result = runner.invoke(app, ["check-config", hub_path, "--partner", spoke])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f'OK: {hub_path} (secondary) and {spoke} (primary) are partners in "site-b" '
        "(hot-standby, 1 shared subnet, 100 pool addresses)\n"
    )


def test_relationships_on_one_socket_share_its_tls_identity(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem", "other-ca.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    tls = {f"tls_{k}_file": f'"{tmp_path / v}"'
           for k, v in (("cert", "cert.pem"), ("key", "key.pem"), ("ca", "ca.pem"))}
    other = {**tls, "tls_ca_file": f'"{tmp_path / "other-ca.pem"}"'}
    a = rel("site-a", "198.51.100.201", "[1]", **tls)
    assert problems(hub(a, rel("site-b", "198.51.100.202", "[2]", **tls))) == []
    assert problems(hub(a, rel("site-b", "198.51.100.202", "[2]", **other))) == [
        'failover[1]: shares its listen address and port (198.51.100.200:647) with failover[0] '
        '("site-a") but not its tls_* settings; one listening socket has one TLS identity'
    ]
    # on a listening socket of its own, a relationship has its own TLS identity
    assert problems(hub(a, rel("site-b", "198.51.100.202", "[2]", listen_port="648",
                               **other))) == []
