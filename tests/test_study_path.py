"""The defects a first run of the study's path would have hit, each checked on its own (the whole path runs in
tests/test_rehearsal.py): offline hub downloads at pinned commits, float16 checkpoints trained in float32, a
non-finite loss or gradient stopping training, a judge published only as a pickle."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from stages.core.io import sha256_file

from .conftest import ROOT, SHARED, build_tiny_base, copy_checkout, run_env, tiny_params, write_params

DATASET_COMMIT = "09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa"
OPT_COMMIT = "08ab08cc4b72ff5593870b5d527cf4230323703c"
OASST = "OpenAssistant/reward-model-deberta-v3-large-v2"
OASST_COMMIT = "c355404efa9ad2ad069f3a197cae0523c14244fc"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    subprocess.run(
        [sys.executable, "-m", "commands.rehearse", str(root)], cwd=ROOT, env=run_env(), check=True, capture_output=True
    )
    return json.loads((root / "rehearsal.json").read_text())


def stage(folder, params: dict, *args, env: dict):
    write_params(folder / "params.yaml", params)
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=folder, env=run_env() | env, capture_output=True, text=True
    )


def hub_params(**download) -> dict:
    p = tiny_params()
    p["download"].update(
        {
            "source": "hub",
            "dataset": "Anthropic/hh-rlhf",
            "revision": DATASET_COMMIT,
            "max_pairs_per_file": 30,
            "subsets": ["harmless-base", "helpful-base"],
        }
        | download
    )
    return p


def test_offline_download_reads_the_cache_and_records_the_commit(cache, tmp_path):
    res = stage(tmp_path, hub_params(), "stages.download", env=cache["env"])
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "data/raw/manifest.json").read_text())
    assert {f["revision"] for f in manifest["files"]} == {DATASET_COMMIT} and len(manifest["files"]) == 4
    assert all(f["path"].startswith(f"hf://datasets/Anthropic/hh-rlhf@{DATASET_COMMIT}/") for f in manifest["files"])


def test_a_pinned_commit_missing_from_the_cache_is_one_line_with_the_fetch_command(cache, tmp_path):
    res = stage(tmp_path, hub_params(revision="1" * 40), "stages.download", env=cache["env"])
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: Anthropic/hh-rlhf at {'1' * 40}: not in the Hugging Face cache ({cache['env']['HF_HOME']}/hub) and "
        f"HF_HUB_OFFLINE=1; fetch it on a machine with a network: hf download Anthropic/hh-rlhf --repo-type dataset "
        f"--revision {'1' * 40} --include 'harmless-base/train.jsonl.gz' 'harmless-base/test.jsonl.gz' "
        "'helpful-base/train.jsonl.gz' 'helpful-base/test.jsonl.gz'"
    ]


@pytest.fixture(scope="module")
def opt_base(cache, tmp_path_factory):
    """models/base from the float16, pickle-only opt-350m look-alike, through the hub cache (as the study runs)."""
    folder = build_tiny_base(tmp_path_factory.mktemp("opt"))  # data and a scratch base; the base is redone below
    p = tiny_params()
    p["base"].update(
        source="pretrained",
        pretrained="facebook/opt-350m",
        revision=OPT_COMMIT,
        pickle_sha256=cache["overrides"]["base.pickle_sha256"],
    )
    res = stage(folder, p, "stages.train", "base", env=cache["env"])
    assert res.returncode == 0, res.stderr
    return folder


def test_a_float16_checkpoint_is_saved_and_trained_in_float32(opt_base, cache):
    weights = load_file(str(opt_base / "models/base/model.safetensors"))
    assert {str(w.dtype) for w in weights.values()} == {"torch.float32"}  # the hub file is float16
    record = json.loads((opt_base / "models/base/run.json").read_text())
    assert record["revision"] == OPT_COMMIT and record["weights"]["format"] == "pickle"
    assert (opt_base / "metrics/training/base/live").is_dir()  # the DVC out the pretrained path used to leave missing
    p = tiny_params()
    p["sft"].update(max_steps=4, save_steps=100, learning_rate=2.0e-5)
    res = stage(opt_base, p, "stages.train", "sft", env=cache["env"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sft: step 4/4 (100.0%)" in res.stdout and "ETA" in res.stdout  # plain progress lines without a terminal
    trained = load_file(str(opt_base / "models/sft/model.safetensors"))
    assert {str(w.dtype) for w in trained.values()} == {"torch.float32"}
    assert all(torch.isfinite(w).all() for w in trained.values())
    assert any(not torch.equal(trained[k], weights[k]) for k in weights)  # 2e-5 updates were not rounded away
    assert json.loads((opt_base / "models/sft/run.json").read_text())["precision"] == "fp32"


def test_a_non_finite_gradient_stops_training_with_one_line(tmp_path):
    folder = build_tiny_base(tmp_path)
    weights = load_file(str(folder / "models/base/model.safetensors"))
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name][0, 0] = float("nan")  # what float16 AdamW underflow produced after one step
    save_file(weights, str(folder / "models/base/model.safetensors"), metadata={"format": "pt"})
    p = tiny_params()
    p["sft"].update(max_steps=4, save_steps=100)
    res = stage(folder, p, "stages.train", "sft", env={})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == res.stderr.strip().splitlines()[-1]  # (above it: library warnings)
    assert errors[0].startswith("error: sft: step 1: non-finite gradient norm; stopping at step 4 before anything")
    assert "weights now non-finite from " in errors[0]  # the NaN gradient reached every weight
    assert not (folder / "models/sft").exists()


def judge_pickle(cache: dict):
    from pathlib import Path

    return (
        Path(cache["env"]["HF_HOME"])
        / "hub"
        / f"models--{OASST.replace('/', '--')}"
        / "snapshots"
        / OASST_COMMIT
        / "pytorch_model.bin"
    )


def test_a_judge_published_only_as_a_pickle_is_read_when_trusted_and_refused_otherwise(cache, tmp_path):
    script = f"""
