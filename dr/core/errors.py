"""One error hierarchy and one exit-code table for every DR command.

Commands raise a ``DRError`` subclass; ``dr.commands.cli.run`` maps it to its exit code and prints one line.
Each code's meaning and class are written once, in ``EXIT_CODES``; ``talos-dr exit-codes``, the ``--help-all``
epilogs and docs/REFERENCE.md's table (``exit_code_table``, a test checks the file) are made from it.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """The exit codes, one per kind of failure; what each means (and its class) is ``EXIT_CODES``, written once."""

    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    NOT_FOUND = 4
    EMPTY_SNAPSHOT = 5
    TRUNCATED_SNAPSHOT = 6
    CORRUPT_SNAPSHOT = 7
    NOT_A_SNAPSHOT = 8
    TALOSCTL_MISSING = 9
    NODE_UNREACHABLE = 10
    NODE_ERROR = 11
    S3_ERROR = 12
    ACCESS_DENIED = 13
    BUCKET_NOT_FOUND = 14
    LOCKED = 15
    DISK_FULL = 16
    NOT_CONFIRMED = 17
    TIMEOUT = 18
    RESTORE_CONFLICT = 19
    ETCD_MISSING = 20
    ETCD_ERROR = 21
    VERIFY_MISMATCH = 22
    ENCRYPTED = 23
    RECOVERY_KIT = 24
    LOCAL_PATH = 25
    STATUS_WARN = 26
    STATUS_FAIL = 27
    NO_QUORUM = 28
    QUORUM_INTACT = 29
    HA_RESTORE_REFUSED = 30
    REPLACE_REFUSED = 31
    NAME_REFUSED = 33
    TOO_BIG = 34
    UNTRUSTED_KIT = 37
    UNTRUSTED_SNAPSHOT = 38
    NO_SECRETS_KEY = 43
    WRONG_SECRETS_KEY = 44
    UNDECODABLE = 45
    NOTHING_MATCHED = 46
    INTERRUPTED = 130


class DRError(Exception):
    """Base of every error a user can act on. ``hint`` says what to do next."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}" + (f" — {self.hint}" if self.hint else "")


class ConfigError(DRError):
    exit_code = ExitCode.CONFIG


class SnapshotNotFound(DRError):
    exit_code = ExitCode.NOT_FOUND


class IntegrityError(DRError):
    exit_code = ExitCode.CORRUPT_SNAPSHOT


class EmptySnapshot(IntegrityError):
    exit_code = ExitCode.EMPTY_SNAPSHOT


class TruncatedSnapshot(IntegrityError):
    exit_code = ExitCode.TRUNCATED_SNAPSHOT


class CorruptSnapshot(IntegrityError):
    exit_code = ExitCode.CORRUPT_SNAPSHOT


class NotASnapshot(IntegrityError):
    exit_code = ExitCode.NOT_A_SNAPSHOT


class TalosctlMissing(DRError):
    exit_code = ExitCode.TALOSCTL_MISSING


class NodeUnreachable(DRError):
    exit_code = ExitCode.NODE_UNREACHABLE


class NodeError(DRError):
    exit_code = ExitCode.NODE_ERROR


class S3Error(DRError):
    exit_code = ExitCode.S3_ERROR


class AccessDenied(S3Error):
    exit_code = ExitCode.ACCESS_DENIED


class BucketNotFound(S3Error):
    exit_code = ExitCode.BUCKET_NOT_FOUND


class Locked(DRError):
    exit_code = ExitCode.LOCKED


class DiskFull(DRError):
    exit_code = ExitCode.DISK_FULL


class NotConfirmed(DRError):
    exit_code = ExitCode.NOT_CONFIRMED


class Timeout(DRError):
    exit_code = ExitCode.TIMEOUT


class RestoreConflict(DRError):
    exit_code = ExitCode.RESTORE_CONFLICT


class EtcdMissing(DRError):
    exit_code = ExitCode.ETCD_MISSING


class EtcdError(DRError):
    exit_code = ExitCode.ETCD_ERROR


class VerifyMismatch(DRError):
    exit_code = ExitCode.VERIFY_MISMATCH


class SnapshotEncrypted(DRError):
    """The snapshot is age-encrypted and no identity was given, or none of those given can open it. Never reported as
    corrupt: the bytes are fine, the key is missing."""

    exit_code = ExitCode.ENCRYPTED


