from __future__ import annotations

import hashlib

from hplus.hospital.v1 import directory_pb2
from mesh.digest import bucket_digests, bucket_of, content_digest


def test_bucket_of_is_the_contract_definition() -> None:
    for entity_id in ("0101", "doctor-17", "排班-3", ""):
        head = hashlib.sha256(entity_id.encode()).digest()[:4]
        assert bucket_of(entity_id, 64) == int.from_bytes(head, "big") % 64
    assert {bucket_of(f"id-{i}", 8) for i in range(500)} == set(range(8))


def test_bucket_digests_ignore_order_and_see_every_change() -> None:
    entries = [(f"id-{i}", hashlib.sha256(str(i).encode()).digest()) for i in range(40)]
    digests = bucket_digests(entries, 4)
    assert len(digests) == 4
    assert bucket_digests(list(reversed(entries)), 4) == digests
    changed = [*entries[:-1], (entries[-1][0], hashlib.sha256(b"other").digest())]
    moved = bucket_of(entries[-1][0], 4)
    after = bucket_digests(changed, 4)
    assert [i for i in range(4) if after[i] != digests[i]] == [moved]
    assert bucket_digests([], 2) == [hashlib.sha256().digest()] * 2


def test_content_digest_ignores_version_and_update_time_only() -> None:
    a = directory_pb2.Doctor(doctor_id="d1", name="Dr. A", version=3)
    a.update_time.FromSeconds(100)
    b = directory_pb2.Doctor(doctor_id="d1", name="Dr. A", version=9)
    assert content_digest(a) == content_digest(b)
    assert content_digest(a) != content_digest(directory_pb2.Doctor(doctor_id="d1", name="Dr. B"))
    assert a.version == 3  # the entity itself is untouched
