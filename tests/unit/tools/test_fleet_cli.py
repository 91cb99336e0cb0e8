"""``hplus fleet keys|package``: the release manager's side of signed edge packages."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tools.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _release(tmp: Path, capsys: pytest.CaptureFixture[str], version: str, body: bytes) -> Path:
    wheel = tmp / f"hplus_edge-{version}.whl"
    wheel.write_bytes(body)
    pkg = tmp / f"edge-{version}.hpkg"
    code, _, err = run(
        capsys,
        "fleet",
        "package",
        "build",
        str(wheel),
        "--version",
        version,
        "--contract-release",
        "1.2.0",
        "--out",
        str(pkg),
    )
    assert code == 0, err
    keys = tmp / "keys"
    code, out, err = run(
        capsys,
        "fleet",
        "package",
        "sign",
        str(pkg),
        "--key",
        str(keys / "signing.key"),
        "--cert",
        str(keys / "signing.cert.json"),
    )
    assert code == 0, err
    assert "signed by key" in out
    return pkg


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    keys = tmp_path / "keys"
    code, out, err = run(capsys, "fleet", "keys", "root", "--out", str(keys))
    assert code == 0, err
    assert "keep offline" in out
    code, out, err = run(
        capsys,
        "fleet",
        "keys",
        "signing",
        "--root-key",
        str(keys / "root.key"),
        "--out",
        str(keys),
        "--valid-for",
        "7d",
    )
    assert code == 0, err
    for secret in ("root.key", "signing.key"):
        assert stat.S_IMODE((keys / secret).stat().st_mode) == 0o600
    return keys


def test_build_sign_verify_delta(
    tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _release(tmp_path, capsys, "1.3.0", b"A" * 50_000 + b"old")
    new = _release(tmp_path, capsys, "1.4.0", b"A" * 50_000 + b"new")
    root = str(keys / "root.pub")
    code, out, err = run(
        capsys,
        "fleet",
        "package",
        "verify",
        str(new),
        "--root",
        root,
        "--installed-version",
        "1.3.0",
        "--format",
        "json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] is True
    assert doc["version"] == "1.4.0"
    assert doc["files"][0]["path"] == "hplus_edge-1.4.0.whl"

    delta = tmp_path / "1.3.0-1.4.0.delta"
    code, out, err = run(
        capsys, "fleet", "package", "delta", str(old), str(new), "--out", str(delta)
    )
    assert code == 0, err
    rebuilt = tmp_path / "rebuilt.hpkg"
    code, out, err = run(
        capsys, "fleet", "package", "apply-delta", str(old), str(delta), "--out", str(rebuilt)
    )
    assert code == 0, err
    assert rebuilt.read_bytes() == new.read_bytes()
    assert delta.stat().st_size < new.stat().st_size // 4


def test_refusals_are_one_line_with_their_reason(
    tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = _release(tmp_path, capsys, "1.3.0", b"payload")
    root = str(keys / "root.pub")
    code, _, err = run(
        capsys,
        "fleet",
        "package",
        "verify",
        str(pkg),
        "--root",
        root,
        "--installed-version",
        "1.3.0",
    )
    assert code == 1
    assert err.count("\n") == 1
    assert "[ROLLBACK]" in err

    code, out, _ = run(
        capsys,
        "fleet",
        "package",
        "verify",
        str(pkg),
        "--root",
        root,
        "--sha256",
        "0" * 64,
        "--format",
        "json",
    )
    assert code == 1
    assert json.loads(out)["reason"] == "DIGEST_MISMATCH"

    tampered = tmp_path / "tampered.hpkg"
    data = bytearray(pkg.read_bytes())
    data[data.index(b"payload")] ^= 1
    tampered.write_bytes(bytes(data))
    code, _, err = run(capsys, "fleet", "package", "verify", str(tampered), "--root", root)
    assert code == 1
    assert "[FILE_MODIFIED]" in err

    code, _, err = run(
        capsys, "fleet", "package", "verify", str(tmp_path / "absent"), "--root", root
    )
    assert code == 2
    assert "absent" in err

    code, _, err = run(capsys, "fleet", "keys", "root", "--out", str(keys))
    assert code == 2
    assert "[KEY_EXISTS]" in err

    code, _, err = run(
        capsys,
        "fleet",
        "keys",
        "signing",
        "--root-key",
        str(keys / "root.key"),
        "--out",
        str(tmp_path / "k2"),
        "--valid-for",
        "soon",
    )
    assert code == 2
    assert "--valid-for" in err
