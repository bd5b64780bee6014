"""The paper profile's TRL/PEFT configs, built without training, hold exactly the study's values."""
import pytest

from stages import compose, dpo, sft
from stages.core import params as P
from stages.core.modeling import fit_prompt

from .conftest import ROOT


@pytest.fixture
def paper(monkeypatch):
    monkeypatch.chdir(ROOT)
    return P.validate(compose.compose("paper"))


def test_paper_sft_config(paper, tmp_path):
    c = sft.sft_config(paper.sft, tmp_path, paper.seed)
    assert (c.learning_rate, c.num_train_epochs, c.per_device_train_batch_size, c.gradient_accumulation_steps,
            c.max_length, c.seed) == (2e-5, 2.0, 2, 4, 512, 42)
    assert c.optim == "adamw_torch" and c.lr_scheduler_type.value == "linear" and c.warmup_steps == 0
    assert c.weight_decay == 0.0 and c.max_grad_norm == 1.0 and c.packing is False
    assert c.completion_only_loss is False  # the study's code: loss on the whole transcript
    assert c.bf16 is False and c.gradient_checkpointing is False  # this CPU; bf16 turns on with a GPU that has it


def test_paper_dpo_and_lora_config(paper, tmp_path):
    c = dpo.dpo_config(paper.dpo, tmp_path, paper.seed)
    assert (c.beta, c.loss_type, c.learning_rate, c.num_train_epochs, c.per_device_train_batch_size,
            c.gradient_accumulation_steps, c.max_length, c.seed) == (0.1, ["sigmoid"], 2e-5, 1.0, 2, 4, 1024, 42)
    assert c.precompute_ref_log_probs is False
    lora = dpo.lora_config(paper.dpo)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules), lora.bias) == \
        (8, 16, 0.05, {"q_proj", "v_proj"}, "none")


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
