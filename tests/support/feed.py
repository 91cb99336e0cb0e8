"""The cloud's side of the change-feed contract, as a dict, for tests of any feed source.

:class:`CloudModel` applies pages the way ``DirectoryService.GetChanges`` tells the cloud to:
a change only when its version is higher than the one held, and after the last page of a
snapshot, the deletion of whatever the snapshot did not contain (of the requested kinds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from hplus.hospital.v1 import directory_pb2

Fetch = Callable[[directory_pb2.GetChangesRequest], Awaitable[directory_pb2.GetChangesResponse]]
BetweenPages = Callable[[int], Awaitable[None]]
ALL_KINDS = frozenset(
    {
        directory_pb2.ENTITY_KIND_DEPARTMENT,
        directory_pb2.ENTITY_KIND_DOCTOR,
        directory_pb2.ENTITY_KIND_SCHEDULE,
        directory_pb2.ENTITY_KIND_SLOT,
    }
)


class CloudModel:
    """What the cloud holds of one hospital: (kind, id) -> the change that put it there."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, str], directory_pb2.EntityChange] = {}
        self.watermark = ""
        self.pages: list[directory_pb2.GetChangesResponse] = []

    async def sync(
        self,
        fetch: Fetch,
        *,
        page_size: int = 5000,
        kinds: Sequence[int] = (),
        between_pages: BetweenPages | None = None,
    ) -> directory_pb2.GetChangesResponse:
        """One pass from the saved watermark; returns its last page (all in ``pages``)."""
        token, seen, self.pages = "", set(), []
        while True:
            page = await fetch(
                directory_pb2.GetChangesRequest(
                    since=self.watermark, page_token=token, page_size=page_size, kinds=kinds
                )
            )
            self.pages.append(page)
            for c in page.changes:
                key = (c.kind, c.entity_id)
                seen.add(key)
                held = self.held.get(key)
                if held is None or held.version < c.version:
                    self.held[key] = c
            token = page.next_page_token
            if not token:
                break
            if between_pages is not None:
                await between_pages(len(self.pages))
        if page.snapshot:
            wanted = set(kinds) or ALL_KINDS
            for key in [k for k in self.held if k[0] in wanted and k not in seen]:
                del self.held[key]
        self.watermark = page.watermark
        return page

    def delivered(self) -> list[tuple[int, str]]:
        """(kind, id) of every change of the last pass, in order."""
        return [(c.kind, c.entity_id) for p in self.pages for c in p.changes]

    def changes(self) -> list[directory_pb2.EntityChange]:
        """Every change of the last pass, in order."""
        return [c for p in self.pages for c in p.changes]

    def state(self) -> dict[tuple[int, str], bytes]:
        """(kind, id) -> content digest of what the cloud holds (deletions left out)."""
        return {
            k: c.content_digest for k, c in self.held.items() if c.WhichOneof("change") != "deleted"
        }
