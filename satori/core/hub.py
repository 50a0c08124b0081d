"""Fetching from the Hugging Face Hub at pinned commits: from a mirror folder, the local cache or the Hub.

Every path leads to the same folder content (huggingface_hub's own `.cache` metadata, which holds
timestamps, is removed), so a fetched folder hashes the same whichever way it came.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from satori.core.errors import InputError
from satori.core.files import file_manifest, read_source
from satori.core.transient import is_transient

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
DOWNLOAD_ATTEMPTS = 4  # then the stage fails, marked transient, and Prefect's own retries take over
FIRST_RETRY_DELAY_S = 2.0


class DownloadError(InputError, RuntimeError):
    """A download that cannot succeed as configured; the message says what to do."""


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, at call time (tests and flows set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def require_pinned(repo_id: str, revision: str, repo_type: str, param: str) -> None:
    """Refuse a branch or tag: it moves, and a rerun would silently train on other data."""
    if COMMIT_HASH.fullmatch(revision):
        return
    lookup = f"HfApi().repo_info('{repo_id}', repo_type='{repo_type}', revision='{revision}').sha"
    raise DownloadError(
        f"{param}: {revision!r} is not a commit hash. A branch or tag moves, so the run would not be "
        f"reproducible. Pin it: on a machine with Hub access run "
        f'`python -c "from huggingface_hub import HfApi; print({lookup})"` and put the 40-character '
        f"hash in params.yaml."
    )


def hub_snapshot(repo_id: str, revision: str, repo_type: str, dest: Path, local_mirror: str | None, param: str) -> dict:
    """Fill `dest` with the repo at a pinned commit, from a mirror folder, the local cache or the Hub.

    Returns the provenance written to SOURCE.json: repo, revision, commit and the file manifest.
    """
    require_pinned(repo_id, revision, repo_type, param)
    fetch = (
        f"On a machine with access: `hf download {repo_id} --repo-type {repo_type} --revision {revision} "
        f"--local-dir DIR`, copy DIR here and set {param.rsplit('.', 1)[0]}.local_mirror: DIR in params.yaml."
    )
    if local_mirror:
        _copy_mirror(mirror_path(local_mirror, param), dest, revision, fetch)
    elif hub_offline():
        _copy_from_cache(repo_id, revision, repo_type, dest, fetch)
    else:
        _download(repo_id, revision, repo_type, dest)
    # snapshot_download(local_dir=...) leaves timestamped metadata there; it is not part of the repo.
    shutil.rmtree(dest / ".cache", ignore_errors=True)
    return {"repo_id": repo_id, "revision": revision, "commit": revision, "files": file_manifest(dest)}


def mirror_path(local_mirror: str, param: str) -> Path:
    """local_mirror with ~ and $VARIABLES expanded (a mirror's place differs between machines); unset ones are named."""
    expanded = os.path.expanduser(os.path.expandvars(local_mirror))
    unset = re.findall(r"\$\{?(\w+)", expanded)
    if unset:
        raise DownloadError(f"{param.rsplit('.', 1)[0]}.local_mirror {local_mirror!r}: {', '.join(unset)} not set")
    return Path(expanded)


def mirrored_files(mirror: Path) -> dict[str, Path]:
    """Relative path -> path of every file a fetch copies from the mirror (all but huggingface_hub's .cache)."""
    return {
        p.relative_to(mirror).as_posix(): p
        for p in sorted(mirror.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(mirror).parts
    }


def _copy_mirror(mirror: Path, dest: Path, revision: str, fetch: str) -> None:
    if not mirror.is_dir():
        raise DownloadError(f"local_mirror {mirror} is not a folder. {fetch}")
    source = read_source(mirror)
    if source.get("commit") and source["commit"] != revision:
        raise DownloadError(f"local_mirror {mirror} holds commit {source['commit']}, params.yaml pins {revision}")
    expected = source.get("files") or {}
    missing = sorted(name for name in expected if not (mirror / name).is_file())
    if missing:
        listed = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DownloadError(f"local_mirror {mirror} lacks {len(missing)} file(s) of its manifest: {listed}. {fetch}")
    shutil.copytree(mirror, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".cache"))


def _copy_from_cache(repo_id: str, revision: str, repo_type: str, dest: Path, fetch: str) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        raise DownloadError(
            f"{repo_id}@{revision} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            f"downloading it. {fetch}"
        ) from None
    shutil.copytree(cached, dest, dirs_exist_ok=True)


def _download(repo_id: str, revision: str, repo_type: str, dest: Path) -> None:
    """snapshot_download into dest (resuming what an earlier attempt left), retried with backoff."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    page = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    for attempt in range(DOWNLOAD_ATTEMPTS):
        try:
            snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_dir=dest)
            return
        except GatedRepoError:
            raise DownloadError(
                f"{repo_id} is gated: accept its terms at {page} with your account, then give that account's "
                f"token (HF_TOKEN or `hf auth login`)"
            ) from None
        except RepositoryNotFoundError:
            raise DownloadError(
                f"{repo_id} was not found on the Hub: check the name, or, if it is private, give a token that "
                f"can read it (HF_TOKEN or `hf auth login`)"
            ) from None
        except RevisionNotFoundError:
            raise DownloadError(f"revision {revision} does not exist in {repo_id} ({page}/commits/main)") from None
        except HfHubHTTPError as err:
            if getattr(err.response, "status_code", None) == 401:
                raise DownloadError(
                    f"the Hub refused the token for {repo_id} (401): renew it (HF_TOKEN or `hf auth login`)"
                ) from None
            if not is_transient(err) or attempt == DOWNLOAD_ATTEMPTS - 1:
                raise
        except Exception as err:
            if not is_transient(err) or attempt == DOWNLOAD_ATTEMPTS - 1:
                raise
        delay = FIRST_RETRY_DELAY_S * 4**attempt
        print(f"download of {repo_id} failed transiently; retry {attempt + 1} in {delay:.0f} s", flush=True)
        time.sleep(delay)
