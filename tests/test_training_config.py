"""TRL/PEFT configs built from params, without training: the study profile holds exactly the study's values; the
precision is the one params name, never the machine's; a method's params section is read by TRL's own config class
(any TRL field may be set there), checked field by field before any model loads."""

from types import SimpleNamespace

import pytest

from commands import compose
from stages import methods
from stages.core import params as P
from stages.core.io import StageError
from stages.core.modeling import fit_prompt
from stages.core.training import check_configs
from stages.core.trl_fields import precision_flags
from stages.methods import dpo
from stages.methods.base import train_tokenizer

from .conftest import ROOT


@pytest.fixture
def study(monkeypatch):
    monkeypatch.chdir(ROOT)
    return compose.compose("study")


def config(raw: dict, method: str, tmp_path):
    return methods.load(method).config(P.validate(raw), tmp_path)


def test_study_sft_config(study, tmp_path):
    c = config(study, "sft", tmp_path)
    assert (
        c.learning_rate,
        c.num_train_epochs,
        c.per_device_train_batch_size,
        c.gradient_accumulation_steps,
        c.max_length,
        c.seed,
    ) == (2e-5, 2.0, 2, 4, 512, 42)
    assert c.optim == "adamw_torch" and c.lr_scheduler_type.value == "linear" and c.warmup_steps == 0
    assert c.weight_decay == 0.0 and c.max_grad_norm == 1.0 and c.packing is False
    assert c.completion_only_loss is False  # the study's code: loss on the whole transcript
    assert c.bf16 is False and c.fp16 is False  # fp32, as the study trained, whatever the GPU supports
    assert c.gradient_checkpointing is False
    assert c.logging_nan_inf_filter is False  # a NaN loss must show, not be replaced by the running mean


def test_study_dpo_and_lora_config(study, tmp_path):
    c = config(study, "dpo", tmp_path)
    assert (
        c.beta,
        c.loss_type,
        c.learning_rate,
        c.num_train_epochs,
        c.per_device_train_batch_size,
        c.gradient_accumulation_steps,
        c.max_length,
        c.seed,
    ) == (0.1, ["sigmoid"], 2e-5, 1.0, 2, 4, 1024, 42)
    assert c.precompute_ref_log_probs is False and c.bf16 is False and c.truncation_mode == "keep_end"
    own = dpo.Params.model_validate({k: v for k, v in study["dpo"].items() if k in dpo.Params.model_fields})
    lora = dpo.lora_config(own)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules), lora.bias) == (
        8,
        16,
        0.05,
        {"q_proj", "v_proj"},
        "none",
    )


@pytest.mark.parametrize(
    "precision, bf16, fp16", [("fp32", False, False), ("bf16", True, False), ("fp16", False, True)]
)
def test_precision_is_what_params_name(monkeypatch, precision, bf16, fp16):
    import torch

    for gpu_with_bf16 in (False, True):  # the machine must not decide (it did: bf16 on any bf16-capable GPU)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_with_bf16)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_with_bf16)
        flags = precision_flags(SimpleNamespace(mixed_precision=precision))
        assert (flags["bf16"], flags["fp16"], flags["use_cpu"]) == (bf16, fp16, not gpu_with_bf16)


def test_any_trl_field_is_read_by_trl_and_bad_ones_are_refused(study, tmp_path):
    study["sft"] |= {"optim": "adafactor", "max_grad_norm": 0.5, "gradient_checkpointing": True, "num_train_epochs": 3}
    c = config(study, "sft", tmp_path)
    assert (c.optim, c.max_grad_norm, c.gradient_checkpointing) == ("adafactor", 0.5, True)
    assert c.num_train_epochs == 3.0 and isinstance(c.num_train_epochs, float)  # YAML's 3 read as TRL's float
    assert config({**study, "dpo": {**study["dpo"], "label_smoothing": 0.1}}, "dpo", tmp_path).label_smoothing == 0.1
    for method, extra, message in [
        ("dpo", {"trust_remote_code": True}, "dpo.trust_remote_code: refused"),
        ("sft", {"optimm": "adamw_torch"}, "sft.optimm: not a field of trl.SFTConfig (typo?)"),
        ("sft", {"learning_rate": "2e-5"}, "sft.learning_rate: expected float, got str '2e-5'"),
        ("sft", {"completion_only_loss": True}, "sft.completion_only_loss: set it with sft.loss_on"),
        ("dpo", {"truncation_mode": "keep_start"}, "dpo.truncation_mode: set it with dpo.truncation"),
        ("sft", {"bf16": True}, "sft.bf16: set it with distributed.mixed_precision"),
        ("sft", {"output_dir": "x"}, "sft.output_dir: set by the pipeline itself"),
        ("sft", {"optim": "no_such_optimizer"}, "sft.optim: 'no_such_optimizer' is out of range (allowed: one of"),
        ("sft", {"loss_on": "everything"}, "sft.loss_on: Input should be 'response' or 'transcript'"),
        ("dpo", {"lora": {"r": 0, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj"]}}, "dpo.lora.r:"),
    ]:
        raw = {**study, method: {**study[method], **extra}}
        with pytest.raises(StageError) as exc:
            config(raw, method, tmp_path)
        assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_typo_in_any_used_method_stops_the_first_training_stage(study):
    """check_configs (run by the check stage, before any other) reads every method the table uses."""
    check_configs(methods.used(P.validate(study)), P.validate(study))
    with pytest.raises(StageError, match="dpo.bta: not a field of trl.DPOConfig"):
        typo = P.validate({**study, "dpo": {**study["dpo"], "bta": 0.2}})
        check_configs(methods.used(typo), typo)


def test_the_check_of_other_methods_leaves_the_process_count_to_their_own_stage(study, monkeypatch, tmp_path):
    """Under 2 processes, train@sft (accumulation 4) must not stop on base.pretrain's accumulation of 1: only the
    method being trained divides its accumulation among this run's processes."""
    from stages.core import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 2)  # (TrainingArguments itself stays single-process)
    params = P.validate(study)
    check_configs(methods.used(params), params)
    assert methods.load("sft").config(params, tmp_path).gradient_accumulation_steps == 2
    with pytest.raises(StageError, match="gradient_accumulation_steps 1 is not a multiple of the 2 processes"):
        methods.load("base").config(params, tmp_path)


def test_cpu_default_response_only_sft(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert config(compose.compose("cpu"), "sft", tmp_path).completion_only_loss is True


def test_fit_prompt_keeps_response_and_prompt_end():
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


def test_a_method_is_a_class_whose_declarations_are_checked_when_it_loads():
    """Every method of stages/methods/ loads as one Method with its declared members; a subclass that leaves one out
    (or names an own key its Params lacks) fails as its module loads, not after training."""
    from pydantic import Field

    from stages.core.training import Method

    for name in ("base", "sft", "dpo", "orpo"):
        method = methods.load(name)
        assert isinstance(method, Method) and method.name == name and method.description
    assert methods.load("base").key == "base.pretrain" and methods.load("dpo").owned == {
        "truncation_mode": "truncation"
    }

    class Own(P.Section):
        loss_on: str = Field(min_length=1)

    with pytest.raises(TypeError, match="declares no description"):
        type("Nameless", (Method,), {"name": "x", "tags": (), "Params": Own, "__module__": "m"})
    with pytest.raises(TypeError, match="owned names keys its Params lacks: lose_on"):
        type(
            "Typo",
            (Method,),
            {
                "name": "x",
                "description": "x",
                "tags": (),
                "Params": Own,
                "owned": {"completion_only_loss": "lose_on"},
                "__module__": "m",
            },
        )
