"""A TCP relay the fault set puts on a path to cut it: refused, blackholed, or passing.

Between the edge and its HIS it stands for the hospital's network (``blackhole``: the HIS
host gives no TCP answer at all) or the HIS host (``refuse``: nothing listens); between the
edge and the node, for the internet under the tunnel (``refuse`` cuts every connection and
the edge's redials are refused); in front of Redis, for the cloud's shared store.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

__all__ = ["Relay"]

_CHUNK = 65536


class Relay:
    """Forwards ``127.0.0.1:port`` to ``target`` until told otherwise.

    Args:
        target_host: where connections go.
        target_port: its port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._hole: list[socket.socket] = []
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.mode = "closed"

    async def start(self) -> int:
        """Starts passing; returns the port (chosen by the system the first time)."""
        await self._listen()
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.mode = "pass"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _reset(writer)  # the target refused: so does the relay
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(_CHUNK):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        task = asyncio.current_task()
        assert task is not None
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._links.discard(writer)
            self._links.discard(up_writer)

    def _cut_links(self) -> None:
        for writer in list(self._links):
            _reset(writer)
        self._links.clear()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for sock in self._hole:
            sock.close()
        self._hole.clear()

    async def refuse(self) -> None:
        """Resets every connection and stops listening: connects are refused."""
        await self._stop_listening()
        self._cut_links()
        self.mode = "refuse"

    async def blackhole(self) -> None:
        """Resets every connection; new connects get no answer at all (they time out).

        The port listens with a backlog of zero that is filled and never accepted, so the
        kernel drops further SYNs, as a host behind a dead route does.
        """
        await self._stop_listening()
        self._cut_links()
        hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hole.bind(("127.0.0.1", self.port))
        hole.listen(0)
        self._hole.append(hole)
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._hole.append(filler)
        self.mode = "blackhole"

    async def restore(self) -> None:
        """Passes again."""
        if self.mode == "pass":
            return
        await self._stop_listening()
        await self._listen()

    async def close(self) -> None:
        """Stops everything."""
        await self._stop_listening()
        self._cut_links()
        self.mode = "closed"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP reset (SO_LINGER 0), as a dropped connection looks to its peer."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(Exception):
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    with contextlib.suppress(Exception):
        writer.transport.abort()
