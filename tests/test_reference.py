"""The reference stage (stages/reference.py): a model's frozen reference log-probs computed once from its start model
and read by its training. They are TRL's own precompute, stored: DPO trained on them equals DPO whose trainer
precomputed them itself, bit for bit. A stored reference is never used for other inputs (its identity and token ids
are checked), and beta never re-runs the stage (its DVC params)."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stages import methods, train
from stages import reference as reference_stage
from stages.core import params as P
from stages.core import reference as reference_store
from stages.core.io import StageError, read_jsonl
from stages.core.training import Job
from stages.methods import dpo

from .conftest import ROOT, build_tiny_base, tiny_params, write_params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return build_tiny_base(tmp_path_factory.mktemp("reference"))


def use(folder, monkeypatch, **dpo_keys):
    """Work in `folder` with the tiny params and these dpo keys; the validated params."""
    monkeypatch.chdir(folder)
    raw = tiny_params()
    raw["dpo"].update(max_steps=3, logging_steps=1, **dpo_keys)
    write_params(folder / "params.yaml", raw)
    return P.validate(raw)


def trainer(params, folder, reference=None):
    """The dpo model's DPOTrainer as its stage builds it, from models/base (TRL precomputes unless `reference`)."""
    method = methods.load("dpo")
    own, _ = method.parse(params)
    cfg = method.config(params, folder / "checkpoints" / "probe")
    job = Job(name="dpo", params=params, own=own, config=cfg, rows=method.training_rows(own), run=None)
    tok, model = job.load_start()
    trainer = dpo.build_trainer(own, cfg, model, tok, job.rows, job.heldout(own.eval_pairs), reference=reference)
    return trainer, job


def test_stored_reference_is_trls_precompute_and_dpo_trains_bit_for_bit_on_it(workspace, monkeypatch, capsys):
    params = use(workspace, monkeypatch, precompute_ref_log_probs=True)
    reference_stage.main(["dpo"])
    assert "reference@dpo: computed the reference's log-probs of" in capsys.readouterr().out
    tensors_path, about_path = reference_store.paths("dpo")
    stored = load_file(str(tensors_path))
    about = json.loads(about_path.read_text())
    assert about["identity"]["start"] == "models/base" and "beta" not in about["identity"]

    own_precompute, job = trainer(params, workspace)  # TRL computes them itself, in its __init__
    for split, dataset in (("train", own_precompute.train_dataset), ("eval", own_precompute.eval_dataset)):
        assert stored[f"{split}.chosen"].dtype == torch.float32
        assert torch.equal(stored[f"{split}.chosen"], dpo.torch_column(dataset, "ref_chosen_logps"))
        assert torch.equal(stored[f"{split}.rejected"], dpo.torch_column(dataset, "ref_rejected_logps"))
    assert about["splits"]["train"]["pairs"] == len(job.rows) == len(read_jsonl("data/clean/train.jsonl"))

    from_store, _ = trainer(params, workspace, reference_store.read("dpo", dpo.reference_identity(job)))
    torch.manual_seed(0)
    own_precompute.train()
    torch.manual_seed(0)
    from_store.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (own_precompute, from_store)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    weights = [{k: v for k, v in t.model.named_parameters() if v.requires_grad} for t in (own_precompute, from_store)]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    train.main(["dpo"])  # the stage itself reads them and says so
    assert "dpo: the reference's log-probs of" in capsys.readouterr().out


def test_a_stored_reference_is_refused_for_other_inputs(workspace, monkeypatch):
    params = use(workspace, monkeypatch, precompute_ref_log_probs=True)
    reference_stage.main(["dpo"])
    _, job = trainer(params, workspace)
    identity = dpo.reference_identity(job)
    with pytest.raises(StageError, match=r"identity\.per_device_train_batch_size: .* computed with 8, this training"):
        reference_store.read("dpo", identity | {"per_device_train_batch_size": 4})
    stored = reference_store.read("dpo", identity)
    other = use(workspace, monkeypatch, precompute_ref_log_probs=True, bos=False)  # other token ids, same counts
    with pytest.raises(
        StageError, match=r"data/reference/dpo\.json: the train pairs' token ids differ from those the stored reference"
    ):
        trainer(other, workspace, stored)


def test_a_live_reference_and_a_method_without_one_store_nothing(workspace, monkeypatch, capsys):
    use(workspace, monkeypatch, precompute_ref_log_probs=False)
    for model in ("dpo", "sft"):
        reference_stage.main([model])
        about = json.loads(reference_store.paths(model)[1].read_text())
        assert about["identity"] is None and about["splits"] == {}
        assert not load_file(str(reference_store.paths(model)[0]))
    out = capsys.readouterr().out
    assert "reference@dpo: none (dpo (dpo) computes its reference live, in every step)" in out
    assert "reference@sft: none (sft's method, sft, trains against no frozen reference)" in out
    with pytest.raises(StageError, match="computed with no reference"):
        reference_store.read("dpo", {})


def test_the_stages_params_are_what_changes_the_reference_and_never_beta():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["reference"]["do"]
    listed = set(stage["params"])
    assert not listed & {"dpo", "dpo.beta", "dpo.learning_rate", "dpo.loss_type", "seed", "dpo.model_dropout"}
    assert {"speed", "distributed.mixed_precision", "models.${key}"} <= listed
    # every dpo key that shapes the token ids, and every TRL field the precompute reads that params.yaml sets
    from commands.compose import compose

    shaping = {"prompt_split", "bos", "tokenize", "truncation", "max_prompt_length", "max_train_pairs", "eval_pairs"}
    for profile in ("cpu", "study", "improved"):
        section = compose(profile)["dpo"]
        read = {f for f in dpo.REFERENCE_FIELDS if f in section} | {"precompute_ref_log_probs"} | shaping
        assert {f"dpo.{f}" for f in read} <= listed, profile
