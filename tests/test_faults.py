"""Faults: missing or corrupt models, pickle weights and unloadable judges give one clear line naming the path;
metrics never come from partial inputs; a full disk is one line. (Kills and resume: tests/test_resume.py.)"""

import json
import shutil
import subprocess
import sys

import pytest

from stages import metrics
from stages.core import io as sio
from stages.core.io import StageError
from stages.core.modeling import check_model_dir, load_causal_lm

from .conftest import build_tiny_base, reward_model_spec, run_env, tiny_params, write_params


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny models/base (and the cleaned data) in a scratch folder."""
    return build_tiny_base(tmp_path_factory.mktemp("faults"))


def test_model_folder_faults(tmp_path, base_model):
    with pytest.raises(StageError, match="nope: model folder not found"):
        check_model_dir(tmp_path / "nope")
    (tmp_path / "cfg").mkdir()
    with pytest.raises(StageError, match="no config.json"):
        check_model_dir(tmp_path / "cfg")
    pickled = tmp_path / "pickled"
    model = load_causal_lm(str(base_model / "models/base"))
    model.save_pretrained(pickled)
    import torch

    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # a pickle checkpoint, as older repos ship
    with pytest.raises(StageError, match="only pickle weights.*refusing"):
        load_causal_lm(str(pickled))
    corrupt = tmp_path / "corrupt"
    model.save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(StageError, match=f"{corrupt}: cannot load the model"):
        load_causal_lm(str(corrupt))


def test_stage_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params())
    res = subprocess.run(
        [sys.executable, "-m", "stages.sample", "sft"], cwd=tmp_path, env=run_env(), capture_output=True, text=True
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == ["error: data/eval/prompts.jsonl: file not found"]
    p = tiny_params()
    p["dpoo"] = p.pop("dpo")
    write_params(tmp_path / "params.yaml", p)
    res = subprocess.run(
        [sys.executable, "-m", "stages.metrics"], cwd=tmp_path, env=run_env(), capture_output=True, text=True
    )
    assert res.stderr.strip() == (
        "error: params.yaml: dpoo: unknown key (typo?); a training method's section needs stages/methods/dpoo.py"
    )
    p = tiny_params()
    p["dpo"]["bta"] = 0.2  # inside a method's section: the first stage, check, reads it with TRL's DPOConfig
    write_params(tmp_path / "params.yaml", p)
    res = subprocess.run(
        [sys.executable, "-m", "stages.check"], cwd=tmp_path, env=run_env(), capture_output=True, text=True
    )
    assert res.stderr.strip().splitlines()[-1] == "error: params.yaml: dpo.bta: not a field of trl.DPOConfig (typo?)"


def test_no_metrics_from_partial_scores(in_tmp):
    from .test_metrics import study_rows

    sio.write_jsonl(
        in_tmp / "data/scores/base.jsonl", [r | {"rewards": {"judge": 0.5}} for r in study_rows("base", 10, 10)]
    )
    with pytest.raises(StageError, match="sft.jsonl: file not found"):
        metrics.main.__wrapped__()
    assert not (in_tmp / "metrics/details.json").exists()


def test_disk_full_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "out.json"))

    monkeypatch.setattr(sio.os, "replace", full)

    @sio.fail_cleanly
    def stage():
        sio.write_json(tmp_path / "out.json", {"a": 1})

    with pytest.raises(SystemExit):
        stage()
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'out.json'}: cannot write it (disk full); nothing was left half-written"
    )
    assert not list(tmp_path.iterdir())  # the temp file was removed too


# --- safe loading: a pickle checkpoint is read only when its sha256 is the one params trust --------------------


def pickle_only_copy(src, dst, cls=None):
    """`src` (a safetensors model folder) re-saved as pytorch_model.bin, as facebook/opt-350m is published."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from stages.core.modeling import load_pretrained

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "run.json"))
    model, _ = load_pretrained(cls or AutoModelForCausalLM, str(src))
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, dst / "pytorch_model.bin")
    return dst