class RecoveryKitError(DRError):
    """dr.rebuild cannot use the recovery kit (none in the bucket, another identity's, damaged) or the stack it fills."""

    exit_code = ExitCode.RECOVERY_KIT


class UntrustedKit(RecoveryKitError):
    """The recovery kit decrypts, but is not one to import: settings this talos-dr does not know, bytes that differ
    from the checksum S3 recorded at upload, or a kit newer than this machine last saw that the operator did not
    accept."""

    exit_code = ExitCode.UNTRUSTED_KIT


class UntrustedSnapshot(IntegrityError):
    """A stored snapshot's bytes differ from the checksum S3 recorded when it was uploaded (which nobody can change
    afterwards): the object is not what was written."""

    exit_code = ExitCode.UNTRUSTED_SNAPSHOT
class NoSecretsKey(DRError):
    exit_code = ExitCode.NO_SECRETS_KEY


class WrongSecretsKey(DRError):
    exit_code = ExitCode.WRONG_SECRETS_KEY


class Undecodable(DRError):
    exit_code = ExitCode.UNDECODABLE


class NothingMatched(DRError):
    exit_code = ExitCode.NOTHING_MATCHED
class ReplaceRefused(DRError):
    """talos-dr replace-member cannot proceed: the other members are not a healthy quorum without the lost one (a
    restore's case), the node named is a healthy voter, or the cluster has one node."""

    exit_code = ExitCode.REPLACE_REFUSED


class NameRefused(DRError):
    """A name (from argv or S3) the local file system will not take: too long, or bytes it cannot store."""

    exit_code = ExitCode.NAME_REFUSED


class SnapshotTooBig(DRError):
    """The data decodes or streams past the byte cap (DR_MAX_SNAPSHOT_BYTES, or the size recorded at upload): stopped
    there, nothing kept. Not "disk full": more disk would not help."""

    exit_code = ExitCode.TOO_BIG


class LocalPathError(DRError):
    """A local file or folder this command needs cannot be used (and it is the user's to fix, not a bug)."""

    exit_code = ExitCode.LOCAL_PATH


class NoQuorum(DRError):
    """Fewer than a majority of the voting etcd members are healthy and agree on one leader: no snapshot is taken from
    a minority (it may miss the latest writes) unless asked for (dr.core.member_choice)."""

    exit_code = ExitCode.NO_QUORUM


class QuorumIntact(DRError):
    """A three-node restore found etcd's quorum intact (the cluster's data is current): no snapshot restore; replace
    the lost member instead, or pass --rollback for a point-in-time rollback of a working cluster."""

    exit_code = ExitCode.QUORUM_INTACT


class HaRestoreRefused(DRError):
    """A three-node restore stopped before a step that could split the cluster or cannot work: a node of machine
    type ``init``, another node's etcd running or holding data where exactly one bootstrap must happen, or the
    recorded bootstrap node in a state no bootstrap of this restore explains."""

    exit_code = ExitCode.HA_RESTORE_REFUSED


class ExitClass(StrEnum):
    """What a script does about a failure: a handful of classes over the distinct codes (restic's and httpie's scripts
    act on 7-8), so that a script need not know every code and a new code never breaks one."""

    OK = "ok"
    BUG = "bug"
    CONFIG = "config"
    SNAPSHOT = "snapshot"
    NODE = "node"
    S3 = "s3"
    LOCAL = "local"
    BUSY = "busy"
    STATUS = "status"
    INTERRUPTED = "interrupted"


EXIT_CLASS_MEANING: dict[ExitClass, str] = {
    ExitClass.OK: "it worked",
    ExitClass.BUG: "a bug in talos-dr: rerun with --debug and report it; retrying will not help",
    ExitClass.CONFIG: "the command line, a setting, a key or a confirmation is missing or wrong: fix it and run again",
    ExitClass.SNAPSHOT: "the snapshot (or recovery kit) named cannot be used: missing, damaged, untrusted or not a "
                        "snapshot; use another one",
    ExitClass.NODE: "the Talos node did not answer, refused, or did not get there in time: check the node, then retry",
    ExitClass.S3: "S3 failed or refused (network, credentials, bucket policy, no bucket): retry, or fix access",
    ExitClass.LOCAL: "this machine: a tool missing, a path unusable, the disk full, the local etcd failing",
    ExitClass.BUSY: "another backup or restore, or a half-done restore, is in the way: wait, or finish it",
    ExitClass.STATUS: "talos-dr status found something that needs attention (26) or is failing (27)",
    ExitClass.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM): run the same command again",
}

