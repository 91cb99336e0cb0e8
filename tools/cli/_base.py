"""Shared plumbing of the ``hplus`` command line: the parser class and the error type."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from mesh.files import create_private_file

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_STORE_REFUSED",
    "EXIT_UNREACHABLE",
    "CliError",
    "Parser",
    "write_secret_file",
]

EXIT_OK = 0
"""The command did what was asked."""
EXIT_FAILED = 1
"""The command ran and the answer is no: a call answered with an error status (``cloud
call``), breaking changes found (``compat``, ``registry push``)."""
EXIT_BAD_INPUT = 2
"""A flag, argument, file or config was malformed; the one-line message says which."""
EXIT_UNREACHABLE = 3
"""The cloud node could not be reached (nothing listening, TLS refused, no answer in time)."""
EXIT_BROKEN_PIPE = 141
"""Whoever read our output stopped reading (``| head``): 128 + SIGPIPE, as a shell tool."""
EXIT_STORE_REFUSED = 65
"""A local store (the edge's ledger or task store) failed its start checks: damaged, missing
where one existed, another directory's, or from a newer release; the message names the file
and what to do (``EX_DATAERR`` of sysexits.h)."""


class CliError(Exception):
    """A command failed in a way the user can fix; printed as one line, no traceback.

    Args:
        message: what is wrong and where (flag, file and line).
        exit_code: the process exit code; :data:`EXIT_BAD_INPUT` unless the command
            documents another.
    """

    def __init__(self, message: str, *, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line naming the problem."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and exit with :data:`EXIT_BAD_INPUT`."""
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_BAD_INPUT)


def write_secret_file(path: Path, secret: str) -> None:
    """Write a freshly issued secret to a new file readable by its owner only (mode 0600).

    Raises:
        CliError: the file exists (a credential is never silently overwritten) or cannot be
            created.
    """
    try:
        create_private_file(path, (secret + "\n").encode())
    except FileExistsError:
        raise CliError(f"{path} exists; refusing to overwrite a secret file") from None
    except OSError as err:
        raise CliError(f"{path}: cannot create: {err.strerror}") from None
