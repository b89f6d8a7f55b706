"""Secrets and ConfigMaps from the protobuf kube-apiserver stores in etcd, as the JSON objects kubectl knows.

The envelope (k8s.io/apimachinery v0.36.3, the library of Kubernetes v1.36.3, which Talos v1.13.9 deploys by default:
pkg/machinery/constants/constants.go ``DefaultKubernetesVersion = "1.36.3"``):
- pkg/runtime/serializer/protobuf/protobuf.go: a value starts with ``protoEncodingPrefix`` ``k8s\\x00``; the rest is
  a ``runtime.Unknown``;
- pkg/runtime/generated.proto: ``Unknown`` {typeMeta = 1 (TypeMeta {apiVersion = 1, kind = 2}), raw = 2,
  contentEncoding = 3, contentType = 4}; ``raw`` is the object's own message.
The objects (kubernetes/api v0.36.3 core/v1/generated.proto; apimachinery v0.36.3 pkg/apis/meta/v1/generated.proto):
- ``Secret`` {metadata = 1, data = 2 (map<string, bytes>), type = 3, stringData = 4, immutable = 5};
- ``ConfigMap`` {metadata = 1, data = 2 (map<string, string>), binaryData = 3 (map<string, bytes>), immutable = 4};
- ``ObjectMeta`` {name = 1, generateName = 2, namespace = 3, selfLink = 4, uid = 5, resourceVersion = 6,
  generation = 7, creationTimestamp = 8, deletionTimestamp = 9, deletionGracePeriodSeconds = 10, labels = 11,
  annotations = 12, ownerReferences = 13, finalizers = 14, managedFields = 17};
- ``Time`` {seconds = 1, nanos = 2}, written in JSON as RFC 3339 to the second (metav1.Time.MarshalJSON);
- ``OwnerReference`` {kind = 1, name = 3, uid = 4, apiVersion = 5, controller = 6, blockOwnerDeletion = 7};
- ``ManagedFieldsEntry`` {manager = 1, operation = 2, apiVersion = 3, time = 4, fieldsType = 6, fieldsV1 = 7
  (FieldsV1 {Raw = 1}: JSON bytes), subresource = 8}.
The protobuf runtime parses (dr.core.protoschema); this module only maps fields to the JSON names (the Go structs'
``json`` tags, empty fields left out as ``omitempty`` does).

``for_apply`` removes what the API server sets and would refuse or misread on ``kubectl apply`` (uid,
resourceVersion, creationTimestamp, generation, selfLink, managedFields, deletionTimestamp,
deletionGracePeriodSeconds). ownerReferences are removed too: they name owners by uid, and a restored object whose
owner's uid differs would be garbage-collected at once; finalizers are kept (they are the owner's business, and
dropping one could skip a cleanup the cluster relies on).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from dr.core.protoschema import build

PROTOBUF_MAGIC = b"k8s\x00"

_M = build("k8s.dr", {
    "TypeMeta": [("apiVersion", 1, "string"), ("kind", 2, "string")],
    "Unknown": [("typeMeta", 1, "message:TypeMeta"), ("raw", 2, "bytes"), ("contentEncoding", 3, "string"),
                ("contentType", 4, "string")],
    "Time": [("seconds", 1, "int64"), ("nanos", 2, "int32")],
    "FieldsV1": [("Raw", 1, "bytes")],
    "OwnerReference": [("kind", 1, "string"), ("name", 3, "string"), ("uid", 4, "string"),
                       ("apiVersion", 5, "string"), ("controller", 6, "bool"), ("blockOwnerDeletion", 7, "bool")],
    "ManagedFieldsEntry": [("manager", 1, "string"), ("operation", 2, "string"), ("apiVersion", 3, "string"),
                           ("time", 4, "message:Time"), ("fieldsType", 6, "string"),
                           ("fieldsV1", 7, "message:FieldsV1"), ("subresource", 8, "string")],
    "ObjectMeta": [("name", 1, "string"), ("generateName", 2, "string"), ("namespace", 3, "string"),
                   ("selfLink", 4, "string"), ("uid", 5, "string"), ("resourceVersion", 6, "string"),
                   ("generation", 7, "int64"), ("creationTimestamp", 8, "message:Time"),
                   ("deletionTimestamp", 9, "message:Time"), ("deletionGracePeriodSeconds", 10, "int64"),
                   ("labels", 11, "map:string:string"), ("annotations", 12, "map:string:string"),
                   ("ownerReferences", 13, "repeated:message:OwnerReference"),
                   ("finalizers", 14, "repeated:string"),
                   ("managedFields", 17, "repeated:message:ManagedFieldsEntry")],
    "Secret": [("metadata", 1, "message:ObjectMeta"), ("data", 2, "map:string:bytes"), ("type", 3, "string"),
               ("stringData", 4, "map:string:string"), ("immutable", 5, "bool")],
    "ConfigMap": [("metadata", 1, "message:ObjectMeta"), ("data", 2, "map:string:string"),
                  ("binaryData", 3, "map:string:bytes"), ("immutable", 4, "bool")],
})
Unknown, Secret, ConfigMap = _M["Unknown"], _M["Secret"], _M["ConfigMap"]
KINDS = {("v1", "Secret"): Secret, ("v1", "ConfigMap"): ConfigMap}
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "selfLink", "managedFields",
              "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences")


class DecodeError(ValueError):
    """The value is not what kube-apiserver writes for a Secret or ConfigMap."""


def _parse(cls, raw: bytes, what: str):
    msg = cls()
    try:
        msg.ParseFromString(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise DecodeError(f"{what} is not valid protobuf: {exc}") from exc
    return msg


def unwrap(value: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw object bytes) from a ``k8s\\0`` value."""
    if not value.startswith(PROTOBUF_MAGIC):
        raise DecodeError("the value does not start with kube-apiserver's protobuf magic k8s\\0")
    u = _parse(Unknown, value[len(PROTOBUF_MAGIC):], "the runtime.Unknown envelope")
    if u.contentEncoding:
        raise DecodeError(f"the envelope says content encoding {u.contentEncoding!r}, which is not handled here")
    return u.typeMeta.apiVersion, u.typeMeta.kind, bytes(u.raw)


