from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.retry import RetryPolicy, is_transient, status_code

# -------------------------------------------------------------------- the schedule


def test_window_grows_by_the_multiplier_up_to_the_maximum() -> None:
    p = RetryPolicy(initial=1.0, maximum=10.0, multiplier=2.0)
    assert [p.window(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]
    assert RetryPolicy(initial=0.5, maximum=9.0, multiplier=3.0).window(3) == 4.5
    assert RetryPolicy(initial=2.0, maximum=5.0, multiplier=1.0).window(50) == 2.0


def test_window_never_overflows() -> None:
    # A dialer that failed for a day (thousands of times) must still get a delay:
    # 2.0 ** 1024 raises OverflowError.
    assert RetryPolicy(initial=1.0, maximum=60.0).window(100_000) == 60.0


def test_full_jitter_draws_below_the_window_and_a_seed_repeats_it() -> None:
    p = RetryPolicy(initial=1.0, maximum=8.0)
    rng = random.Random(3)
    delays = [p.delay(n, rng) for n in range(1, 7)]
    rng = random.Random(3)
    assert delays == [p.delay(n, rng) for n in range(1, 7)]
    assert all(0.0 <= d <= p.window(n) for n, d in enumerate(delays, 1))
    assert len(set(delays)) == len(delays)


def test_without_jitter_the_delay_is_the_window() -> None:
    p = RetryPolicy(initial=0.5, maximum=3.0, jitter=False)
    assert [p.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"initial": 0}, "need 0 < initial <= maximum"),
        ({"initial": 2, "maximum": 1}, "need 0 < initial <= maximum"),
        ({"multiplier": 0.5}, "need multiplier >= 1"),
        ({"deadline": 0}, "need deadline > 0"),
        ({"attempts": 0}, "need attempts >= 1"),
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=f"^retry policy: {problem}"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -------------------------------------------------------------------- the predicate


class _Refused(Exception):
    """Like the error tree's classes: a `code` attribute holding a grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


S = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "when_idempotent", "otherwise"),
    [
        (S.UNAVAILABLE, True, True),
        (S.RESOURCE_EXHAUSTED, True, False),
        (S.ABORTED, True, False),
        (S.DEADLINE_EXCEEDED, False, False),
        (S.INTERNAL, False, False),
        (S.INVALID_ARGUMENT, False, False),
        (S.UNKNOWN, False, False),
        (S.CANCELLED, False, False),
    ],
)
def test_transient_codes(code: grpc.StatusCode, when_idempotent: bool, otherwise: bool) -> None:
    for err in (_rpc_error(code), _Refused(code)):
        assert status_code(err) is code
        assert is_transient(err, idempotent=True) is when_idempotent
        assert is_transient(err, idempotent=False) is otherwise


def test_errors_without_a_status_are_not_transient() -> None:
    class Coded(Exception):
        code = "UNAVAILABLE"  # a string is not a status code

    for err in (ConnectionError(), TimeoutError(), Coded()):
        assert status_code(err) is None
        assert not is_transient(err, idempotent=True)


# -------------------------------------------------------------------- the loop


class _Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[grpc.aio.Channel, list[grpc.StatusCode]]]:
    """A real server whose unary method fails with the queued codes, then answers."""
    failures: list[grpc.StatusCode] = []

    async def handle(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if failures:
            await context.abort(failures.pop(0), "try again")
        return b"ok:" + request

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Flaky", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, failures
    await server.stop(None)


async def test_retries_transient_failures_of_a_real_call(
    flaky: tuple[grpc.aio.Channel, list[grpc.StatusCode]],
) -> None:
    channel, failures = flaky
    failures += [S.UNAVAILABLE, S.RESOURCE_EXHAUSTED]
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.Flaky/Call")
    sleeps = _Sleeps()
    policy = RetryPolicy(initial=1.0, maximum=4.0, attempts=5)
    retrying = policy.retrying(
        retry_on=functools.partial(is_transient, idempotent=True),
        rng=random.Random(5),
        sleep=sleeps,
    )

    async def attempt() -> bytes:
        return await call(b"x", timeout=10)

    assert await retrying(attempt) == b"ok:x"
    assert failures == []
    rng = random.Random(5)
    assert sleeps.delays == [policy.delay(1, rng), policy.delay(2, rng)]


async def test_a_non_idempotent_call_is_not_retried_on_back_pressure(
    flaky: tuple[grpc.aio.Channel, list[grpc.StatusCode]],
) -> None:
    channel, failures = flaky
    failures += [S.RESOURCE_EXHAUSTED]
    sleeps = _Sleeps()
    retrying = RetryPolicy(attempts=5).retrying(
        retry_on=functools.partial(is_transient, idempotent=False), sleep=sleeps
    )
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.Flaky/Call")

    async def attempt() -> bytes:
        return await call(b"x", timeout=10)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await retrying(attempt)
    assert caught.value.code() is S.RESOURCE_EXHAUSTED
    assert sleeps.delays == []


async def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise _Refused(S.UNAVAILABLE)

    sleeps = _Sleeps()
    retrying = RetryPolicy(attempts=3, deadline=None).retrying(
        retry_on=functools.partial(is_transient, idempotent=False), sleep=sleeps
    )
    with pytest.raises(_Refused):
        await retrying(down)
    assert calls == 3
    assert len(sleeps.delays) == 2


async def test_gives_up_at_the_deadline() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise _Refused(S.UNAVAILABLE)

    # Real sleeps: tenacity measures the deadline on the monotonic clock.
    retrying = RetryPolicy(initial=0.01, maximum=0.02, deadline=0.1).retrying(
        retry_on=functools.partial(is_transient, idempotent=False)
    )
    with pytest.raises(_Refused):
        await retrying(down)
    assert calls >= 2


async def test_retries_a_result_and_returns_the_last_one_when_giving_up() -> None:
    answers = [None, None, "row"]

    async def poll() -> str | None:
        return answers.pop(0)

    sleeps = _Sleeps()
    policy = RetryPolicy(initial=0.5, maximum=0.8, jitter=False, deadline=None)
    assert await policy.retrying(retry_result=lambda r: r is None, sleep=sleeps)(poll) == "row"
    assert sleeps.delays == [0.5, 0.8]

    async def never() -> None:
        return None

    limited = RetryPolicy(attempts=2, deadline=None).retrying(
        retry_result=lambda r: r is None, sleep=_Sleeps()
    )
    assert await limited(never) is None
