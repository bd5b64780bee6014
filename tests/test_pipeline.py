"""End to end: the DVC pipeline itself (`dvc repro`) on the tiny configuration, in a temporary copy of the repo.

One module-scoped run is shared by the checks below; it takes about a minute or two on 2 cores.
"""
import json
import time
import shutil
import subprocess

import pytest
import yaml

from .conftest import ROOT, run_env, tiny_params, write_params

MODELS = ["base", "sft", "dpo", "sft_dpo"]


def sh(cmd, cwd, check=True):
    res = subprocess.run(cmd, cwd=cwd, env=run_env(), capture_output=True, text=True, shell=isinstance(cmd, str))
    if check and res.returncode:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("repo")
    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    for generated in ("dvc.lock", "metrics"):  # start from nothing, as a fresh clone would after `dvc repro`
        p = dst / generated
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    write_params(dst / "params.yaml", tiny_params())
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", dst)
    first = sh(["dvc", "repro"], dst)
    return dst, first.stdout


def test_all_stages_run_and_metrics_hold_four_models(repo):
    dst, log = repo
    for stage in ["download", "prompts", "clean", "base", "sft", "dpo@dpo", "dpo@sft_dpo", "judge", "metrics", "report"]:
        assert f"Running stage '{stage}'" in log
    m = json.loads((dst / "metrics/metrics.json").read_text())
    assert set(MODELS) <= set(m)
    for model in MODELS:
        r = m[model]["judge"]
        for k in ("harmless_rate", "helpful_rate", "cas"):
            assert 0.0 <= r[k] <= 100.0
            assert r[f"{k}_ci_low"] <= r[k] <= r[f"{k}_ci_high"]
        assert r["cas"] == pytest.approx((r["harmless_rate"] + r["helpful_rate"]) / 2)
        assert r["n_harmful"] == 8 and r["n_helpful"] == 8
    c = json.loads((dst / "metrics/clean.json").read_text())
    assert c["input"] == c["kept"] + sum(c["dropped"].values())


def test_outputs_are_complete_and_safe(repo):
    dst, _ = repo
    for model in MODELS:
        folder = dst / "models" / model
        assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
        assert not list(folder.rglob("*.bin")) and not list(folder.rglob("optimizer.pt"))
        rows = [json.loads(x) for x in (dst / "data/samples" / f"{model}.jsonl").read_text().splitlines()]
        assert len(rows) == 16 and {"model", "prompt_set", "prompt_id", "prompt", "response", "n_tokens",
                                    "stopped_by"} <= set(rows[0])
        assert all("\n\nHuman:" not in r["response"] for r in rows)
    for name in ("dpo", "sft_dpo"):
        assert (dst / "models" / name / "adapter" / "adapter_model.safetensors").exists()
        t = json.loads((dst / "metrics" / name / "train.json").read_text())
        assert t["trainable_parameters"] > 0 and "heldout_reward_accuracy" in t
        assert (dst / "metrics" / name / "live/plots/metrics/eval/rewards/margins.tsv").exists()
    assert not (dst / "checkpoints" / "sft").exists()  # removed once the stage succeeded
    assert "| sft_dpo | judge |" in (dst / "metrics/report.md").read_text()


def test_second_repro_runs_nothing(repo):
    dst, _ = repo
    out = sh(["dvc", "repro"], dst).stdout
    assert "Running stage" not in out


TRAINING = {"download", "prompts", "clean", "base", "sft", "dpo@dpo", "dpo@sft_dpo", "judge"}
SAMPLING = {f"sample@{m}" for m in MODELS}


def _set_beta(p):
    p["dpo"]["beta"] = 0.2


def _set_tokens(p):
    p["sample"]["max_new_tokens"] = 7


def _set_judge(p):
    p["score"]["judges"][0]["batch_size"] = 5


