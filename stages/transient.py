"""Telling a passing network failure from a real error, across the DVC process boundary.

A stage that talks to the Hub runs its main() under `report_transient`: a
failure that a later retry may cure (connection reset, timeout, HTTP 429/5xx)
is printed with TRANSIENT_MARKER before the stage exits non-zero. The Prefect
flow retries only failures that carry the marker; a bad revision, a missing
token or a bug fails at once.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

TRANSIENT_MARKER = "satori: transient failure:"
RETRYABLE_HTTP_STATUS = {408, 429, 500, 502, 503, 504}


def is_transient(err: BaseException) -> bool:
    import httpx
    import requests
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):  # a ConnectionError, but HF_HUB_OFFLINE=1 will not pass
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


def report_transient(main: Callable[[], None]) -> Callable[[], None]:
    """Wrap a stage's main(): mark transient failures on stderr, then re-raise."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except Exception as err:
            if is_transient(err):
                print(f"{TRANSIENT_MARKER} {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            raise

    return wrapper
