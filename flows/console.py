"""The console of a run: which of a stage's output lines it shows (all go to the Prefect run log and
.work/logs/<stage>.log), progress bars thinned, a heartbeat while a stage is silent."""

from __future__ import annotations

import logging
import re

# Lines of a stage's output the console shows; all of them go to the Prefect run log and .work/logs/<stage>.log.
CONSOLE_LINES = ("[satori]", "satori: error:", "Running stage", "didn't change, skipping", "ERROR", "Error:", "Traceback")
CONSOLE_DETAIL = "satori_detail"
PROGRESS_ONLY = "satori_progress"  # a progress bar's redraw: the console shows it, the run log does not
# tqdm's bar as ms-swift, transformers and VLMEvalKit print it: " 42%|████      | 21/50 [00:10<00:14, ...]"
PROGRESS_BAR = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+")
PROGRESS_EVERY_S = 5.0
HEARTBEAT_S = 8.0  # the console is never silent longer than this (and a second) while a stage runs


class _HideDetail(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, CONSOLE_DETAIL, False)


class _HideProgress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, PROGRESS_ONLY, False)


def quiet_console() -> None:
    """Keep stage output lines marked as detail off Prefect's console handlers, and progress-bar redraws off
    the run log that Prefect's API handler sends."""
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    wanted = {PrefectConsoleHandler: _HideDetail, APILogHandler: _HideProgress}
    for logger in (logging.getLogger(), logging.getLogger("prefect"), logging.getLogger("prefect.flow_runs"),
                   logging.getLogger("prefect.task_runs")):  # fmt: skip
        for handler in logger.handlers:
            for kind, hide in wanted.items():
                if isinstance(handler, kind) and not any(isinstance(f, hide) for f in handler.filters):
                    handler.addFilter(hide())


