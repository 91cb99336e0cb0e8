"""A loopback TCP proxy that tests and the chaos run cut or black-hole, to fake network failures.

Real components talk through it to real servers; the proxy is the one seam: ``blackhole``
stops moving bytes while keeping sockets open (a dead peer behind a NAT: only liveness
checks notice), ``cut`` closes every connection and refuses new ones (a stopped server),
``restore`` goes back to forwarding on the same port. ``connections`` counts the
connections open through it (the chaos run cuts a tunnel while calls are in flight).
"""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """Forwards every connection to ``127.0.0.1:port`` on ``target``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def connections(self) -> int:
        """Sockets open through the proxy (two per forwarded connection)."""
        return len(self._writers)

    async def start(self, port: int = 0) -> None:
        """Listens on ``port`` of 127.0.0.1 (0: any free port, then in ``self.port``)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
            self._writers.discard(dst)

    def blackhole(self) -> None:
        """Stops moving bytes; sockets stay open."""
        self._flowing.clear()

    async def cut(self) -> None:
        """Closes every connection and refuses new ones until ``restore``."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()

    async def restore(self) -> None:
        """Forwards again, on the same port."""
        self._flowing.set()
        if self._server is None:
            await self.start(self.port)

    async def close(self) -> None:
        """Stops for good."""
        await self.cut()
        with contextlib.suppress(Exception):
            self._flowing.set()
