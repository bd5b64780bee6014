"""Nothing unbounded, nothing half-written, no traceback for a value that passed validation: crafted pairs, values
that used to crash late, and write faults (issue 22's cases; each test fails on the code before it)."""

from __future__ import annotations

import difflib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stages import clean
from stages.core import params as P
from stages.core.io import StageError, write_json

from .conftest import ROOT, run_env, tiny_params


def test_near_duplicate_rule_compares_a_bounded_number_of_characters(monkeypatch):
    """A pair with 40,000-word near-identical replies: the similarity sees at most near_duplicate_max_chars of each
    (it once ran for more than 10 minutes); a too-long pair is dropped before any similarity is computed."""
    p = P.validate(tiny_params()).clean
    seen = []
    real = difflib.SequenceMatcher

    class Counting(real):
        def __init__(self, isjunk=None, a="", b="", autojunk=True):
            seen.append(len(a) + len(b))
            super().__init__(isjunk, a, b, autojunk)

    monkeypatch.setattr(clean.difflib, "SequenceMatcher", Counting)
    words = " ".join(f"word{i}" for i in range(40_000))
    pair = {
        "id": "s/train/1",
        "subset": "s",
        "split": "train",
        "line": 1,
        "chosen": f"\n\nHuman: q?\n\nAssistant: {words}",
        "rejected": f"\n\nHuman: q?\n\nAssistant: {words} !",
    }
    p_near = p.model_copy(update={"rules": p.rules.model_copy(update={"too_long": False})})
    rule, _ = clean.check_pair(pair, p_near, set(), set())
    assert rule == "near_duplicate" and seen and max(seen) <= 2 * p.near_duplicate_max_chars
    seen.clear()
    rule, _ = clean.check_pair(pair, p, set(), set())  # too_long is on in the default: dropped before similarity
    assert rule == "too_long" and seen == []


def test_clean_stops_when_nothing_is_left_to_train_on(in_tmp):
    """chosen == rejected everywhere: `clean` stops with the rules' counts, instead of `base` blaming the splits."""
    from stages import clean as stage

    raw = Path("data/raw")
    raw.mkdir(parents=True)
    rows = [
        {
            "id": f"s/{split}/{i}",
            "subset": "harmless-base",
            "split": split,
            "line": i,
            "chosen": "\n\nHuman: hi?\n\nAssistant: same",
            "rejected": "\n\nHuman: hi?\n\nAssistant: same",
        }
        for split in ("train", "test")
        for i in range(3)
    ]
    (raw / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    Path("data/eval").mkdir(parents=True)
    Path("data/eval/prompts.jsonl").write_text("")
    with pytest.raises(
        StageError,
        match=r"clean: no training pairs left \(6 in, 0 test pairs kept; dropped: "
        r"identical_responses 6\)",
    ):
        stage.main.__wrapped__()
    assert not Path("data/clean/train.jsonl").exists()


def test_values_that_passed_validation_and_crashed_later_are_refused_up_front():
    raw = tiny_params()
    raw["seed"] = 2**32
    with pytest.raises(StageError, match="seed: Input should be less than or equal to 4294967295"):
        P.validate(raw)
    raw = tiny_params()
    raw["prompts"]["n_harmful"] = 0
    with pytest.raises(StageError, match=r"prompts.n_harmful: a number of prompts \(1 or more\) or 'all', got 0"):
        P.validate(raw)


def test_trl_fields_are_type_checked_and_unpinned_hub_fetches_refused(tmp_path):
    from trl import SFTConfig

    from stages.core.trl_fields import trl_config

    managed = {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False}
    with pytest.raises(StageError, match=r"sft.max_grad_norm: expected float, got str 'abc'"):
        trl_config(SFTConfig, {"max_grad_norm": "abc"}, managed, "sft")
    with pytest.raises(StageError, match=r"sft.chat_template_path: refused \(it makes TRL fetch"):
        trl_config(SFTConfig, {"chat_template_path": "someorg/any-repo"}, managed, "sft")
    template = tmp_path / "template.jinja"
    template.write_text("{{ messages }}")
    assert (
        trl_config(SFTConfig, {"chat_template_path": str(template), "max_grad_norm": 0.5}, managed, "sft").max_grad_norm
        == 0.5
    )


def test_lora_targets_that_name_no_module_are_one_line():
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from stages.methods.dpo import check_lora_targets

    torch.manual_seed(0)
    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, ffn_dim=16, word_embed_proj_dim=8
        )
    )
    check_lora_targets(model, ["q_proj", "v_proj"], Path("models/base"))
    with pytest.raises(
        StageError,
        match=r"dpo.lora.target_modules: qproj not in models/base's model \(its linear "
        r"layers: fc1, fc2, k_proj, lm_head, out_proj, q_proj, v_proj\)",
    ):
        check_lora_targets(model, ["qproj", "v_proj"], Path("models/base"))


