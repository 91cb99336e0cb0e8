"""Sending one-time sign-in codes: the `CodeSender` seam and the embedded default.

Production plugs an SMS gateway in here. The embedded `LogCodeSender` (one machine, ``make
run``, tests) writes each code to the node's log — the phone masked, e.g. ``138****8000``,
the only log line that ever carries a code — and appends it to ``DATA_DIR/sign-in-codes.log``
(mode 0600), one JSON object per line, so a person signing in by hand can read it there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Protocol

from cloud.accounts._validate import mask_phone
from mesh.files import PRIVATE_FILE_MODE, tighten

__all__ = ["CODES_FILE", "CodeSender", "LogCodeSender", "SentCode"]

log = logging.getLogger(__name__)

CODES_FILE = "sign-in-codes.log"
"""Name of the embedded sender's file in the data directory."""


@dataclasses.dataclass(frozen=True)
class SentCode:
    """A code to deliver."""

    phone: str = dataclasses.field(repr=False)
    """The mobile number, E.164."""
    code: str = dataclasses.field(repr=False)
    """The code."""
    challenge_id: str
    """The challenge it answers."""
    expires_at: dt.datetime
    """When it stops working."""


class CodeSender(Protocol):
    """Delivers sign-in codes (an SMS gateway in production)."""

    async def send(self, message: SentCode) -> None:
        """Deliver one code; raise ``OSError`` when it cannot be handed over."""
        ...


class LogCodeSender:
    """The embedded sender: the node's log and ``DATA_DIR/sign-in-codes.log``.

    Args:
        data_dir: the node's data directory (exists, mode 0700).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / CODES_FILE
        self._lock = asyncio.Lock()

    async def send(self, message: SentCode) -> None:
        """Log the code (phone masked) and append it to the file (see the module)."""
        masked = mask_phone(message.phone)
        expires = message.expires_at.isoformat(timespec="seconds")
        log.info(
            "sign-in code for %s: %s (challenge %s, expires %s)",
            masked,
            message.code,
            message.challenge_id,
            expires,
        )
        line = json.dumps(
            {
                "phone": masked,
                "code": message.code,
                "challenge_id": message.challenge_id,
                "expires": expires,
            }
        )
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    def _append(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        tighten([self.path])  # a file made looser by hand is narrowed again
