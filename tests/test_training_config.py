"""TRL/PEFT configs built from params, without training: the study profile holds exactly the study's values; the
precision is the one params name, never the machine's; any other TRL field passes through `trainer:`, checked."""
from types import SimpleNamespace

import pytest

from commands import compose
from stages import dpo, sft
from stages.core import params as P
from stages.core.io import StageError
from stages.core.modeling import fit_prompt
from stages.core.training import precision_flags

from .conftest import ROOT


@pytest.fixture
def study(monkeypatch):
    monkeypatch.chdir(ROOT)
    return P.validate(compose.compose("study"))


def test_study_sft_config(study, tmp_path):
    c = sft.sft_config(study.sft, tmp_path, study.seed, study.distributed)
    assert (c.learning_rate, c.num_train_epochs, c.per_device_train_batch_size, c.gradient_accumulation_steps,
            c.max_length, c.seed) == (2e-5, 2.0, 2, 4, 512, 42)
    assert c.optim == "adamw_torch" and c.lr_scheduler_type.value == "linear" and c.warmup_steps == 0
    assert c.weight_decay == 0.0 and c.max_grad_norm == 1.0 and c.packing is False
    assert c.completion_only_loss is False  # the study's code: loss on the whole transcript
    assert c.bf16 is False and c.fp16 is False  # fp32, as the study trained, whatever the GPU supports
    assert c.gradient_checkpointing is False
    assert c.logging_nan_inf_filter is False  # a NaN loss must show, not be replaced by the running mean


def test_study_dpo_and_lora_config(study, tmp_path):
    c = dpo.dpo_config(study.dpo, tmp_path, study.seed, study.distributed)
    assert (c.beta, c.loss_type, c.learning_rate, c.num_train_epochs, c.per_device_train_batch_size,
            c.gradient_accumulation_steps, c.max_length, c.seed) == (0.1, ["sigmoid"], 2e-5, 1.0, 2, 4, 1024, 42)
    assert c.precompute_ref_log_probs is False and c.bf16 is False
    lora = dpo.lora_config(study.dpo)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules), lora.bias) == \
        (8, 16, 0.05, {"q_proj", "v_proj"}, "none")


@pytest.mark.parametrize("precision, bf16, fp16", [("fp32", False, False), ("bf16", True, False),
                                                   ("fp16", False, True)])
def test_precision_is_what_params_name(monkeypatch, precision, bf16, fp16):
    import torch

    for gpu_with_bf16 in (False, True):  # the machine must not decide (it did: bf16 on any bf16-capable GPU)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_with_bf16)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_with_bf16)
        flags = precision_flags(SimpleNamespace(mixed_precision=precision))
        assert (flags["bf16"], flags["fp16"], flags["use_cpu"]) == (bf16, fp16, not gpu_with_bf16)


def test_any_trl_field_passes_through_and_unknown_ones_are_refused(study, tmp_path):
    s = study.sft.model_copy(update={"trainer": {"optim": "adafactor", "max_grad_norm": 0.5,
                                                 "gradient_checkpointing": True}})
    c = sft.sft_config(s, tmp_path, 42)
    assert (c.optim, c.max_grad_norm, c.gradient_checkpointing) == ("adafactor", 0.5, True)
    d = study.dpo.model_copy(update={"trainer": {"label_smoothing": 0.1}})
    assert dpo.dpo_config(d, tmp_path, 42).label_smoothing == 0.1
    with pytest.raises(StageError, match="dpo.trainer.trust_remote_code: refused"):
        dpo.dpo_config(study.dpo.model_copy(update={"trainer": {"trust_remote_code": True}}), tmp_path, 42)
    for trainer, message in [
        ({"optimm": "adamw_torch"}, "sft.trainer.optimm: not a field of trl.SFTConfig (typo?)"),
        ({"learning_rate": 1e-4}, "sft.trainer.learning_rate: set it with sft.learning_rate"),
        ({"bf16": True}, "sft.trainer.bf16: set it with distributed.mixed_precision"),
        ({"output_dir": "x"}, "sft.trainer.output_dir: set by the pipeline itself"),
        ({"optim": "no_such_optimizer"}, "sft.trainer: "),
    ]:
        with pytest.raises(StageError) as exc:
            sft.sft_config(study.sft.model_copy(update={"trainer": trainer}), tmp_path, 42)
        assert message in str(exc.value) and "\n" not in str(exc.value)


def test_cpu_default_response_only_sft(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    cpu = P.validate(compose.compose("cpu"))
    assert sft.sft_config(cpu.sft, tmp_path, cpu.seed).completion_only_loss is True


def test_fit_prompt_keeps_response_and_prompt_end():
    from stages.base import train_tokenizer

    tok = train_tokenizer(["\n\nHuman: hello there friend\n\nAssistant: hi"] * 50, 300)
    prompt = "\n\nHuman: " + "blah " * 100 + "final question?\n\nAssistant:"
    cut = fit_prompt(tok, prompt, [" short reply"], max_length=40, max_prompt_length=30)
    assert cut.endswith("final question?\n\nAssistant:")
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 30


def test_study_dpo_prompt_is_trls_common_prefix():
    """The study's DPO prompt: TRL's longest common character prefix, which can take in a shared first word."""
    pair = {"prompt": "\n\nHuman: Hi?\n\nAssistant:", "chosen": "I can help.", "rejected": "I won't."}
    assert dpo.split_pair(pair, "last_assistant") == ("\n\nHuman: Hi?\n\nAssistant:", " I can help.", " I won't.")
    assert dpo.split_pair(pair, "common_prefix") == ("\n\nHuman: Hi?\n\nAssistant: I", " can help.", " won't.")
