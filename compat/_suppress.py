"""Suppressions: unstable packages, approved fingerprints and per-element ignores."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from compat._changes import Change, ParameterChange
from compat._gate import change_rule
from compat._index import Schema
from compat._inputs import CompatInputError
from compat._model import Finding
from compat._rules import UNSTABLE_PACKAGE

__all__ = ["Suppressions", "load_approvals"]


def load_approvals(path: Path) -> frozenset[str]:
    """Read an approvals file: one fingerprint per line, then optional free text.

    Blank lines and lines starting with ``#`` are skipped, so each approval can carry who
    approved it and why.

    Raises:
        CompatInputError: the file cannot be read or a line is not a fingerprint.
    """
    try:
        text = path.read_text()
    except OSError as err:
        raise CompatInputError(f"cannot read approvals: {err.strerror}", path=str(path)) from None
    found: set[str] = set()
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fp = line.split()[0].lower()
        if len(fp) != 16 or any(c not in "0123456789abcdef" for c in fp):
            raise CompatInputError(
                f"expected a 16-hex-digit fingerprint, got {fp!r}", path=str(path), line=n, column=1
            )
        found.add(fp)
    return frozenset(found)


def _matches(pattern: str, subject: str, paths: Iterable[str]) -> bool:
    if pattern in paths:
        return True
    if pattern.endswith("/") and any(p.startswith(pattern) for p in paths):
        return True
    return subject == pattern or subject.startswith(tuple(pattern + sep for sep in ".#/="))


@dataclasses.dataclass(frozen=True)
class Suppressions:
    """What to leave out of, or accept in, a result."""

    ignore_unstable_packages: bool = False
    """Drop findings in packages whose version is ``v1alpha1``, ``v1beta1``, ``v1test``…"""
    approvals: frozenset[str] = frozenset()
    """Fingerprints of reviewed, intentional breaks; such findings are kept but approved."""
    ignore: tuple[str, ...] = ()
    """Per-element ignores. Each entry is an element (``pkg.Msg``, ``pkg.Msg#3``,
    ``pkg.Svc/Rpc``; a message also covers its fields and nested types), a file path, or a
    directory ending in ``/``, optionally prefixed with ``RULE_ID:`` to ignore one rule only."""

    def _ignored(self, rule: str, subject: str, paths: tuple[str, ...]) -> bool:
        for entry in self.ignore:
            only, sep, pattern = entry.partition(":")
            if not sep:
                only, pattern = "", entry
            if only and only != rule:
                continue
            if _matches(pattern, subject, paths):
                return True
        return False

    def _unstable(self, paths: tuple[str, ...], schemas: tuple[Schema, ...]) -> bool:
        for path in paths:
            for schema in schemas:
                f = schema.files.get(path)
                if f is not None and UNSTABLE_PACKAGE.search(f.package):
                    return True
        return False

    def apply(
        self, findings: list[Finding], previous: Schema, current: Schema
    ) -> tuple[list[Finding], list[Finding]]:
        """Split findings into kept (approved ones marked) and ignored.

        Returns:
            ``(kept, ignored)``.
        """
        kept: list[Finding] = []
        dropped: list[Finding] = []
        for f in findings:
            paths = tuple(p for p in (f.path, f.against_path) if p)
            if (
                self.ignore_unstable_packages and self._unstable(paths, (current, previous))
            ) or self._ignored(f.rule, f.subject, paths):
                dropped.append(f)
            elif f.fingerprint in self.approvals:
                kept.append(dataclasses.replace(f, approved=True))
            else:
                kept.append(f)
        return kept, dropped

    def apply_changes(
        self, changes: list[Change], previous: Schema, current: Schema
    ) -> list[Change]:
        """The changes that are not ignored (approval is the gate's business, not a filter)."""
        out = []
        for c in changes:
            paths = (c.path,)
            if self.ignore_unstable_packages and self._unstable(paths, (current, previous)):
                continue
            rule = change_rule(c)
            if self._ignored(rule, c.subject, paths) or (
                c.element == "rpc" and self._ignored(rule, f"{c.owner}/{c.name}", paths)
            ):
                continue
            out.append(c)
        return out

    def apply_parameters(
        self, params: list[ParameterChange], previous: Schema, current: Schema
    ) -> list[ParameterChange]:
        """The parameter changes that are not ignored (approved ones marked)."""
        out = []
        for p in params:
            paths = (p.change.path,)
            if self.ignore_unstable_packages and self._unstable(paths, (current, previous)):
                continue
            rule = change_rule(p.change)
            if self._ignored(rule, p.change.subject, paths) or self._ignored(
                rule, f"{p.service}/{p.rpc}", paths
            ):
                continue
            if p.change.fingerprint in self.approvals:
                p = dataclasses.replace(p, approved=True)
            out.append(p)
        return out
