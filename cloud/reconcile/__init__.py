"""Three-way reconciliation: platform payments, the channel's statement, hospitals' ledgers.

For one business date (UTC+8), `Reconciler` reads the platform's side through
`PlatformLedger` (the order coordinator implements it), the channel's statement
(`cloud.payments.PaymentChannel.statement`) and every hospital's
``BillingService.GetDailyLedger`` through its tunnel, classifies each disagreement
(`DiscrepancyKind`), hands the ones the evidence settles exactly to a `ResolutionSink`
(the coordinator decides; reconciliation never changes an order), and stores the run in the
control database. ``hplus reconcile DATE`` runs it on a node (``OperationsService.Reconcile``);
the node also runs it daily (``[reconcile] daily_at``).
"""

from __future__ import annotations

from cloud.reconcile._compare import compare
from cloud.reconcile._hospital import ChannelFor, read_ledger
from cloud.reconcile._model import (
    Discrepancy,
    DiscrepancyKind,
    HospitalEntry,
    HospitalLedger,
    PlatformLedger,
    PlatformPayment,
    PlatformState,
    Report,
    Resolution,
    ResolutionSink,
)
from cloud.reconcile._service import Reconciler, migrate_reconcile, next_run, to_proto

__all__ = [
    "ChannelFor",
    "Discrepancy",
    "DiscrepancyKind",
    "HospitalEntry",
    "HospitalLedger",
    "PlatformLedger",
    "PlatformPayment",
    "PlatformState",
    "Reconciler",
    "Report",
    "Resolution",
    "ResolutionSink",
    "compare",
    "migrate_reconcile",
    "next_run",
    "read_ledger",
    "to_proto",
]
