"""Protobuf message classes built at run time from field numbers read in upstream ``.proto`` files.

The ``protobuf`` runtime does the decoding (varints, lengths, maps, unknown fields); this module only describes the
messages to it, so no generated ``_pb2`` files and no ``protoc`` are needed. Each caller names the upstream file and
tag it took its numbers from.

A message is described as ``{"Name": [(field, number, type, extra), ...]}`` where ``type`` is one of ``string``,
``bytes``, ``int64``, ``int32``, ``bool``, ``message:<Name>``, ``repeated:<type>`` or ``map:<key type>:<value type>``.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64, "int32": _F.TYPE_INT32,
            "bool": _F.TYPE_BOOL}

Fields = list[tuple[str, int, str]]


def _field(msg: descriptor_pb2.DescriptorProto, package: str, name: str, number: int, kind: str) -> None:
    f = msg.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL)
    if kind.startswith("repeated:"):
        f.label = _F.LABEL_REPEATED
        kind = kind.split(":", 1)[1]
    if kind.startswith("map:"):
        _, ktype, vtype = kind.split(":", 2)
        entry_name = "".join(p[:1].upper() + p[1:] for p in name.split("_")) + "Entry"
        entry = msg.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        _field(entry, package, "key", 1, ktype)
        _field(entry, package, "value", 2, vtype)
        f.label = _F.LABEL_REPEATED
        f.type = _F.TYPE_MESSAGE
        f.type_name = f".{package}.{msg.name}.{entry_name}"
    elif kind.startswith("message:"):
        f.type = _F.TYPE_MESSAGE
        f.type_name = f".{package}.{kind.split(':', 1)[1]}"
    else:
        f.type = _SCALARS[kind]


def build(package: str, messages: dict[str, Fields], syntax: str = "proto2") -> dict[str, type]:
    """The message classes for ``messages`` in a fresh pool (so two callers never clash)."""
    fd = descriptor_pb2.FileDescriptorProto(name=f"{package.replace('.', '/')}.proto", package=package, syntax=syntax)
    for mname, fields in messages.items():
        msg = fd.message_type.add(name=mname)
        for fname, number, kind in fields:
            _field(msg, package, fname, number, kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {m: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{m}")) for m in messages}
