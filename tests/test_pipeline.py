"""End to end: the DVC pipeline itself (`dvc repro`) on the tiny configuration, in a temporary copy of the repo.

One module-scoped run is shared by the checks below; it takes about a minute or two on 2 cores.
"""

import json
import shutil
import time

import pytest
import yaml

from .conftest import default_params, sh, write_params

MODELS = list(default_params()["models"])  # the table of models


@pytest.fixture(scope="module")
def repo(tiny_repo):
    return tiny_repo


def test_all_stages_run_and_metrics_hold_four_models(repo):
    dst, log = repo
    for stage in [
        "download",
        "prompts",
        "clean",
        "train@base",
        "train@sft",
        "train@dpo",
        "train@sft_dpo",
        "reward_model",
        "metrics",
        "report",
    ]:
        assert f"Running stage '{stage}'" in log
    m = json.loads((dst / "metrics/details.json").read_text())
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
        assert len(rows) == 16 and {
            "model",
            "prompt_set",
            "prompt_id",
            "prompt",
            "response",
            "n_tokens",
            "stopped_by",
        } <= set(rows[0])
        assert all("\n\nHuman:" not in r["response"] for r in rows)
    for name in ("dpo", "sft_dpo"):
        assert (dst / "models" / name / "adapter" / "adapter_model.safetensors").exists()
        t = json.loads((dst / "metrics" / "training" / name / "train.json").read_text())
        assert t["trainable_parameters"] > 0 and "heldout_reward_accuracy" in t
        assert (dst / "metrics" / "training" / name / "live/plots/metrics/eval/rewards/margins.tsv").exists()
    assert not (dst / "checkpoints" / "sft").exists()  # removed once the stage succeeded
    assert "| sft_dpo | judge |" in (dst / "metrics/report.md").read_text()


def test_second_repro_runs_nothing(repo):
    dst, _ = repo
    out = sh(["dvc", "repro"], dst).stdout
    assert "Running stage" not in out


TRAINING = {"download", "prompts", "clean", "train@base", "train@sft", "train@dpo", "train@sft_dpo", "reward_model"}
SAMPLING = {f"sample@{m}" for m in MODELS}
REFERENCES = {f"reference@{m}" for m in MODELS}


def _set_beta(p):
    p["dpo"]["beta"] = 0.2


def _set_tokens(p):
    p["sample"]["max_new_tokens"] = 7


def _set_judge(p):
    p["score"]["judges"][0]["batch_size"] = 5


def _set_dpo_length(p):
    p["dpo"]["max_length"] = 60


@pytest.mark.parametrize(
    "edit, dirty, never",
    [
        # sampling/scoring of the dpo models follow through their model deps once dpo re-runs
        (
            _set_beta,
            {"train@dpo", "train@sft_dpo"},
            TRAINING - {"train@dpo", "train@sft_dpo"} | {"sample@base", "sample@sft"} | REFERENCES,  # never beta
        ),
        (_set_tokens, SAMPLING, TRAINING | REFERENCES),  # an evaluation param re-runs no training
        (_set_judge, {f"score@{m}" for m in MODELS}, TRAINING | SAMPLING),  # a judge change re-runs no sampling
        # the DPO reference's token ids change with DPO's lengths: its stage re-runs (and writes the same "live")
        (
            _set_dpo_length,
            {"reference@dpo", "reference@sft_dpo", "train@dpo"},
            TRAINING - {"train@dpo", "train@sft_dpo"},
        ),
    ],
    ids=["dpo.beta", "sample.max_new_tokens", "score.judges", "dpo.max_length"],
)
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
    details = json.loads((dst / "metrics/details.json").read_text())
    details.pop("judges")  # each judge's own accuracy: from metrics/calibration.json, which bare scores lack
    assert json.loads((tmp_path / "metrics/details.json").read_text()) == details
    assert json.loads((tmp_path / "metrics/refusal.json").read_text()) == json.loads(
        (dst / "metrics/refusal.json").read_text()
    )  # the refusal rates come from the scored files' labels alone


def lock_outs(dst) -> dict:
    stages = yaml.safe_load((dst / "dvc.lock").read_text())["stages"]
    return {(s, o["path"]): o.get("md5") for s in stages for o in stages[s].get("outs", [])}


