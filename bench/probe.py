"""Run one Python entry point in this process, then report what this process alone used.

    python bench/probe.py OUT.json MODULE:FUNCTION [ARGS...]

Standard library only, so it runs under the project's interpreter (``dr.backup:main``) and under awscli's own venv
(``awscli.clidriver:main``) alike. Measuring inside the process is what separates the command's own peak memory from
its children's: ``wait4``/``/usr/bin/time`` report the maximum over the whole process tree, and the sandbox's talosctl
(a child of dr.backup) holds the whole snapshot in memory, which the real talosctl does not.

OUT.json gets: exit code, wall seconds, own peak RSS (VmHWM), own /proc/self/io counters (rchar counts every read
syscall, page cache hits included; read_bytes counts only what reached the block device), and the peak RSS of the
largest child (RUSAGE_CHILDREN).
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _io() -> dict[str, int]:
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = int(v)
    return out


def main() -> int:
    out_path, target, *args = sys.argv[1:]
    module, _, func = target.partition(":")
    io0 = _io()
    start = time.monotonic()
    sys.argv = [module, *args]
    code = 0
    try:
        rc = getattr(importlib.import_module(module), func or "main")()
        code = int(rc or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    wall = time.monotonic() - start
    io1 = _io()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "exit": code,
        "wall_s": wall,
        "vmhwm_kib": _status_kib("VmHWM"),
        "cpu_s": own.ru_utime + own.ru_stime,
        "children_maxrss_kib": children.ru_maxrss,
        "children_cpu_s": children.ru_utime + children.ru_stime,
        "io": {k: io1[k] - io0.get(k, 0) for k in io1},
    }
    with open(out_path, "w") as f:
        json.dump(report, f)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
