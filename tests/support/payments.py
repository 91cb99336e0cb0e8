"""The payment simulator and the cloud's channel client wired together, for tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from cloud.config import PaymentsConfig
from cloud.payments import (
    NotifyServer,
    PaymentEvidence,
    RefundEvidence,
    WechatPayChannel,
    open_payments,
)
from mesh.tls import TlsFiles
from tools.pay_sim import PaySim


def payments_config(sim: PaySim, keys: Path, **overrides: object) -> PaymentsConfig:
    key_file, public = sim.write_keys(keys)
    values: dict[str, object] = {
        "channel_url": sim.base_url,
        "merchant_id": sim.merchant_id,
        "app_id": sim.app_id,
        "merchant_key_file": key_file,
        "platform_public_key_file": public,
        "notify_plaintext": True,
        "timeout": 2.0,
        "retry_deadline": 2.0,
    }
    values.update(overrides)
    return PaymentsConfig(**values)  # type: ignore[arg-type]


class Inbox:
    """A listener that records every evidence it is given and lets tests wait for it."""

    def __init__(self) -> None:
        self.items: list[PaymentEvidence | RefundEvidence] = []
        self._changed = asyncio.Condition()

    async def __call__(self, evidence: PaymentEvidence | RefundEvidence) -> None:
        async with self._changed:
            self.items.append(evidence)
            self._changed.notify_all()

    async def wait(self, count: int, limit: float = 10.0) -> list[PaymentEvidence | RefundEvidence]:
        async with asyncio.timeout(limit), self._changed:
            await self._changed.wait_for(lambda: len(self.items) >= count)
        return list(self.items)


@contextlib.asynccontextmanager
async def channel_and_sim(
    tmp_path: Path, *, tls: TlsFiles | None = None, **overrides: object
) -> AsyncIterator[tuple[PaySim, WechatPayChannel, NotifyServer, Inbox]]:
    """A started simulator (state in ``tmp_path``), the client, its endpoint and an inbox."""
    notify_ca = tls.ca_cert if tls is not None else None
    async with PaySim(path=tmp_path / "pay_sim.db", notify_ca=notify_ca) as sim:
        if tls is not None:
            overrides.setdefault("notify_plaintext", False)
        config = payments_config(sim, tmp_path / "keys", **overrides)
        async with open_payments(config, tls=tls) as (channel, server):
            inbox = Inbox()
            channel.add_listener(inbox)
            yield sim, channel, server, inbox
