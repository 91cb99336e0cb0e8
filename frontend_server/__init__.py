"""The front-end server that runs inside each hospital.

It dials out to the cloud, serves the hospital services through the tunnel over that
hospital's HIS, and queues slow work.
"""

from __future__ import annotations
