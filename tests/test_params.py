"""params.yaml: the committed default equals conf/ composed with the cpu profile; bad params stop with one line."""
import re

import pytest

from stages import compose
from stages.core import params as P
from stages.core.io import StageError

from .conftest import ROOT, default_params, tiny_params


def test_params_yaml_is_the_composed_cpu_profile(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert compose.main(["--check"]) == 0
    assert default_params() == compose.compose("cpu")


def test_both_profiles_validate(monkeypatch):
    monkeypatch.chdir(ROOT)
    cpu = P.validate(compose.compose("cpu"))
    paper = P.validate(compose.compose("paper"))
    assert cpu.profile == "cpu" and paper.profile == "paper"
    assert paper.base.pretrained == "facebook/opt-350m" and paper.base.source == "pretrained"
    assert {j.name for j in paper.score.judges} == {"oasst", "judge"}
    assert paper.metrics.thresholds["oasst"].harmful == -3.0 and paper.metrics.thresholds["oasst"].helpful == -2.0


def test_paper_profile_pins_every_hub_download(monkeypatch):
    monkeypatch.chdir(ROOT)
    paper = P.validate(compose.compose("paper"))
    refs = {repo: rev for _, repo, rev in paper.hub_references()}
    assert set(refs) == {"Anthropic/hh-rlhf", "facebook/opt-350m", "OpenAssistant/reward-model-deberta-v3-large-v2"}
    assert all(re.fullmatch(r"[0-9a-f]{40}", rev) for rev in refs.values())
    # opt-350m exists only as pytorch_model.bin: its digest is the one pickle the paper profile trusts
    assert re.fullmatch(r"[0-9a-f]{64}", paper.base.pickle_sha256)
    assert all(j.pickle_sha256 is None for j in paper.score.judges)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["score"]["judges"][0].update(revision=None),
     "score.judges.0.revision: the paper profile pins every hub download to a 40-hex commit; "
     "OpenAssistant/reward-model-deberta-v3-large-v2 has None"),
    (lambda p: p["base"].update(revision="main"), "base.revision: the paper profile pins"),
    (lambda p: p["download"].update(revision="09be8c5"), "download.revision: the paper profile pins"),
    (lambda p: p["base"].update(pickle_sha256="A5223AE6"), "base.pickle_sha256: String should match pattern"),
])
def test_paper_profile_refuses_unpinned_hub_downloads(monkeypatch, edit, message):
    monkeypatch.chdir(ROOT)
    p = compose.compose("paper")
    edit(p)
    with pytest.raises(StageError) as exc:
        P.validate(p)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_local_folders_need_no_pin(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    p = compose.compose("paper")
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
