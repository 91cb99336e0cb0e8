"""Rules every hplus contract keeps, checked on the generated descriptors.

buf lint (STANDARD + COMMENTS) checks naming and comments in CI; these tests check what buf
cannot know: idempotency keys on writes that cross the tunnel, evidence reads, patient fields
marked as PII, and that every .proto has importable generated code.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pb2

from hplus.options.v1 import options_pb2

REPO = Path(__file__).resolve().parents[3]
PROTO = REPO / "proto"
PROTO_FILES = sorted(
    p.relative_to(PROTO).as_posix()
    for p in PROTO.rglob("*.proto")
    if "releases" not in p.relative_to(PROTO).parts
)


def module_name(proto_path: str, suffix: str) -> str:
    return proto_path.removesuffix(".proto").replace("/", ".") + suffix


def file_descriptor(proto_path: str) -> descriptor.FileDescriptor:
    mod = importlib.import_module(module_name(proto_path, "_pb2"))
    fd: descriptor.FileDescriptor = mod.DESCRIPTOR
    return fd


def services(package: str) -> list[descriptor.ServiceDescriptor]:
    out = []
    for path in PROTO_FILES:
        fd = file_descriptor(path)
        if fd.package == package:
            out.extend(fd.services_by_name.values())
    return out


def all_messages(package_prefix: str) -> list[descriptor.Descriptor]:
    out: list[descriptor.Descriptor] = []

    def walk(d: descriptor.Descriptor) -> None:
        out.append(d)
        for n in d.nested_types:
            walk(n)

    for path in PROTO_FILES:
        fd = file_descriptor(path)
        if fd.package.startswith(package_prefix):
            for m in fd.message_types_by_name.values():
                walk(m)
    return out


def test_there_are_contracts_for_every_domain() -> None:
    packages = {file_descriptor(p).package for p in PROTO_FILES}
    assert {"hplus.tunnel.v1", "hplus.hospital.v1", "hplus.cloud.v1"} <= packages


@pytest.mark.parametrize("proto_path", PROTO_FILES)
def test_generated_code_imports_by_proto_package(proto_path: str) -> None:
    fd = file_descriptor(proto_path)
    assert fd.name == proto_path
    # The path, the package and the directory line up (STYLE rule 1).
    assert fd.package.replace(".", "/") == str(Path(proto_path).parent)
    grpc_mod = importlib.import_module(module_name(proto_path, "_pb2_grpc"))
    for svc in fd.services_by_name.values():
        assert hasattr(grpc_mod, f"{svc.name}Stub")
        assert hasattr(grpc_mod, f"add_{svc.name}Servicer_to_server")


def _is_read(method: descriptor.MethodDescriptor) -> bool:
    opts = descriptor_pb2.MethodOptions()
    opts.ParseFromString(method.GetOptions().SerializeToString())
    return opts.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def hospital_methods() -> list[descriptor.MethodDescriptor]:
    return [m for s in services("hplus.hospital.v1") for m in s.methods]


def test_every_hospital_rpc_is_a_declared_read_or_carries_an_idempotency_key() -> None:
    """Writes cross the tunnel and may be retried after a timeout: they need our key."""
    offenders = []
    for m in hospital_methods():
        if _is_read(m):
            continue
        key = m.input_type.fields_by_name.get("idempotency_key")
        if key is None or key.type != descriptor.FieldDescriptor.TYPE_STRING:
            offenders.append(m.full_name)
    assert offenders == []


def test_reads_are_marked_no_side_effects() -> None:
    reads = {m.name for m in hospital_methods() if _is_read(m)}
    # A sample that must be reads; any write verb must not be.
    assert {"GetAppointment", "GetCharge", "GetRefund", "ListReports"} <= reads
    writes = re.compile(r"^(Hold|Book|Cancel|Settle|Refund|Register|Submit|Apply)")
    assert not {r for r in reads if writes.match(r)}


@pytest.mark.parametrize(
    ("service", "method"),
    [
        ("AppointmentService", "GetAppointment"),
        ("BillingService", "GetCharge"),
        ("BillingService", "GetRefund"),
    ],
)
def test_evidence_reads_look_up_by_our_idempotency_key(service: str, method: str) -> None:
    """After a timeout the cloud asks 'did key K happen?'; the read must take K."""
    svc = {s.name: s for s in services("hplus.hospital.v1")}[service]
    req = svc.methods_by_name[method].input_type
    assert "idempotency_key" in req.fields_by_name


PII_NAME = re.compile(r"(id_card|phone|mobile|address|patient_name|full_name|^name$)")


def _is_pii(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.GetOptions().Extensions[options_pb2.pii])


def test_patient_identifying_fields_are_marked_pii() -> None:
    unmarked = []
    for msg in all_messages("hplus.hospital.v1") + all_messages("hplus.cloud.v1"):
        patientish = "patient" in msg.full_name.lower() or "Patient" in msg.name
        for f in msg.fields:
            if f.type != descriptor.FieldDescriptor.TYPE_STRING:
                continue
            named_like_pii = PII_NAME.search(f.name) and (f.name != "name" or patientish)
            if named_like_pii and not _is_pii(f):
                unmarked.append(f.full_name)
    assert unmarked == []


def test_pii_option_is_actually_used() -> None:
    marked = [f.full_name for m in all_messages("hplus.") for f in m.fields if _is_pii(f)]
    assert any("id_card" in name for name in marked)
    assert any("phone" in name for name in marked)
