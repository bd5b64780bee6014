"""params.yaml: the committed default equals conf/ composed with the cpu profile; bad params stop with one line."""
import re

import pytest

from commands import compose
from stages.core import params as P
from stages.core.io import StageError

from .conftest import ROOT, default_params, tiny_params


def test_params_yaml_is_the_composed_cpu_profile(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert compose.main(["--check"]) == 0
    assert default_params() == compose.compose("cpu")


def test_every_profile_validates(monkeypatch):
    monkeypatch.chdir(ROOT)
    cpu, study, improved = (P.validate(compose.compose(name)) for name in ("cpu", "study", "improved"))
    assert (cpu.profile, study.profile, improved.profile) == ("cpu", "study", "improved")
    assert study.base.pretrained == "facebook/opt-350m" and study.base.source == "pretrained"
    assert [j.name for j in study.score.judges] == ["oasst"]
    assert [j.name for j in improved.score.judges] == ["oasst", "skywork", "judge"]
    assert study.metrics.thresholds["oasst"].harmful == -3.0 and study.metrics.thresholds["oasst"].helpful == -2.0
    assert improved.metrics.thresholds["skywork"].harmful == "calibrated"


def test_improved_is_the_study_plus_named_fixes(monkeypatch):
    """Every key where the improved profile differs from the study is one of the fixes (README: Fidelity)."""
    monkeypatch.chdir(ROOT)

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
        return out

    study, improved = flat(compose.compose("study")), flat(compose.compose("improved"))
    changed = {k for k in study.keys() | improved.keys() if study.get(k) != improved.get(k)}
    assert changed == {"profile", "prompts.format", "sft.loss_on", "dpo.prompt_split", "dpo.bos", "dpo.tokenize",
                       "dpo.truncation", "sample.stop_at_human",
                       "score.judges", "metrics.thresholds.skywork.harmful", "metrics.thresholds.skywork.helpful"} | \
        {k for k in study if k.startswith("clean.rules.")}


@pytest.mark.parametrize("name", ["study", "improved"])
def test_study_profiles_pin_every_hub_download(monkeypatch, name):
    monkeypatch.chdir(ROOT)
    params = P.validate(compose.compose(name))
    refs = {repo: rev for _, repo, rev in params.hub_references()}
    expected = {"Anthropic/hh-rlhf", "facebook/opt-350m", "OpenAssistant/reward-model-deberta-v3-large-v2"}
    assert set(refs) == expected | ({"Skywork/Skywork-Reward-V2-Qwen3-0.6B"} if name == "improved" else set())
    assert all(re.fullmatch(r"[0-9a-f]{40}", rev) for rev in refs.values())
    # opt-350m exists only as pytorch_model.bin: its digest is the one pickle these profiles trust
    assert re.fullmatch(r"[0-9a-f]{64}", params.base.pickle_sha256)
    assert all(j.pickle_sha256 is None for j in params.score.judges)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["score"]["judges"][0].update(revision=None),
     "score.judges.0.revision: the study profile pins every hub download to a 40-hex commit; "
     "OpenAssistant/reward-model-deberta-v3-large-v2 has None"),
    (lambda p: p["base"].update(revision="main"), "base.revision: the study profile pins"),
    (lambda p: p["download"].update(revision="09be8c5"), "download.revision: the study profile pins"),
    (lambda p: p["prompts"].update(harmful_sha256=None), "prompts.harmful_sha256: a prompt file fetched by URL"),
    (lambda p: p["base"].update(pickle_sha256="A5223AE6"), "base.pickle_sha256: String should match pattern"),
])
def test_study_profile_refuses_unpinned_hub_downloads(monkeypatch, edit, message):
    monkeypatch.chdir(ROOT)
    p = compose.compose("study")
    edit(p)
    with pytest.raises(StageError) as exc:
        P.validate(p)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_local_folders_need_no_pin(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    p = compose.compose("study")
    p["download"].update(source="local", dataset=str(tmp_path), revision=None)
    p["base"].update(pretrained=str(tmp_path), revision=None)
    p["score"]["judges"][0].update(path=str(tmp_path), revision=None)
    assert P.validate(p).hub_references() == []
    cpu = P.validate(compose.compose("cpu"))  # synthetic data, scratch model, local judge: nothing to fetch
    assert cpu.hub_references() == []


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["dpo"].update(bta=0.2), "dpo.bta: unknown key"),
    (lambda p: p["sft"].update(learning_rate="2e-5"), "sft.learning_rate: Input should be a valid number"),
    (lambda p: p["dpo"].update(beta=0.0), "dpo.beta: Input should be greater than 0"),
    (lambda p: p["sample"].update(batch_size=0), "sample.batch_size: Input should be greater than or equal to 1"),
    (lambda p: p["metrics"]["thresholds"].update(judge={"harmful": "low", "helpful": 0.0}), "metrics.thresholds.judge.harmful"),
    (lambda p: p["metrics"]["thresholds"].pop("judge"), "no thresholds for judge"),
    (lambda p: p.pop("seed"), "seed: Field required"),
])
def test_bad_params_name_the_key(edit, message):
    p = tiny_params()
    edit(p)
    with pytest.raises(StageError) as exc:
        P.validate(p)
    assert message in str(exc.value) and "\n" not in str(exc.value)
