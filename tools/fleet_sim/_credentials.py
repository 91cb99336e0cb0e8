"""The simulated hospitals' credentials: read from files, or issued through the fleet database.

Files are ``<DIR>/<hospital id>.credential`` (mode 0600), as ``hplus cloud credentials
issue --out`` writes them. Issuing goes through the cloud's credential store on the node's
fleet database (the node's config and data directory name it), so a simulated edge's
credential is checked on its tunnel exactly like a real edge's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from cloud.db import create_engine
from cloud.fleet import CredentialStore, migrate_fleet
from tools.cli import write_secret_file
from tools.fleet_sim._hospitals import SimHospital

__all__ = ["credential_path", "issue_credentials", "read_credentials"]


def credential_path(directory: Path, hospital_id: str) -> Path:
    """Where the credential of ``hospital_id`` is kept in ``directory``."""
    return directory / f"{hospital_id}.credential"


def read_credentials(directory: Path, hospitals: Sequence[SimHospital]) -> dict[str, str]:
    """The credentials found in ``directory`` (hospitals without a file are left out).

    Args:
        directory: the credentials directory.
        hospitals: the fleet's hospitals.

    Returns:
        Hospital id -> token.
    """
    out = {}
    for h in hospitals:
        path = credential_path(directory, h.hospital_id)
        if path.is_file():
            token = path.read_text(encoding="utf-8").strip()
            if token:
                out[h.hospital_id] = token
    return out


async def issue_credentials(
    fleet_url: str,
    hospitals: Sequence[SimHospital],
    *,
    directory: Path | None = None,
    label: str = "fleet_sim",
) -> dict[str, str]:
    """Issues a credential for each hospital in the fleet database at ``fleet_url``.

    Args:
        fleet_url: the node's fleet database URL.
        hospitals: the hospitals to issue for.
        directory: where to keep them (mode 0600) for the next run; None keeps them in
            memory only.
        label: the credentials' label (``hplus cloud credentials list`` shows it).

    Returns:
        Hospital id -> token.

    Raises:
        DatabaseError: the fleet database cannot be used.
        CliError: a credential file cannot be written.
    """
    if directory is not None:
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    engine = create_engine(fleet_url)
    out = {}
    try:
        await migrate_fleet(engine)
        store = CredentialStore(engine)
        for h in hospitals:
            issued = await store.issue(h.hospital_id, label=label)
            out[h.hospital_id] = issued.token
            if directory is not None:
                write_secret_file(credential_path(directory, h.hospital_id), issued.token)
    finally:
        await engine.dispose()
    return out
