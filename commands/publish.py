"""Publish a trained model to the Hugging Face hub: its release folder (weights as safetensors, tokenizer, model card),
from the workspace, a revision or tag, or an experiment.

    python -m commands.publish sft-dpo --repo my-org/opt350m-hh-sft-dpo                    # the workspace's model
    python -m commands.publish sft-dpo --repo my-org/opt350m-hh-sft-dpo --rev sft-dpo@v1.0.0   # a GTO version
    python -m commands.publish dpo --repo my-org/opt350m-hh-dpo --exp beta-0.2             # a DVC experiment
    python -m commands.publish sft --repo my-org/x --dry-run /tmp/upload                   # write, do not upload

The model is named as its DVC artifact in dvc.yaml: its name in the table of models, `-` for `_` (sft-dpo).
At a revision the folder is restored
with `dvc artifacts get` (from the DVC cache or remote). Before anything is written it refuses: a test model of the
synthetic CPU default (unless --force); a card whose HmR/HpR/CAS differ from the declared metrics file
(metrics/metrics.json) of the same revision; any file but safetensors weights, configs, tokenizer files and the
card. The upload is huggingface_hub's `create_repo` + `upload_folder` (a token from `hf auth login` or HF_TOKEN); the
card's placeholder model path becomes the repository id. `--dry-run DIR` writes exactly the folder that would be
uploaded and prints the target.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from stages.core.io import StageError, fail_cleanly, write_text
from stages.core.rates import METRICS_FILE, RATES

PLACEHOLDER = "<folder or hub id>"  # the card's model path in its load-and-sample snippet (stages/release.py)
ALLOWED = ("config.json", "generation_config.json", "README.md")
ALLOWED_PREFIXES = ("tokenizer", "special_tokens_map", "vocab", "merges", "added_tokens", "chat_template")
METRIC_KEYS = {card_type: key for key, (_, card_type, _) in RATES.items()}  # model-card metric type -> key


def artifacts(root: Path = Path(".")) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["artifacts"]


def experiment_commit(name: str) -> str:
    """The commit of a DVC experiment, by name (DVC keeps them as refs/exps/.../<name>)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    found = [line.split()[1] for line in refs if line and line.split()[0].endswith(f"/{name}")]
    if not found:
        raise StageError(f"{name}: no such experiment (dvc exp list --all-commits)")
    return found[0]


def restore(name: str, rev: str | None, into: Path) -> Path:
    """The artifact's folder: the workspace's, or its path at git revision `rev` (a commit, a GTO tag such as
    sft-dpo@v1.0.0, an experiment's commit) fetched with `dvc get` (DVC cache, else the DVC remote) into `into`."""
    path = Path(artifacts()[name]["path"])
    if rev is None:
        if not path.is_dir():
            raise StageError(f"{path}: not in the workspace (dvc repro release, or dvc pull {path})")
        return path
    res = subprocess.run(
        ["dvc", "get", ".", str(path), "--rev", rev, "-o", str(into), "--force"], capture_output=True, text=True
    )
    if res.returncode:
        why = (res.stderr or res.stdout).strip().splitlines() or ["no output"]
        raise StageError(f"{name} at {rev}: cannot restore {path} ({why[-1]})")
    return into


def declared_metrics(rev: str | None) -> dict:
    if rev is None:
        return json.loads(Path(METRICS_FILE).read_text())
    res = subprocess.run(["git", "show", f"{rev}:{METRICS_FILE}"], capture_output=True, text=True)
    if res.returncode:
        raise StageError(f"{rev}: no {METRICS_FILE} at this revision ({res.stderr.strip()})")
    return json.loads(res.stdout)


def check(folder: Path, model: str, declared: dict, force: bool) -> list[Path]:
    """The files to upload, after the refusals (see the module's docstring)."""
    from huggingface_hub import ModelCard

    card_file = folder / "README.md"
    if not card_file.is_file():
        raise StageError(f"{folder}: no model card (README.md); re-run the release stage")
    card = ModelCard.load(card_file)
    if "test-model" in (card.data.tags or []) and not force:
        raise StageError(f"{card_file}: a test model of the synthetic CPU default; refusing to publish it (--force)")
    got = {
        (r.metric_name.split("(")[-1].rstrip(")"), METRIC_KEYS[r.metric_type]): r.metric_value
        for r in card.data.eval_results or []
    }
    want = {(judge, key): value for judge, values in declared.get(model, {}).items() for key, value in values.items()}
    if not want or got != want:
        raise StageError(
            f"{card_file}: the card's metrics {sorted(got.items())} are not the declared {METRICS_FILE} "
            f"of this revision {sorted(want.items())}; refusing to publish"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    bad = [
        p.name
        for p in files
        if not (p.name in ALLOWED or p.suffix == ".safetensors" or p.name.startswith(ALLOWED_PREFIXES))
        or p.parent != folder
    ]
    if bad:
        raise StageError(
            f"{folder}: refusing to publish {', '.join(bad)} (weights as safetensors, configs, tokenizer "
            "and the card only)"
        )
    return files


def stage_upload(files: list[Path], out: Path, repo: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.name == "README.md":
            write_text(out / f.name, f.read_text(encoding="utf-8").replace(PLACEHOLDER, repo))
        else:
            shutil.copyfile(f, out / f.name)


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="the model's DVC artifact name: its name in conf/models/, - for _ (sft-dpo)")
    ap.add_argument("--repo", required=True, help="the hub repository, owner/name")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--rev", help="a git revision or GTO tag (sft-dpo@v1.0.0); default: the workspace")
    where.add_argument("--exp", help="a DVC experiment's name")
    ap.add_argument("--dry-run", type=Path, metavar="DIR", help="write the folder to upload here; upload nothing")
    ap.add_argument("--force", action="store_true", help="publish a test model of the synthetic CPU default")
    ap.add_argument("--private", action="store_true")
    args = ap.parse_args(argv)
    known = artifacts()
    if args.name not in known or known[args.name].get("type") != "model" or "release" not in known[args.name]["path"]:
        names = [n for n, a in known.items() if "release" in a["path"]]
        raise StageError(f"{args.name}: not a released model of dvc.yaml (one of {', '.join(names)})")
    model = Path(known[args.name]["path"]).name
    rev = experiment_commit(args.exp) if args.exp else args.rev
    with tempfile.TemporaryDirectory() as scratch:
        folder = restore(args.name, rev, Path(scratch) / "artifact")
        files = check(folder, model, declared_metrics(rev), args.force)
        target = f"https://huggingface.co/{args.repo}"
        if args.dry_run:
            if args.dry_run.exists() and any(args.dry_run.iterdir()):
                raise StageError(f"{args.dry_run}: not empty; the dry run writes exactly the upload there")
            stage_upload(files, args.dry_run, args.repo)
            print(
                f"publish (dry run): {len(files)} files in {args.dry_run} would go to {target} "
                f"({args.name} at {rev or 'the workspace'})"
            )
            return
        from huggingface_hub import HfApi

        upload = Path(scratch) / "upload"
        stage_upload(files, upload, args.repo)
        api = HfApi()
        api.create_repo(args.repo, exist_ok=True, private=args.private)
        api.upload_folder(
            folder_path=str(upload),
            repo_id=args.repo,
            commit_message=f"{args.name} at {rev or 'workspace'} (arXiv 2509.09055 reproduction)",
        )
        print(f"publish: {args.name} at {rev or 'the workspace'} -> {target}")


if __name__ == "__main__":
    main()
