"""Three-way reconciliation benchmark (``python -m bench.reconcile``)."""