# What each code means, written once: `talos-dr exit-codes`, the `--help-all` epilogs and the docs' table.
EXIT_CODE_MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error (a bug): rerun with --debug and report the traceback",
    ExitCode.USAGE: "bad command line",
    ExitCode.CONFIG: "a setting is missing or invalid (stack outputs, talosconfig, flags)",
    ExitCode.NOT_FOUND: "the snapshot file or S3 object does not exist",
    ExitCode.EMPTY_SNAPSHOT: "the snapshot is empty (0 bytes)",
    ExitCode.TRUNCATED_SNAPSHOT: "the snapshot is truncated (no complete hash trailer)",
    ExitCode.CORRUPT_SNAPSHOT: "the snapshot's SHA-256 trailer does not match its content",
    ExitCode.NOT_A_SNAPSHOT: "the file is not an etcd snapshot",
    ExitCode.TALOSCTL_MISSING: "talosctl is not installed or not on PATH",
    ExitCode.NODE_UNREACHABLE: "the Talos node does not answer",
    ExitCode.NODE_ERROR: "the Talos node refused or failed the operation",
    ExitCode.S3_ERROR: "S3 request failed (network, server error, interrupted transfer)",
    ExitCode.ACCESS_DENIED: "S3 denied access (credentials or bucket policy)",
    ExitCode.BUCKET_NOT_FOUND: "the S3 bucket does not exist",
    ExitCode.LOCKED: "another backup or restore is running",
    ExitCode.DISK_FULL: "no space left on the local disk",
    ExitCode.NOT_CONFIRMED: "restore was not confirmed",
    ExitCode.TIMEOUT: "the node did not reach the expected state in time",
    ExitCode.RESTORE_CONFLICT: "etcd was not wiped, or a different restore is half done",
    ExitCode.ETCD_MISSING: "etcd/etcdctl not installed locally",
    ExitCode.ETCD_ERROR: "the local throwaway etcd failed",
    ExitCode.VERIFY_MISMATCH: "the snapshot's content is not what was expected",
    ExitCode.ENCRYPTED: "the snapshot is age-encrypted: pass --identity FILE (or DR_AGE_IDENTITY_FILE) holding its key",
    ExitCode.RECOVERY_KIT: "the recovery kit is missing, not encrypted to this age identity, or damaged (dr.rebuild)",
    ExitCode.LOCAL_PATH: "a local file or folder cannot be used (permissions, read-only disk, missing, not a folder)",
    ExitCode.STATUS_WARN: "talos-dr status: warnings only (something needs attention soon, or could not be checked)",
    ExitCode.STATUS_FAIL: "talos-dr status: something is failing; each FAIL line names the command that fixes it",
    ExitCode.NO_QUORUM: "etcd has no quorum (fewer than a majority of its voting members are healthy and agree on a "
                        "leader): no snapshot was taken; the message says how to take one anyway",
    ExitCode.QUORUM_INTACT: "restore (three nodes): etcd's quorum is intact, the cluster's data is current: no snapshot "
                            "restore; replace the lost member (`talos-dr replace-member`), or pass --rollback",
    ExitCode.HA_RESTORE_REFUSED: "restore (three nodes): refused before a step that could split the cluster or cannot "
                                 "work (an `init` node, another node's etcd running or holding data at the one "
                                 "bootstrap)",
    ExitCode.REPLACE_REFUSED: "replace-member: the replacement cannot proceed (no healthy quorum without the lost "
                              "member: use `talos-dr restore`; or the member named is healthy)",
    ExitCode.NAME_REFUSED: "the file system refuses a name: too long (ENAMETOOLONG) or not storable; use a shorter name",
    ExitCode.TOO_BIG: "the data decodes or streams to more bytes than any etcd snapshot (a decompression bomb?); "
                      "stopped, nothing kept",
    ExitCode.UNTRUSTED_KIT: "the recovery kit is not one to import: unknown settings, bytes S3 did not record at "
                            "upload, or newer than this machine last saw and not accepted (dr.rebuild)",
    ExitCode.UNTRUSTED_SNAPSHOT: "the snapshot's bytes differ from the checksum S3 recorded at upload",
    ExitCode.NO_SECRETS_KEY: "extract: no secretbox key to decrypt Secrets (stack output talosMachineSecrets, or "
                             "--secrets-file with a talosctl secrets bundle)",
    ExitCode.WRONG_SECRETS_KEY: "extract: the secretbox key does not open the snapshot's Secrets (another cluster's key?)",
    ExitCode.UNDECODABLE: "extract: a Secret or ConfigMap in the snapshot is stored in a form it cannot decode",
    ExitCode.NOTHING_MATCHED: "extract: no Secret or ConfigMap in the snapshot matches --namespace/--type/--name",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); nothing partial was left behind",
}

