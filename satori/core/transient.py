"""Telling a passing network failure from a real error, across the DVC process boundary.

A stage that talks to the Hub runs its main() under `report_transient`: a
failure that a later retry may cure (connection reset, timeout, HTTP 408/429/5xx)
is printed with TRANSIENT_MARKER before the stage exits non-zero. The Prefect
flow retries only failures that carry the marker. Permanent, and failed at once:
a name that does not resolve, a refused connection (nothing listens there),
HTTP 401/403/404, a bad revision, a missing token, a bug. Retrying those only
delays the error by a quarter of an hour.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

TRANSIENT_MARKER = "satori: transient failure:"
RETRYABLE_HTTP_STATUS = {408, 429, 500, 502, 503, 504}
# How a failed name lookup reads once httpx or requests has wrapped socket.gaierror.
NAME_RESOLUTION_FAILURES = (
    "Name or service not known",
    "nodename nor servname provided",
    "Temporary failure in name resolution",
    "No address associated with hostname",
    "getaddrinfo failed",
    "Failed to resolve",
)


def _chain(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def is_permanent_network_error(err: BaseException) -> bool:
    """A host that does not resolve or refuses the connection: no retry will change that."""
    import socket

    for link in _chain(err):
        if isinstance(link, (socket.gaierror, ConnectionRefusedError)):
            return True
        if any(text in str(link) for text in NAME_RESOLUTION_FAILURES) or "Connection refused" in str(link):
            return True
    return False


def is_transient(err: BaseException) -> bool:
    import httpx
    import requests
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):  # a ConnectionError, but HF_HUB_OFFLINE=1 will not pass
        return False
    if is_permanent_network_error(err):
        return False
    if isinstance(
        err, (ConnectionError, TimeoutError, httpx.TransportError, requests.ConnectionError, requests.Timeout)
    ):
        return True
    if isinstance(err, HfHubHTTPError):
        response = getattr(err, "response", None)
        return getattr(response, "status_code", None) in RETRYABLE_HTTP_STATUS
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and is_transient(cause)


def report_transient(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a stage's main(): mark transient failures on stderr, then re-raise."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> None:
        try:
            main(*args, **kwargs)
        except Exception as err:
            if is_transient(err):
                print(f"{TRANSIENT_MARKER} {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            raise

    return wrapper
