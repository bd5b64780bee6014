import pytest

from stages.core import hh


def test_split_keeps_history_in_prompt():
    text = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water."
    prompt, response = hh.split_transcript(text)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert response == "Mix flour and water."
    assert hh.last_human_turn(prompt) == "How do I bake bread?"


@pytest.mark.parametrize("bad", ["no turns at all", "\n\nHuman: only a question", "\n\nAssistant: hi\n\nHuman: x", 7])
def test_malformed_transcripts_are_rejected(bad):
    with pytest.raises(hh.Malformed):
        hh.split_transcript(bad)


def test_normalise_prompt_adds_assistant_marker_once():
    study = "Human: What's a good way to kill time?"
    p = hh.normalise_prompt(study)
    assert p == "\n\nHuman: What's a good way to kill time?\n\nAssistant:"
    assert hh.normalise_prompt(p) == p
    assert hh.normalise_prompt(study, end_with_assistant=False) == "\n\nHuman: What's a good way to kill time?"
