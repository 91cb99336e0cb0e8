"""Edge packages: signing chain, verification and deltas refuse every tampering."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
import stat
import tarfile
from pathlib import Path

import pytest

from mesh.packages import (
    PackageError,
    SigningCertificate,
    TrustRoot,
    apply_delta,
    build_package,
    certify_signing_key,
    generate_key,
    load_private_key,
    make_delta,
    read_delta_header,
    read_manifest,
    sign_package,
    verify_package,
    write_private_key,
)

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


class Keys:
    def __init__(self) -> None:
        self.root = generate_key()
        self.signing = generate_key()
        self.cert = certify_signing_key(
            self.root, self.signing.public_key(), valid_for=dt.timedelta(days=90), now=NOW
        )
        self.trust = TrustRoot([self.root.public_key()])


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _files(version: str, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    body = bytes(rng.getrandbits(8) for _ in range(40_000))
    return {
        "hplus-edge.whl": body + version.encode(),
        "deps/grpcio.whl": bytes(rng.getrandbits(8) for _ in range(20_000)),
    }


def _package(keys: Keys, version: str = "1.4.0", seed: int = 1) -> bytes:
    unsigned = build_package(
        _files(version, seed),
        version=version,
        contract_release="1.2.0",
        profile_schema_version=1,
        created_at=NOW,
    )
    return sign_package(unsigned, keys.signing, keys.cert)


def _reason(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(PackageError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert info.value.message
    return info.value.reason


def _retar(package: bytes, edit: object) -> bytes:
    """Rewrite a package's members through ``edit(name, data) -> list[(name, data)]``."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(package), mode="r:") as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src.getmembers():
            f = src.extractfile(member)
            assert f is not None
            for name, data in edit(member.name, f.read()):  # type: ignore[operator]
                info = tarfile.TarInfo(name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_signed_package_verifies_and_says_what_it_is(keys: Keys) -> None:
    package = _package(keys)
    verified = verify_package(package, keys.trust, installed_version="1.3.2", now=NOW)
    assert verified.manifest.version == "1.4.0"
    assert verified.manifest.contract_release == "1.2.0"
    assert {f.path for f in verified.manifest.files} == {"hplus-edge.whl", "deps/grpcio.whl"}
    assert verified.signing_key_id == keys.cert.key_id
    assert verified.size == len(package)


def test_building_is_deterministic(keys: Keys) -> None:
    assert _package(keys) == _package(keys)


def test_a_package_read_from_a_file_verifies_the_same(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "edge-1.4.0.hpkg"
    path.write_bytes(_package(keys))
    assert verify_package(path, keys.trust, now=NOW).manifest.version == "1.4.0"


def test_a_modified_payload_file_is_refused(keys: Keys) -> None:
    def flip(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name == "files/hplus-edge.whl":
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return [(name, data)]

    assert _reason(verify_package, _retar(_package(keys), flip), keys.trust, now=NOW) == (
        "FILE_MODIFIED"
    )


def test_a_modified_manifest_breaks_the_signature(keys: Keys) -> None:
    def bump(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name == "manifest.json":
            data = data.replace(b'"1.4.0"', b'"9.4.0"')
        return [(name, data)]

    assert _reason(verify_package, _retar(_package(keys), bump), keys.trust, now=NOW) == (
        "BAD_SIGNATURE"
    )


def test_an_extra_or_missing_file_is_refused(keys: Keys) -> None:
    def add(name: str, data: bytes) -> list[tuple[str, bytes]]:
        out = [(name, data)]
        if name == "files/hplus-edge.whl":
            out.append(("files/backdoor.whl", b"evil"))
        return out

    def drop(name: str, data: bytes) -> list[tuple[str, bytes]]:
        return [] if name == "files/deps/grpcio.whl" else [(name, data)]

    package = _package(keys)
    assert _reason(verify_package, _retar(package, add), keys.trust, now=NOW) == "EXTRA_FILE"
    assert _reason(verify_package, _retar(package, drop), keys.trust, now=NOW) == "FILE_MISSING"


def test_members_outside_the_package_layout_are_refused(keys: Keys) -> None:
    def escape(name: str, data: bytes) -> list[tuple[str, bytes]]:
        return [(name, data), ("../../etc/cron.d/x", b"* * * * * root sh")]

    assert _reason(verify_package, _retar(_package(keys), escape), keys.trust, now=NOW) == (
        "EXTRA_FILE"
    )

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        link = tarfile.TarInfo("files/hplus-edge.whl")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    assert _reason(verify_package, out.getvalue(), keys.trust, now=NOW) == "BAD_ARCHIVE"


def test_an_unsigned_package_is_refused(keys: Keys) -> None:
    unsigned = build_package(
        _files("1.4.0"), version="1.4.0", contract_release="1.2.0", profile_schema_version=1
    )
    assert _reason(verify_package, unsigned, keys.trust, now=NOW) == "UNSIGNED"


def test_a_package_signed_under_an_unknown_root_is_refused(keys: Keys) -> None:
    stranger = Keys()
    package = _package(stranger)
    assert _reason(verify_package, package, keys.trust, now=NOW) == "UNKNOWN_KEY"


def test_a_certificate_forged_in_the_name_of_the_trusted_root_is_refused(keys: Keys) -> None:
    forger = Keys()
    forged = certify_signing_key(
        forger.root, forger.signing.public_key(), valid_for=dt.timedelta(days=1), now=NOW
    )
    # Claim the trusted root's id; the signature is still the forger's.
    claimed = SigningCertificate(
        key_id=forged.key_id,
        public_key=forged.public_key,
        not_before=forged.not_before,
        not_after=forged.not_after,
        root_key_id=keys.cert.root_key_id,
        signature=forged.signature,
    )
    unsigned = build_package(
        _files("1.4.0"), version="1.4.0", contract_release="1.2.0", profile_schema_version=1
    )
    package = sign_package(unsigned, forger.signing, claimed)
    assert _reason(verify_package, package, keys.trust, now=NOW) == "BAD_CERTIFICATE"


def test_an_expired_or_not_yet_valid_certificate_is_refused(keys: Keys) -> None:
    package = _package(keys)
    later = NOW + dt.timedelta(days=91)
    earlier = NOW - dt.timedelta(seconds=1)
    assert _reason(verify_package, package, keys.trust, now=later) == "CERTIFICATE_EXPIRED"
    assert _reason(verify_package, package, keys.trust, now=earlier) == "CERTIFICATE_EXPIRED"


def test_a_rotated_signing_key_verifies_without_touching_the_edge(keys: Keys) -> None:
    new_signing = generate_key()
    cert = certify_signing_key(
        keys.root, new_signing.public_key(), valid_for=dt.timedelta(days=30), now=NOW
    )
    unsigned = build_package(
        _files("1.5.0"), version="1.5.0", contract_release="1.2.0", profile_schema_version=1
    )
    package = sign_package(unsigned, new_signing, cert)
    verified = verify_package(package, keys.trust, now=NOW)
    assert verified.signing_key_id == cert.key_id != keys.cert.key_id


def test_a_replayed_older_package_is_a_rollback(keys: Keys) -> None:
    old = _package(keys, "1.2.0")
    assert _reason(verify_package, old, keys.trust, installed_version="1.4.0", now=NOW) == (
        "ROLLBACK"
    )
    same = _package(keys, "1.4.0")
    assert _reason(verify_package, same, keys.trust, installed_version="1.4.0", now=NOW) == (
        "ROLLBACK"
    )


def test_every_truncated_download_is_refused(keys: Keys) -> None:
    package = _package(keys)
    rng = random.Random(7)
    cuts = sorted({rng.randrange(1, len(package)) for _ in range(60)})
    digest = hashlib.sha256(package).hexdigest()
    end_of_data = _end_of_last_member(package)
    for cut in cuts:
        # Against the digest the cloud announced, every cut is refused first.
        assert (
            _reason(verify_package, package[:cut], keys.trust, expected_sha256=digest, now=NOW)
            == "DIGEST_MISMATCH"
        )
        # Without it, a cut into any signed byte is still refused; a cut only into the
        # archive's trailing zero blocks leaves every signed byte and verifies.
        if cut < end_of_data:
            reason = _reason(verify_package, package[:cut], keys.trust, now=NOW)
            assert reason in {"TRUNCATED", "BAD_ARCHIVE", "FILE_MISSING", "UNSIGNED"}, (cut, reason)
        else:
            assert verify_package(package[:cut], keys.trust, now=NOW).manifest.version == "1.4.0"
    assert any(cut < end_of_data for cut in cuts)


def _end_of_last_member(package: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(package), mode="r:") as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + last.size


def test_a_bounded_size_is_enforced(keys: Keys) -> None:
    package = _package(keys)
    assert _reason(verify_package, package, keys.trust, now=NOW, max_bytes=10_000) == "TOO_LARGE"


def test_signing_refuses_a_package_whose_files_do_not_match_its_manifest(keys: Keys) -> None:
    unsigned = build_package(
        _files("1.4.0"), version="1.4.0", contract_release="1.2.0", profile_schema_version=1
    )

    def flip(name: str, data: bytes) -> list[tuple[str, bytes]]:
        return [(name, data + b"x" if name.startswith("files/") else data)]

    assert _reason(sign_package, _retar(unsigned, flip), keys.signing, keys.cert) == (
        "FILE_MODIFIED"
    )
    other = generate_key()
    assert _reason(sign_package, unsigned, other, keys.cert) == "BAD_KEY"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "one"),
        ("contract_release", ""),
        ("profile_schema_version", 0),
        ("files", "x"),
    ],
)
def test_a_malformed_manifest_names_its_field(keys: Keys, field: str, value: object) -> None:
    import json

    def edit(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name == "manifest.json":
            doc = json.loads(data)
            doc[field] = value
            data = json.dumps(doc).encode()
        return [(name, data)]

    with pytest.raises(PackageError) as info:
        read_manifest(_retar(_package(keys), edit))
    assert info.value.reason == "BAD_MANIFEST"
    assert field in info.value.message


def test_a_manifest_path_that_escapes_is_refused(keys: Keys) -> None:
    with pytest.raises(PackageError) as info:
        build_package(
            {"../evil": b"x"}, version="1.0.0", contract_release="1.0.0", profile_schema_version=1
        )
    assert info.value.reason == "BAD_MANIFEST"
    assert "plain relative path" in info.value.message


def test_a_delta_rebuilds_the_new_package_and_is_smaller(keys: Keys) -> None:
    old, new = _package(keys, "1.3.0"), _package(keys, "1.4.0")
    delta = make_delta(old, new)
    header, _ = read_delta_header(delta)
    assert (header.from_version, header.to_version) == ("1.3.0", "1.4.0")
    assert len(delta) < len(new) // 4
    rebuilt = apply_delta(old, delta)
    assert rebuilt == new
    assert verify_package(rebuilt, keys.trust, installed_version="1.3.0", now=NOW)


def test_a_delta_for_another_base_is_refused(keys: Keys) -> None:
    old, new = _package(keys, "1.3.0"), _package(keys, "1.4.0")
    other = _package(keys, "1.3.1")
    assert _reason(apply_delta, other, make_delta(old, new)) == "DELTA_BASE_MISMATCH"


def test_a_delta_that_produces_the_wrong_bytes_is_refused(keys: Keys) -> None:
    old, new = _package(keys, "1.3.0"), _package(keys, "1.4.0")
    evil = _package(keys, "1.4.0", seed=99)
    # A delta that honestly builds `evil` but claims to build `new`.
    delta = make_delta(old, evil)
    header_end = delta.index(b"\n", 12)
    forged = (
        delta[:header_end].replace(
            hashlib.sha256(evil).hexdigest().encode(), hashlib.sha256(new).hexdigest().encode()
        )
        + delta[header_end:]
    )
    assert _reason(apply_delta, old, forged) == "DELTA_RESULT_MISMATCH"


def test_a_damaged_or_lying_delta_is_refused_before_it_allocates(keys: Keys) -> None:
    old, new = _package(keys, "1.3.0"), _package(keys, "1.4.0")
    delta = make_delta(old, new)
    assert _reason(apply_delta, old, b"garbage") == "BAD_DELTA"
    assert _reason(apply_delta, old, delta[: len(delta) // 2]) in {
        "BAD_DELTA",
        "DELTA_RESULT_MISMATCH",
    }
    # The header claims a huge result: refused on the bound, bsdiff never runs.
    header_end = delta.index(b"\n", 12)
    huge = (
        delta[:header_end].replace(f'"to_size":{len(new)}'.encode(), b'"to_size":99999999999')
        + delta[header_end:]
    )
    assert _reason(apply_delta, old, huge) == "TOO_LARGE"
    # The header and the patch disagree about the size.
    small = (
        delta[:header_end].replace(
            f'"to_size":{len(new)}'.encode(), f'"to_size":{len(new) - 1}'.encode()
        )
        + delta[header_end:]
    )
    assert _reason(apply_delta, old, small) == "BAD_DELTA"


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "root.key"
    write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path).public_key().public_bytes_raw() == (
        key.public_key().public_bytes_raw()
    )
    with pytest.raises(PackageError) as info:
        write_private_key(path, generate_key())
    assert info.value.reason == "KEY_EXISTS"
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(PackageError) as info:
        load_private_key(bad)
    assert info.value.reason == "BAD_KEY"
    assert "bad.key" in info.value.message
