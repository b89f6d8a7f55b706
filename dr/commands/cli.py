"""What every command shares: the error-to-exit-code mapping, the one-line failure message, and progress output."""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import TextIO

from dr.core.errors import EXIT_CODE_MEANING, DRError, ExitCode


def epilog() -> str:
    rows = "\n".join(f"  {int(c):>3}  {m}" for c, m in EXIT_CODE_MEANING.items())
    return f"exit codes:\n{rows}"


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    return p


def run(prog: str, body: Callable[[], int | None], debug: bool = False, err: TextIO | None = None) -> int:
    """Run a command body and turn every failure into one line on stderr and its exit code."""
    err = err or sys.stderr
    try:
        rc = body()
        return int(rc or 0)
    except DRError as exc:
        if debug:
            traceback.print_exc(file=err)
        print(f"{prog}: error: {exc}", file=err)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; nothing partial was left behind. Run the same command again to start over.",
              file=err)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly
        if debug:
            traceback.print_exc(file=err)
        print(f"{prog}: unexpected error: {type(exc).__name__}: {exc} — rerun with --debug and report it", file=err)
        return int(ExitCode.ERROR)


_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds from ``900``, ``90s``, ``15m``, ``1h30m`` (an argparse ``type``)."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pos, total = 0, 0.0
        for m in _DURATION.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 90s, 15m, 1h)") from None
        v = total
    if v <= 0:
        raise argparse.ArgumentTypeError(f"duration must be more than 0, not {text!r}")
    return v


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Bytes and rate: redrawn in place on a terminal, a few plain lines otherwise."""

    def __init__(self, label: str, total: int | None = None, out: TextIO | None = None, interval: float = 0.5):
        self.label = label
        self.total = total
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.done = 0
        self.start = time.monotonic()
        self._interval = interval if self.tty else 5.0
        self._last = self.start  # the first line comes after one interval; short transfers print only the final one

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._draw(final=False)

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        total = f" / {human_size(self.total)}" if self.total else ""
        return f"{self.label}: {human_size(self.done)}{total} at {human_size(self.done / elapsed)}/s"

    def _draw(self, final: bool) -> None:
        if self.tty:
            self.out.write("\r\033[K" + self._line() + ("\n" if final else ""))
        else:
            self.out.write(self._line() + "\n")
        self.out.flush()

    def finish(self) -> None:
        self._draw(final=True)
