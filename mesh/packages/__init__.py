"""Edge packages: signed full packages and binary deltas, verified before install.

Used by the fleet tools (build, sign), the cloud (serving packages and deltas) and the edge
(verifying before it installs). See `mesh.packages._keys` for the trust model.
"""

from __future__ import annotations

from mesh.packages._crc import crc32c
from mesh.packages._delta import (
    DELTA_MAGIC,
    DeltaHeader,
    apply_delta,
    make_delta,
    read_delta_header,
)
from mesh.packages._errors import PackageError
from mesh.packages._keys import (
    CERTIFICATE_TYPE,
    SigningCertificate,
    TrustRoot,
    canonical_json,
    certify_signing_key,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    public_pem,
    write_private_key,
)
from mesh.packages._package import (
    MANIFEST_TYPE,
    MAX_FILES,
    MAX_PACKAGE_BYTES,
    Manifest,
    ManifestFile,
    VerifiedPackage,
    build_package,
    files_from_paths,
    package_id,
    payload_of,
    read_manifest,
    sign_package,
    verify_package,
)

__all__ = [
    "CERTIFICATE_TYPE",
    "DELTA_MAGIC",
    "MANIFEST_TYPE",
    "MAX_FILES",
    "MAX_PACKAGE_BYTES",
    "DeltaHeader",
    "Manifest",
    "ManifestFile",
    "PackageError",
    "SigningCertificate",
    "TrustRoot",
    "VerifiedPackage",
    "apply_delta",
    "build_package",
    "canonical_json",
    "certify_signing_key",
    "crc32c",
    "files_from_paths",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "make_delta",
    "package_id",
    "payload_of",
    "public_pem",
    "read_delta_header",
    "read_manifest",
    "sign_package",
    "verify_package",
    "write_private_key",
]
