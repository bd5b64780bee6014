"""params.yaml: the committed default equals conf/ composed with the cpu profile; bad params stop with one line."""

import re

import pytest

from commands import compose
from stages import judges
from stages.core import params as P
from stages.core.io import StageError

from .conftest import ROOT, default_params, tiny_params


def test_params_yaml_is_the_composed_cpu_profile(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert compose.main(["--check"]) == 0
    assert default_params() == compose.compose("cpu")


def test_shared_values_are_written_resolved_with_their_comments():
    """A section may take another's value (`learning_rate: ${sft.learning_rate}`: Hydra resolves it in every profile);
    params.yaml, read by `dvc repro` without Hydra, holds the cpu profile's value and keeps the line's comment."""
    text = "orpo:\n  learning_rate: ${sft.learning_rate}   # as sft\n  lora: ${dpo.lora}\n"
    composed = {"sft": {"learning_rate": 0.001}, "dpo": {"lora": {"r": 8, "target_modules": ["q_proj"]}}}
    assert (
        compose.resolve_interpolations(text, composed)
        == "orpo:\n  learning_rate: 0.001   # as sft\n  lora: {r: 8, target_modules: [q_proj]}\n"
    )


def test_every_profile_validates_and_the_study_compares_its_four_models(monkeypatch):
    """(The study's values themselves are checked row by row against conf/fidelity.yaml: tests/test_fidelity.py.)"""
    import yaml

    monkeypatch.chdir(ROOT)
    cpu, study, improved = (P.validate(compose.compose(name)) for name in ("cpu", "study", "improved"))
    assert (cpu.profile, study.profile, improved.profile) == ("cpu", "study", "improved")
    every = yaml.safe_load((ROOT / "conf/models/all.yaml").read_text())
    # a model added to the table joins the improved profile, never the study (nor the CPU default: its cost)
    assert list(study.models) == list(cpu.models) == ["base", "sft", "dpo", "sft_dpo"]
    assert list(improved.models) == list(every)
    assert list(P.validate(compose.compose("cpu", ("models=all",))).models) == list(every)


@pytest.mark.parametrize("name", ["study", "improved"])
def test_study_profiles_pin_every_hub_download(monkeypatch, name):
    monkeypatch.chdir(ROOT)
    params = P.validate(compose.compose(name))
    refs = {repo: rev for _, repo, rev in params.hub_references()}
    expected = {"Anthropic/hh-rlhf", "facebook/opt-350m", "OpenAssistant/reward-model-deberta-v3-large-v2"}
    improved = {"Skywork/Skywork-Reward-V2-Qwen3-0.6B", "Qwen/Qwen3Guard-Gen-0.6B"}  # second opinions, a classifier
    assert set(refs) == expected | (improved if name == "improved" else set())
    assert all(re.fullmatch(r"[0-9a-f]{40}", rev) for rev in refs.values())
    # opt-350m exists only as pytorch_model.bin: its digest is the one pickle these profiles trust
    assert re.fullmatch(r"[0-9a-f]{64}", params.base.pickle_sha256)
    assert all(j.extra("pickle_sha256") is None for j in params.score.judges)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda p: p["score"]["judges"][0].update(revision=None),
            "score.judges.0.revision: the study profile pins every hub download to a 40-hex commit; "
            "OpenAssistant/reward-model-deberta-v3-large-v2 has None",
        ),
        (lambda p: p["base"].update(revision="main"), "base.revision: the study profile pins"),
        (lambda p: p["download"].update(revision="09be8c5"), "download.revision: the study profile pins"),
        (lambda p: p["prompts"].update(harmful_sha256=None), "prompts.harmful_sha256: a prompt file fetched by URL"),
        (lambda p: p["base"].update(pickle_sha256="A5223AE6"), "base.pickle_sha256: String should match pattern"),
        (
            lambda p: p["xstest"].update(source="hub"),
            "xstest.revision: the study profile pins every hub download to a 40-hex commit; Paul/XSTest has None",
        ),
        (
            lambda p: p["xstest"].update(source="file") or p["xstest"]["labelled"].update(source="hub"),
            "xstest.labelled.revision: the study profile pins every hub download to a 40-hex commit; "
            "allenai/xstest-response has None",
        ),
    ],
)
def test_study_profile_refuses_unpinned_hub_downloads(monkeypatch, edit, message):
    monkeypatch.chdir(ROOT)
    p = compose.compose("study")
    edit(p)
    with pytest.raises(StageError) as exc:
        judges.specs(P.validate(p))  # the file's schema, then each judge entry by its kind
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


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda p: p.update(dpoo=p.pop("dpo")),
            "dpoo: unknown key (typo?); a training method's section needs stages/methods/dpoo.py",
        ),
        (lambda p: p["models"]["sft"].update(method="kto"), "models.sft.method: no params section 'kto'"),
        (
            lambda p: p["models"]["sft"].update(start="models/dpo"),
            "models.sft.start: 'models/dpo' is not models/<an earlier model",
        ),
        (lambda p: p["models"].pop("base"), "models.sft.start: 'models/base' is not"),
        (lambda p: p["models"]["dpo"].pop("label"), "models.dpo.label: Field required"),
        (lambda p: p.update(sft=[1, 2]), "sft: a training method's section must be a mapping"),
        (lambda p: p["sample"].update(batch_size=0), "sample.batch_size: Input should be greater than or equal to 1"),
        (lambda p: p["score"]["judges"][0]["thresholds"].update(harmful="low"), "score.judges.0.thresholds.harmful"),
        (
            lambda p: p["score"]["judges"][0].pop("thresholds"),
            "score.judges.0.thresholds: judge 'judge' (pipeline) needs",
        ),
        (
            lambda p: p["score"]["judges"].append({"name": "refusal", "kind": "string_match"}),
            "score.judges.1.kind: judge 'refusal' (string_match) gives labels, not a reward: list it in "
            "score.label_judges",
        ),
        (
            lambda p: p["score"]["label_judges"].append(
                {"name": "own", "kind": "pipeline", "path": "models/judge", "batch_size": 8}
            ),
            "score.label_judges.1.kind: judge 'own' (pipeline) gives a reward: list it in score.judges",
        ),
        (
            lambda p: p["score"]["label_judges"][0].update(thresholds={"harmful": 0.0, "helpful": 0.0}),
            "score.label_judges.0.thresholds: judge 'string_match' (string_match) gives labels, not a reward",
        ),
        (
            lambda p: p["score"]["label_judges"].append({"name": "judge", "kind": "string_match"}),
            "judge names must be unique",
        ),
        (lambda p: p["xstest"].update(source="web"), "xstest.source: Input should be 'none', 'synthetic', 'file'"),
        (lambda p: p["xstest"]["labelled"].update(source="people"), "xstest.labelled.source: Input should be"),
        (lambda p: p["xstest"].update(source="file", file=None), "xstest.file: source 'file' needs"),
        (
            lambda p: p["xstest"].update(file="https://example.org/x.csv", sha256=None),
            "xstest.sha256: a file fetched by URL",
        ),
        (lambda p: p.pop("seed"), "seed: Field required"),
    ],
)
def test_bad_params_name_the_key(edit, message):
    p = tiny_params()
    edit(p)
    with pytest.raises(StageError) as exc:
        judges.specs(P.validate(p))  # the file's schema, then each judge entry by its kind
    assert message in str(exc.value) and "\n" not in str(exc.value)
