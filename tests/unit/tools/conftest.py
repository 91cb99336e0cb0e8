from __future__ import annotations

# The registry CLI tests run against the registry fixture of the registry's own tests.
from tests.unit.cloud.registry.conftest import registry  # noqa: F401
