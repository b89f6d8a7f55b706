# `make demo` and `make test` each install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCKS := requirements.lock requirements-dev.lock
STAMP := $(VENV)/.installed-$(shell cat $(LOCKS) pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test test-fast demo demo-ha bench lint etcd tools goapid venv lock clean

# The venv installs the hash-pinned lock (every transitive dependency, every file's SHA-256), nothing else: pip uses
# whatever index it is configured with, and no index URL is named here or in the locks, because --require-hashes makes
# the source irrelevant (a file whose SHA-256 is not in the lock is refused, wherever it came from). The venv's own
# pip is not upgraded, as that would be the one unhashed download.
$(STAMP): $(LOCKS) pyproject.toml
	@echo "make venv: installing the Python packages into $(VENV) (the hash-pinned lock: pulumi, boto3, moto, pytest, ..."
	@echo "  about 800 MB). The first time this takes 2-3 minutes and prints little; later runs skip it."
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --require-hashes -r requirements-dev.lock
	# The project itself, editable, so `talos-dr` is on the venv's PATH: no dependencies (the lock has them) and no
	# download (the venv's own setuptools builds it).
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation --no-index -e .
	rm -f $(VENV)/.installed-*
	touch $@
	@echo "make venv: done; $(VENV)/bin/talos-dr is installed"

venv: $(STAMP)

# After editing requirements*.txt: regenerate both locks with pip-tools, pinned and hash-checked
# (requirements-lock-tool.lock), installed into a private `mktemp -d` folder made for this run (scripts/lock.sh).
lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh

etcd:
	@bash scripts/ensure-etcd.sh

# The age and zstd CLIs the format tests check our files against.
tools:
	@bash scripts/ensure-age-zstd.sh

# The grpc-go apid stand-in (sandbox/goapid/): built offline from Debian's golang-go and grpc-go packages.
goapid:
	@bash scripts/ensure-go-grpc.sh

# Lint and types first: a test run that passes on code ruff or mypy rejects is not a pass (.ci/run runs this target).
test: venv etcd tools goapid lint
	@echo "make test: about 1700 tests, 15-25 minutes on 2 cores. The slow ones (tests/commands/restore, tests/demo,"
	@echo "  tests/faults: a real sandbox each) sit on one line for minutes; that is work, not a hang."
	@echo "  make test-fast runs the fast ones in under a minute."
	$(PY) -m pytest

# The quick loop: everything but the tests marked slow (real etcd, S3, sandbox, Pulumi runs; `pytest -m slow`).
test-fast: venv etcd tools goapid
	$(PY) -m pytest -m "not slow" -q

demo: venv etcd
	$(PY) -m demo

# Three nodes: lose two and restore, then lose one and replace it without a restore (demo/ha.py).
demo-ha: venv etcd
	$(PY) -m demo.ha

BENCH_VENV := bench/out/awscli-venv

$(BENCH_VENV)/.installed: requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q -r requirements-bench.txt && touch $@ || \
		echo "awscli did not install: the bench uses boto3's upload_file as the baseline's stand-in (and says so)"

bench: venv etcd tools goapid $(BENCH_VENV)/.installed
	$(PY) -m bench --results bench/RESULTS.md
	$(PY) -m bench.restore_steps --sizes 10M,100M,1G --results bench/RESULTS.md
	$(PY) -m bench.ha_restore_steps --sizes 10M,100M --results bench/RESULTS.md

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy dr infra sandbox snapshot_lambda

clean:
	rm -rf $(VENV) .sandbox .pytest_cache
