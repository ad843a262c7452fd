"""Pushing a finished output folder to the Hub with huggingface_hub (`create_repo` + `upload_folder`).

Used instead of `Trainer.push_to_hub`, which would overwrite our model card with its single-task one.
"""

from pathlib import Path

from huggingface_hub import create_repo, upload_folder
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

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


__all__ = ["files_to_upload", "push_folder_to_hub"]
