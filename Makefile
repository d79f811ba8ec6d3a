# Tandem — see README.md
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := isc-dhcp-client udhcpc dhcpcd-base isc-dhcp-relay isc-dhcp-server iproute2 tshark kea-admin procps util-linux openssl gcc python3-dev
# The benchmark's anchors are installed by `make bench*` only: Kea (kea-dhcp4-server pulls
# kea-common, which holds libdhcp_ha.so and libdhcp_lease_cmds.so), perfdhcp (kea-admin) and
# ISC dhcpd (isc-dhcp-server).
BENCH_PACKAGES := kea-dhcp4-server kea-common kea-admin isc-dhcp-server
# `make bench` (75-95 min; 74 min on 2026-11-26), one report, bench/RESULTS.md: bench/dora.py with BENCH_ARGS (every
# system, with the optional compiled Tandem single server (tandem-c); DORA for all, renew
# storm and churn for Tandem and Kea single; 60 min shared by the jobs; a rate given up once
# most of its 3 runs failed) writes it afresh, then a second bench/dora.py run measures the
# single servers (Tandem, Kea, compiled Tandem) interleaved at INTERLEAVE_RATES (at each rate
# one trial of each in turn: this VM's speed drifts within the hour, docs/performance.md)
# and adds its section, then bench/scale.py adds a section per BNDUPD window (100, the
# default, and 1000) with SCALE_LEASES leases.
BENCH_ARGS ?= --systems all --scenarios dora,renew,churn --scenario-systems tandem,kea \
	--max-minutes 60 --fast-search --dhcpd-seed bench/out/dhcpd-seed --results bench/RESULTS.md
INTERLEAVE_RATES ?= 15000,16000,17000,18000,19000,20000,21000,22000,23000,24000,25000,26000,27000,28000
INTERLEAVE_ARGS ?= --systems tandem,kea,tandem-c --scenarios dora --rates $(INTERLEAVE_RATES) \
	--interleave --fast-search --max-minutes 30 --results bench/RESULTS.md \
	--results-section "Single servers interleaved (same rates, one trial of each in turn)"

.PHONY: demo test compiled test-compiled venv sysdeps sysdeps-bench lint typecheck unit e2e bench bench-quick bench-scale soak soak-rss fuzz clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,fast]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the end-to-end tests drive (only when root; otherwise those tests skip).
sysdeps:
	@$(MAKE) --no-print-directory _apt PKGS="$(APT_PACKAGES)"

sysdeps-bench: sysdeps
	@$(MAKE) --no-print-directory _apt PKGS="$(BENCH_PACKAGES)"

_apt:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages (end-to-end tests will skip)"; fi

demo: $(STAMP)
	$(BIN)/python -m tandem.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/sim

e2e: $(STAMP) sysdeps
	$(BIN)/pytest -q tests/e2e

test: $(STAMP) sysdeps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict src
	$(BIN)/pytest -q
	@$(MAKE) --no-print-directory test-compiled

# The unit and simulation tests again, against the optional compiled build (`make compiled`),
# and the end-to-end tests of the compiled service shell's DHCP path (real clients, relays,
# kill -9, a full disk, binding updates held until their commit; ~75 s; the servers they
# start inherit PYTHONPATH).
COMPILED_E2E := tests/e2e/test_clients.py tests/e2e/test_crash.py tests/e2e/test_disk_full.py \
	tests/e2e/test_relay.py tests/e2e/test_failover_update_hold_loopback.py
test-compiled: compiled
	TANDEM_EXPECT_COMPILED=1 PYTHONPATH=$(COMPILED_DIR) $(BIN)/pytest -q -p no:cacheprovider \
		tests/unit tests/sim $(COMPILED_E2E)

# Deterministic simulation testing of the failover pair: seeds [SOAK_FROM, SOAK_TO) (default
# 100,000 seeds: SOAK_FIRST + SOAK_SEEDS) over SOAK_WORKERS processes (0: every core), a
# progress line every 30 s. Resumable: run it again and only the seeds not yet in
# $(SOAK_OUT)/seeds-FROM-TO.jsonl run (split a range between sessions or machines with
# SOAK_FROM/SOAK_TO). Summary (seeds, steps, ACKs checked, faults by kind, failures with their
# seed and first violated invariant): $(SOAK_OUT)/summary-FROM-TO.txt and .json. Exit 1 on any
# failure but the known-bug seeds (sim/faults.py KNOWN_BUGS), 2 when SOAK_TIME_S stopped it.
# Replay a failing seed: .venv/bin/python -m tandem.sim.faults --seed N
SOAK_SEEDS ?= 100000
SOAK_FIRST ?= 0
SOAK_FROM ?= $(SOAK_FIRST)
SOAK_TO ?= $(shell echo $$(( $(SOAK_FROM) + $(SOAK_SEEDS) )))
SOAK_WORKERS ?= 0
SOAK_TIME_S ?=
SOAK_OUT ?= build/soak
soak: $(STAMP)
	$(BIN)/python -m tandem.sim.soak --from $(SOAK_FROM) --to $(SOAK_TO) \
	  --workers $(SOAK_WORKERS) --out $(SOAK_OUT) $(if $(SOAK_TIME_S),--time-limit $(SOAK_TIME_S))

