#!/usr/bin/env bash
# `make lock`: regenerate requirements.lock and requirements-dev.lock from requirements*.txt with pip-tools.
#
# The tool that writes the hashes every venv and the Lambda package trust must itself be trusted (security review
# round 3, M3): it is installed from requirements-lock-tool.lock (pip-tools and its dependencies, each file's SHA-256,
# `--require-hashes --no-deps`) into a folder this run creates with `mktemp -d` (a fresh, randomly named directory,
# made with mkdir's O_EXCL semantics and mode 0700), checked to be ours and 0700, and removed at the end. No fixed path
# (the old /tmp/talos-dr-pip-tools) is looked at, so a program planted there by another local user never runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

dir=$(mktemp -d "${TMPDIR:-/tmp}/talos-dr-lock.XXXXXXXXXX")
trap 'rm -rf "$dir"' EXIT
if [ "$(stat -c %u "$dir")" != "$(id -u)" ] || [ "$(stat -c %a "$dir")" != 700 ]; then
    echo "make lock: $dir is not a private folder of $(id -un) (owner $(stat -c %U "$dir"), mode $(stat -c %a "$dir")); set TMPDIR to a folder of your own" >&2
    exit 1
fi
"$PYTHON" -m venv "$dir/venv"
"$dir/venv/bin/pip" install -q --require-hashes --no-deps -r requirements-lock-tool.lock
compile() {
    "$dir/venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
        --no-emit-index-url --no-emit-find-links --no-emit-trusted-host "$@"
}
# Existing pins are kept unless a requirement changed (pip-compile prefers them); requirements.lock is seeded from the
# dev lock so the runtime lock pins the same versions (tests/test_requirements_lock.py checks both).
compile -o requirements-dev.lock requirements-dev.txt
cp requirements-dev.lock requirements.lock
compile -o requirements.lock requirements.txt
