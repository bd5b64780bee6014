"""Gathering runs across seeds and sweeps (commands.gather): which experiments are pooled, how a claim is judged, and
intervals that widen when seeds disagree. The DVC side runs in tests/test_pipeline.py (slow)."""

import numpy as np
import pytest

from commands import gather

from .conftest import default_params


def names() -> dict[str, str]:
    """{model: label} as gather reads them from a run's params: the table of models."""
    return gather.labels(gather.flat({"models": default_params()["models"]}))


def test_labels_come_from_the_table_of_models_and_rival_models_get_a_claim():
    assert list(names()) == list(default_params()["models"])
    extra = {**names(), "orpo": "ORPO"}
    assert gather.rival_claims(extra) == [("ORPO > SFT+DPO in CAS", "cas", "orpo", ["sft_dpo"])]


def run(params: dict) -> dict:
    return {"rev": str(len(params)), "params": params}


def test_only_runs_that_differ_in_seed_or_the_swept_param_are_pooled():
    base = run({"seed": 42, "dpo.beta": 0.1, "sft.learning_rate": 1e-3})
    seed = run({"seed": 1, "dpo.beta": 0.1, "sft.learning_rate": 1e-3})
    beta = run({"seed": 42, "dpo.beta": 0.5, "sft.learning_rate": 1e-3})
    other = run({"seed": 2, "dpo.beta": 0.1, "sft.learning_rate": 5e-4})
    assert gather.select_runs(base, [seed, beta, other], None) == [base, seed]
    assert gather.select_runs(base, [seed, beta, other], "dpo.beta") == [base, seed, beta]
    # a sweep's fixed overrides as the reference: the runs that share them, the baseline left out when it does not
    swept = {"seed": 0, "dpo.beta": 0.1, "sft.learning_rate": 5e-4}
    assert gather.select_runs(base, [seed, beta, other], None, swept) == [other]
    assert gather.select_runs(base, [seed, beta, other], "dpo.beta", base["params"]) == [base, seed, beta]


def outcomes(rates: dict[str, tuple[float, float]], n: int = 200, seed: int = 0) -> dict:
    """A run's per-prompt 0/1 outcomes with the given HmR/HpR shares per model."""
    rng = np.random.default_rng(seed)
    out = {}
    for model, (hm, hp) in rates.items():
        out[("judge", model, "harmful")] = (rng.random(n) < hm).astype(float)
        out[("judge", model, "helpful")] = (rng.random(n) < hp).astype(float)
    return out


def test_claims_are_supported_contradicted_or_not_supported():
    clear = {"base": (0.2, 0.2), "sft": (0.6, 0.6), "dpo": (0.4, 0.4), "sft_dpo": (0.8, 0.8)}
    runs = [outcomes(clear, seed=s) for s in range(3)]
    claims = {c["claim"]: c for c in gather.summarise(runs, 400, 0, names())["judges"]["judge"]["claims"]}
    assert claims["SFT+DPO > SFT in CAS"]["status"] == "supported"
    assert claims["SFT > DPO in CAS"]["status"] == "supported"
    assert claims["SFT+DPO has the highest HpR"]["status"] == "supported"
    assert claims["SFT > SFT+DPO in HmR"]["status"] == "contradicted"  # the study's order, reversed here
    assert claims["base > DPO in HmR (DPO lowers harmlessness)"]["status"] == "contradicted"
    assert claims["SFT > SFT+DPO in HmR"]["in_the_study"] == "holds"
    assert claims["SFT+DPO is best in HmR, HpR and CAS (the abstract)"]["in_the_study"] == "fails"
    tie = {"base": (0.5, 0.5), "sft": (0.5, 0.5), "dpo": (0.5, 0.5), "sft_dpo": (0.5, 0.5)}
    tied = gather.summarise([outcomes(tie, seed=s) for s in range(3)], 400, 0, names())["judges"]["judge"]["claims"]
    assert {c["status"] for c in tied} == {"not supported"}


def test_the_interval_widens_when_seeds_disagree():
    agree = [outcomes({"base": (0.5, 0.5), "sft": (0.5, 0.5)}, n=100, seed=s) for s in range(3)]
    disagree = [outcomes({"base": (0.5, 0.5), "sft": (x, x)}, n=100, seed=s) for s, x in enumerate((0.1, 0.5, 0.9))]
    width = {}
    for name, runs in (("agree", agree), ("disagree", disagree)):
        lo, hi = gather.summarise(runs, 400, 0, names())["judges"]["judge"]["rates"]["sft"]["cas"]["ci"]
        width[name] = hi - lo
    assert width["disagree"] > 2 * width["agree"]


@pytest.mark.parametrize(
    "diffs, status",
    [
        ([np.array([1.0, 2.0, 3.0])], "supported"),
        ([np.array([-3.0, -2.0, -1.0])], "contradicted"),
        ([np.array([-1.0, 0.5, 2.0])], "not supported"),
        ([np.array([1.0, 2.0]), np.array([-2.0, -1.0])], "contradicted"),
    ],
)
def test_verdict_rule(diffs, status):
    assert gather.verdict(diffs)[0] == status