# Optional compiled build (mypyc) of the hot modules: build/compiled holds a copy of the
# package with these modules as C extensions next to their sources (Python imports the
# extension first). Run with PYTHONPATH=build/compiled; the pure-Python package in src/ stays
# what `pip install` gives and what the tests run first (`make test` runs them both ways).
COMPILED_DIR := build/compiled
MYPYC_MODULES := tandem/wire/dhcp.py tandem/wire/addr.py tandem/dhcp/engine.py tandem/dhcp/types.py tandem/dhcp/ratelimit.py \
	tandem/dhcp/subnets.py tandem/dhcp/options.py tandem/leases/table.py tandem/leases/model.py \
	tandem/net/udp.py tandem/store/sqlite.py tandem/service.py
compiled: $(STAMP)
	rm -rf $(COMPILED_DIR) && mkdir -p $(COMPILED_DIR)
	cp -r src/tandem $(COMPILED_DIR)/
	find $(COMPILED_DIR) -name __pycache__ -prune -exec rm -rf {} +
	cd $(COMPILED_DIR) && $(CURDIR)/$(BIN)/mypyc $(MYPYC_MODULES) > mypyc.log 2>&1 \
	  || { tail -20 mypyc.log; exit 1; }
	$(BIN)/python -c "import sys; sys.path.insert(0, '$(COMPILED_DIR)'); \
	  import tandem.dhcp.engine as e; assert e.__file__.endswith('.so'), e.__file__; \
	  print('compiled:', e.__file__)"

bench: $(STAMP) sysdeps-bench compiled
	$(BIN)/python bench/dora.py $(BENCH_ARGS)
	$(BIN)/python bench/dora.py $(INTERLEAVE_ARGS)
	$(BIN)/python bench/scale.py --leases $(SCALE_LEASES) --results bench/RESULTS.md
	$(BIN)/python bench/scale.py --leases $(SCALE_LEASES) --max-unacked 1000 \
		--results bench/RESULTS.md

# Smoke test of every system and scenario: one rate, one 3 s run each (a few minutes; the
# first dhcpd pair start waits out pool balancing, ~5 min, then keeps its lease files in
# bench/out/dhcpd-seed for the next time). Writes bench/out/QUICK.md, not RESULTS.md.
bench-quick: $(STAMP) sysdeps-bench
	$(BIN)/python bench/dora.py --quick --systems all --scenarios dora,renew,churn \
		--scenario-systems tandem,kea --dhcpd-seed bench/out/dhcpd-seed \
		--results bench/out/QUICK.md

# 1,000,000 leases: startup, RSS per lease, full partner sync under client load. The report
# goes to bench/out/SCALE.md (a section per size and window; a rerun replaces its own).
SCALE_LEASES ?= 1000000
bench-scale: $(STAMP) sysdeps-bench
	$(BIN)/python bench/scale.py --leases $(SCALE_LEASES) --results bench/out/SCALE.md

# Memory soak: `tandem serve` under steady perfdhcp load in namespaces, RSS sampled every 10 s
# (bench/out/soak-rss/rss.csv + summary.json). SOAK_MINUTES=30 by default.
SOAK_MINUTES ?= 30
soak-rss: $(STAMP) sysdeps
	$(BIN)/python bench/soak_rss.py --minutes $(SOAK_MINUTES)

# Coverage-guided fuzzing (atheris/libFuzzer) of the DHCP decoder, the engine, the failover
# decoder/framing and the peer connection, seeded with the real captures. Findings (crash-*
# files) land in build/fuzz/findings. Long: FUZZ_RUNS inputs per target, one target at a time.
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= dhcp engine failover peer
FUZZ_DIR := build/fuzz
fuzz: $(STAMP)
	$(BIN)/pip install -q 'atheris>=2.3'
	$(BIN)/python fuzz/corpus.py $(FUZZ_DIR)/seeds
	@mkdir -p $(FUZZ_DIR)/findings
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  echo "== fuzz $$t: $(FUZZ_RUNS) inputs"; \
	  nice -n 10 $(BIN)/python fuzz/harness.py $$t -runs=$(FUZZ_RUNS) -rss_limit_mb=2048 \
	    -artifact_prefix=$(FUZZ_DIR)/findings/$$t- -print_final_stats=1 \
	    $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/seeds/$$t; \
	done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
