"""Hugging Face hub downloads pinned to commits: online, or offline from a cache filled beforehand.

Every hub id in params (the data set, the base model, the judges) is fetched with huggingface_hub's own
`snapshot_download` into the Hugging Face cache ($HF_HOME/hub) and then read from that snapshot folder, which is
named by the commit it holds. With `HF_HUB_OFFLINE=1` (a GPU node without a network, its cache filled from a login
node with the `hf download` commands that `python -m commands.pin --fetch-commands` prints), nothing is looked up on
the network: a commit in the cache is used as it is, and one that is not there is a one-line error naming the
repository, the commit and the command that fetches it.
"""

from __future__ import annotations

from pathlib import Path

from .io import StageError, first_line

# What a model needs (config, tokenizer files, safetensors weights); a pickle is fetched only when trusted by digest.
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]


def fetch_command(repo: str, revision: str | None, patterns: list[str], repo_type: str = "model") -> str:
    """The hub's own download command for these files of `repo` at `revision`."""
    kind = " --repo-type dataset" if repo_type == "dataset" else ""
    include = " ".join(f"'{p}'" for p in patterns)
    return f"hf download {repo}{kind} --revision {revision or 'main'} --include {include}"


def _not_there(repo: str, revision: str | None, patterns: list[str], repo_type: str, exc: Exception) -> StageError:
    from huggingface_hub import constants

    command = fetch_command(repo, revision, patterns, repo_type)
    if constants.HF_HUB_OFFLINE:
        return StageError(
            f"{repo} at {revision or 'main'}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and HF_HUB_OFFLINE=1; fetch it on a machine with a network: {command}"
        )
    return StageError(
        f"{repo} at {revision or 'main'}: cannot download it ({type(exc).__name__}: {first_line(exc)}); "
        f"without a network, fill the cache elsewhere with: {command}"
    )


def snapshot(repo: str, revision: str | None, patterns: list[str], repo_type: str = "model") -> Path:
    """The local snapshot folder of `repo` at `revision` holding `patterns` (downloaded if online and missing).
    Its name is the commit."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, repo_type=repo_type, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # offline and not cached, no such repo or revision, network errors
        raise _not_there(repo, revision, patterns, repo_type, exc) from None


def dataset_snapshot(repo: str, revision: str | None, names: list[str]) -> Path:
    """The snapshot folder of the data set `repo` at `revision` holding every file of `names` (paths in it), refused
    as incomplete when one is missing. Its name is the commit."""
    folder = snapshot(repo, revision, names, repo_type="dataset")
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise incomplete(repo, folder.name, f"no {missing[0]}", names, repo_type="dataset")
    return folder


def incomplete(repo: str, commit: str, problem: str, patterns: list[str], repo_type: str = "model") -> StageError:
    """A cached snapshot that lacks files the stage needs."""
    return StageError(
        f"{repo} at {commit}: the cached snapshot is incomplete ({problem}); fetch it with: "
        f"{fetch_command(repo, commit, patterns, repo_type)}"
    )
