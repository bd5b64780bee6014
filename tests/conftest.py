"""Shared test helpers: a tiny configuration of the real pipeline, and the shared real data when present."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import stages  # noqa: F401  first: pins CPU kernels and threads before any test imports torch or NumPy

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HH_DIR = SHARED / "hh-rlhf"
PAPER_EVAL = SHARED / "paper-eval"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def hh_slice(tmp_path):
    """(folder in Anthropic's layout holding harmless-base/test.jsonl.gz, real): the shared real slice of HH-RLHF
    when ../shared/data/hh-rlhf is present, else a synthetic stand-in of the same layout (2,312 pairs, noise included)
    so the test still runs; the test's name shows which in -v output through `real`."""
    if (HH_DIR / "harmless-base" / "test.jsonl.gz").exists():
        return HH_DIR, True
    import gzip
    import json

    from stages.core import synthetic

    print("../shared/data/hh-rlhf not present: using the synthetic stand-in")
    rows, _ = synthetic.generate("harmless-base", "test", 2312, 0, noise_rate=0.08, multi_turn_rate=0.3)
    target = tmp_path / "hh-standin" / "harmless-base" / "test.jsonl.gz"
    target.parent.mkdir(parents=True)
    with gzip.open(target, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return target.parent.parent, False


def sh(cmd, cwd, check=True, env=None):
    """Run a command (a list, or a shell string) in `cwd` with this interpreter's tools on the PATH."""
    res = subprocess.run(cmd, cwd=cwd, env=env or run_env(), capture_output=True, text=True, shell=isinstance(cmd, str))
    if check and res.returncode:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def copy_files(dst: Path) -> Path:
    """The repository's tracked and unignored files as they are in this checkout (committed dvc.lock included)."""
    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    return dst


def fresh_clone(folder: Path) -> Path:
    """What a new user has after `git clone`: this checkout committed (folder/origin) and cloned (folder/clone), with
    the committed dvc.lock and metrics but an empty DVC cache: the lock names outputs that no cache here holds."""
    origin = copy_files(folder / "origin")
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", origin)
    sh(["git", "clone", "-q", str(origin), str(folder / "clone")], folder)
    return folder / "clone"


def copy_checkout(dst: Path) -> Path:
    """The repository's tracked and unignored files, as a fresh clone would have them before `dvc repro`."""
    copy_files(dst)
    (dst / "dvc.lock").unlink(missing_ok=True)  # start from nothing, as before a first `dvc repro`...
    for p in (dst / "metrics").iterdir():  # ...but keep what is gathered across experiments (the report's input)
        if p.name not in ("seeds.md", "seeds.json", "sweeps"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return dst


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory):
    """A git + DVC copy of the project with the tiny configuration, after one `dvc repro`, committed.
    Shared (session scope) by the pipeline, remote and sweep tests: about two minutes on 2 cores."""
    dst = copy_checkout(tmp_path_factory.mktemp("repo"))
    write_params(dst / "params.yaml", tiny_params())
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", dst)
    first = sh(["dvc", "repro"], dst)
    sh("git add -A && git -c user.email=t@t -c user.name=t commit -qm run", dst)
    return dst, first.stdout


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params(table: str | None = None) -> dict:
    """The CPU default shrunk so that the whole pipeline runs in about a minute: same stages, same code. `table`: a
    table of models of conf/models/ instead of the default's (`all`: every model, as the improved profile has)."""
    p = copy.deepcopy(default_params())
    if table:
        p["models"] = yaml.safe_load((ROOT / "conf" / "models" / f"{table}.yaml").read_text())
    p["download"]["synthetic"].update(train_pairs=160, test_pairs=80)
    p["prompts"].update(n_harmful=8, n_helpful=8)
    p["clean"]["heldout_max_pairs"] = 60
    p["base"]["scratch"].update(
        vocab_size=400,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=64,
        max_position_embeddings=128,
    )
    p["base"]["pretrain"].update(max_steps=12, max_length=64, logging_steps=4, save_steps=6)
    for method in {entry["method"] for entry in p["models"].values()} - {"base"}:  # every method of the table
        p[method].update(max_steps=8, max_length=64, logging_steps=4, save_steps=4)
    p["dpo"].update(max_prompt_length=40, logging_steps=2, eval_pairs=16, eval_steps=4)
    p["judge"]["max_pairs"] = 60
    p["sample"].update(max_new_tokens=12, batch_size=8, max_prompt_tokens=64)
    p["metrics"]["bootstrap_resamples"] = 200
    return p


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run a stage's main() in an empty folder holding a params.yaml (the tiny configuration)."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params())
    return tmp_path


def build_tiny_base(folder: Path) -> Path:
    """Run download, prompts, xstest, clean and base of the tiny configuration in `folder` (models/base and its
    data)."""
    from stages import clean, download, prompts, train, xstest

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        write_params(folder / "params.yaml", tiny_params())
        download.main()
        prompts.main()
        xstest.main()
        clean.main()
        train.main(["base"])
    finally:
        os.chdir(cwd)
    return folder


def run_env() -> dict:
    """Environment for subprocesses (dvc, python -m stages.*) that finds this interpreter and the project."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT)
    return env


def tiny_tokenizer():
    """A byte-level BPE with GPT-2's one special token and no pad token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["Human: hello Assistant: sure, here is an answer"] * 20,
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def local_reward_model(tmp_path_factory):
    """A small GPT-2 reward model (one logit, no pad token: like Ray2333's) saved as safetensors in a folder."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    d = tmp_path_factory.mktemp("rm")
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(
        GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, num_labels=1, eos_token_id=tok.eos_token_id)
    )
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


def reward_model_spec(path, **kw):
    """A `score.judges` entry for a sequence-classifier reward model in a local folder."""
    from stages.judges.sequence_classifier import SequenceClassifierSpec

    base = {
        "name": "rm",
        "kind": "sequence_classifier",
        "path": str(path),
        "revision": None,
        "input_format": "pair",
        "batch_size": 3,
        "max_length": 64,
        "thresholds": {"harmful": 0.0, "helpful": 0.0},
    }
    return SequenceClassifierSpec.model_validate(base | kw)


def tiny_overrides(table: str | None = None) -> list[str]:
    """tiny_params() as `-S key=value` overrides of the composed default (for `dvc exp run` and the sweep command,
    which compose params.yaml from conf/ with Hydra)."""
    from commands.compose import flat

    base, tiny = flat(default_params()), flat(tiny_params(table))
    return [f"{k}={'null' if v is None else v}" for k, v in tiny.items() if base.get(k) != v]


def bench_module(name: str):
    """A script of bench/ imported as a module (bench/ is not a package; its scripts import each other by name)."""
    import importlib

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