def _time(t) -> str:
    return datetime.fromtimestamp(t.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _owner(r) -> dict:
    ref = {"apiVersion": r.apiVersion, "kind": r.kind, "name": r.name, "uid": r.uid}
    if r.HasField("controller"):
        ref["controller"] = r.controller
    if r.HasField("blockOwnerDeletion"):
        ref["blockOwnerDeletion"] = r.blockOwnerDeletion
    return ref


def _managed(e) -> dict:
    entry: dict = {}
    for f in ("manager", "operation", "apiVersion"):
        if getattr(e, f):
            entry[f] = getattr(e, f)
    if e.HasField("time"):
        entry["time"] = _time(e.time)
    if e.fieldsType:
        entry["fieldsType"] = e.fieldsType
    if e.HasField("fieldsV1"):
        entry["fieldsV1"] = json.loads(e.fieldsV1.Raw or b"{}")
    if e.subresource:
        entry["subresource"] = e.subresource
    return entry


def _meta(m) -> dict:
    out: dict = {}
    for f in ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion"):
        if getattr(m, f):
            out[f] = getattr(m, f)
    if m.generation:
        out["generation"] = m.generation
    if m.HasField("creationTimestamp"):
        out["creationTimestamp"] = _time(m.creationTimestamp)
    else:
        out["creationTimestamp"] = None  # metav1.Time has no omitempty: Go writes null for the zero time
    if m.HasField("deletionTimestamp"):
        out["deletionTimestamp"] = _time(m.deletionTimestamp)
    if m.HasField("deletionGracePeriodSeconds"):
        out["deletionGracePeriodSeconds"] = m.deletionGracePeriodSeconds
    if m.labels:
        out["labels"] = dict(m.labels)
    if m.annotations:
        out["annotations"] = dict(m.annotations)
    if m.ownerReferences:
        out["ownerReferences"] = [_owner(r) for r in m.ownerReferences]
    if m.finalizers:
        out["finalizers"] = list(m.finalizers)
    if m.managedFields:
        out["managedFields"] = [_managed(e) for e in m.managedFields]
    return out


def to_object(api_version: str, kind: str, raw: bytes) -> dict:
    """The object as the API server would show it in JSON (``kubectl get -o json``)."""
    cls = KINDS.get((api_version, kind))
    if cls is None:
        raise DecodeError(f"{api_version} {kind} is not a Secret or ConfigMap")
    msg = _parse(cls, raw, f"the {kind}")
    obj: dict = {"kind": kind, "apiVersion": api_version, "metadata": _meta(msg.metadata)}
    if msg.HasField("immutable"):
        obj["immutable"] = msg.immutable
    if kind == "Secret":
        if msg.data:
            obj["data"] = {k: _b64(v) for k, v in sorted(msg.data.items())}
        if msg.stringData:
            obj["stringData"] = dict(sorted(msg.stringData.items()))
        if msg.type:
            obj["type"] = msg.type
    else:
        if msg.data:
            obj["data"] = dict(sorted(msg.data.items()))
        if msg.binaryData:
            obj["binaryData"] = {k: _b64(v) for k, v in sorted(msg.binaryData.items())}
    return obj


def decode(value: bytes) -> dict:
    """A Secret or ConfigMap from its (decrypted) etcd value."""
    return to_object(*unwrap(value))


def for_apply(obj: dict) -> dict:
    """The object without what the server sets (see the module docstring), ready for ``kubectl apply``."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_SET and v is not None}
    return {**obj, "metadata": meta}


def encode(obj: dict) -> bytes:
    """The ``k8s\\0`` value kube-apiserver would store for a Secret or ConfigMap given as its JSON object: the inverse
    of ``decode`` for the fields used here (the sandbox seeds its cluster with it)."""
    kind, api_version = obj["kind"], obj.get("apiVersion", "v1")
    cls = KINDS[(api_version, kind)]
    msg = cls()
    m = obj.get("metadata", {})
    for f in ("name", "generateName", "namespace", "uid"):
        if m.get(f):
            setattr(msg.metadata, f, m[f])
    if m.get("creationTimestamp"):
        ts = datetime.strptime(m["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        msg.metadata.creationTimestamp.seconds = int(ts.timestamp())
    msg.metadata.labels.update(m.get("labels", {}))
    msg.metadata.annotations.update(m.get("annotations", {}))
    if kind == "Secret":
        for k, v in obj.get("data", {}).items():
            msg.data[k] = base64.b64decode(v)
        if obj.get("type"):
            msg.type = obj["type"]
    else:
        msg.data.update(obj.get("data", {}))
        for k, v in obj.get("binaryData", {}).items():
            msg.binaryData[k] = base64.b64decode(v)
    u = Unknown()
    u.typeMeta.apiVersion = api_version
    u.typeMeta.kind = kind
    u.raw = msg.SerializeToString(deterministic=True)
    return PROTOBUF_MAGIC + u.SerializeToString(deterministic=True)


def encode_metadata_only(api_version: str, kind: str, meta: dict) -> bytes:
    """The ``k8s\\0`` value of any top-level object with its metadata only: field 1 is ``metadata`` in every
    kubernetes/api type, so a ConfigMap message holding only metadata is byte for byte that object's message."""
    raw = kubeproto_raw(encode({"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta}))
    u = Unknown()
    u.typeMeta.apiVersion = api_version
    u.typeMeta.kind = kind
    u.raw = raw
    return PROTOBUF_MAGIC + u.SerializeToString(deterministic=True)


def kubeproto_raw(value: bytes) -> bytes:
    return unwrap(value)[2]
