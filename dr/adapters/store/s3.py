"""The S3 prefix store: one object per snapshot under a prefix, facts in metadata (set at upload) and tags (set
after a streamed upload, or by a verification), and the ``latest`` copy no lifecycle rule expires."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from dr.adapters import codec, s3
from dr.adapters.store.protocol import S3, Entry, Verification, find, newest_first, not_found
from dr.adapters.store.selection import FUTURE_SLACK, named_after_upload
from dr.adapters.store.transfer import stored_name, verified_chunks
from dr.core import naming, spelling, tiers
from dr.core.errors import AccessDenied, ConfigError, DRError, S3Error, SnapshotNotFound
from dr.core.integrity import CHUNK, SnapshotDigest, TrailerHasher
from dr.core.timefmt import iso_utc

TAG_VERIFIED_SHA256 = "verified-sha256"


@dataclass
class S3Store:
    """Snapshot objects under ``prefix`` in ``bucket``. Metadata (set at upload) and tags (set after a streamed
    upload, or by a verification) carry the facts; tags belong to the object version, so an overwrite (which the
    writers' ``If-None-Match: *`` refuses anyway) would not inherit a verification."""

    client: Any
    bucket: str
    prefix: str
    kind: str = S3
    _listing: list[Entry] | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def list(self) -> list[Entry]:
        out: list[Entry] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    parsed = naming.parse(key)
                    if parsed is None or key.endswith("/"):
                        continue
                    out.append(Entry(S3, parsed, f"s3://{self.bucket}/{key}", obj["Size"], obj["LastModified"],
                                     key=key, etag=obj.get("ETag")))
        except (ClientError, BotoCoreError) as exc:
            raise s3.translate(exc, "listing", self.bucket, self.prefix) from exc
        self._listing = newest_first(out)
        return self._listing

    def server_time(self) -> datetime | None:
        """S3's own clock: the ``Date`` header of a one-key listing (RFC 9110 §6.6.1: the origin server's time when
        it made the response). None when it cannot be read. What a wrong local clock is measured against."""
        from email.utils import parsedate_to_datetime

        try:
            res = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            date = res.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            return parsedate_to_datetime(date).astimezone(UTC) if date else None
        except (ClientError, BotoCoreError, TypeError, ValueError):
            return None

    def _key(self, name: str) -> str:
        return name if name.startswith(self.prefix) and "/" in name else self.prefix + name

    def head(self, name: str, parsed: naming.SnapshotName | None = None) -> Entry:
        """The object stored under exactly ``name`` (no search by plain name, no listing), described; raises
        ``SnapshotNotFound``. ``parsed`` names an object whose key is no snapshot name (read as it is)."""
        key = self._key(name)
        parsed = parsed or naming.parse(key)
        if parsed is None:
            raise SnapshotNotFound(f"{key} is not a snapshot name", f"list snapshots with `{spelling.command('list')}`")
        return self._from_info(s3.head_snapshot(self.client, self.bucket, key), parsed)

    def stat(self, name: str) -> Entry:
        if naming.parse(self._key(name)) is not None:
            try:
                return self.head(name)
            except SnapshotNotFound:
                pass
        e = find(self._listing, name) if self._listing is not None else None
        if e is None:  # the cached listing may predate the object (a put since): list again before "not found"
            listing = self.list()
            e = find(listing, name)
            if e is None:
                raise not_found(name, self.where, listing)
        return self.describe(e)

    def describe(self, entry: Entry) -> Entry:
        assert entry.key is not None
        return self._from_info(s3.head_snapshot(self.client, self.bucket, entry.key), entry.name)

    def _from_info(self, info: s3.ObjectInfo, parsed: naming.SnapshotName) -> Entry:
        merged = {**info.tags, **info.metadata}
        facts = s3.object_facts(info)
        v = None
        if s3.TAG_VERIFIED_AT in info.tags:
            keys = info.tags.get(s3.TAG_VERIFIED_KEYS)
            rev = info.tags.get(s3.TAG_VERIFIED_REVISION)
            v = Verification(info.tags[s3.TAG_VERIFIED_AT], int(rev) if rev and rev.isdigit() else None,
                             int(keys) if keys and keys.isdigit() else None, info.tags.get(TAG_VERIFIED_SHA256))
            recorded = merged.get(s3.META_SHA256)
            if v.sha256 and recorded and v.sha256 != recorded:
                v = None  # a verification of other bytes than the object holds does not count
            # ... nor one of other stored bytes than S3 recorded at upload (the checksum nobody can change)
            checked = info.tags.get(s3.TAG_VERIFIED_CHECKSUM)
            if checked and checked != info.checksum_sha256:
                v = None
        size = merged.get(s3.META_SIZE)
        return Entry(S3, parsed, f"s3://{self.bucket}/{info.key}", info.size, info.last_modified,
                     tier=info.tags.get(tiers.TAG_KEY), sha256=merged.get(s3.META_SHA256), plain_size=int(size) if size and size.isdigit() else None,
                     revision=facts.get("revision"), cluster=merged.get(s3.META_CLUSTER),
                     recorded_taken_at=merged.get(s3.META_TAKEN_AT), source=merged.get(s3.META_SOURCE),
                     verification=v, key=info.key, described=True, s3_checksum=info.checksum_sha256,
                     facts_from_tags=s3.META_SHA256 not in info.metadata and s3.META_SHA256 in info.tags,
                     etag=info.etag, version_id=info.version_id)

    def open(self, entry: Entry) -> Iterator[bytes]:
        assert entry.key is not None
        try:
            # ChecksumMode: botocore checks a full-object SHA-256 as the body streams (a multipart upload's composite
            # checksum cannot be checked this way; the plaintext's trailer and the age/zstd checks cover it).
            # Pinned to what was listed or described: that version in a versioned bucket (a version never changes),
            # else If-Match on the listed ETag, which S3 answers with 412 when another object was put there since.
            pin = ({"VersionId": entry.version_id} if entry.version_id and entry.version_id != "null"
                   else {"IfMatch": entry.etag} if entry.etag else {})
            resp = self.client.get_object(Bucket=self.bucket, Key=entry.key, ChecksumMode="ENABLED", **pin)
            yield from resp["Body"].iter_chunks(CHUNK)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed" or status == 412:
                raise S3Error(f"{entry.location} was replaced since it was listed (it is no longer the object with "
                              f"ETag {entry.etag}): nothing was read from it",
                              f"list again with `{spelling.command('list')}`, then run the command again with the "
                              "name it shows") from exc
            raise s3.translate(exc, "download of", self.bucket, entry.key) from exc
        except BotoCoreError as exc:
            raise s3.translate(exc, "download of", self.bucket, entry.key) from exc

    def put(self, chunks: Iterable[bytes], plain: str, *, compress: bool = False, recipients: Sequence[Any] = (),
            metadata: dict[str, str] | None = None, expected_sha256: str | None = None,
            progress: s3.ProgressFn | None = None, label: str | None = None) -> Entry:
        name, parsed = stored_name(plain, compress, recipients)
        key = self.prefix + name
        meta = {**(metadata or {}), s3.META_FORMAT: parsed.format}
        listing = [e for e in self.list() if not e.name.safety]
        earlier = [e.name.taken_at for e in listing]
        # What `latest` may be measured against: names a clock wrote ahead of S3's own are not (they
        # would keep `latest` pinned to a future date).
        trusted = [e for e in listing if not named_after_upload(e)]
        tier = tiers.tier_for(parsed.taken_at, earlier)
        writer = s3.ObjectWriter(self.client, self.bucket, key, meta, progress=progress, tags={tiers.TAG_KEY: tier})
        hasher = TrailerHasher(label or f"snapshot for s3://{self.bucket}/{key}")
        digests: list[SnapshotDigest] = []
        try:
            codec.encode(verified_chunks(chunks, hasher, expected_sha256, digests), writer.write, compress=compress,
                         recipients=recipients)
            writer.commit()
        except AccessDenied as exc:
            writer.abort()
            raise AccessDenied(exc.message, "the bucket policy lets only the snapshot Lambda and the roles in "
                               "snapshotWriters write snapshots (docs/VAULT.md): add yours with `pulumi config set "
                               "--path 'snapshotWriters[0]' <your role ARN>` and `pulumi up`, or check your "
                               "credentials") from exc
        except BaseException:
            writer.abort()
            raise
        d = digests[0]
        if s3.META_SHA256 not in meta:  # known only now that the stream has ended: tags
            try:
                s3.set_tags(self.client, self.bucket, key, {s3.META_SHA256: d.content_sha256,
                                                            s3.META_SIZE: str(d.size)})
            except DRError:
                pass  # the object is whole and verified; missing tags only hide facts from dr.list
        entry = Entry(S3, parsed, f"s3://{self.bucket}/{key}", writer.size, datetime.now(UTC),
                      sha256=d.content_sha256, plain_size=d.size, key=key, described=True, tier=tier)
        # `latest` moves to it unless a snapshot whose name S3's clock vouches for (not named after its upload) says
        # a later time; the same order ``newest`` picks by. A name ahead of S3's clock is refused by pin_latest.
        later = [e for e in trusted if e.name.taken_at > parsed.taken_at]
        if not parsed.safety and not later:
            failed = self.pin_latest(entry)
            if failed is not None:
                entry = replace(entry, warning=f"the snapshot is stored, but {failed}: `latest` still names the one "
                                               "before it")
        elif not parsed.safety:
            newest_named = max(later, key=lambda e: e.name.taken_at)
            entry = replace(entry, warning=f"the snapshot is stored, but {s3.LATEST_NAME} was not moved to it: "
                                           f"{newest_named.location} has a later time in its name "
                                           f"({iso_utc(newest_named.name.taken_at)}); if this machine's clock is "
                                           "behind, fix it (`date -u`, NTP) and take a backup again")
        return entry

    def latest_alias(self) -> tuple[str, datetime] | None:
        """(key it copies, when the copy was made) of ``<prefix>latest``, or None when there is none."""
        key = self.prefix + s3.LATEST_NAME
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            err = s3.translate(exc, "reading", self.bucket, key)
            if isinstance(err, SnapshotNotFound):
                return None
            raise err from exc
        of = (head.get("Metadata") or {}).get(s3.META_LATEST_OF)
        return (of, head["LastModified"]) if of else None

    def pin_latest(self, entry: Entry) -> DRError | None:
        """Copy ``entry`` server-side to ``<prefix>latest`` (tag ``retention=latest``, which no lifecycle rule expires),
        its metadata naming the snapshot it copies: however long backups stop, one snapshot stays. A failure is a
        warning, not a failure (the snapshot itself is stored): returned, and ``put`` puts it on the entry."""
        assert entry.key is not None
        latest = self.prefix + s3.LATEST_NAME
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=entry.key)
            stored = head.get("LastModified")
            if stored is not None and entry.name.taken_at > stored + FUTURE_SLACK:
                # Its name comes from this machine's clock, which is ahead of S3's: a future-dated `latest` would
                # stay there after the clock is fixed.
                return ConfigError(f"its name's time {iso_utc(entry.name.taken_at)} is after S3 stored it "
                                   f"({iso_utc(stored)}): this machine's clock is ahead, so it was not pinned as "
                                   f"{s3.LATEST_NAME}", "fix the clock (`date -u`, NTP)")
            meta = {**(head.get("Metadata") or {}), s3.META_LATEST_OF: entry.key}
            # A one-pass upload records these as tags (known only at the end), which the copy does not keep.
            if entry.sha256:
                meta[s3.META_SHA256] = entry.sha256
            if entry.plain_size is not None:
                meta[s3.META_SIZE] = str(entry.plain_size)
            # CopyObject (AWS S3 API reference): MetadataDirective/TaggingDirective REPLACE set the copy's own. The
            # checksum: with Object Lock on, S3 refuses writes without Content-MD5 or an x-amz-sdk-checksum-algorithm
            # header (S3 User Guide, "Configuring S3 Object Lock"; snapshotObjectLockDays).
            self.client.copy_object(Bucket=self.bucket, Key=latest, CopySource={"Bucket": self.bucket, "Key": entry.key},
                                    MetadataDirective="REPLACE", Metadata=meta, TaggingDirective="REPLACE",
                                    Tagging=f"{tiers.TAG_KEY}={tiers.LATEST}", ChecksumAlgorithm="SHA256")
        except (ClientError, BotoCoreError) as exc:
            return s3.translate(exc, "copying the newest snapshot to", self.bucket, latest)
        return None

    def record_verification(self, entry: Entry, v: Verification) -> None:
        assert entry.key is not None
        tags = {s3.TAG_VERIFIED_AT: v.verified_at}
        if v.revision is not None:
            tags[s3.TAG_VERIFIED_REVISION] = str(v.revision)
        if v.keys is not None:
            tags[s3.TAG_VERIFIED_KEYS] = str(v.keys)
        if v.sha256:
            tags[TAG_VERIFIED_SHA256] = v.sha256
        if entry.s3_checksum:
            tags[s3.TAG_VERIFIED_CHECKSUM] = entry.s3_checksum
        s3.set_tags(self.client, self.bucket, entry.key, tags)

    def clear_verification(self, entry: Entry) -> Sequence[str]:
        """A verification that failed takes back what claimed the object was good: its ``verified-*`` tags go (the
        tier and the upload's facts stay). Returns the tag keys removed."""
        assert entry.key is not None
        return s3.drop_tags(self.client, self.bucket, entry.key, s3.VERIFIED_TAG_PREFIX)

