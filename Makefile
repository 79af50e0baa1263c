# Two commands matter: `make run` and `make test`. Both create .venv on first use:
# `make run` installs what serving needs; `make test` and `make bench` add the dev tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP   := $(VENV)/.installed-dev

.PHONY: run test lint format bench bench-micro bench-cost bench-timeline valgrind clean

$(SERVE_STAMP): pyproject.toml
	@echo "make: installing the gateway and what serving needs into $(VENV) (first run only, about a minute)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $(SERVE_STAMP)

$(DEV_STAMP): $(SERVE_STAMP) pyproject.toml
	@echo "make: installing the test and benchmark tools into $(VENV) (first run only)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(DEV_STAMP)

run: $(SERVE_STAMP)
	$(BIN)/python -m gateway

# The tests start their own redis-server (tests/redis_server.py): install it if missing;
# they drive the real Codex CLI and Claude Code (tests/agents/install.sh pins them in
# .agents/) and the console in Debian's Chromium (tests/console/install_browser.sh).
test: $(DEV_STAMP)
	command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)
	bash tests/agents/install.sh
	bash tests/console/install_browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Timings under load (locust), then instructions per request (callgrind: bench-cost).
bench: $(DEV_STAMP) valgrind
	$(BIN)/python -m bench

# The instruction counts run under valgrind (Debian's): install it if missing.
valgrind:
	command -v valgrind >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache bench/results

bench-micro: $(DEV_STAMP)
	$(BIN)/python -m pytest tests/test_microbench.py --benchmark-enable --benchmark-only \
		--benchmark-columns=min,median,mean,stddev,rounds --benchmark-sort=name

# Instructions per request under valgrind's callgrind (steady, unlike timings): bench/cost.py.
bench-cost: $(DEV_STAMP) valgrind
	$(BIN)/python -m bench.cost

# Where one request's time goes, step by step (gateway and ceiling): bench/timeline.py.
bench-timeline: $(DEV_STAMP)
	$(BIN)/python -m bench.timeline
