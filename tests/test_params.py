"""params.yaml: the committed default equals conf/ composed with the cpu profile; bad params stop with one line."""
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
    assert {j.name for j in paper.score.judges} >= {"oasst", "ray_harmless", "ray_helpful"}
    assert paper.metrics.thresholds["oasst"].harmful == -3.0 and paper.metrics.thresholds["oasst"].helpful == -2.0


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