# Which class each code belongs to (every code in exactly one: tests/core/test_errors.py).
CLASS_CODES: dict[ExitClass, tuple[ExitCode, ...]] = {
    ExitClass.OK: (ExitCode.OK,),
    ExitClass.BUG: (ExitCode.ERROR,),
    ExitClass.CONFIG: (ExitCode.USAGE, ExitCode.CONFIG, ExitCode.NOT_CONFIRMED, ExitCode.ENCRYPTED,
                       ExitCode.NO_SECRETS_KEY, ExitCode.WRONG_SECRETS_KEY, ExitCode.NOTHING_MATCHED,
                       ExitCode.QUORUM_INTACT),
    ExitClass.SNAPSHOT: (ExitCode.NOT_FOUND, ExitCode.EMPTY_SNAPSHOT, ExitCode.TRUNCATED_SNAPSHOT,
                         ExitCode.CORRUPT_SNAPSHOT, ExitCode.NOT_A_SNAPSHOT, ExitCode.VERIFY_MISMATCH,
                         ExitCode.RECOVERY_KIT, ExitCode.TOO_BIG, ExitCode.UNTRUSTED_KIT, ExitCode.UNTRUSTED_SNAPSHOT,
                         ExitCode.UNDECODABLE),
    ExitClass.NODE: (ExitCode.NODE_UNREACHABLE, ExitCode.NODE_ERROR, ExitCode.TIMEOUT, ExitCode.NO_QUORUM,
                     ExitCode.HA_RESTORE_REFUSED, ExitCode.REPLACE_REFUSED),
    ExitClass.S3: (ExitCode.S3_ERROR, ExitCode.ACCESS_DENIED, ExitCode.BUCKET_NOT_FOUND),
    ExitClass.LOCAL: (ExitCode.TALOSCTL_MISSING, ExitCode.DISK_FULL, ExitCode.ETCD_MISSING, ExitCode.ETCD_ERROR,
                      ExitCode.LOCAL_PATH, ExitCode.NAME_REFUSED),
    ExitClass.BUSY: (ExitCode.LOCKED, ExitCode.RESTORE_CONFLICT),
    ExitClass.STATUS: (ExitCode.STATUS_WARN, ExitCode.STATUS_FAIL),
    ExitClass.INTERRUPTED: (ExitCode.INTERRUPTED,),
}
EXIT_CODE_CLASS: dict[ExitCode, ExitClass] = {code: cls for cls, codes in CLASS_CODES.items() for code in codes}
EXIT_CODES: dict[ExitCode, tuple[ExitClass, str]] = {code: (EXIT_CODE_CLASS[code], meaning)
                                                      for code, meaning in EXIT_CODE_MEANING.items()}


def exit_code_table() -> str:
    """docs/REFERENCE.md's tables, made from ``EXIT_CLASS_MEANING`` and ``EXIT_CODES`` (tests/core/test_errors.py checks
    the file holds exactly these; ``python -m dr.core.errors`` prints them to paste)."""
    classes = ["| class | what a script does about it |", "| --- | --- |",
               *(f"| `{c.value}` | {m} |" for c, m in EXIT_CLASS_MEANING.items())]
    codes = ["| code | name | class | meaning |", "| --- | --- | --- | --- |",
             *(f"| {int(c)} | `{c.name}` | `{k.value}` | {m} |" for c, (k, m) in EXIT_CODES.items())]
    return "\n".join(classes) + "\n\n" + "\n".join(codes) + "\n"


if __name__ == "__main__":
    print(exit_code_table(), end="")