def test_forced_rerun_is_bit_identical_and_metrics_diff_is_empty(repo):
    """The DPO model's chain forced to re-run (its adapter, samples, scores, curves, card, the metrics and the
    report) gives the same hashes, so two runs of the same commit show an empty `dvc metrics diff`. Every stage,
    forced, under another machine's settings: tests/test_determinism.py's slow test (this one saves ~3 minutes)."""
    dst, _ = repo
    before = lock_outs(dst)
    chain = ["train@dpo", "sample@dpo", "score@dpo", "metrics", "release@dpo", "report"]
    log = sh(["dvc", "repro", "--force", "--single-item", *chain], dst).stdout
    assert all(f"Running stage '{stage}'" in log for stage in chain), log[-2000:]
    after = lock_outs(dst)
    assert {s for s, _ in before} == {s for s, _ in after}
    assert [k for k in before if before[k] != after[k]] == []
    assert sh(["dvc", "metrics", "diff", "HEAD"], dst).stdout.strip() in ("", "No changes.")
    trained = sorted((dst / "metrics").rglob("train.json"))
    assert len(trained) == len(MODELS)  # one per model: the check below cannot pass on no files
    assert all("wall_time" not in p.read_text() and "tokens_per_s" not in p.read_text() for p in trained)


def test_timings_are_logged_outside_dvc_and_git(repo):
    dst, _ = repo
    for stage in ("base", "sft", "dpo", "sft_dpo"):
        timing = json.loads((dst / "logs" / f"{stage}.json").read_text())
        assert timing["wall_time_s"] > 0 and timing["tokens_per_s"] > 0 and timing["trained_tokens"] > 0
    assert "logs/" in (dst / ".gitignore").read_text() and "logs/" in (dst / ".dvcignore").read_text()


def test_exp_show_of_the_readme_fits_80_columns(repo):
    """The README's `dvc exp show` line shows beta against HmR/HpR/CAS on an 80-column terminal."""
    dst, _ = repo
    readme = (dst / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("dvc exp show") and "dpo.beta" in x)
    cmd = line.split("  #")[0].strip()
    out = sh(f"COLUMNS=80 {cmd}", dst).stdout
    assert "dpo.beta" in out and "cas" in out
    assert max(len(x) for x in out.splitlines()) <= 80, out


@pytest.mark.slow
def test_exp_run_and_queued_sweep(repo):
    """`dvc exp run -S dpo.beta=...` re-runs only DPO and what follows it; a queued sweep runs with one worker and
    `dvc exp show` lists beta against CAS. (Slow: about 4 minutes; .ci/run runs it, `pytest -m slow` too.)"""
    dst, _ = repo
    # The temp repo keeps its tiny params.yaml: Hydra composition would rebuild it from conf/ (the full default).
    sh("dvc config hydra.enabled false && git add -A && git -c user.email=t@t -c user.name=t commit -qm nohydra", dst)
    out = sh(["dvc", "exp", "run", "-S", "dpo.beta=0.2"], dst).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # score/metrics follow only if the samples changed: DVC skips a stage whose inputs hash the same
    assert {"train@dpo", "train@sft_dpo", "sample@dpo", "sample@sft_dpo"} <= ran
    assert not ran & {
        "download",
        "prompts",
        "clean",
        "train@base",
        "train@sft",
        "reward_model",
        "sample@base",
        "sample@sft",
        "score@base",
        "score@sft",
    }
    diff = sh(["dvc", "metrics", "diff", "HEAD", "--all", "--md"], dst).stdout
    assert "sft_dpo.judge.cas" in diff and "metrics/metrics.json" in diff and "| Path" in diff
    detail = sh(["dvc", "metrics", "diff", "HEAD", "--all", "--md", "--targets", "metrics/details.json"], dst).stdout
    assert "sft_dpo.judge.cas_ci_low" in detail  # the undeclared detail file diffs on demand
    params_diff = sh(["dvc", "params", "diff", "HEAD", "--md"], dst).stdout
    assert "dpo.beta" in params_diff and "0.2" in params_diff
    sh(["dvc", "exp", "run", "--queue", "-S", "dpo.beta=0.5"], dst)
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
        for exp in rev.get("experiments") or []:
            for run in exp.get("revs", []):
                data = run.get("data") or {}
                beta = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("dpo", {}).get("beta")
                cas = data.get("metrics", {}).get("metrics/metrics.json", {}).get("data", {})
                if beta is not None and cas.get("sft_dpo", {}).get("judge", {}).get("cas") is not None:
                    betas.add(beta)
    assert 0.5 in betas
    # the sweep gathered from DVC's experiments: per model CSVs, a plot, a README, every beta present
    sh(["python", "-m", "commands.gather", "--by", "dpo.beta", "--resamples", "200"], dst)
    sweep = dst / "metrics/sweeps/dpo.beta"
    rows = (sweep / "sft_dpo.judge.csv").read_text().splitlines()
    assert rows[0].startswith("dpo.beta,n_runs,hmr,hmr_ci_low,hmr_ci_high") and len(rows) == 1 + 3  # 0.1 .. 0.5
    assert (sweep / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 0.5 | 1 |" in (sweep / "README.md").read_text()
    shown = json.loads(sh(["dvc", "plots", "show", "--json"], dst).stdout)["data"]  # declared in dvc.yaml
    cas = shown["CAS against DPO beta"][0]["content"]["data"]["values"]
    assert {float(v["dpo.beta"]) for v in cas} == {0.1, 0.2, 0.5}
