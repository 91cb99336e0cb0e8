from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path

from frontend_server.tasks import TaskState, TaskStore

ROOT = Path(__file__).parents[4]
CHILD = Path(__file__).with_name("queue_child.py")
TASKS = 300


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "gen"), str(ROOT)])
    return env


async def _spawn(db: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(db), str(log), stdout=asyncio.subprocess.PIPE, env=_env()
    )


async def _states(db: Path) -> dict[str, TaskState]:
    async with TaskStore.open(db) as store:
        return {t.idempotency_key: t.state for _, t in await store.list_tasks(limit=10 * TASKS)}


async def test_kill_and_restart_finishes_every_task_exactly_once(tmp_path: Path) -> None:
    db, log = tmp_path / "queue.db", tmp_path / "his.log"
    store = TaskStore.open(db)
    await store.start()
    for i in range(TASKS):
        await store.submit(
            idempotency_key=f"task-{i:03d}",
            kind="retrieve_archived_report",
            payload=b"%d" % i,
            priority=0,
            max_attempts=5,
            deadline=4e9,
            queue_limit=10_000,
        )
    await store.aclose()

    async with asyncio.timeout(45):
        first = await _spawn(db, log)
        assert first.stdout is not None
        done = 0
        while done < 100:  # mid-drain: a third of the tasks reported done
            line = await first.stdout.readline()
            assert line, "the child exited before it was killed"
            done += line.startswith(b"done ")
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL

        at_kill = await _states(db)
        finished_before = {k for k, s in at_kill.items() if s is TaskState.SUCCEEDED}
        running_at_kill = {k for k, s in at_kill.items() if s is TaskState.RUNNING}
        assert 0 < len(finished_before) < TASKS
        assert running_at_kill  # claimed under a lease by the dead process
        assert any(s is TaskState.QUEUED for s in at_kill.values())

        second = await _spawn(db, log)
        await second.communicate()
        assert second.returncode == 0

    final = await _states(db)
    assert len(final) == TASKS
    assert set(final.values()) == {TaskState.SUCCEEDED}

    calls: dict[str, set[int]] = defaultdict(set)
    effects: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        kind, pid, key, *_ = line.split()
        if kind == "call":
            calls[key].add(int(pid))
        else:
            effects[key] += 1
    assert set(effects) == set(final)
    assert set(effects.values()) == {1}
    pids = {p for ps in calls.values() for p in ps}
    second_pid = second.pid
    assert pids == {first.pid, second_pid}
    # A task recorded as finished before the kill is never called again...
    assert not {k for k in finished_before if second_pid in calls[k]}
    # ...and the only tasks called by both processes are those running at the kill.
    assert {k for k, ps in calls.items() if len(ps) == 2} <= running_at_kill
