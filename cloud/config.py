"""Configuration of a cloud node: frozen, validated, loaded once at the edge of the process."""

from __future__ import annotations

import dataclasses
import enum
import socket
from collections.abc import Mapping
from pathlib import Path

from mesh.config import ConfigError, Section, load_toml

__all__ = ["NodeConfig", "TlsMode", "parse_listen"]


class TlsMode(enum.StrEnum):
    """Where the node's TLS certificate comes from."""

    DEV = "dev"
    """A development CA and certificate made under ``<data_dir>/tls`` on first run."""
    FILES = "files"
    """The operator's PEM files (``tls.cert``, ``tls.key``, ``tls.ca``)."""
    OFF = "off"
    """Plaintext; only for a node that listens on loopback behind a TLS-terminating proxy."""


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:50051`` for IPv6) and check both parts.

    Raises:
        ValueError: the value is not ``HOST:PORT`` with a port in 0..65535.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a cloud node needs to start."""

    listen: str = "127.0.0.1:50051"
    """``HOST:PORT`` the node's gRPC server listens on (port 0 picks a free one)."""
    data_dir: Path = Path("var")
    """Where embedded state lives: SQLite files, development TLS material."""
    node_id: str = dataclasses.field(default_factory=socket.gethostname)
    """This node's name among the cloud's gateway nodes."""
    tls_mode: TlsMode = TlsMode.DEV
    """Where the TLS certificate comes from."""
    tls_cert: Path | None = None
    """Server certificate chain (PEM), with ``tls_mode = files``."""
    tls_key: Path | None = None
    """Server private key (PEM), with ``tls_mode = files``."""
    tls_ca: Path | None = None
    """CA certificate clients should trust (PEM), with ``tls_mode = files``."""
    grace_seconds: float = 10.0
    """How long in-flight calls may finish after SIGTERM before they are cancelled."""

    def __post_init__(self) -> None:
        try:
            parse_listen(self.listen)
        except ValueError as err:
            raise ConfigError(f"listen: {err}") from None
        if not self.node_id:
            raise ConfigError("node_id: must not be empty")
        if self.grace_seconds < 0:
            raise ConfigError(f"grace_seconds: must be >= 0, got {self.grace_seconds}")
        if self.tls_mode is TlsMode.FILES:
            missing = [n for n in ("tls_cert", "tls_key", "tls_ca") if getattr(self, n) is None]
            if missing:
                raise ConfigError(f"tls mode 'files' needs {', '.join(missing)}")

    @classmethod
    def load(
        cls,
        *,
        path: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> NodeConfig:
        """Build the configuration from a TOML file, the environment and flag overrides.

        Precedence, lowest first: built-in defaults, the file, ``HPLUS_*`` environment
        variables, then ``overrides`` (command-line flags; ``None`` values are ignored).

        Args:
            path: a TOML file with ``[node]`` and ``[tls]`` tables, or ``None``.
            env: the environment to read ``HPLUS_LISTEN``, ``HPLUS_DATA_DIR`` and
                ``HPLUS_NODE_ID`` from; tests pass their own.
            overrides: values from flags, by field name.

        Raises:
            ConfigError: the file is unreadable or invalid, or a value is wrong; the
                message names the file, line and key.
        """
        values: dict[str, object] = {}
        if path is not None:
            doc, text = load_toml(path)
            top = Section(doc, name="", path=path, text=text)
            top.reject_unknown(["node", "tls"])
            node = Section.of(doc, "node", path=path, text=text)
            node.reject_unknown(["listen", "data_dir", "node_id", "grace_seconds"])
            listen = node.get("listen", str, cls.listen)
            try:
                parse_listen(listen)
            except ValueError as err:
                raise node.error("listen", str(err)) from None
            values["listen"] = listen
            if "data_dir" in doc.get("node", {}):
                data_dir = Path(node.get("data_dir", str, "var"))
                # Relative paths in a file are relative to the file, not to the cwd.
                values["data_dir"] = data_dir if data_dir.is_absolute() else path.parent / data_dir
            if "node_id" in doc.get("node", {}):
                values["node_id"] = node.check(
                    "node_id", node.get("node_id", str, ""), bool, "must not be empty"
                )
            if "grace_seconds" in doc.get("node", {}):
                values["grace_seconds"] = node.check(
                    "grace_seconds",
                    node.get("grace_seconds", float, 10.0),
                    lambda v: v >= 0,
                    "must be >= 0",
                )
            tls = Section.of(doc, "tls", path=path, text=text)
            tls.reject_unknown(["mode", "cert", "key", "ca"])
            mode_text = tls.get("mode", str, TlsMode.DEV.value)
            try:
                values["tls_mode"] = TlsMode(mode_text)
            except ValueError:
                raise tls.error(
                    "mode", f"{mode_text!r} is not one of {', '.join(m.value for m in TlsMode)}"
                ) from None
            for key in ("cert", "key", "ca"):
                if key in doc.get("tls", {}):
                    p = Path(tls.get(key, str, ""))
                    values[f"tls_{key}"] = p if p.is_absolute() else path.parent / p
            if values["tls_mode"] is TlsMode.FILES:
                for key in ("cert", "key", "ca"):
                    if f"tls_{key}" not in values:
                        raise tls.error(key, "required when mode = 'files'")
        environ = env or {}
        for var, field in (
            ("HPLUS_LISTEN", "listen"),
            ("HPLUS_DATA_DIR", "data_dir"),
            ("HPLUS_NODE_ID", "node_id"),
        ):
            if environ.get(var):
                values[field] = Path(environ[var]) if field == "data_dir" else environ[var]
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]
