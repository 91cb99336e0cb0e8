"""Import-linter contracts of our own, for the rules its built-in contract types cannot say.

Registered in ``pyproject.toml`` (``[tool.importlinter] contract_types``) and run by
``lint-imports`` in ``make lint``. Import-linter's wildcards replace whole module names
only (``cloud.*``, never ``cloud._*``), so "no private module imported from another
package" needs a contract type of its own.
"""

from __future__ import annotations

import dataclasses

import grimp
from importlinter import Contract, ContractCheck, output

__all__ = ["PrivateImport", "PrivateModulesContract", "private_owner"]


def private_owner(module: str) -> str | None:
    """The package that owns ``module`` if it is private, else ``None``.

    A module is private when a part of its dotted name starts with one underscore; the
    owner is the package above the first such part: ``cloud.registry._store`` belongs to
    ``cloud.registry``, ``cloud.registry._x.y`` too. Dunder names (``__main__``) are not
    private.
    """
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i]) or None
    return None


@dataclasses.dataclass(frozen=True, order=True)
class PrivateImport:
    """One import of a private module from outside its owner."""

    importer: str
    """The module that imports."""
    imported: str
    """The private module it imports."""
    owner: str
    """The package that owns ``imported`` (import from there instead)."""
    lines: tuple[int, ...]
    """Line numbers of the import statements in ``importer``."""


class PrivateModulesContract(Contract):
    """Only its owner package (and modules inside it) may import a private module.

    Checks every module of the root packages; modules of other packages (``hplus`` in
    ``gen/``, third parties) are not ours to judge. Takes no options.
    """

    type_name = "private_modules"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        """Find every import of a private module from outside its owner.

        Args:
            graph: the import graph of the root packages.
            verbose: unused (the check is one pass over the graph).

        Returns:
            Kept when there is none; the offending imports in ``metadata["imports"]``.
        """
        roots = set(self.session_options["root_packages"])
        found: list[PrivateImport] = []
        for imported in graph.modules:
            owner = private_owner(imported)
            if owner is None or imported.split(".")[0] not in roots:
                continue
            for importer in graph.find_modules_that_directly_import(imported):
                if importer == owner or importer.startswith(owner + "."):
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                lines = tuple(sorted(d["line_number"] for d in details))
                found.append(PrivateImport(importer, imported, owner, lines))
        found.sort()
        return ContractCheck(kept=not found, metadata={"imports": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        """Print one line per offending import, naming the package to import from."""
        for imp in check.metadata["imports"]:
            lines = ", ".join(map(str, imp.lines))
            output.print_error(
                f"- {imp.importer} -> {imp.imported} (l.{lines}): import it from {imp.owner}",
                bold=False,
            )
        output.new_line()
