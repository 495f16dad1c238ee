"""Servers the slow tests start on loopback (a Ray head, a Flower SuperLink): a free port, and a stop
that ends the server's whole process group — never ``ray stop`` or ``pkill``, which end every
matching process of the user on the machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to the process group of ``process`` (started with ``start_new_session=True``), then
    SIGKILL if it has not ended within ``timeout`` seconds."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
