"""commands.pin: what to pin for a hub id, looked up through a stand-in for huggingface_hub.HfApi (no hub here)."""

from types import SimpleNamespace as NS

import pytest

from commands import pin
from stages.core.io import StageError

COMMIT = "08ab08cc4b72ff5593870b5d527cf4230323703c"
DIGEST = "a5223ae6f3c26c6d90003f96a6bcd9a4aaaef0d36fca6469112efeeb985f2842"


class FakeApi:
    def __init__(self, siblings, fail=None):
        self.siblings, self.fail, self.calls = siblings, fail, []

    def model_info(self, repo, revision=None, files_metadata=False):
        self.calls.append((repo, revision, files_metadata))
        if self.fail:
            raise self.fail
        return NS(sha=COMMIT, siblings=self.siblings)

    def dataset_info(self, repo, revision=None):
        self.calls.append((repo, revision))
        return NS(sha="09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa")


def test_pickle_only_model_gets_its_digest():
    api = FakeApi([NS(rfilename="config.json", lfs=None), NS(rfilename="pytorch_model.bin", lfs={"sha256": DIGEST})])
    assert pin.lookup("facebook/opt-350m", api=api) == {"revision": COMMIT, "pickle_sha256": DIGEST}
    assert api.calls == [("facebook/opt-350m", None, True)]
    assert pin.flow(pin.lookup("facebook/opt-350m", api=api)) == f"{{revision: {COMMIT}, pickle_sha256: {DIGEST}}}"


def test_safetensors_model_needs_only_a_revision():
    api = FakeApi(
        [
            NS(rfilename="model.safetensors", lfs={"sha256": "f" * 64}),
            NS(rfilename="pytorch_model.bin", lfs={"sha256": DIGEST}),
        ]
    )
    assert pin.lookup("org/rm", "v1", api=api) == {"revision": COMMIT}
    assert api.calls == [("org/rm", "v1", True)]


def test_dataset_and_sharded_pickle():
    assert pin.lookup("Anthropic/hh-rlhf", dataset=True, api=FakeApi([])) == {
        "revision": "09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa"
    }
    sharded = FakeApi([NS(rfilename="pytorch_model-00001-of-00002.bin", lfs={"sha256": DIGEST})])
    assert pin.lookup("org/big", api=sharded) == {"revision": COMMIT, "pickle_sha256": None}


def test_unreachable_hub_is_one_line():
    api = FakeApi([], fail=ConnectionError("Name or service not known\nmore detail"))
    with pytest.raises(StageError) as exc:
        pin.lookup("facebook/opt-350m", api=api)
    assert str(exc.value) == (
        "facebook/opt-350m: cannot look it up on the hub (ConnectionError: Name or service not known)"
    )
