# `make demo` and `make test` each install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: test demo bench lint etcd venv clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

etcd:
	@bash scripts/ensure-etcd.sh

# Lint and types first: a test run that passes on code ruff or mypy rejects is not a pass (.ci/run runs this target).
test: venv etcd lint
	$(PY) -m pytest

demo: venv etcd
	$(PY) -m demo

BENCH_VENV := bench/out/awscli-venv

$(BENCH_VENV)/.installed: requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q -r requirements-bench.txt && touch $@ || \
		echo "awscli did not install: the bench uses boto3's upload_file as the baseline's stand-in (and says so)"

bench: venv etcd $(BENCH_VENV)/.installed
	$(PY) -m bench --results bench/RESULTS.md

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy dr infra sandbox snapshot_lambda

clean:
	rm -rf $(VENV) .sandbox .pytest_cache