def test_trusted_pickle_is_read_weights_only_and_others_refused(tmp_path, base_model):
    import torch
    from transformers import AutoModelForCausalLM

    from stages.core.modeling import load_pretrained

    folder = pickle_only_copy(base_model / "models/base", tmp_path / "bin")
    digest = sio.sha256_file(folder / "pytorch_model.bin")
    model, record = load_pretrained(AutoModelForCausalLM, str(folder), pickle_sha256=digest)
    assert record == {
        "source": str(folder),
        "revision": None,
        "weights": {"format": "pickle", "file": "pytorch_model.bin", "sha256": digest},
    }
    original = load_causal_lm(str(base_model / "models/base")).state_dict()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    with pytest.raises(StageError) as exc:  # another file than the one trusted
        load_pretrained(AutoModelForCausalLM, str(folder), pickle_sha256="0" * 64)
    assert f"{folder / 'pytorch_model.bin'}: sha256 {digest} is not the trusted {'0' * 64}" in str(exc.value)
    assert "\n" not in str(exc.value)
    with pytest.raises(StageError, match="only pickle weights.*refusing"):  # no digest: refused as before
        load_pretrained(AutoModelForCausalLM, str(folder))


class _Payload:
    """Unpickling this would create a file: the weights-only unpickler must refuse it even with a trusted digest."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_trusted_digest_never_runs_code_from_the_pickle(tmp_path, base_model):
    import torch
    from transformers import AutoModelForCausalLM

    from stages.core.modeling import load_pretrained

    folder = pickle_only_copy(base_model / "models/base", tmp_path / "evil")
    marker = tmp_path / "code-ran"
    torch.save({"model.decoder.embed_tokens.weight": _Payload(str(marker))}, folder / "pytorch_model.bin")
    digest = sio.sha256_file(folder / "pytorch_model.bin")
    with pytest.raises(StageError, match=f"{folder}: cannot load the model"):
        load_pretrained(AutoModelForCausalLM, str(folder), pickle_sha256=digest)
    assert not marker.exists()


def test_base_stage_converts_a_trusted_pickle_to_safetensors(tmp_path, base_model, monkeypatch):
    import torch

    from stages import train

    folder = pickle_only_copy(base_model / "models/base", tmp_path / "opt")
    digest = sio.sha256_file(folder / "pytorch_model.bin")
    work = tmp_path / "work"
    shutil.copytree(base_model / "data", work / "data")  # the training transcripts for the starting loss
    p = tiny_params()
    p["base"].update(source="pretrained", pretrained=str(folder), revision=None, pickle_sha256=digest)
    write_params(work / "params.yaml", p)
    monkeypatch.chdir(work)
    train.main.__wrapped__(["base"])
    out = work / "models/base"
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    record = json.loads((out / "run.json").read_text())
    assert record["weights"] == {"format": "pickle", "file": "pytorch_model.bin", "sha256": digest}
    assert record["source"] == str(folder)
    metrics = json.loads((work / "metrics/training/base/train.json").read_text())  # numbers only: no run record
    assert set(metrics) == {"parameters", "start_loss", "start_loss_texts"} and 0 < metrics["start_loss"] < 20
    assert (work / "metrics/training/base/live/plots/metrics/eval/loss.tsv").exists()  # the DVC out exists
    converted = load_causal_lm(str(out)).state_dict()  # safetensors only from here on
    original = load_causal_lm(str(base_model / "models/base")).state_dict()
    assert converted.keys() == original.keys() and all(torch.equal(converted[k], original[k]) for k in original)


def test_reward_model_from_a_trusted_pickle(tmp_path, local_reward_model):
    from transformers import AutoModelForSequenceClassification

    from stages import score

    folder = pickle_only_copy(local_reward_model, tmp_path / "rm", AutoModelForSequenceClassification)
    digest = sio.sha256_file(folder / "pytorch_model.bin")
    rows = [{"prompt": "\n\nHuman: hello?\n\nAssistant:", "response": "sure"}]
    with pytest.raises(StageError, match="cannot load the reward model|only pickle weights"):
        score.score_rows(rows, [reward_model_spec(folder)])
    scored, sources = score.score_rows(rows, [reward_model_spec(folder, pickle_sha256=digest)])
    trusted, _ = score.score_rows(rows, [reward_model_spec(local_reward_model)])
    assert scored[0]["rewards"]["rm"] == trusted[0]["rewards"]["rm"]  # the same weights, read from the pickle
    assert sources["rm"]["weights"] == {"format": "pickle", "file": "pytorch_model.bin", "sha256": digest}
