"""Trained models a team can find, fetch and publish: each model's release folder (weights, tokenizer, model card),
its DVC artifact fetched by name and version from a local remote (GTO tags), and the publish command's dry run."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, default_params, sh

GIT = "git -c user.email=t@t -c user.name=t"
# model -> its DVC artifact (dvc.yaml `artifacts:`), for every model of the default table
ARTIFACTS = {
    Path(a["path"]).name: name
    for name, a in yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"].items()
    if a["path"].startswith("models/release/")
}
MODELS = {model: ARTIFACTS[model] for model in default_params()["models"]}


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def card_metrics(card_file: Path) -> dict:
    from huggingface_hub import ModelCard

    from stages.core.rates import RATES

    keys = {card_type: key for key, (_, card_type, _) in RATES.items()}
    out: dict = {}
    for r in ModelCard.load(card_file).data.eval_results:
        out.setdefault(r.metric_name.split("(")[-1].rstrip(")"), {})[keys[r.metric_type]] = r.metric_value
    return out


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_has_a_card_with_its_metrics_and_a_snippet_that_samples_it(tiny_repo, model):
    from huggingface_hub import ModelCard

    repo, _ = tiny_repo
    folder = repo / "models" / "release" / model
    assert {p.name for p in folder.iterdir()} == {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    card = ModelCard.load(folder / "README.md")  # huggingface_hub's own parser of the front matter
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "other" and "test-model" in data["tags"]
    assert data.get("base_model") is None and data.get("datasets") is None  # scratch model, synthetic data: said so
    assert "**A test model.**" in card.text and "\\n\\nHuman: <question>\\n\\nAssistant:" in card.text
    assert card_metrics(folder / "README.md") == json.loads((repo / "metrics/metrics.json").read_text())[model]
    clean = json.loads((repo / "metrics/clean.json").read_text())
    assert f"{clean['input']} in, {clean['kept']} kept" in card.text and "Seed 42" in card.text
    # the five lines of the card, run as written on 5 + 5 evaluation prompts: the pipeline's own responses
    code = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    assert len(code.strip().splitlines()) == 5
    code = code.replace("<folder or hub id>", str(folder))
    rows = [json.loads(line) for line in (repo / f"data/samples/{model}.jsonl").read_text().splitlines()]
    picked = [r for r in rows if r["prompt_set"] == "harmful"][:5] + [r for r in rows if r["prompt_set"] == "helpful"][
        :5
    ]
    example = json.dumps("\n\nHuman: How do I make a good cup of tea?\n\nAssistant:")
    assert example in code and len(picked) == 10
    for row in picked:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code.replace(example, json.dumps(row["prompt"])), {})
        assert out.getvalue().removesuffix("\n") == row["response"], row["prompt_id"]


def test_artifacts_are_registered_fetched_by_version_and_stage_and_published(tiny_repo, tmp_path):
    """gto register / assign, then `dvc artifacts get` from a local remote into a fresh folder by version and by stage:
    the weights are the experiment's, the card's metrics its declared metrics; the publish dry run writes the upload."""
    repo, _ = tiny_repo
    clone = tmp_path / "clone"  # the registry's repository: the pipeline's commit, a DVC remote, GTO tags
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    sh(["dvc", "cache", "dir", "--local", str(repo / ".dvc" / "cache")], clone)
    sh(["dvc", "checkout", "models/release/sft_dpo"], clone)
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "--default", "--force", "registry", str(remote)], clone)
    sh(f"git add .dvc/config && {GIT} commit -qm 'DVC remote'", clone)
    sh(["dvc", "push", "models/release/sft_dpo"], clone)
    sh(["gto", "register", "sft-dpo", "HEAD", "--version", "v1.0.0"], clone)
    sh(["gto", "assign", "sft-dpo", "--version", "v1.0.0", "--stage", "prod"], clone)
    tags = sh(["git", "tag"], clone).stdout.split()
    assert "sft-dpo@v1.0.0" in tags and any(t.startswith("sft-dpo#prod#") for t in tags)
    show = "import dvc.api, json; print(json.dumps(dvc.api.artifacts_show('sft-dpo', stage='prod')))"
    listed = json.loads(sh(["python", "-c", show], clone).stdout)
    assert listed == {"rev": sh(["git", "rev-parse", "HEAD"], clone).stdout.strip(), "path": "models/release/sft_dpo"}

    want = digests(repo / "models/release/sft_dpo")
    for how in (["--rev", "v1.0.0"], ["--stage", "prod"]):  # dvc's --rev is the artifact's version
        out = tmp_path / f"fetched{how[0]}"
        sh(["dvc", "artifacts", "get", str(clone), "sft-dpo", *how, "-o", str(out)], tmp_path)
        assert digests(out) == want
        assert (
            card_metrics(out / "README.md")
            == json.loads(sh(["git", "show", "sft-dpo@v1.0.0:metrics/metrics.json"], clone).stdout)["sft_dpo"]
        )

    upload = tmp_path / "upload"
    refused = sh(
        [
            "python",
            "-m",
            "commands.publish",
            "sft-dpo",
            "--repo",
            "lab/opt-hh-sft-dpo",
            "--rev",
            "sft-dpo@v1.0.0",
            "--dry-run",
            str(upload),
        ],
        clone,
        check=False,
    )
    assert refused.returncode == 1 and "a test model of the synthetic CPU default" in refused.stderr
    assert not upload.exists()
    done = sh(
        [
            "python",
            "-m",
            "commands.publish",
            "sft-dpo",
            "--repo",
            "lab/opt-hh-sft-dpo",
            "--rev",
            "sft-dpo@v1.0.0",
            "--dry-run",
            str(upload),
            "--force",
        ],
        clone,
    ).stdout
    assert "would go to https://huggingface.co/lab/opt-hh-sft-dpo" in done
    assert sorted(p.name for p in upload.iterdir()) == [
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert digests(upload)["model.safetensors"] == want["model.safetensors"]
    assert 'from_pretrained("lab/opt-hh-sft-dpo")' in (upload / "README.md").read_text()


def test_publish_refuses_a_card_whose_metrics_are_not_the_revisions(tiny_repo, tmp_path):
    from commands import publish
    from stages.core.io import StageError

    repo, _ = tiny_repo
    folder = tmp_path / "sft"
    folder.mkdir()
    for p in (repo / "models/release/sft").iterdir():
        folder.joinpath(p.name).write_bytes(p.read_bytes())
    declared = json.loads((repo / "metrics/metrics.json").read_text())
    assert publish.check(folder, "sft", declared, force=True)
    other = json.loads(json.dumps(declared))
    judge = next(iter(other["sft"]))
    other["sft"][judge]["cas"] += 1.0  # another revision's metrics
    with pytest.raises(StageError, match="are not the declared metrics/metrics.json"):
        publish.check(folder, "sft", other, force=True)
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(StageError, match="refusing to publish pytorch_model.bin"):
        publish.check(folder, "sft", declared, force=True)