@pytest.mark.parametrize("edit, dirty, never", [
    # sampling/scoring of the dpo models follow through their model deps once dpo re-runs
    (_set_beta, {"dpo@dpo", "dpo@sft_dpo"}, TRAINING - {"dpo@dpo", "dpo@sft_dpo"} | {"sample@base", "sample@sft"}),
    (_set_tokens, SAMPLING, TRAINING),  # an evaluation param re-runs no training
    (_set_judge, {f"score@{m}" for m in MODELS}, TRAINING | SAMPLING),  # a judge change re-runs no sampling
], ids=["dpo.beta", "sample.max_new_tokens", "score.judges"])
def test_param_change_dirties_only_what_reads_it(repo, edit, dirty, never):
    dst, _ = repo
    original = (dst / "params.yaml").read_text()
    params = yaml.safe_load(original)
    edit(params)
    write_params(dst / "params.yaml", params)
    try:
        changed = set(json.loads(sh(["dvc", "status", "--json"], dst).stdout))
    finally:
        (dst / "params.yaml").write_text(original)
    assert dirty <= changed
    assert not changed & never


def test_metrics_stage_runs_from_scored_files_alone(repo, tmp_path):
    dst, _ = repo
    shutil.copytree(dst / "data/scores", tmp_path / "data/scores")
    shutil.copy(dst / "params.yaml", tmp_path / "params.yaml")
    sh(["python", "-m", "stages.metrics"], tmp_path)
    assert json.loads((tmp_path / "metrics/metrics.json").read_text()) == \
        json.loads((dst / "metrics/metrics.json").read_text())


def test_forced_rerun_is_bit_identical(repo):
    dst, _ = repo
    before = {p: (dst / p).read_bytes() for p in ["metrics/metrics.json", *[f"data/samples/{m}.jsonl" for m in MODELS]]}
    sh(["dvc", "repro", "--force"], dst)
    for p, content in before.items():
        assert (dst / p).read_bytes() == content, p


@pytest.mark.slow
def test_exp_run_and_queued_sweep(repo):
    """`dvc exp run -S dpo.beta=...` re-runs only DPO and what follows it; a queued sweep runs with one worker and
    `dvc exp show` lists beta against CAS. (Slow: about 4 minutes; .ci/run runs it, `pytest -m slow` too.)"""
    dst, _ = repo
    # The temp repo keeps its tiny params.yaml: Hydra composition would rebuild it from conf/ (the full default).
    sh("dvc config hydra.enabled false && git add -A && git -c user.email=t@t -c user.name=t commit -qm lock", dst)
    out = sh(["dvc", "exp", "run", "-S", "dpo.beta=0.2"], dst).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # score/metrics follow only if the samples changed: DVC skips a stage whose inputs hash the same
    assert {"dpo@dpo", "dpo@sft_dpo", "sample@dpo", "sample@sft_dpo"} <= ran
    assert not ran & {"download", "prompts", "clean", "base", "sft", "judge", "sample@base", "sample@sft",
                      "score@base", "score@sft"}
    diff = sh(["dvc", "metrics", "diff", "HEAD", "--all", "--md", "--targets", "metrics/metrics.json"], dst).stdout
    assert "sft_dpo.judge.cas" in diff and "| Path" in diff
    params_diff = sh(["dvc", "params", "diff", "HEAD", "--md"], dst).stdout
    assert "dpo.beta" in params_diff and "0.2" in params_diff
    sh(["dvc", "exp", "run", "--queue", "-S", "dpo.beta=0.05,0.5"], dst)
    sh(["dvc", "queue", "start", "-j", "1"], dst)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = sh(["dvc", "queue", "status"], dst).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Failed" not in status, status
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], dst).stdout)
    betas = set()
    for rev in shown:
        for exp in (rev.get("experiments") or []):
            for run in exp.get("revs", []):
                data = run.get("data") or {}
                beta = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("dpo", {}).get("beta")
                cas = data.get("metrics", {}).get("metrics/metrics.json", {}).get("data", {})
                if beta is not None and cas.get("sft_dpo", {}).get("judge", {}).get("cas") is not None:
                    betas.add(beta)
    assert {0.05, 0.5} <= betas
