"""What a snapshot holds and what changed between two, as Kubernetes objects: pure logic over (key, value) pairs.

Keys (kube-apiserver's storage layout):
- ``--etcd-prefix`` defaults to ``/registry``; a namespaced object is ``<prefix>/<resource prefix>/<namespace>/<name>``,
  a cluster-scoped one ``<prefix>/<resource prefix>/<name>`` (k8s.io/apiserver pkg/registry/generic/registry/store.go
  ``NamespaceKeyFunc`` and ``NoNamespaceKeyFunc``: ``path.Join(prefix, ns, name)`` / ``path.Join(prefix, name)``).
- The resource prefix is the resource's name, except the ones compiled into kube-apiserver
  (kubernetes pkg/kubeapiserver/default_storage_factory_builder.go ``SpecialDefaultResourcePrefixes``, read at commit
  008b365 of the v1.36 line): replicationcontrollers -> ``controllers``, endpoints -> ``services/endpoints``, nodes ->
  ``minions``, services -> ``services/specs``, ingresses -> ``ingress``.
- Custom resources and aggregated APIs are stored under ``<group>/<resource>`` (apiextensions-apiserver's
  ``crdHandler`` and kube-aggregator's apiservices storage: e.g. ``/registry/apiregistration.k8s.io/apiservices/<name>``);
  a first segment with a dot is such a group. Those types are named ``<resource>.<group>`` here, as kubectl does.
Keys outside ``/registry/`` are etcd data of something else; they are counted, never named as objects.

Values: ``k8s\\0`` is kube-apiserver's protobuf envelope, ``k8s:enc:<provider>:v1:<key>:`` an encrypted value
(k8s.io/apiserver pkg/server/options/encryptionconfig/config.go prefixes), ``{`` JSON (custom resources, and what a
hand-made cluster holds). show and diff only look at the first bytes; nothing here decodes a value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

REGISTRY = b"/registry/"
OUTSIDE = "(outside /registry)"
CLUSTER = "(cluster)"  # the namespace column of a cluster-scoped object
# storage prefix -> resource (SpecialDefaultResourcePrefixes, inverted)
STORAGE_PREFIXES = {"controllers": "replicationcontrollers", "services/endpoints": "endpoints", "minions": "nodes",
                    "services/specs": "services", "ingress": "ingresses"}
ETCD_QUOTA_DEFAULT = 2 * 1024**3  # etcd v3.6.12 server/storage/quota.go DefaultQuotaBytes ("2GB")
PROTOBUF_MAGIC = b"k8s\x00"  # k8s.io/apimachinery pkg/runtime/serializer/protobuf/protobuf.go protoEncodingPrefix
ENCRYPTED = b"k8s:enc:"


@dataclass(frozen=True)
class Ref:
    """What a key names: the resource type, its namespace (None: cluster-scoped) and name."""

    type: str
    namespace: str | None
    name: str
    key: str

    @property
    def ns(self) -> str:
        return self.namespace if self.namespace is not None else CLUSTER

    def __str__(self) -> str:
        return f"{self.type} {self.namespace}/{self.name}" if self.namespace is not None else f"{self.type} {self.name}"


def parse_key(key: bytes) -> Ref:
    text = key.decode("utf-8", "replace")
    if not key.startswith(REGISTRY):
        return Ref(OUTSIDE, None, text, text)
    parts = text[len(REGISTRY):].split("/")
    two = "/".join(parts[:2])
    if len(parts) >= 3 and two in STORAGE_PREFIXES:
        rtype, rest = STORAGE_PREFIXES[two], parts[2:]
    elif len(parts) >= 3 and "." in parts[0]:
        rtype, rest = f"{parts[1]}.{parts[0]}", parts[2:]
    else:
        rtype, rest = STORAGE_PREFIXES.get(parts[0], parts[0]), parts[1:]
    if len(rest) >= 2:
        return Ref(rtype, rest[0], "/".join(rest[1:]), text)
    return Ref(rtype, None, rest[0] if rest else "", text)


def encoding(value: bytes) -> str:
    """How a value is stored: ``protobuf``, ``json``, ``encrypted:<provider>``, or ``other``."""
    if value.startswith(PROTOBUF_MAGIC):
        return "protobuf"
    if value.startswith(ENCRYPTED):
        provider = value[len(ENCRYPTED):].split(b":", 1)[0].decode("ascii", "replace")
        return f"encrypted:{provider}"
    if value[:1] == b"{":
        return "json"
    return "other"


@dataclass(frozen=True)
class Obj:
    ref: Ref
    size: int
    encoding: str
    mod_revision: int = 0


def matches(ref: Ref, namespaces: set[str] | None, types: set[str] | None) -> bool:
    """``--namespace`` (``(cluster)`` for cluster-scoped objects) and ``--type`` (a type's name, or its plural as the
    key says it, e.g. ``minions``) filters."""
    if namespaces is not None and ref.ns not in namespaces:
        return False
    if types is not None and ref.type not in types:
        return False
    return True


def normalise_types(types: Iterable[str]) -> set[str]:
    out = set()
    for t in types:
        t = t.strip()
        if t:
            out.add(STORAGE_PREFIXES.get(t, t))
    return out


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size


@dataclass
class Inventory:
    objects: int = 0
    bytes: int = 0
    outside_keys: int = 0
    by_type: dict[str, Tally] = field(default_factory=dict)
    by_namespace: dict[str, Tally] = field(default_factory=dict)
    by_type_namespace: dict[str, dict[str, Tally]] = field(default_factory=dict)
    encodings: dict[str, int] = field(default_factory=dict)
    biggest: list[Obj] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "objects": self.objects, "bytes": self.bytes, "outside_registry_keys": self.outside_keys,
            "by_type": {k: asdict(v) for k, v in self.by_type.items()},
            "by_namespace": {k: asdict(v) for k, v in self.by_namespace.items()},
            "by_type_namespace": {t: {n: asdict(v) for n, v in d.items()} for t, d in self.by_type_namespace.items()},
            "encodings": dict(self.encodings),
            "biggest": [{"type": o.ref.type, "namespace": o.ref.namespace, "name": o.ref.name, "key": o.ref.key,
                         "bytes": o.size, "encoding": o.encoding} for o in self.biggest],
        }


def _sorted(d: dict[str, Tally]) -> dict[str, Tally]:
    return dict(sorted(d.items(), key=lambda kv: (-kv[1].bytes, kv[0])))


def summarize(objs: Iterable[Obj], *, namespaces: set[str] | None = None, types: set[str] | None = None,
              top: int = 10) -> Inventory:
    """Counts and sizes by type, namespace and both, the ``top`` biggest objects; filtered as ``matches`` says."""
    inv = Inventory()
    big: list[Obj] = []
    for o in objs:
        if o.ref.type == OUTSIDE:
            inv.outside_keys += 1
            continue
        if not matches(o.ref, namespaces, types):
            continue
        inv.objects += 1
        inv.bytes += o.size
        inv.by_type.setdefault(o.ref.type, Tally()).add(o.size)
        inv.by_namespace.setdefault(o.ref.ns, Tally()).add(o.size)
        inv.by_type_namespace.setdefault(o.ref.type, {}).setdefault(o.ref.ns, Tally()).add(o.size)
        inv.encodings[o.encoding] = inv.encodings.get(o.encoding, 0) + 1
        big.append(o)
        if len(big) > 4 * top + 64:
            big = sorted(big, key=lambda x: (-x.size, x.ref.key))[:top]
    inv.biggest = sorted(big, key=lambda x: (-x.size, x.ref.key))[:top]
    inv.by_type = _sorted(inv.by_type)
    inv.by_namespace = _sorted(inv.by_namespace)
    inv.by_type_namespace = {t: _sorted(inv.by_type_namespace[t]) for t in inv.by_type}
    return inv


# --- diff ------------------------------------------------------------------------------------------------------

CREATED, DELETED, CHANGED = "created", "deleted", "changed"


@dataclass(frozen=True)
class Change:
    kind: str  # created (only in the newer), deleted (only in the older), changed (in both, different value)
    ref: Ref


@dataclass
class Diff:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def by_namespace(self) -> dict[str, dict[str, int]]:
        """{namespace: {created, deleted, changed}}, namespaces with the most changes first."""
        out: dict[str, dict[str, int]] = {}
        for c in self.changes:
            d = out.setdefault(c.ref.ns, {CREATED: 0, DELETED: 0, CHANGED: 0})
            d[c.kind] += 1
        return dict(sorted(out.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))

    def by_type_namespace(self) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = {}
        for c in self.changes:
            d = out.setdefault((c.ref.type, c.ref.ns), {CREATED: 0, DELETED: 0, CHANGED: 0})
            d[c.kind] += 1
        return dict(sorted(out.items()))

    def to_json(self, details: bool = True) -> dict:
        doc: dict = {"created": self.count(CREATED), "deleted": self.count(DELETED), "changed": self.count(CHANGED),
                     "unchanged": self.unchanged,
                     "by_namespace": self.by_namespace(),
                     "by_type_namespace": [{"type": t, "namespace": n, **c}
                                           for (t, n), c in self.by_type_namespace().items()]}
        if details:
            doc["objects"] = [{"change": c.kind, "type": c.ref.type, "namespace": c.ref.namespace,
                               "name": c.ref.name, "key": c.ref.key} for c in self.changes]
        return doc


def digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def diff(older: Iterable[tuple[bytes, bytes]], newer: Iterable[tuple[bytes, bytes]], *,
         namespaces: set[str] | None = None, types: set[str] | None = None) -> Diff:
    """Objects created, deleted and changed from ``older`` to ``newer``: two streams of ``(key, value digest)`` in
    key order (a merge; memory does not grow with size). Keys outside /registry/ are not objects and are skipped."""
    out = Diff()
    a_it: Iterator[tuple[bytes, bytes]] = iter(older)
    b_it: Iterator[tuple[bytes, bytes]] = iter(newer)
    a = next(a_it, None)
    b = next(b_it, None)

    def note(kind: str, key: bytes) -> None:
        ref = parse_key(key)
        if ref.type != OUTSIDE and matches(ref, namespaces, types):
            out.changes.append(Change(kind, ref))

    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            note(DELETED, a[0])
            a = next(a_it, None)
        elif a is None or b[0] < a[0]:
            note(CREATED, b[0])
            b = next(b_it, None)
        else:
            if a[1] != b[1]:
                note(CHANGED, a[0])
            else:
                ref = parse_key(a[0])
                if ref.type != OUTSIDE and matches(ref, namespaces, types):
                    out.unchanged += 1
            a, b = next(a_it, None), next(b_it, None)
    return out
