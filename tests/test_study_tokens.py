"""The study profile trains on the token ids the study's own library made, pair by pair: a side environment with the
study's versions (the ones its notebook printed) runs TRL 0.16.1's dataset preparation and forward-pass truncation
(tests/study_trl016.py) on the real HH-RLHF slice plus crafted over-long pairs, and the trainers our `sft` and `dpo`
stages build under `-S profile=study` must hold the same ids. Torch comes from this environment (a .pth file), the
rest from the package index (about 20 s).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from commands import compose
from stages import clean as clean_stage
from stages import methods
from stages.core import params as P
from stages.core import synthetic
from stages.methods import dpo, sft

from .conftest import HH_DIR, ROOT

pytestmark = pytest.mark.slow

# The study's versions (its notebook's printout); huggingface_hub, fsspec, dill and multiprocess as those accept them
STUDY_STACK = [
    "trl==0.16.1",
    "transformers==4.51.0",
    "tokenizers==0.21.1",
    "datasets==3.5.0",
    "accelerate==1.6.0",
    "peft==0.15.1",
    "huggingface_hub<1.0",
    "fsspec<=2024.12.0",
    "dill<0.3.9",
    "multiprocess<0.70.17",
]
REAL = HH_DIR / "harmless-base" / "test.jsonl.gz"


def records() -> tuple[list[dict], str]:
    """The real slice (2,312 pairs) where ../shared is present, else the built-in generator's look-alike pairs;
    then crafted pairs that exercise truncation: prompts over 512 tokens, replies over 766."""
    if REAL.exists():
        with gzip.open(REAL, "rt", encoding="utf-8") as fh:
            rows, source = [json.loads(line) for line in fh], f"{REAL} (real)"
    else:  # ../shared/data/hh-rlhf absent: the generator's HH-format pairs still exercise every rule below
        rows, _ = synthetic.generate("harmless-base", "test", 400, 0, noise_rate=0.1, multi_turn_rate=0.3)
        source = "built-in generator (../shared/data/hh-rlhf not found)"
    words = " ".join(f"word{i} and some more text" for i in range(300))
    crafted = [
        {
            "chosen": f"\n\nHuman: {words}\n\nAssistant: Sure, here it is.",
            "rejected": f"\n\nHuman: {words}\n\nAssistant: Some",
        },
        {"chosen": f"\n\nHuman: hi\n\nAssistant: {words}", "rejected": "\n\nHuman: hi\n\nAssistant: no"},
        {
            "chosen": f"\n\nHuman: {words}\n\nAssistant: {words} yes",
            "rejected": f"\n\nHuman: {words}\n\nAssistant: {words} no",
        },
        {"chosen": "\n\nHuman: tell me\n\nAssistant: ", "rejected": "\n\nHuman: tell me\n\nAssistant: I won't."},
    ]
    return [{"id": f"r{i}", "subset": "harmless-base", **r} for i, r in enumerate(rows + crafted)], source


@pytest.fixture(scope="module")
def study_python(tmp_path_factory) -> Path:
    """A virtual environment with the study's libraries; torch from this one."""
    env = tmp_path_factory.mktemp("study-venv")
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", *STUDY_STACK], check=True, capture_output=True
    )
    return python


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The rehearsal's OPT look-alike tokenizer (OPT's conventions: `</s>` as BOS and EOS, prepended; `<pad>`)."""
    from commands.rehearse import SHAPES, opt_lookalike
    from stages.core.modeling import load_tokenizer

    folder = tmp_path_factory.mktemp("opt")
    rows, _ = records()
    opt_lookalike(
        folder, [r["chosen"] for r in rows[:1500]] + [r["rejected"] for r in rows[:1500]], SHAPES["tiny"]["opt"]
    )
    tok = load_tokenizer(str(folder))
    tok.backend_tokenizer.save(str(folder / "side-tokenizer.json"))
    return tok, folder


def our_trainers(tok, pairs: list[dict], tmp: Path):
    """The trainers the `sft` and `dpo` stages build under the study profile, on a tiny OPT of the tokenizer's
    vocabulary (only the data preparation matters here)."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    params = P.validate(compose.compose("study"))
    torch.manual_seed(0)

    def model():
        return OPTForCausalLM(
            OPTConfig(
                vocab_size=len(tok),
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                ffn_dim=32,
                word_embed_proj_dim=16,
                max_position_embeddings=2048,
            )
        )

    sft_trainer = sft.build_trainer(
        methods.load("sft").parse(params)[0], methods.load("sft").config(params, tmp / "sft"), model(), tok, pairs
    )
    dpo_trainer = dpo.build_trainer(
        methods.load("dpo").parse(params)[0],
        methods.load("dpo").config(params, tmp / "dpo"),
        model(),
        tok,
        pairs,
        pairs[:2],
    )
    return sft_trainer, dpo_trainer