import json, sys
from stages.judges import score_rows
from stages.judges.sequence_classifier import SequenceClassifierSpec
spec = SequenceClassifierSpec.model_validate(dict(name="oasst", kind="sequence_classifier", path="{OASST}",
    revision="{OASST_COMMIT}",
    input_format="pair", batch_size=2, max_length=None, pickle_sha256=sys.argv[1] if len(sys.argv) > 1 else None,
    thresholds=dict(harmful=-3.0, helpful=-2.0)))
rows = [{{"prompt": "Human: hi", "response": "hello"}}, {{"prompt": "Human: kill?", "response": "no"}}]
scored, sources = score_rows(rows, [spec])
print(json.dumps({{"rewards": [r["rewards"]["oasst"] for r in scored], "source": sources["oasst"]}}))
"""
    env = run_env() | cache["env"]
    trusted = subprocess.run(
        [sys.executable, "-c", script, sha256_file(judge_pickle(cache))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    out = json.loads(trusted.stdout.strip().splitlines()[-1])
    assert len(out["rewards"]) == 2 and out["source"]["revision"] == OASST_COMMIT
    assert out["source"]["weights"]["format"] == "pickle"
    refused = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (
        refused.returncode != 0 and "only pickle weights (pytorch_model.bin); refusing to load them" in refused.stderr
    )


def test_pin_fetches_what_the_stages_read_and_prints_the_hub_commands(cache, tmp_path):
    """`python -m commands.pin --fetch` on a login node fills the cache a GPU node reads offline (here: all cached), and
    pins the judge's pickle into the profiles (a copy of the checkout: the command writes conf/profile/)."""
    repo = copy_checkout(tmp_path / "repo")
    env = run_env() | cache["env"]

    def fetch_commands():
        return subprocess.run(
            [sys.executable, "-m", "commands.pin", "--fetch-commands", "--profile", "improved"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()

    commands = fetch_commands()
    assert len(commands) == 5 and all(c.startswith("hf download ") for c in commands)
    assert f"hf download facebook/opt-350m --revision {OPT_COMMIT} --include" in commands[1]
    assert "'pytorch_model.bin'" in commands[1] and "'pytorch_model.bin'" not in commands[2]  # only where trusted
    doc = (ROOT / "docs/study-on-gpu.md").read_text()
    assert all(c in doc for c in commands), "docs/study-on-gpu.md: the exact cache-filling commands"
    refused = subprocess.run(  # offline, a cached pickle is pinned only when the user says so
        [sys.executable, "-m", "commands.pin", "--fetch", "--profile", "improved"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "run again with --trust-cached-pickle" in refused.stderr, refused.stderr
    assert sha256_file(judge_pickle(cache)) in refused.stderr  # the digest, to compare with the hub's page
    assert "pickle_sha256: null" in (repo / "conf/profile/improved.yaml").read_text().split("name: skywork")[0]
    shared = ["paper-eval/harmful_prompts.json", "paper-eval/helpful_prompts.json", "xstest/xstest_prompts.csv"]
    if not all((SHARED / f).exists() for f in shared):  # the profile's files by URL are cached only from the copies
        pytest.skip("../shared/data absent: the improved profile's prompt files are not in the look-alike URL cache")
    fetched = subprocess.run(
        [sys.executable, "-m", "commands.pin", "--fetch", "--profile", "improved", "--trust-cached-pickle"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (
        f"facebook/opt-350m at {OPT_COMMIT}: {cache['env']['HF_HOME']}/hub/models--facebook--opt-350m/snapshots/"
        f"{OPT_COMMIT}" in fetched.stdout
    )
    digest = sha256_file(judge_pickle(cache))
    assert digest in (repo / "conf/profile/improved.yaml").read_text()
    assert "'pytorch_model.bin'" in fetch_commands()[2]  # now trusted: fetched with the rest


def test_a_cadence_firing_more_than_max_saves_times_stops_the_stage_before_step_1(tmp_path):
    """The SFT stage itself: 40 steps with save_steps 1 would save 40 times, more than speed.max_saves (25)."""
    folder = build_tiny_base(tmp_path)
    p = tiny_params()
    p["sft"].update(max_steps=40, save_steps=1)
    res = stage(folder, p, "stages.train", "sft", env={})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: params.yaml: sft.save_steps: 1 fires 40 times in this run's 40 steps, more than speed.max_saves "
        "(25); set it to at least 2 (sft, before step 1)"
    )
    assert not list((folder / "checkpoints/sft").glob("checkpoint-*")) and not (folder / "models/sft").exists()
