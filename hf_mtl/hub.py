"""Pushing a finished output folder to the Hub with huggingface_hub (`create_repo` + `upload_folder`).

Used instead of `Trainer.push_to_hub`, which would overwrite our model card with its single-task one.
`check_hub_access` is the run's preflight of that push: a token, online mode and a reachable Hub, checked before
hours of training instead of after them.
"""

import os
import threading
from pathlib import Path

from huggingface_hub import constants, create_repo, get_token, upload_folder, whoami
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from .errors import ConfigError

HUB_TIMEOUT_S = 15  # how long the preflight waits for the Hub to answer


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (at import) or as set since."""
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or value in {"1", "ON", "YES", "TRUE"}


def check_hub_access(token: str | None = None, where: str = "push_to_hub") -> str:
    """
    Raise one `ConfigError` naming `where` unless the finished run could be pushed: not offline, a token
    (`hub_token`, HF_TOKEN or `hf auth login`), and the Hub answering `whoami` for it within `HUB_TIMEOUT_S`.
    Returns the account name.
    """
    if hub_offline():
        raise ConfigError(f"{where}: HF_HUB_OFFLINE is set, so the trained model could not be pushed; unset it or "
                          "set push_to_hub false (push later with `hf upload`)")
    token = token or get_token()
    if not token:
        raise ConfigError(f"{where}: no Hugging Face token: log in with `hf auth login`, set HF_TOKEN or hub_token, "
                          "or set push_to_hub false")
    answer = {}

    def ask():
        try:
            answer["user"] = whoami(token=token)
        except Exception as error:  # connection errors, HTTP errors: all mean the push would fail
            answer["error"] = error

    asker = threading.Thread(target=ask, daemon=True)  # whoami has no timeout of its own
    asker.start()
    asker.join(HUB_TIMEOUT_S)
    if asker.is_alive():
        raise ConfigError(f"{where}: the Hugging Face Hub ({constants.ENDPOINT}) did not answer within "
                          f"{HUB_TIMEOUT_S} s; check the network, or set push_to_hub false")
    error = answer.get("error")
    if error is not None:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise ConfigError(f"{where}: the Hugging Face token is not valid (401 from {constants.ENDPOINT}); "
                              "log in again with `hf auth login --force` or fix HF_TOKEN / hub_token")
        message = " ".join(str(error).split())[:300]
        raise ConfigError(f"{where}: cannot reach the Hugging Face Hub ({constants.ENDPOINT}): "
                          f"{type(error).__name__}: {message}; check the network, or set push_to_hub false")
    return (answer.get("user") or {}).get("name", "")
# Intermediate checkpoints and TensorBoard runs stay local; predictions may copy licensed test text and be large.
IGNORE_PATTERNS = ["checkpoint-*/", "runs/", "*_predictions.jsonl"]


def files_to_upload(folder) -> list:
    """Sorted paths (relative, `/`-separated) that `push_folder_to_hub` uploads, filtered as `upload_folder` does."""
    folder = Path(folder)
    paths = sorted(path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file())
    return sorted(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def push_folder_to_hub(
    folder, repo_id: str, *, private: bool | None = None, token: str | None = None, commit_message: str = "Upload hf_mtl model"
):
    """
    Creates `repo_id` if needed and uploads `folder` (weights, model code, tokenizer, card, reports, plots, results)
    in one commit; returns the `CommitInfo`.
    """
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"push_folder_to_hub: {folder} is not a folder")
    repo_url = create_repo(repo_id, private=private, token=token, exist_ok=True)
    return upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=folder,
        commit_message=commit_message,
        token=token,
        ignore_patterns=list(IGNORE_PATTERNS),  # a copy: upload_folder appends its defaults to the list it gets
    )


__all__ = ["check_hub_access", "files_to_upload", "push_folder_to_hub"]
