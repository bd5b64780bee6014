"""ORPO, the fifth model, added through the extension points only (stages/methods/orpo.py, its params section in
conf/config.yaml, a row of conf/models/all.yaml, this test): TRL's experimental ORPOTrainer optimises what the paper
says (and TRL 1.16's NLL term, pinned), the stage trains and saves a loadable model, and the model appears in the
metrics, the report and the claims table of a whole `dvc repro` with no edit to them."""

import csv
import json
import math

import yaml

from commands import compose, gather
from stages import methods, train
from stages.core import params as P

from .conftest import ROOT, build_tiny_base, tiny_params, write_params


def test_orpo_is_in_the_improved_profile_and_never_in_the_study(monkeypatch):
    """Not in the CPU default either: it would add 66 s to its `dvc repro` (docs/extending.md);
    `-S models=all` adds it."""
    monkeypatch.chdir(ROOT)
    for profile, overrides, present in (
        ("improved", (), True),
        ("study", (), False),
        ("cpu", (), False),
        ("cpu", ("models=all",), True),
    ):
        params = P.validate(compose.compose(profile, overrides))
        assert ("orpo" in params.models) is present
    assert P.validate(compose.compose("improved")).start_model("orpo") == "base"
    improved = P.validate(compose.compose("improved"))
    cfg = methods.load("orpo").config(improved, ROOT / "checkpoints" / "unused")
    # like for like with the study's SFT: its optimiser settings, read from the sft section (`${sft.*}`)
    section = improved.section("orpo")
    assert (
        section["learning_rate"],
        section["per_device_train_batch_size"],
        section["gradient_accumulation_steps"],
        section["max_length"],
    ) == (2e-5, 2, 4, 512)
    # (the improved profile's speed.per_device_batch lays the same effective batch of 8 out as 8 x 1)
    assert (cfg.learning_rate, cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps, cfg.max_length) == (
        2e-5,
        8,
        512,
    )
    assert cfg.beta == 0.1


def test_orpo_loss_is_nll_plus_the_odds_ratio_term(tmp_path, monkeypatch):
    """loss = NLL(chosen) - beta * mean log sigmoid(log odds(chosen) - log odds(rejected)), the odds from the
    replies' length-averaged log-probabilities (Hong et al. 2024, eq. 6-7), recomputed here from the model's own
    logits. TRL 1.16 takes the NLL over the whole chosen transcript, prompt included (the paper's is the reply's):
    this test pins that, so a TRL change shows."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from stages.methods import base, orpo

    orpo.ORPO.config_class()  # TRL's experimental module, imported as the method imports it (its warning silenced)
    from trl.experimental.orpo import ORPOTrainer

    monkeypatch.chdir(tmp_path)
    texts = [f"\n\nHuman: question {i}?\n\nAssistant: answer {i % 5} here." for i in range(60)]
    tok = base.train_tokenizer(texts, 300)
    torch.manual_seed(0)
    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=32,
            word_embed_proj_dim=16,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            dropout=0.0,
            attention_dropout=0.0,
        )
    )
    rows = [
        {
            "prompt": f"\n\nHuman: question {i}?\n\nAssistant:",
            "chosen": f"answer {i} here.",
            "rejected": f"no {'no ' * (i % 3)}",
        }
        for i in range(4)
    ]
    params = P.validate(tiny_params("all"))
    cfg = methods.load("orpo").config(params, tmp_path / "ckpt")
    data = orpo.preference_dataset(rows, tok, cfg.max_length)
    trainer = ORPOTrainer(model=model, args=cfg, train_dataset=data, eval_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = float(trainer.compute_loss(model, batch).detach())

    def mean_logp(side):
        ids, attended, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attended).logits[:, :-1]
        logp = logits.log_softmax(-1)
        reply = labels[:, 1:] != -100  # the reply's tokens (the prompt's are labelled -100)
        picked = torch.gather(logp, 2, labels[:, 1:].clamp(min=0).unsqueeze(2)).squeeze(2)
        every = attended[:, 1:].bool()  # prompt and reply
        picked_all = torch.gather(logp, 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
        return (picked * reply).sum(-1) / reply.sum(-1), -(picked_all * every).sum() / every.sum()

    chosen, nll = mean_logp("chosen")
    rejected, _ = mean_logp("rejected")
    log_odds = (chosen - rejected) - (torch.log1p(-chosen.exp()) - torch.log1p(-rejected.exp()))
    expected = float(nll - cfg.beta * torch.nn.functional.logsigmoid(log_odds).mean())
    assert math.isclose(loss, expected, rel_tol=1e-4, abs_tol=1e-5), (loss, expected)


def test_orpo_stage_trains_from_base_and_saves_a_loadable_model(tmp_path, monkeypatch):
    from stages.core.modeling import load_causal_lm

    work = build_tiny_base(tmp_path)  # download, prompts, clean and base of the tiny configuration
    write_params(work / "params.yaml", tiny_params("all"))
    monkeypatch.chdir(work)
    train.main(["orpo"])
    metrics = json.loads((work / "metrics/training/orpo/train.json").read_text())
    assert metrics["steps"] == tiny_params("all")["orpo"]["max_steps"] and math.isfinite(metrics["final_loss"])
    assert 0.0 <= metrics["heldout_reward_accuracy"] <= 1.0 and metrics["heldout_pairs"] > 0
    assert metrics["trainable_parameters"] > 0  # a full fine-tune: every weight trains (no adapter)
    record = json.loads((work / "models/orpo/run.json").read_text())
    assert record["start"] == "models/base" and record["stage"] == "orpo"
    load_causal_lm(str(work / "models/orpo"))


def check_orpo_in_results(dst, judge: str = "judge") -> None:
    """ORPO, a model of conf/models/all.yaml, in a finished run's results without an edit: its rates, its report row
    and its claim against SFT+DPO. Called by the improved profile's rehearsal (tests/test_rehearsal.py, slow), which
    runs every model of that table end to end."""
    declared = json.loads((dst / "metrics/metrics.json").read_text())
    assert set(declared["orpo"][judge]) == {"hmr", "hpr", "cas"}
    assert f"| orpo | {judge} |" in (dst / "metrics/report.md").read_text()
    with open(dst / "metrics/plots/outcomes.csv") as fh:
        rows = list(csv.DictReader(fh))
    run: dict = {}
    for r in rows:
        run.setdefault((r["judge"], r["model"], r["prompt_set"]), []).append((int(r["prompt_id"]), int(r["ok"])))
    import numpy as np

    outcomes = {k: np.array([ok for _, ok in sorted(v)], dtype=float) for k, v in run.items()}
    names = gather.labels(gather.flat({"models": yaml.safe_load((dst / "params.yaml").read_text())["models"]}))
    summary = gather.summarise([outcomes], 200, 0, names)["judges"][judge]
    assert "orpo" in summary["rates"]
    claim = next(c for c in summary["claims"] if c["claim"] == "ORPO > SFT+DPO in CAS")
    assert claim["in_the_study"] == "not trained" and claim["status"] in ("supported", "contradicted", "not supported")
