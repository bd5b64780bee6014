"""The table of models is the only place a model is named: a row added to conf/models/all.yaml (an existing method
from another start) becomes, through `python -m commands.compose` alone, a DVC artifact, curves in dvc.yaml's plots,
a model card that says how it was made, and a name the publish command knows."""

from __future__ import annotations

import sys

import yaml

from .conftest import ROOT, copy_files, run_env, sh

ROW = "orpo_dpo: {method: dpo, start: models/orpo, label: ORPO+DPO}\n"


def test_a_model_added_to_the_table_is_registered_plotted_described_and_publishable(tmp_path):
    repo = copy_files(tmp_path / "repo")
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo)
    env = {**run_env(), "PYTHONPATH": str(repo)}
    table = repo / "conf/models/all.yaml"
    table.write_text(table.read_text() + ROW)
    stale = sh([sys.executable, "-m", "commands.compose", "--check"], repo, check=False, env=env)
    assert stale.returncode == 1 and "dvc.yaml's per-model artifacts or plots" in stale.stderr
    sh([sys.executable, "-m", "commands.compose"], repo, env=env)
    sh([sys.executable, "-m", "commands.compose", "--check"], repo, env=env)
    assert (repo / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()  # not in the CPU default's table

    # a DVC artifact (DVC's own reading of dvc.yaml)
    from dvc.repo import Repo

    artifact = Repo(str(repo)).artifacts.read()["dvc.yaml"]["orpo-dpo"]
    assert artifact.path == "models/release/orpo_dpo" and artifact.type == "model"
    assert artifact.desc == "DPO (LoRA) from the ORPO model" and artifact.meta["start"] == "orpo"

    # its curves: the loss and learning rate of every method, DPO's reward curves
    plots = {
        title: spec["y"]
        for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
        if isinstance(entry, dict)
        for title, spec in entry.items()
    }
    curves = "metrics/training/orpo_dpo/live/plots/metrics"
    assert plots["Training loss"][f"{curves}/loss.tsv"] == "loss"
    assert plots["Reward margins (train)"][f"{curves}/rewards/margins.tsv"] == "margins"
    assert plots["Held-out reward accuracy"][f"{curves}/eval/rewards/accuracies.tsv"] == "accuracies"
    assert "metrics/training/sft/live/plots/metrics/rewards/margins.tsv" not in plots["Reward margins (train)"]

    # its card: the words stages/release.py writes, from the composed improved profile (the widest table)
    card = sh(
        [
            sys.executable,
            "-c",
            "from commands.compose import compose; from stages import methods, release; "
            "from stages.core import params; p = params.validate(compose('improved')); "
            "print(methods.how_made('orpo_dpo', p.models), release.in_words(len(p.models)))",
        ],
        repo,
        env=env,
    )
    assert card.stdout.strip() == "('DPO (LoRA) from the ORPO model', ['orpo', 'dpo', 'lora']) six"

    # publish finds it (and asks for its release folder, which no run has made here)
    res = sh(
        [sys.executable, "-m", "commands.publish", "orpo-dpo", "--repo", "a/b", "--dry-run", str(tmp_path / "o")],
        repo,
        check=False,
        env=env,
    )
    assert res.returncode == 1 and "models/release/orpo_dpo: not in the workspace" in res.stderr, res.stderr


def test_dvc_yaml_has_an_artifact_and_curves_for_every_model_of_every_table():
    """ORPO runs only with `-S models=all` (the improved profile): it is in the registry and the plots all the same."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    every = yaml.safe_load((ROOT / "conf/models/all.yaml").read_text())
    assert {a["path"] for a in spec["artifacts"].values()} >= {f"models/release/{m}" for m in every}
    loss = next(e["Training loss"]["y"] for e in spec["plots"] if isinstance(e, dict) and "Training loss" in e)
    assert set(loss) == {f"metrics/training/{m}/live/plots/metrics/loss.tsv" for m in every}