def test_study_profile_trains_on_trl_0_16_token_ids(study_python, tokenizer, tmp_path):
    tok, folder = tokenizer
    rows, source = records()
    params = P.validate(compose.compose("study"))
    kept = [clean_stage.check_pair(r, params.clean, set(), set()) for r in rows]
    assert all(rule is None for rule, _ in kept), [rule for rule, _ in kept if rule]  # the study cleaned nothing
    pairs = [pair for _, pair in kept]
    n = len(pairs)
    long_ones = [n - 4, n - 3, n - 2]  # a batch of the over-long crafted pairs with short real ones: keep_end bites
    batches = [[i, i + 1] for i in range(0, 200, 2)] + [[0, n - 2], [n - 3, 5], [n - 4, n - 1], long_ones]
    job = {
        "tokenizer": str(folder / "side-tokenizer.json"),
        "output_dir": str(tmp_path / "side"),
        "batches": batches,
        "pairs": [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows],
    }
    (tmp_path / "in.json").write_text(json.dumps(job))
    res = subprocess.run(
        [
            str(study_python),
            str(ROOT / "tests" / "study_trl016.py"),
            str(tmp_path / "in.json"),
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = json.loads((tmp_path / "out.json").read_text())
    assert theirs["versions"] == {"trl": "0.16.1", "transformers": "4.51.0", "datasets": "3.5.0"}
    assert theirs["settings"] == {
        "max_prompt_length": 512,
        "max_length": 1024,
        "max_completion_length": None,
        "truncation_mode": "keep_end",
        "sft_max_length": 512,
    }

    sft_trainer, dpo_trainer = our_trainers(tok, pairs, tmp_path)
    # SFT: BOS + the chosen transcript + EOS, cut on the right at 512
    ours_sft = sft_trainer.train_dataset["input_ids"]
    assert len(ours_sft) == len(theirs["sft"]) == n
    differ = [i for i in range(n) if ours_sft[i] != theirs["sft"][i]]
    assert not differ, f"{len(differ)} of {n} SFT sequences differ ({source}), first {rows[differ[0]]['id']}"
    assert ours_sft[0][0] == tok.bos_token_id and any(len(x) == 512 for x in ours_sft)

    # DPO: no BOS, prompt and replies tokenized alone, EOS after each reply, the prompt's last 512 tokens
    ours = dpo_trainer.train_dataset
    keys = {"prompt_ids": "prompt_input_ids", "chosen_ids": "chosen_input_ids", "rejected_ids": "rejected_input_ids"}
    differ = [i for i in range(n) if any(ours[i][k] != theirs["dpo"][i][v] for k, v in keys.items())]
    assert not differ, f"{len(differ)} of {n} DPO pairs differ ({source}), first {rows[differ[0]]['id']}"
    assert max(len(x) for x in ours["prompt_ids"]) == 512 and tok.bos_token_id not in ours[0]["prompt_ids"][:1]

    # what each forward pass sees: TRL 0.16.1 cut the padded batch to its last 1024 columns
    collate = dpo_trainer.data_collator
    for batch, seen in zip(batches, theirs["batches"]):
        out = collate([ours[i] for i in batch])
        rows_ours = [ids[mask.bool()].tolist() for ids, mask in zip(out["input_ids"], out["attention_mask"])]
        assert rows_ours == seen, batch
    assert any(len(row) == 1024 for row in theirs["batches"][-1])  # the crafted batch was cut


def test_crafted_pairs_show_each_token_level_difference(tokenizer):
    """The study's way and TRL 1.16's own differ exactly where the fidelity table says: BOS, the split word, the cut."""
    tok, _ = tokenizer
    prompt, chosen, rejected = "\n\nHuman: hi\n\nAssistant: S", "ure thing", "ome other"
    study = dpo.tokenize_pair(tok, prompt, chosen, rejected, bos=False, tokenize="separate", max_prompt_length=512)
    joint = dpo.tokenize_pair(tok, prompt, chosen, rejected, bos=True, tokenize="joint", max_prompt_length=None)
    assert study["prompt_ids"][0] != tok.bos_token_id and joint["prompt_ids"][0] == tok.bos_token_id
    assert study["chosen_ids"][-1] == joint["chosen_ids"][-1] == tok.eos_token_id
    # separate: "S" stays a token of the prompt; joint: the boundary moves back to the last shared token
    assert tok.decode(study["chosen_ids"][:-1]) == "ure thing"
    assert (
        tok.decode(joint["chosen_ids"][:-1]).startswith("Sure")
        or len(joint["prompt_ids"]) < len(study["prompt_ids"]) + 1
    )
