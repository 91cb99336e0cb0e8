"""Error attribution: who owns a failed call, and why, from one table.

`attribute` reads a failure as the caller saw it — the status code, its ``ErrorInfo``
(reason, domain, metadata), its ``BadRequest`` fields and the hop where it failed — and
returns an `Attribution`: the `Owner` who must act, a reason code of the table, the HIS
vendor (dialect) when the HIS owns it, and the hop. The rules are data (`RULES`): each row
says what it matches, whom it blames and why; the first row that matches wins::

    found = attribute(Failure(code="UNAVAILABLE", reason="HIS_UNAVAILABLE",
                              domain="hospital.hplus", metadata={"cause": "refused"}))
    found.owner is Owner.HIS_VENDOR
"""

from __future__ import annotations

from mesh.attribution._table import (
    RULES,
    Attribution,
    Failure,
    Owner,
    Rule,
    attribute,
    failure_of,
)

__all__ = ["RULES", "Attribution", "Failure", "Owner", "Rule", "attribute", "failure_of"]
