"""Whether a download host answers: asked before any trial so that an offline machine fails fast, never hangs."""
from __future__ import annotations

import functools
import os
import socket
import threading


@functools.lru_cache(maxsize=None)
def reachable(host: str, timeout: float = 2.0) -> bool:
    """True when `host` accepts a TCP connection on port 443 within `timeout` seconds; False if TUNEVISION_OFFLINE=1."""
    if os.environ.get("TUNEVISION_OFFLINE") == "1":
        return False
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    # A thread we stop waiting for, because the name lookup before the connect ignores the socket timeout.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)
