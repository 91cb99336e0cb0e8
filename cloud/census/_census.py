"""Sampling tunnel traffic to count the fields present, per RPC, direction and release.

Keeping a census of the parameters every interface really carries is what tells a release
manager whether a field marked for removal is still sent by edges in the field. The census
is a tunnel call hook: it samples whole calls at a configured rate and copies the sampled
messages' bytes into a bounded queue; decoding and counting happen later, in `drain`, off
the call path, so the cost on the tunnel stays small. Patient data never leaves the
decoder: only field paths are counted, never values.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
from collections.abc import Iterator

from google.protobuf import descriptor_pool, message, message_factory, unknown_fields

from mesh.tunnel import CallHook, CallInfo

__all__ = ["CensusRow", "FieldCensus"]

log = logging.getLogger(__name__)

REQUEST = "request"
"""Direction of messages the cloud sends to an edge."""
RESPONSE = "response"
"""Direction of messages an edge sends back to the cloud."""


@dataclasses.dataclass(frozen=True, order=True)
class CensusRow:
    """How often a field was present in the sampled messages of one RPC."""

    rpc: str
    """Full method name, ``/package.Service/Method``."""
    direction: str
    """``request`` (cloud → edge) or ``response`` (edge → cloud)."""
    contract_release: str
    """The edge's contract release."""
    field_path: str
    """Dotted path of the field (``booking.patient.id_card``); ``#N`` for an unknown field
    number (sent by an edge whose contract is newer than the cloud's)."""
    messages: int
    """Sampled messages that carried the field."""
    sampled: int
    """Sampled messages of this RPC, direction and release in all."""


def _paths(msg: message.Message, prefix: str, out: set[str]) -> None:
    for fd, value in msg.ListFields():
        path = prefix + fd.name
        out.add(path)
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        if fd.is_repeated:
            for item in value:
                _paths(item, path + ".", out)
        else:
            _paths(value, path + ".", out)
    unknown = unknown_fields.UnknownFieldSet(msg)
    for i in range(len(unknown)):
        out.add(f"{prefix}#{unknown[i].field_number}")


class FieldCensus(CallHook):
    """A call hook that samples calls and counts the fields their messages carry.

    Args:
        rate: fraction of calls sampled, 0 to 1.
        rng: random source (tests pass a seeded one).
        pool: descriptors to decode with; default the generated code's pool.
        max_pending: sampled messages kept for `drain`; more are dropped and counted.
    """

    def __init__(
        self,
        *,
        rate: float,
        rng: random.Random | None = None,
        pool: descriptor_pool.DescriptorPool | None = None,
        max_pending: int = 10_000,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"census rate must be within [0, 1], got {rate}")
        self.rate = rate
        self._rng = rng or random.Random()
        self._pool = pool or descriptor_pool.Default()
        self._pending: collections.deque[tuple[str, str, str, bytes]] = collections.deque()
        self._max_pending = max_pending
        self._fields: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        self._sampled: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.dropped = 0
        """Sampled messages dropped because the queue was full or they did not decode."""

    def on_start(self, call: CallInfo) -> None:
        """Decide whether this call is sampled."""
        if self.rate and self._rng.random() < self.rate:
            call.extra["census"] = True

    def on_message(self, call: CallInfo, outgoing: bool, data: bytes) -> None:
        """Queue a sampled call's message for counting."""
        if not call.extra.get("census"):
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        direction = REQUEST if outgoing else RESPONSE
        self._pending.append((call.method, direction, call.contract_release, data))

    def _message_class(self, rpc: str, direction: str) -> type[message.Message] | None:
        service, _, method = rpc.strip("/").rpartition("/")
        try:
            md = self._pool.FindMethodByName(f"{service}.{method}")
        except KeyError:
            return None
        return message_factory.GetMessageClass(
            md.input_type if direction == REQUEST else md.output_type
        )

    def drain(self) -> int:
        """Decode and count every queued message; returns how many were counted."""
        counted = 0
        while self._pending:
            rpc, direction, release, data = self._pending.popleft()
            cls = self._message_class(rpc, direction)
            if cls is None:
                self.dropped += 1
                continue
            try:
                msg = cls.FromString(data)
            except message.DecodeError:
                self.dropped += 1
                continue
            present: set[str] = set()
            _paths(msg, "", present)
            self._sampled[(rpc, direction, release)] += 1
            for path in present:
                self._fields[(rpc, direction, release, path)] += 1
            counted += 1
        return counted

    def rows(self, *, rpc: str | None = None) -> Iterator[CensusRow]:
        """Everything counted so far (after `drain`), sorted; optionally of one RPC."""
        for (r, direction, release, path), n in sorted(self._fields.items()):
            if rpc is None or r == rpc:
                yield CensusRow(
                    rpc=r,
                    direction=direction,
                    contract_release=release,
                    field_path=path,
                    messages=n,
                    sampled=self._sampled[(r, direction, release)],
                )
