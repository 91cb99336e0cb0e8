"""Drains a task queue in a child process, against a fake HIS with a durable log.

Usage: python queue_child.py QUEUE_DB HIS_LOG

The fake HIS deduplicates by idempotency key, as a real HIS does with our key: it appends
``call <pid> <key> <attempt>`` for every call and ``effect <pid> <key>`` the first time a key
takes effect, and prints ``done <key>`` so the parent can follow progress. The process exits
once the queue is idle.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from frontend_server.tasks import QueueConfig, TaskQueue, TaskRun


class DurableHis:
    def __init__(self, log: Path) -> None:
        self._pid = os.getpid()
        lines = log.read_text().splitlines() if log.exists() else []
        self._effects = {line.split()[2] for line in lines if line.startswith("effect ")}
        self._fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _write(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode())  # one write(2): survives SIGKILL

    async def __call__(self, run: TaskRun) -> bytes:
        self._write(f"call {self._pid} {run.idempotency_key} {run.attempt}")
        await asyncio.sleep(0.005)  # the HIS's own latency
        if run.idempotency_key not in self._effects:
            self._effects.add(run.idempotency_key)
            self._write(f"effect {self._pid} {run.idempotency_key}")
        print(f"done {run.idempotency_key}", flush=True)
        return run.idempotency_key.encode()


async def main(db: Path, log: Path) -> None:
    config = QueueConfig(
        drain_rate_per_second=200.0,
        burst=1,
        max_concurrency=4,
        lease_seconds=0.5,
        idle_poll_seconds=0.05,
        max_attempts=5,
    )
    async with TaskQueue.open(db, DurableHis(log), config) as queue:
        await queue.wait_idle()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
