"""What a run reports when it ends: the Prefect artifact (evaluation table, the MLflow run, what ran) and the
notice (profile, key metrics or the failure reason) in the log and through Apprise."""

from __future__ import annotations

import os

NOTIFY_URL_ENV = "SATORI_NOTIFY_URL"  # an Apprise URL (Slack, e-mail, ...) told of every finished run


def evaluation_markdown(profile: str, evaluation: dict, ran: dict[str, bool], run_link: str) -> str:
    """The Prefect artifact of a run: the evaluation table, the MLflow run, what ran and what DVC reused."""
    shown = f"[{run_link}]({run_link})" if run_link.startswith(("http://", "https://")) else run_link
    lines = [f"# SATORI pipeline, profile `{profile}`", "", f"MLflow: {shown}", ""]
    lines += ["| Benchmark | Base | Trained | Δ |", "|---|---:|---:|---:|"]
    for name, row in evaluation.items():
        lines.append(f"| {name} | {100 * row['base']:.1f} | {100 * row['trained']:.1f} | {100 * row['delta']:+.1f} |")
    lines += ["", "| Stage | |", "|---|---|"]
    lines += [f"| {stage} | {'ran' if flag else 'cached (DVC found it up to date)'} |" for stage, flag in ran.items()]
    return "\n".join(lines)


def key_metrics(evaluation: dict) -> str:
    return ", ".join(f"{name} {100 * row['base']:.1f} -> {100 * row['trained']:.1f}" for name, row in evaluation.items())


def notify(flow_, flow_run, state) -> None:
    """Say how the run ended (profile, key metrics or the failure reason), in the Prefect log and through Apprise."""
    profile = (flow_run.parameters or {}).get("profile") or "active"
    message = f"SATORI pipeline run {flow_run.name} (profile {profile}): {state.name}"
    if state.is_failed():
        message += f": {str(state.message)[:500]}"
    else:
        try:
            result = state.result()
            message = f"SATORI pipeline run {flow_run.name} (profile {result['profile']}): {state.name}; "
            message += key_metrics(result["evaluation"])
        except Exception:  # a notification never fails the run
            pass
    print(message)
    url = os.environ.get(NOTIFY_URL_ENV)
    if url:
        import apprise

        sender = apprise.Apprise()
        sender.add(url)
        sender.notify(title="satori-pipeline", body=message)

