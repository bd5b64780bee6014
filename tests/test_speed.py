"""The improved profile's speed switches leave the science unchanged, each checked on a CPU with a tiny model and a few
steps, with its tolerance stated here:
- batch layout (speed.per_device_batch: 8 x 1 instead of 2 x 4): the same loss curve and weights up to float
  reassociation (relative 1e-5);
- DPO's precomputed reference log-probs: the same loss curve and weights (relative 1e-6);
- bf16 autocast: the loss curve within 2% of fp32's at every step;
- attention kernel (sdpa vs eager): the same logits (absolute 1e-5);
- data-loader workers: the same batches, so the same weights, bit for bit.
TF32 and torch.compile cannot be checked on a CPU (TF32 needs an NVIDIA GPU; compile is off in every profile)."""

import pytest
import torch

from stages import methods
from stages.core import params as P
from stages.core.io import StageError
from stages.core.trl_fields import batch_for_speed
from stages.methods import base, dpo, sft

from .conftest import tiny_params

ROWS = [
    {
        "prompt": f"\n\nHuman: question {i} about {'tea' if i % 2 else 'maps'}?\n\nAssistant:",
        "chosen": f"Here is answer {i % 7}, kindly.",
        "rejected": f"No {'no ' * (i % 4)}.",
    }
    for i in range(48)
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [r["prompt"] + " " + r["chosen"] for r in ROWS] + [r["prompt"] + " " + r["rejected"] for r in ROWS]
    return base.train_tokenizer(texts * 3, 300)


OPT_350M_DROPOUT = {"dropout": 0.1, "attention_dropout": 0.0}  # facebook/opt-350m's config.json


def tiny_model(tok, attn_implementation: str | None = None, dropout: dict | None = None):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=64,
        word_embed_proj_dim=32,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **(dropout or {"dropout": 0.0, "attention_dropout": 0.0}),
    )
    if attn_implementation:
        config._attn_implementation = attn_implementation
    return OPTForCausalLM(config)


def run(method, tok, tmp_path, section: dict, speed: dict | None = None, precision: str = "fp32", dropout=None):
    """Train `method` (sft or dpo) for a few optimizer steps on ROWS: (loss per step, final weights)."""
    raw = tiny_params()
    raw[method.__name__.rsplit(".", 1)[1]].update(
        max_steps=3, logging_steps=1, save_steps=1000, learning_rate=1e-3, lr_scheduler_type="constant", **section
    )
    raw["speed"].update(speed or {})
    raw["distributed"]["mixed_precision"] = precision
    params = P.validate(raw)
    name = method.__name__.rsplit(".", 1)[1]
    own = methods.load(name).parse(params)[0]
    cfg = methods.load(name).config(params, tmp_path / "out")
    model = tiny_model(tok, dropout=dropout)
    if method is sft:
        trainer = sft.build_trainer(own, cfg, model, tok, ROWS)
    else:
        trainer = dpo.build_trainer(own, cfg, model, tok, ROWS, ROWS[:8])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    weights = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    return losses, weights


def same_weights(a: dict, b: dict, rtol: float, atol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=rtol, atol=atol) for k in a)


def test_batch_layout_keeps_the_effective_batch_and_its_check():
    speed = P.validate(tiny_params() | {"speed": {**tiny_params()["speed"], "per_device_batch": 8}}).speed
    assert batch_for_speed({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}, speed, "sft") == {
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
    }
    with pytest.raises(StageError, match="speed.per_device_batch: 8 does not divide sft's effective batch"):
        batch_for_speed({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}, speed, "sft")


def test_batch_layout_gives_the_same_sft_steps(tokenizer, tmp_path):
    layout = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}
    study_losses, study_weights = run(sft, tokenizer, tmp_path / "a", layout)
    fast_losses, fast_weights = run(sft, tokenizer, tmp_path / "b", layout, {"per_device_batch": 8})
    assert len(study_losses) == len(fast_losses) == 3
    assert fast_losses == pytest.approx(study_losses, rel=1e-5)
    assert same_weights(study_weights, fast_weights, rtol=1e-5, atol=1e-6)


def test_precomputed_reference_log_probs_give_the_same_dpo_steps(tokenizer, tmp_path):
    layout = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "eval_steps": 1000}
    live_losses, live_weights = run(dpo, tokenizer, tmp_path / "a", layout | {"precompute_ref_log_probs": False})
    pre_losses, pre_weights = run(dpo, tokenizer, tmp_path / "b", layout | {"precompute_ref_log_probs": True})
    assert len(live_losses) == 3 and pre_losses == pytest.approx(live_losses, rel=1e-6)
    assert same_weights(live_weights, pre_weights, rtol=1e-6, atol=1e-7)


