"""What the three adapters share: settings, codec, capabilities, lifecycle, call logging."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import ClassVar, Self, TypeVar

from typing_extensions import override

from frontend_server.adapters._codec import Codec
from frontend_server.adapters._domain import Capabilities
from frontend_server.adapters._errors import (
    HisCapabilityError,
    HisError,
    HisRejected,
    HisUnavailable,
    RejectReason,
)
from frontend_server.adapters._protocol import HisAdapter
from frontend_server.adapters._settings import DialectSettings, within_caller
from frontend_server.adapters._vendors import UNAVAILABLE_CODE

__all__ = ["WRITE_OPERATIONS", "BaseAdapter", "converted"]

_In = TypeVar("_In")
_Out = TypeVar("_Out")
_SLICE = 200


async def converted(items: Iterable[_In], convert: Callable[[_In], _Out]) -> tuple[_Out, ...]:
    """``tuple(map(convert, items))``, letting the event loop run between slices.

    A bulk read returns thousands of records; converting them in one go would hold up the
    edge's other work (real-time calls, tunnel pings) for a noticeable time.
    """
    out: list[_Out] = []
    for i, item in enumerate(items, 1):
        out.append(convert(item))
        if i % _SLICE == 0:
            await asyncio.sleep(0)
    return tuple(out)


_log = logging.getLogger("frontend_server.adapters")

WRITE_OPERATIONS = frozenset(
    {"hold", "release_hold", "book", "cancel", "quote", "settle", "refund", "register_patient"}
)
"""Operations that change the HIS (a lost answer means the outcome is unknown)."""


class BaseAdapter(HisAdapter):
    """Base of the dialect adapters: what they share, and the :class:`HisAdapter` they are.

    The operations are documented once, on :class:`HisAdapter`; implementations are
    marked ``@override``.

    Args:
        settings: The adapter's settings; ``settings.dialect`` must match the class.
    """

    DIALECT: ClassVar[str] = ""
    DIALECT_CAPABILITIES: ClassVar[Capabilities]
    MONEY_IN_FEN: ClassVar[bool] = False
    REQUEST_FIELDS: ClassVar[Mapping[str, str]] = {}
    """Documented request parameter → the contract request field whose value it carries,
    for the parameters a HIS may name in a refusal (``HisRejected.field``)."""

    def __init__(self, settings: DialectSettings) -> None:
        if settings.dialect != self.DIALECT:
            raise ValueError(
                f"dialect: {type(self).__name__} needs {self.DIALECT!r}, got {settings.dialect!r}"
            )
        self.settings = settings
        self._codec = Codec(settings, money_in_fen=self.MONEY_IN_FEN)
        off = {name: False for name in settings.disabled_capabilities}
        self._capabilities = replace(self.DIALECT_CAPABILITIES, **off)
        self._closed = False

    @property
    @override
    def dialect(self) -> str:
        return self.DIALECT

    @property
    @override
    def capabilities(self) -> Capabilities:
        # The dialect's, minus those the settings disable for this hospital.
        return self._capabilities

    @override
    async def __aenter__(self) -> Self:
        return self

    @override
    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @override
    async def aclose(self) -> None:
        self._closed = True

    def _require(self, capability: str, operation: str) -> None:
        if not getattr(self._capabilities, capability):
            raise HisCapabilityError(capability, operation=operation, dialect=self.DIALECT)

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise HisUnavailable(
                "adapter is closed",
                operation=operation,
                dialect=self.DIALECT,
                cause="adapter_closed",
            )

    @staticmethod
    def _check_find_args(id_number: str, card_number: str, phone: str, name: str) -> None:
        """Enforces "exactly one of document, card, phone (phone needs the name)".

        Raises:
            ValueError: Otherwise (a caller bug, refused before reaching the HIS).
        """
        if sum(bool(x) for x in (id_number, card_number, phone)) != 1:
            raise ValueError("find_patients: give exactly one of id_number, card_number, phone")
        if phone and not name:
            raise ValueError("find_patients: a phone search needs the name")

    def _deadline(self, operation: str) -> float:
        if operation in WRITE_OPERATIONS:
            return within_caller(self.settings.write_timeout_seconds)
        return within_caller(self.settings.read_timeout_seconds)

    def _refusal(
        self, vendor_code: str, message: str, operation: str, *, parameter: str = ""
    ) -> HisError:
        """Maps a vendor error code to the exception to raise.

        Args:
            vendor_code: The vendor's error code.
            message: The vendor's text.
            operation: Operation name.
            parameter: The request parameter the HIS named as refused (its wire name),
                or "".

        Returns:
            :class:`HisUnavailable` for an outage code, else :class:`HisRejected` (with the
            contract field of ``parameter`` when :data:`REQUEST_FIELDS` knows it).
        """
        reason = self._codec.error_reason(vendor_code)
        if reason == UNAVAILABLE_CODE:
            return HisUnavailable(
                f"{operation}: HIS unavailable (vendor code {vendor_code})",
                operation=operation,
                dialect=self.DIALECT,
                cause="vendor_outage",
            )
        return HisRejected(
            RejectReason(reason),
            vendor_code,
            message,
            operation=operation,
            dialect=self.DIALECT,
            field=self._refused_field(parameter),
        )

    def _refused_field(self, parameter: str) -> str:
        """The contract field a refused parameter carries ("" when not known)."""
        if not parameter:
            return ""
        for documented, field in self.REQUEST_FIELDS.items():
            if parameter in (documented, self._codec.name(documented)):
                return field
        return ""

    @contextmanager
    def _logged(self, operation: str) -> Iterator[None]:
        """Logs one HIS call's operation, outcome and duration (never its parameters).

        Args:
            operation: Operation name.

        Yields:
            Nothing.
        """
        self._check_open(operation)
        started = time.monotonic()
        outcome = "ok"
        try:
            yield
        except HisError as err:
            outcome = type(err).__name__
            raise
        except BaseException:
            outcome = "cancelled/internal"
            raise
        finally:
            _log.debug(
                "his %s %s -> %s in %.3fs",
                self.DIALECT,
                operation,
                outcome,
                time.monotonic() - started,
            )
