"""sample: batched generation equals one prompt at a time; responses are cut at the next human turn."""

from types import SimpleNamespace

import pytest
import torch

from stages.core import generation
from stages.core import params as P
from stages.core.hh import HUMAN
from stages.methods import base

from .conftest import tiny_params


@pytest.fixture(scope="module")
def tiny_lm():
    texts = [f"\n\nHuman: question {i} about things?\n\nAssistant: answer {i % 7} here." for i in range(200)]
    tok = base.train_tokenizer(texts, 400)
    torch.manual_seed(0)
    model = base.build_model(tok, P.validate(tiny_params()).base.scratch)
    return model, tok


def test_batched_equals_one_by_one(tiny_lm):
    model, tok = tiny_lm
    s = P.validate(tiny_params()).sample.model_copy(
        update={"max_new_tokens": 10, "batch_size": 4, "stop_at_human": False}
    )
    prompts = [f"\n\nHuman: {'long ' * (i * 3)}question {i}?\n\nAssistant:" for i in range(7)]
    batched = generation.generate(model, tok, prompts, s, seed=0)
    single = generation.generate(model, tok, prompts, s.model_copy(update={"batch_size": 1}), seed=0)
    assert [g.response for g in batched] == [g.response for g in single]
    assert [g.n_tokens for g in batched] == [g.n_tokens for g in single]


def test_finish_cuts_at_human_turn_and_eos(tiny_lm):
    _, tok = tiny_lm
    s = SimpleNamespace(stop_at_human=True, strip_response=True)
    ids = tok(" Sure thing." + HUMAN + " more", add_special_tokens=False)["input_ids"]
    g = generation.finish(tok, ids, s)
    assert g.response == "Sure thing." and g.stopped_by == "human_turn"
    g = generation.finish(tok, tok(" Done.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, 5, 6], s)
    assert g.response == "Done." and g.stopped_by == "eos"
    g = generation.finish(tok, [tok.pad_token_id] * 3, s)
    assert g.response == "" and g.n_tokens == 0
    off = SimpleNamespace(stop_at_human=False, strip_response=False)
    assert HUMAN in generation.finish(tok, ids, off).response
