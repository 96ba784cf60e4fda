# One-command setup, tests and demo. Everything runs offline from the repo's own .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export RAY_USAGE_STATS_REPORT_URL := http://127.0.0.1:9/
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser postgresql test test-fast test-numeric demo ui clean

setup: postgresql $(BIN)/.installed browser

# Debian's Chromium for the browser test of the MLflow UI and the sweep report (tests/test_browser_glance.py) and
# benchmarks/readme_screenshots.py. Installed from the system's package manager when missing; never downloaded
# by a Python package (that cannot work offline). Not being able to install it is reported, not fatal here: the
# browser test then fails with this command.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium (apt-get install -y chromium)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; } \
	    || echo "warning: chromium could not be installed; the browser test needs it: apt-get install -y chromium"; \
	else echo "warning: no chromium and no apt-get; the browser test needs Chromium (Debian: apt-get install -y chromium)"; fi

# PostgreSQL's server binaries (Debian's `postgresql`): the tracking tests start a real cluster of their own
# (tracking/postgres.py) and fail without them. Installed when missing (root, or sudo).
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; else \
	  echo "installing Debian's postgresql (the tracking tests start a real PostgreSQL)"; \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq postgresql \
	    || { echo "error: could not install postgresql: run 'sudo apt-get install -y postgresql' (or set PG_BIN)"; exit 1; }; \
	fi

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -c "import torch, diffusers, open_clip, cleanfid, ray, mlflow; print('setup ok: torch', torch.__version__, '| ray', ray.__version__, '| mlflow', mlflow.__version__)"
	touch $@

# The whole suite, slow end-to-end tests (real Ray head, MLflow server, pocket models) included.
test: setup
	$(BIN)/python -m pytest -q

# Everything but the slow end-to-end tests.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The numeric tests (-m numeric) again under two other MKL code paths, so a result or threshold that holds
# on one CPU's BLAS path only fails on every machine. pytest exit 5 (nothing selected) is reported, not failed.
test-numeric: setup
	for path in COMPATIBLE AVX2; do \
	  echo "== numeric tests under MKL_CBWR=$$path"; \
	  MKL_CBWR=$$path $(BIN)/python -m pytest -q -m numeric -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "test-numeric: pytest selected no tests (exit 5)"; \
	  elif [ $$rc -ne 0 ]; then exit $$rc; fi; \
	done

demo: setup
	$(BIN)/python -m pocket.demo

# The MLflow UI on ./mlruns (what `make demo` and sweeps write): the lean server, 127.0.0.1:5000, one worker,
# no job runner (python -m tracking ui). Ctrl-C stops it. MLflow 3.17 has no setting that keeps its Assistant panel
# closed: it opens by itself once per browser profile on a loopback host; close it once (x) and it stays closed.
ui: setup
	$(BIN)/python -m tracking ui

clean:
	rm -rf runs mlruns .pytest_cache
