"""One error hierarchy and one exit-code table for every DR command.

Commands raise a ``DRError`` subclass; ``dr.commands.cli.run`` maps it to its exit code and prints one line.
The README's exit-code table repeats ``ExitCode`` (a test checks they agree).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # unexpected failure (a bug): rerun with --debug and report it
    USAGE = 2  # bad command line (argparse)
    CONFIG = 3  # a setting is missing or invalid (stack outputs, talosconfig, flags)
    NOT_FOUND = 4  # snapshot file or S3 object does not exist; nothing to restore
    EMPTY_SNAPSHOT = 5
    TRUNCATED_SNAPSHOT = 6
    CORRUPT_SNAPSHOT = 7  # hash trailer does not match the content
    NOT_A_SNAPSHOT = 8  # not an etcd (bbolt) snapshot at all
    TALOSCTL_MISSING = 9
    NODE_UNREACHABLE = 10
    NODE_ERROR = 11  # the node answered but refused or failed the operation
    S3_ERROR = 12
    ACCESS_DENIED = 13
    BUCKET_NOT_FOUND = 14
    LOCKED = 15  # another backup/restore holds the lock
    DISK_FULL = 16
    NOT_CONFIRMED = 17  # restore not confirmed (no "yes", or no terminal without --yes)
    TIMEOUT = 18
    RESTORE_CONFLICT = 19  # etcd not wiped, or a different restore is half done
    ETCD_MISSING = 20  # etcd/etcdctl binaries needed locally are missing
    ETCD_ERROR = 21  # local throwaway etcd failed
    VERIFY_MISMATCH = 22  # content check failed (restored data differs from what was expected)
    ENCRYPTED = 23  # age-encrypted, and no identity given (or none that can decrypt it): not damaged, just locked
    RECOVERY_KIT = 24  # the recovery kit is missing, not for this identity, damaged, or the rebuild cannot use it
    LOCAL_PATH = 25  # a local file or folder cannot be used: permissions, read-only, missing, not a folder
    STATUS_WARN = 26  # `talos-dr status`: nothing is failing, but something needs attention (or could not be checked)
    STATUS_FAIL = 27  # `talos-dr status`: something is failing (stale or missing backups, an etcd alarm, ...)
    NAME_REFUSED = 33  # the file system refuses a name (too long: ENAMETOOLONG; bytes it cannot store: EILSEQ)
    TOO_BIG = 34  # decodes (or streams) to more bytes than any etcd snapshot: a decompression bomb, not a snapshot
    UNTRUSTED_KIT = 37  # the recovery kit fails a trust check: unknown settings, bytes S3 did not record, or refused
    UNTRUSTED_SNAPSHOT = 38  # a stored snapshot's bytes differ from the checksum S3 recorded when it was uploaded
    NO_SECRETS_KEY = 43  # extract: no secretbox key (stack output talosMachineSecrets, or --secrets-file)
    WRONG_SECRETS_KEY = 44  # extract: the key does not open the snapshot's Secrets (another cluster's, or rotated)
    UNDECODABLE = 45  # extract: a Secret or ConfigMap is not stored in a form it can decode
    NOTHING_MATCHED = 46  # extract: no Secret or ConfigMap matches --namespace/--type/--name
    INTERRUPTED = 130  # Ctrl-C


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


# What each code means, for the README table and `--help` epilogs.
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
