"""What every command shares: the error-to-exit-code mapping, the one-line failure message, and progress output."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import TextIO, cast

from dr.core.errors import EXIT_CODES, DRError, ExitCode
from dr.core.spelling import command as command  # noqa: PLC0414 - re-exported: commands spell hints with cli.command


def epilog() -> str:
    rows = "\n".join(f"  {int(c):>3}  {k.value:<11} {m}" for c, (k, m) in EXIT_CODES.items())
    return f"exit codes:\n{rows}"


COMMON_GROUP = "where the cluster is (flag > environment > stack output > default)"


class _ShortHelp(argparse.Action):
    """``-h``: what the command does, its own options and examples, in a screenful; ``--help-all`` has the rest."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(short_help(parser), end="")
        parser.exit()


class _FullHelp(_ShortHelp):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        parser.exit()


def short_help(p: argparse.ArgumentParser) -> str:
    positionals = " ".join(str(a.metavar or a.dest) for a in p._actions if not a.option_strings)
    lines = [f"usage: {p.prog} {positionals} [options]".replace("  ", " "), "", p.description or "", ""]
    own = [a for a in p._actions if a.option_strings and a.help is not argparse.SUPPRESS
           and not isinstance(a, _ShortHelp)
           and not any(a in g._group_actions for g in p._action_groups if g.title == COMMON_GROUP)]
    for a in p._actions:
        if not a.option_strings and a.help:
            lines.append(f"{a.metavar or a.dest!s}: {a.help}")
    lines.append("options:")
    for a in own:
        names = ", ".join(a.option_strings) + (f" {a.metavar or a.dest.upper()}" if a.nargs != 0 else "")
        first = (a.help or "").split("; ")[0].split(" (")[0]
        lines.append(f"  {names:<28} {first}")
    lines.append("  --help-all                   every option (where the cluster is: --talos-dir, --bucket, "
                 "--prefix, --identity, --stack, --outputs-file, ...) and the exit codes")
    examples = getattr(p, "examples", ())
    if examples:
        lines += ["", "examples:", *(f"  {e}" for e in examples)]
    return "\n".join(lines) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line (not argparse's usage dump), with "did you mean" for a mistyped flag; exit 2 (USAGE)."""
        import difflib

        hint = ""
        m = re.search(r"unrecognized arguments: (\S+)", message)
        if m and m.group(1).startswith("-"):
            flags = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            close = difflib.get_close_matches(m.group(1).split("=")[0], flags, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}{hint} (`{self.prog} -h` for help)\n")


def parser(prog: str, description: str, examples: tuple[str, ...] | list[str] = ()) -> argparse.ArgumentParser:
    """A command's parser: ``-h`` is short (description, own options, examples), ``--help-all`` is everything."""
    p = _Parser(prog=prog, description=description, epilog=epilog(), add_help=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.examples = tuple(examples)  # type: ignore[attr-defined]  # written with spelling.command: `talos-dr <cmd> ...`
    p.add_argument("-h", "--help", action=_ShortHelp, help="show a short help with examples and exit")
    p.add_argument("--help-all", action=_FullHelp, help="show every option and the exit codes, and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    return p


class Tracked:
    """A text stream that remembers whether anything was written to it (so ``run`` knows a --json document is out).
    ``extra`` gives the fields a command knows so far, for the failure document (verify's report, prune's plan)."""

    def __init__(self, stream: TextIO, extra: Callable[[], dict] | None = None):
        self.stream = stream
        self.written = False
        self.extra = extra

    def write(self, s: str) -> int:
        self.written = self.written or bool(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())


def printable(text: str, limit: int = 400) -> str:
    """``text`` (a name from S3, argv or a file system) made safe to print: control and format characters (newline,
    ESC, bidi overrides such as U+202E) shown as escapes, at most ``limit`` characters (a name
    cannot clear the terminal or forge a line). The
    one helper every printed name goes through; dr.adapters.talosapi.h2stream.printable does the escaping."""
    from dr.adapters.talosapi.h2stream import printable as escape

    return escape(str(text), limit)


def sigterm_as_interrupt() -> None:
    """Treat SIGTERM (`timeout`, systemd, a CI runner cancelling) like Ctrl-C in backup, restore and verify: the same
    ``finally`` blocks clean up (a backup's ``.part``, a throwaway etcd), and a restore stopped before the reset drops
    its journal instead of blocking the next restore with "a different restore is half done"."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def json_failure(json_out: Tracked | None, message: str, code: int) -> None:
    if json_out is not None and not json_out.written:
        import json

        fields = json_out.extra() if json_out.extra is not None else {}
        print(json.dumps({**fields, "ok": False, "error": message, "exit_code": code}, indent=2), file=json_out)


def run(prog: str, body: Callable[[], int | None], debug: bool = False, err: TextIO | None = None,
        json_out: Tracked | None = None) -> int:
    """Run a command body and turn every failure into one line on stderr and its exit code. With ``json_out`` (the
    stdout of a ``--json`` run), a failure before the command printed its document also prints one JSON document
    ``{"ok": false, "error": ..., "exit_code": ...}`` there, so a script always gets JSON. A closed stdout (``| head``)
    is not an error: the command stops quietly with its own code."""
    err = err or sys.stderr
    try:
        rc = body()
        return int(rc or 0)
    except DRError as exc:
        if debug:
            traceback.print_exc(file=err)
        print(f"{prog}: error: {printable(str(exc), limit=4000)}", file=err)
        json_failure(json_out, str(exc), int(exc.exit_code))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; nothing partial was left behind. Run the same command again to start over.",
              file=err)
        json_failure(json_out, "interrupted", int(ExitCode.INTERRUPTED))
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`talos-dr list | head`): nothing to report to it, and no failure.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; let it go nowhere
        except OSError:
            pass
        return int(ExitCode.OK)
    except Exception as exc:  # a bug: say so plainly
        known = user_fixable(exc)
        if known is not None:
            print(f"{prog}: error: {printable(str(known), limit=4000)}", file=err)
            json_failure(json_out, str(known), int(known.exit_code))
            return int(known.exit_code)
        return _bug(prog, exc, debug, err, json_out)


def execute(prog: str, args: argparse.Namespace, body: Callable[[TextIO, TextIO], int | None], *,
            out: TextIO | None = None, err: TextIO | None = None, json_out: bool | None = None,
            extra: Callable[[], dict] | None = None) -> int:
    """The end of every command's ``main``: ``body(out, err)`` (the command's ``run``) under ``run``'s error
    handling. With ``--json`` (or ``json_out``), ``out`` is a ``Tracked`` stdout, so that a failure before the
    command printed its document still prints one there (``extra()``: the fields known so far)."""
    out = out or sys.stdout
    err = err or sys.stderr
    as_json = bool(getattr(args, "json", False)) if json_out is None else json_out
    tracked = Tracked(out, extra=extra) if as_json else None
    stdout = cast(TextIO, tracked) if tracked is not None else out
    return run(prog, lambda: body(stdout, err), debug=args.debug, err=err, json_out=tracked)


def _bug(prog: str, exc: BaseException, debug: bool, err: TextIO, json_out: Tracked | None) -> int:
    if debug:
        traceback.print_exception(exc, file=err)
    print(f"{prog}: unexpected error: {type(exc).__name__}: {printable(str(exc), limit=4000)} — rerun with --debug "
          "and report it", file=err)
    json_failure(json_out, f"unexpected error: {type(exc).__name__}: {exc}", int(ExitCode.ERROR))
    return int(ExitCode.ERROR)


_FS_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EROFS: "the disk is read-only",
              errno.ENOENT: "does not exist (a dangling link, or a missing folder)", errno.ENOTDIR: "is not a folder",
              errno.EISDIR: "is a folder", errno.ELOOP: "is a symbolic link loop", errno.EEXIST: "already exists",
              errno.ENOSPC: "no space left on the device"}


def user_fixable(exc: BaseException) -> DRError | None:
    """The one-line error for a failure the user can fix, or None for a bug. Local paths (permissions, read-only,
    dangling links, not a folder), a missing AWS profile, an invalid S3 endpoint URL."""
    from dr.core.errors import ConfigError, DiskFull, LocalPathError

    if isinstance(exc, OSError) and exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
        from dr.core.errors import NameRefused

        name = printable(os.fsdecode(exc.filename) if exc.filename else "a name", limit=120)
        why = "is too long for the file system" if exc.errno == errno.ENAMETOOLONG else "cannot be stored there"
        return NameRefused(f"{name} {why} ({os.strerror(exc.errno)}); nothing was changed",
                           "use a shorter name: the file's own name is at most 255 bytes, a path 4096 (rename or "
                           "move it, or name it by `talos-dr list`'s short name)")
    if isinstance(exc, OSError) and exc.errno in _FS_ERRNOS and exc.filename:
        what = _FS_ERRNOS[exc.errno]
        if exc.errno == errno.ENOSPC:
            return DiskFull(f"{exc.filename}: {what}", "free disk space there and retry")
        return LocalPathError(f"{exc.filename}: {what}", "fix the path or its permissions (or point --talos-dir / "
                              "--tmp-dir elsewhere) and run the same command again")
    try:
        from botocore.exceptions import InvalidEndpointConfigurationError, ProfileNotFound
    except ImportError:  # pragma: no cover - botocore is a dependency
        return None
    if isinstance(exc, ProfileNotFound):
        return ConfigError(f"AWS profile {exc.kwargs.get('profile')!r} is not configured ({exc})",
                           "check AWS_PROFILE against `aws configure list-profiles`, or unset it")
    if isinstance(exc, InvalidEndpointConfigurationError) or (isinstance(exc, ValueError)
                                                              and "Invalid endpoint" in str(exc)):
        return ConfigError(f"the S3 endpoint is not a valid URL ({exc})",
                           "check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (e.g. https://s3.us-east-1.amazonaws.com)")
    return None


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
