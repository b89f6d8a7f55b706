"""The few Talos API messages the snapshot client needs, built in code.

Compiling .proto files needs grpcio-tools, which is not on the Lambda runtime, so the descriptors are written out
here with ``descriptor_pb2`` and turned into classes in a private descriptor pool (a private pool cannot clash with
another library that registers ``google.rpc.Status`` in the default one). Field numbers follow siderolabs/talos
``api/common/common.proto`` and ``api/machine/machine.proto``; only the wire format matters to apid.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ETCD_SNAPSHOT_METHOD = "/machine.MachineService/EtcdSnapshot"
# Unary calls taking google.protobuf.Empty (machine.proto v1.13.9: `rpc EtcdStatus(google.protobuf.Empty) returns
# (EtcdStatusResponse)`, `rpc EtcdAlarmList(google.protobuf.Empty) returns (EtcdAlarmListResponse)`). Both are allowed
# to os:etcd:backup (internal/app/machined/pkg/system/services/machined.go:69,78 at v1.13.9), as EtcdSnapshot is.
ETCD_STATUS_METHOD = "/machine.MachineService/EtcdStatus"
ETCD_ALARM_LIST_METHOD = "/machine.MachineService/EtcdAlarmList"
# `rpc EtcdMemberList(EtcdMemberListRequest) returns (EtcdMemberListResponse)` (machine.proto:29 at v1.13.9), allowed
# to os:etcd:backup too (machined.go:74 at v1.13.9). machined asks etcd with require-leader (v1alpha1_server.go
# EtcdMemberList): a member that has no leader answers with an error, not a list.
ETCD_MEMBER_LIST_METHOD = "/machine.MachineService/EtcdMemberList"
EMPTY_REQUEST = b""  # google.protobuf.Empty has no fields: its encoding is zero bytes
# machine.EtcdMemberAlarm.AlarmType (machine.proto v1.13.9)
ALARM_TYPES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}

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

    machine = descriptor_pb2.FileDescriptorProto(
        name="talosdr/machine.proto", package="machine", syntax="proto3", dependency=["talosdr/common.proto"]
    )
    machine.message_type.add(name="EtcdSnapshotRequest")
    # EtcdMemberList (machine.proto:1038-1067 at v1.13.9): EtcdMember numbers its fields from 2.
    machine.message_type.add(name="EtcdMemberListRequest", field=[_field("query_local", 1, _F.TYPE_BOOL)])
    machine.message_type.add(
        name="EtcdMember",
        field=[
            _field("id", 2, _F.TYPE_UINT64),
            _field("hostname", 3, _F.TYPE_STRING),
            _field("peer_urls", 4, _F.TYPE_STRING, label=_F.LABEL_REPEATED),
            _field("client_urls", 5, _F.TYPE_STRING, label=_F.LABEL_REPEATED),
            _field("is_learner", 6, _F.TYPE_BOOL),
        ],
    )
    machine.message_type.add(
        name="EtcdMembers",
        field=[
            _field("metadata", 1, _F.TYPE_MESSAGE, type_name=".common.Metadata"),
            _field("legacy_members", 2, _F.TYPE_STRING, label=_F.LABEL_REPEATED),
            _field("members", 3, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=".machine.EtcdMember"),
        ],
    )
    machine.message_type.add(
        name="EtcdMemberListResponse",
        field=[_field("messages", 1, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=".machine.EtcdMembers")],
    )
    # Field numbers from siderolabs/talos v1.13.9 api/machine/machine.proto (EtcdMemberStatus numbers its fields out
    # of order upstream: storage_version = 11, member_id = 10).
    machine.message_type.add(
        name="EtcdMemberStatus",
        field=[
            _field("protocol_version", 1, _F.TYPE_STRING),
            _field("db_size", 2, _F.TYPE_INT64),
            _field("db_size_in_use", 3, _F.TYPE_INT64),
            _field("leader", 4, _F.TYPE_UINT64),
            _field("raft_index", 5, _F.TYPE_UINT64),
            _field("raft_term", 6, _F.TYPE_UINT64),
            _field("raft_applied_index", 7, _F.TYPE_UINT64),
            _field("errors", 8, _F.TYPE_STRING, label=_F.LABEL_REPEATED),
            _field("is_learner", 9, _F.TYPE_BOOL),
            _field("member_id", 10, _F.TYPE_UINT64),
            _field("storage_version", 11, _F.TYPE_STRING),
        ],
    )
    machine.message_type.add(
        name="EtcdStatus",
        field=[
            _field("metadata", 1, _F.TYPE_MESSAGE, type_name=".common.Metadata"),
            _field("member_status", 2, _F.TYPE_MESSAGE, type_name=".machine.EtcdMemberStatus"),
        ],
    )
    machine.message_type.add(
        name="EtcdStatusResponse",
        field=[_field("messages", 1, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=".machine.EtcdStatus")],
    )
    # AlarmType is an enum upstream; an int32 has the same wire encoding (varint) and keeps unknown values readable.
    machine.message_type.add(
        name="EtcdMemberAlarm",
        field=[_field("member_id", 1, _F.TYPE_UINT64), _field("alarm", 2, _F.TYPE_INT32)],
    )
    machine.message_type.add(
        name="EtcdAlarm",
        field=[
            _field("metadata", 1, _F.TYPE_MESSAGE, type_name=".common.Metadata"),
            _field("member_alarms", 2, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=".machine.EtcdMemberAlarm"),
        ],
    )
    machine.message_type.add(
        name="EtcdAlarmListResponse",
        field=[_field("messages", 1, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=".machine.EtcdAlarm")],
    )
    pool.Add(machine)
    return pool


_POOL = _build_pool()

Status = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("google.rpc.Status"))
Metadata = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("common.Metadata"))
Data = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("common.Data"))
EtcdSnapshotRequest = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdSnapshotRequest"))
EtcdMemberStatus = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdMemberStatus"))
EtcdStatus = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdStatus"))
EtcdStatusResponse = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdStatusResponse"))
EtcdMemberAlarm = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdMemberAlarm"))
EtcdAlarm = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdAlarm"))
EtcdAlarmListResponse = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdAlarmListResponse"))
EtcdMemberListRequest = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdMemberListRequest"))
EtcdMember = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdMember"))
EtcdMembers = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdMembers"))
EtcdMemberListResponse = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("machine.EtcdMemberListResponse"))
