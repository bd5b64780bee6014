"""The HH-RLHF transcript format: `"\n\nHuman: ...\n\nAssistant: ..."`, one chosen and one rejected per pair.

The prompt is everything up to and including the last `"\n\nAssistant:"` (multi-turn history stays in the
prompt); the response is what follows, as in the DPO paper's own HH code.
"""

from __future__ import annotations

import re

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


class Malformed(ValueError):
    """A transcript that is not a Human/Assistant dialogue ending with an Assistant turn."""


def split_transcript(text: str) -> tuple[str, str]:
    """(prompt ending with "\\n\\nAssistant:", response without its leading space)."""
    if not isinstance(text, str):
        raise Malformed(f"expected a string, got {type(text).__name__}")
    if HUMAN not in text:
        raise Malformed("no Human turn")
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise Malformed("no Assistant turn")
    if cut < text.find(HUMAN):
        raise Malformed("Assistant turn before the first Human turn")
    prompt = text[: cut + len(ASSISTANT)]
    response = text[cut + len(ASSISTANT) :]
    return prompt, response[1:] if response.startswith(" ") else response


def join(prompt: str, response: str) -> str:
    """The transcript a (prompt, response) pair came from: split_transcript's inverse."""
    return f"{prompt} {response}" if response else prompt


def transcripts(pair: dict) -> tuple[str, str]:
    """The chosen and rejected transcripts a cleaned pair came from, exactly: `clean` keeps a transcript that
    `join(prompt, response)` would not rebuild (a rejected side whose prompt differs from the chosen side's; a reply
    not after "Assistant: "; an empty reply after "Assistant: ") in `chosen_transcript` / `rejected_transcript`."""
    return (
        pair.get("chosen_transcript") or join(pair["prompt"], pair["chosen"]),
        pair.get("rejected_transcript") or join(pair["prompt"], pair["rejected"]),
    )


def prompt_key(prompt: str) -> str:
    """A prompt compared up to whitespace and case: how an evaluation prompt is kept out of training (`clean`'s
    eval_leak) and out of the judges' calibration pairs (`calibrate`)."""
    return " ".join(prompt.split()).lower()


def turns(text: str) -> list[tuple[str, str]]:
    """[(speaker, utterance), ...] of a transcript."""
    parts = _TURN.split(text)
    return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def last_human_turn(prompt: str) -> str:
    human = [u for s, u in turns(prompt) if s == "Human"]
    return human[-1] if human else prompt.strip()


def normalise_prompt(text: str, end_with_assistant: bool = True) -> str:
    """A prompt in HH form: starts with "\\n\\nHuman:", and (the fix over the study) ends with "\\n\\nAssistant:".

    The study published prompts as "Human: ..." with the leading newlines stripped and no final Assistant
    marker, so its models often went on writing the human's next line.
    """
    text = text.rstrip()
    if text.startswith("Human:"):
        text = "\n\n" + text
    elif not text.startswith(HUMAN):
        text = HUMAN + " " + text.lstrip()
    if end_with_assistant and not text.endswith(ASSISTANT):
        text = text + ASSISTANT
    return text


def dataset_files(p) -> list[str]:
    """The files of Anthropic's repository `p` (params.download) reads: `<subset>/<split>.jsonl.gz`."""
    return [f"{subset}/{split}.jsonl.gz" for subset in p.subsets for split in p.splits]
