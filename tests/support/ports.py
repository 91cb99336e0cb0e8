"""Addresses where nothing answers, without guessing a port number."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port on ``host`` that refuses connections while the block runs.

    The port is bound but never listened on, so no other process can take it meanwhile
    (as it could a port that was merely free a moment ago, or a fixed "unused" number),
    and a connection to it is refused at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        yield s.getsockname()[1]
