"""Checking what a caller sends, field by field, and masking what we write to logs.

Every string field of ``AccountService`` has a bound (written on the field in
``account.proto``); a request is checked whole and refused once with every violation
(``INVALID_ARGUMENT`` with ``BadRequest``), never a patient's value in the description.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

from cloud.partitions import PROVINCES, normalize_mobile, valid_resident_id
from mesh import errors

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "Violations",
    "mask_id_number",
    "mask_phone",
    "routed_id",
]

MAX_NAME_LENGTH = 64
"""Longest patient name accepted (characters)."""
MAX_ID_LENGTH = 32
"""Longest identity document or card number accepted."""
MAX_HOSPITAL_ID = 64
"""Longest hospital id (as in the fleet)."""
MAX_PHONE = 20
"""Longest phone text accepted before it is parsed."""
MAX_OPAQUE_ID = 64
"""Longest challenge, patient or session id accepted before it is parsed."""

_HOSPITAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ROUTED_ID = re.compile(r"^(\d{2})-[0-9a-f]{16}$")
_DOCUMENT = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
_NAME_PUNCTUATION = frozenset(" ·.'-")


def routed_id(value: str) -> str | None:
    """The region of an id we issued (``44-3f9c0a…``), or ``None`` when it is not one."""
    match = _ROUTED_ID.match(value)
    if match is None or match.group(1) not in PROVINCES:
        return None
    return match.group(1)


def mask_phone(phone: str) -> str:
    """A mobile number for logs and answers: ``138****8000`` (E.164 ``+86`` dropped)."""
    digits = phone.removeprefix("+86")
    if len(digits) < 8:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


def mask_id_number(number: str) -> str:
    """A document number for answers: the first 4 and last 2 characters kept."""
    if len(number) <= 6:
        return "*" * len(number)
    return f"{number[:4]}{'*' * (len(number) - 6)}{number[-2:]}"


class Violations:
    """Collects a request's field violations; `raise_if_any` refuses it with all of them."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        """Record one violation."""
        self.found.append((field, description))

    def raise_if_any(self) -> None:
        """Refuse the request with every violation found.

        Raises:
            mesh.errors.InvalidArgument: at least one violation was recorded.
        """
        if self.found:
            raise errors.InvalidArgument(field_violations=self.found)

    def bounded(self, field: str, value: str, limit: int) -> bool:
        """Whether ``value`` fits ``limit`` characters (a violation is recorded if not)."""
        if len(value) > limit:
            self.add(field, f"at most {limit} characters")
            return False
        return True

    def request_id(self, value: str, field: str = "request_id") -> str:
        """A request id: a UUID (version 4 or 7) in canonical text form."""
        if not value:
            self.add(field, "required: a UUID, the same for every retry of this request")
            return value
        if not self.bounded(field, value, 36):
            return value
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            parsed = None
        if parsed is None or str(parsed) != value.lower() or parsed.version not in (4, 7):
            self.add(field, "must be a UUID (version 4 or 7) in canonical form")
        return value.lower()

    def phone(self, value: str, field: str, *, required: bool) -> str:
        """A mainland mobile number, returned in E.164 form (empty when absent)."""
        if not value:
            if required:
                self.add(field, "required: a mainland mobile number")
            return ""
        if not self.bounded(field, value, MAX_PHONE):
            return ""
        e164 = normalize_mobile(value)
        if e164 is None:
            self.add(field, "must be a mainland mobile number (+86 and 11 digits)")
            return ""
        return e164

    def hospital_id(self, value: str, field: str = "hospital_id", *, required: bool) -> str:
        """A hospital id as the fleet issues them."""
        if not value:
            if required:
                self.add(field, "required")
            return value
        if self.bounded(field, value, MAX_HOSPITAL_ID) and not _HOSPITAL_ID.match(value):
            self.add(field, "letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    def routed(self, value: str, field: str) -> str | None:
        """The region of an id we issued, or ``None`` (with a violation) when malformed."""
        if not value:
            self.add(field, "required")
            return None
        if not self.bounded(field, value, MAX_OPAQUE_ID):
            return None
        region = routed_id(value)
        if region is None:
            self.add(field, "not an id this service issued")
        return region

    def name(self, value: str, field: str) -> str:
        """A person's name: letters (any script), spaces, and ``·.'-`` between them."""
        text = unicodedata.normalize("NFC", value.strip())
        if not text:
            self.add(field, "required")
            return text
        if not self.bounded(field, text, MAX_NAME_LENGTH):
            return text
        if not all(
            unicodedata.category(ch)[0] in "LM" or ch in _NAME_PUNCTUATION for ch in text
        ) or not unicodedata.category(text[0]).startswith("L"):
            self.add(field, "letters, spaces and the marks · . ' - only, starting with a letter")
        return text

    def document(self, value: str, field: str, *, resident: bool) -> str:
        """An identity document number, upper-case (a resident ID card checked in full)."""
        text = value.strip().upper()
        if not text:
            self.add(field, "required")
            return text
        if not self.bounded(field, text, MAX_ID_LENGTH):
            return text
        if resident:
            if not valid_resident_id(text):
                self.add(
                    field,
                    "not a valid resident ID-card number (18 characters: region, birth date, "
                    "sequence, check character)",
                )
        elif not _DOCUMENT.match(text):
            self.add(field, "letters, digits and '-' only")
        return text

    def card(self, value: str, field: str) -> str:
        """An optional card number (a hospital's patient card)."""
        text = value.strip().upper()
        if text and self.bounded(field, text, MAX_ID_LENGTH) and not _DOCUMENT.match(text):
            self.add(field, "letters, digits and '-' only")
        return text
