"""What the environment does with a network request: the one hint that the hub's and
Kaggle's error messages share."""

from __future__ import annotations

import urllib.request


def proxy_note(url: str) -> str:
    """Say which proxy the environment sends requests for ``url`` through, if any."""
    scheme = url.partition(":")[0]
    host = url.split("://", 1)[-1].split("/", 1)[0]
    p = urllib.request.getproxies().get(scheme)
    return f" through the proxy {p}" if p and not urllib.request.proxy_bypass(host) else ""
