"""Orders put together: the schema every partition holds, and one object the node builds."""

from __future__ import annotations

from pathlib import Path

from cloud.config import OrdersConfig
from cloud.orders._api import BoundPatientLookup, OrderApi
from cloud.orders._coordinator import OrderCoordinator, SlotFees
from cloud.orders._hospital import ChannelFor, HospitalAppointments
from cloud.orders._schema import PARTITIONED
from cloud.orders._store import OrderStore
from cloud.partitions import PartitionSchema, PartitionSet
from cloud.payments import PaymentChannel

__all__ = ["ORDERS_SCHEMA", "Orders"]

ORDERS_SCHEMA = PartitionSchema(
    name="orders",
    metadata=PARTITIONED,
    migrations=Path(__file__).resolve().parent / "migrations" / "partition",
    version_table="alembic_version_orders",
)
"""The order tables every partition database holds."""


class Orders:
    """The store, the coordinator (with its resume loop) and the API of orders.

    Args:
        parts: the partitions (opened with `ORDERS_SCHEMA` among their schemas).
        channel_for: the router's ``channel_for``.
        channel: the payment channel, or ``None`` when payments are not configured.
        patients: finds a bound patient's id at a hospital
            (``cloud.accounts.Patients.at_hospital``).
        config: timings and thresholds.
        node_id: written on every history line.
        fees: the slot fees patients are shown (the public read store), for hospitals that
            cannot hold places.
    """

    def __init__(
        self,
        parts: PartitionSet,
        *,
        channel_for: ChannelFor,
        channel: PaymentChannel | None,
        patients: BoundPatientLookup,
        config: OrdersConfig | None = None,
        node_id: str = "",
        fees: SlotFees | None = None,
    ) -> None:
        config = config or OrdersConfig()
        self.store = OrderStore(parts, node_id=node_id)
        self.coordinator = OrderCoordinator(
            self.store,
            HospitalAppointments(channel_for, timeout=config.hospital_timeout),
            channel,
            config=config,
            fees=fees,
        )
        self.api = OrderApi(self.coordinator, patients)

    async def run(self) -> None:
        """The resume loop (a supervised background loop of the node)."""
        await self.coordinator.run()

    async def shutdown(self) -> None:
        """Stop the loop; orders in flight resume at the next start."""
        await self.coordinator.shutdown()
