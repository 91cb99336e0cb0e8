"""Compare two releases of the Protobuf contracts: breaking findings and parameter changes.

A pure library: descriptors in, findings out. Rules copy ``buf breaking`` (same IDs, same
categories, same locations) so the two tools can be compared one to one; on top of them,
:func:`changes` lists every change (additions included) per RPC and direction, and
:func:`window` checks a candidate against the last N frozen releases.

Typical use::

    old = compat.load_input("release:1.0.0")
    new = compat.load_input("proto")
    result = compat.diff(old.schema, new.schema, old=old.label, new=new.label)
    print(result.render("text"))
"""

from __future__ import annotations

from compat._changes import Change, ChangeKind, ChangeReport, ParameterChange
from compat._engine import breaking, schema_of
from compat._gate import Judgement
from compat._index import Schema
from compat._inputs import (
    CompatInputError,
    LoadedInput,
    check_git_ref,
    list_release_versions,
    load_input,
)
from compat._judge import CLOUD_SERVICES, changes
from compat._model import DEFAULT_CATEGORIES, Category, Finding, Severity
from compat._protoc import ProtoCompileError, compile_protos, include_paths, proto_files
from compat._registry import RULES, RuleSpec, rules_for
from compat._report import DiffResult, diff
from compat._suppress import Suppressions, load_approvals
from compat._window import WindowReport, window

__all__ = [
    "CLOUD_SERVICES",
    "DEFAULT_CATEGORIES",
    "RULES",
    "Category",
    "Change",
    "ChangeKind",
    "ChangeReport",
    "CompatInputError",
    "DiffResult",
    "Finding",
    "Judgement",
    "LoadedInput",
    "ParameterChange",
    "ProtoCompileError",
    "RuleSpec",
    "Schema",
    "Severity",
    "Suppressions",
    "WindowReport",
    "breaking",
    "changes",
    "check_git_ref",
    "compile_protos",
    "diff",
    "include_paths",
    "list_release_versions",
    "load_approvals",
    "load_input",
    "proto_files",
    "rules_for",
    "schema_of",
    "window",
]