def test_model_dropout_zero_turns_off_what_trls_disable_dropout_leaves_on(tokenizer):
    """TRL's disable_dropout (0.16.1 and 1.x alike) zeroes nn.Dropout modules only; OPT applies its own dropout
    functionally, so a model so treated still drops units in train mode. model_dropout: zero turns every one off."""
    from trl.trainer.utils import disable_dropout_in_model

    from stages.core.modeling import set_dropout

    ids = torch.tensor([tokenizer("Human: How do I bake bread?\n\nAssistant: Knead it well.")["input_ids"]])
    model = tiny_model(tokenizer, dropout=OPT_350M_DROPOUT)
    disable_dropout_in_model(model)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, model(ids).logits)  # still random: OPT's own dropout
    assert set_dropout(model, "keep") == []
    zeroed = set_dropout(model, "zero")
    assert "model.decoder.layers.0.dropout" in zeroed and "model.decoder.dropout" in zeroed
    assert not any("attention_dropout" in z or z.endswith("self_attn.dropout") for z in zeroed)  # 0.0 already
    with torch.no_grad():
        train_logits = model(ids).logits
        model.eval()
        assert torch.equal(train_logits, model(ids).logits)  # train mode is now the deterministic network
    assert model.config.dropout == 0.1  # the saved config says what the architecture is


def test_dpo_with_opts_real_dropout(tokenizer, tmp_path):
    """On opt-350m's dropout config: with model_dropout zero DPO trains exactly as a model without dropout, and a
    precomputed reference equals the live one (exactly, to float rounding); with keep (the study) neither holds, and
    the live reference sees dropout the precomputed one (in eval mode) does not: equal in distribution only."""
    layout = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "eval_steps": 1000}
    without, without_weights = run(dpo, tokenizer, tmp_path / "a", layout)
    zero, zero_weights = run(
        dpo, tokenizer, tmp_path / "b", layout | {"model_dropout": "zero"}, dropout=OPT_350M_DROPOUT
    )
    assert zero == without and same_weights(zero_weights, without_weights, rtol=0, atol=0)
    kept, kept_weights = run(dpo, tokenizer, tmp_path / "c", layout, dropout=OPT_350M_DROPOUT)
    assert kept != without and not same_weights(kept_weights, without_weights, rtol=1e-4, atol=1e-5)
    pre = layout | {"precompute_ref_log_probs": True}
    zero_pre, zero_pre_weights = run(
        dpo, tokenizer, tmp_path / "d", pre | {"model_dropout": "zero"}, dropout=OPT_350M_DROPOUT
    )
    assert zero_pre == pytest.approx(zero, rel=1e-6) and same_weights(zero_pre_weights, zero_weights, 1e-6, 1e-7)
    kept_pre, _ = run(dpo, tokenizer, tmp_path / "e", pre, dropout=OPT_350M_DROPOUT)
    assert kept_pre != pytest.approx(kept, rel=1e-6)


def test_bf16_autocast_keeps_the_loss_curve_within_two_percent(tokenizer, tmp_path):
    layout = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}
    fp32, _ = run(sft, tokenizer, tmp_path / "a", layout)
    bf16, weights = run(sft, tokenizer, tmp_path / "b", layout, precision="bf16")
    assert len(bf16) == 3 and bf16 == pytest.approx(fp32, rel=0.02)
    assert bf16 != fp32  # it did run in bf16 (a silent fp32 run would pass the bound trivially)
    assert {w.dtype for w in weights.values()} == {torch.float32}  # autocast over float32 weights


def test_sdpa_and_eager_attention_give_the_same_logits(tokenizer):
    batch = tokenizer([r["prompt"] + " " + r["chosen"] for r in ROWS[:6]], return_tensors="pt", padding=True)
    kernels = {name: tiny_model(tokenizer, name) for name in ("eager", "sdpa")}
    assert {name: m.config._attn_implementation for name, m in kernels.items()} == {"eager": "eager", "sdpa": "sdpa"}
    with torch.no_grad():
        eager, sdpa = (kernels[name](**batch).logits for name in ("eager", "sdpa"))
    mask = batch["attention_mask"].bool()
    assert torch.allclose(eager[mask], sdpa[mask], atol=1e-5)


def test_dataloader_workers_give_the_same_batches(tokenizer, tmp_path):
    layout = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}
    _, inline = run(sft, tokenizer, tmp_path / "a", layout)
    _, workers = run(sft, tokenizer, tmp_path / "b", layout, {"dataloader_workers": 2})
    assert same_weights(inline, workers, rtol=0, atol=0)
