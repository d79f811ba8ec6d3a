# Tandem — see README.md
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := isc-dhcp-client udhcpc dhcpcd-base isc-dhcp-relay iproute2 tshark kea-admin procps util-linux
# The benchmark's anchors (Kea) are installed by `make bench` only.
BENCH_PACKAGES := kea-dhcp4-server

.PHONY: demo test venv sysdeps sysdeps-bench lint typecheck unit e2e bench clean

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

bench: $(STAMP) sysdeps-bench
	$(BIN)/python bench/dora.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
