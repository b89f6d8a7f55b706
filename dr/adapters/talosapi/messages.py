"""The few Talos API messages the snapshot client needs, built in code.

Compiling .proto files needs grpcio-tools, which is not on the Lambda runtime, so the descriptors are written out
here with ``descriptor_pb2`` and turned into classes in a private descriptor pool (a private pool cannot clash with
another library that registers ``google.rpc.Status`` in the default one). Field numbers follow siderolabs/talos
``api/common/common.proto`` and ``api/machine/machine.proto``; only the wire format matters to apid.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ETCD_SNAPSHOT_METHOD = "/machine.MachineService/EtcdSnapshot"

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, ftype: int, *, label: int = _F.LABEL_OPTIONAL, type_name: str = "") -> descriptor_pb2.FieldDescriptorProto:
    f = _F(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    return f


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()

    # google.rpc.Status; `details` is `repeated google.protobuf.Any` upstream. A message field and a bytes field share
    # the wire type, so bytes keeps any.proto out of the pool and still decodes.
    status = descriptor_pb2.FileDescriptorProto(name="talosdr/google_rpc_status.proto", package="google.rpc", syntax="proto3")
    status.message_type.add(
        name="Status",
        field=[
            _field("code", 1, _F.TYPE_INT32),
            _field("message", 2, _F.TYPE_STRING),
            _field("details", 3, _F.TYPE_BYTES, label=_F.LABEL_REPEATED),
        ],
    )
    pool.Add(status)

    common = descriptor_pb2.FileDescriptorProto(
        name="talosdr/common.proto", package="common", syntax="proto3", dependency=["talosdr/google_rpc_status.proto"]
    )
    common.message_type.add(
        name="Metadata",
        field=[
            _field("hostname", 1, _F.TYPE_STRING),
            _field("error", 2, _F.TYPE_STRING),
            _field("status", 3, _F.TYPE_MESSAGE, type_name=".google.rpc.Status"),
        ],
    )
    common.message_type.add(
        name="Data",
        field=[
            _field("metadata", 1, _F.TYPE_MESSAGE, type_name=".common.Metadata"),
            _field("bytes", 2, _F.TYPE_BYTES),
        ],
    )
    pool.Add(common)

    machine = descriptor_pb2.FileDescriptorProto(name="talosdr/machine.proto", package="machine", syntax="proto3")
    machine.message_type.add(name="EtcdSnapshotRequest")
    pool.Add(machine)
    return pool


_POOL = _build_pool()

Status = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("google.rpc.Status"))
Metadata = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("common.Metadata"))
Data = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("common.Data"))
EtcdSnapshotRequest = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdSnapshotRequest"))