def test_max_new_tokens_beyond_the_models_positions_is_one_line():
    from types import SimpleNamespace

    from stages.sample import check_context

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))
    tok = lambda text: {"input_ids": text.split()}  # noqa: E731  a word a token
    s = P.validate(tiny_params()).sample.model_copy(update={"max_new_tokens": 40, "max_prompt_tokens": 30})
    check_context(model, tok, ["a b c"], s, "sft")  # 3 + 40 <= 64
    with pytest.raises(
        StageError,
        match=r"sample.max_new_tokens: 40 new tokens after a prompt of up to 30 tokens "
        r"exceed models/sft's 64 positions",
    ):
        check_context(model, tok, ["w " * 100], s, "sft")


def test_accelerate_config_file_must_be_one(tmp_path):
    from stages.launch import check_accelerate_config

    check_accelerate_config(str(ROOT / "configs" / "ddp.yaml"))
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    with pytest.raises(StageError, match="not an accelerate config .no distributed_type"):
        check_accelerate_config(str(tmp_path / "params.yaml"))
    (tmp_path / "bin").write_bytes(b"\x00\xff: [")
    with pytest.raises(StageError, match="not an accelerate config .not YAML"):
        check_accelerate_config(str(tmp_path / "bin"))


def test_outputs_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644


WRITE_OVER_LIMIT = """
import resource, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from stages.core.io import fail_cleanly, write_bytes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then refuses the write with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

@fail_cleanly
def main():
    write_bytes(Path({out!r}), b"x" * 100_000)

main()
"""


def test_a_write_fault_is_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    out = tmp_path / "data" / "scores.jsonl"
    res = subprocess.run(
        [sys.executable, "-c", WRITE_OVER_LIMIT.format(root=str(ROOT), out=str(out))],
        capture_output=True,
        text=True,
        env=run_env(),
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"error: {out}: cannot write it (file too large for the file-size limit); nothing was left half-written"
    )
    assert list(out.parent.iterdir()) == []


def test_a_failed_model_save_leaves_no_partial_folder(tmp_path, monkeypatch):
    from stages.core import training

    monkeypatch.chdir(tmp_path)
    run = training.TrainingRun("sft", tmp_path / "models" / "sft", tmp_path / "metrics" / "sft" / "live", ("x",))

    def disk_full(folder: Path):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(StageError, match=r"models/sft: cannot save the model \(OSError: \[Errno 28\] No space left"):
        run.save(disk_full, {"final_loss": 1.0})
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == []
    blocked = tmp_path / "afile"
    blocked.write_text("a file where the models folder should be")
    with pytest.raises(StageError, match="cannot write the trained model there"):
        training.probe_writable(blocked / "models")  # checked when the run starts, before any training step


def test_model_folders_hold_no_machine_facts(tmp_path, monkeypatch):
    """run.json records what the run read and how; Python, library versions and the device go to logs/, so the same
    weights give the same folder hash on every machine."""
    from stages.core import training

    monkeypatch.chdir(tmp_path)
    run = training.TrainingRun("sft", tmp_path / "models" / "sft", tmp_path / "metrics" / "sft" / "live", ("x",))
    run.save(
        lambda folder: (folder / "model.safetensors").write_bytes(b"w"),
        {"final_loss": 1.0},
        record={"start": "models/base", "precision": "fp32"},
    )
    record = json.loads((tmp_path / "models/sft/run.json").read_text())
    assert record == {"stage": "sft", "processes": 1, "start": "models/base", "precision": "fp32"}
    log = json.loads((tmp_path / "logs/sft.json").read_text())
    assert log["versions"]["torch"] and log["device"] and "cpu" in log


def test_a_path_that_is_no_model_folder_says_so(tmp_path):
    """`base.pretrained: ../../etc` used to end in "Couldn't instantiate the backend tokenizer"."""
    from stages.core.modeling import load_tokenizer

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    with pytest.raises(StageError, match=r"etc: not a model folder \(no tokenizer files: tokenizer.json"):
        load_tokenizer(str(tmp_path / "etc"))
