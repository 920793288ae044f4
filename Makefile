# spann3r_ros developer commands. `make test` and `make demo` work on a fresh machine.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup lint test test-fast demo clean

setup:
	@tools/setup_venv.sh

lint: setup
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -ra -m 'not slow' $(PYTEST_ARGS)

# Renders a synthetic room, plays it into the real node over ROS 2 topics, writes out/demo/.
demo: setup
	$(PY) -m spann3r_ros.cli.demo --out out/demo $(DEMO_ARGS)

clean:
	rm -rf out build install log .pytest_cache .ruff_cache
