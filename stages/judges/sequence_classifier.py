"""Kind `sequence_classifier`: a hub (or local) reward model with one logit, e.g. the study's
OpenAssistant/reward-model-deberta-v3-large-v2 or Ray2333/gpt2-large-{harmless,helpful}-reward_model; input is the
(prompt, response) text pair (`input_format: pair`), one HH transcript (`hh`), or the dialogue in the model's chat
template (`chat`: Skywork/Skywork-Reward-V2-Qwen3-0.6B). Loaded from safetensors, or from a pickle only when its
sha256 is pinned (weights-only); never with remote code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from stages.core import hh
from stages.core import params as P
from stages.core.distributed import is_main
from stages.core.io import StageError, first_line
from stages.core.modeling import hub_files, load_pretrained, model_folder
from stages.core.progress import track
from stages.judges import Judge, Spec


class SequenceClassifierSpec(Spec):
    path: str  # hub id or local folder
    revision: Optional[str]  # the hub commit (the study's profiles pin one)
    # (prompt, response) text pair | one "\n\nHuman: ...\n\nAssistant: ..." text | the model's chat template
    input_format: Literal["pair", "hh", "chat"]
    batch_size: int = P.PosInt
    max_length: Optional[int] = Field(ge=1)  # null: the tokenizer's own limit (what truncation=True does)
    pickle_sha256: Optional[str] = P.Sha256
    # auto: the GPU when there is one | cpu (the study's evaluation notebook moved nothing to a GPU)
    device: Literal["auto", "cpu"] = "auto"


class SequenceClassifier(Judge):
    kind = "sequence_classifier"
    Spec = SequenceClassifierSpec

    @classmethod
    def from_spec(cls, spec: SequenceClassifierSpec) -> SequenceClassifier:
        return cls(
            spec.path,
            spec.revision,
            spec.input_format,
            spec.batch_size,
            spec.max_length,
            spec.pickle_sha256,
            spec.device,
        )

    @classmethod
    def hub_files(cls, spec: SequenceClassifierSpec) -> list[str]:
        """Config, tokenizer and weights: safetensors, or the pickle only when its sha256 is pinned."""
        return hub_files(spec.pickle_sha256)

    @classmethod
    def lookalike(cls, spec: SequenceClassifierSpec) -> str | None:
        """The small model the rehearsal publishes in its place: a DeBERTa-v2 classifier for a text (pair) judge,
        as OpenAssistant's; a Qwen3 classifier with a chat template for a chat judge, as Skywork-Reward-V2."""
        return "qwen" if spec.input_format == "chat" else "deberta"

    def format(self, prompts: list[str], responses: list[str]) -> dict:
        """The tokenizer's input for a batch, as `input_format` says."""
        if self.input_format == "pair":
            return self.tok(prompts, responses, truncation=True, **self.limit, padding=True, return_tensors="pt")
        if self.input_format == "chat":
            texts = [self.chat_text(a, b) for a, b in zip(prompts, responses)]
        else:
            texts = [a + " " + b for a, b in zip(prompts, responses)]
        return self.tok(texts, truncation=True, **self.limit, padding=True, return_tensors="pt")

    def __init__(
        self,
        path: str,
        revision: str | None,
        input_format: str,
        batch_size: int,
        max_length: int,
        pickle_sha256: str | None = None,
        device: str = "auto",
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model, self.record = load_pretrained(
            AutoModelForSequenceClassification, path, revision, pickle_sha256, what="reward model"
        )
        folder, _ = model_folder(path, self.record["revision"])  # the snapshot just read: no second lookup
        try:
            self.tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        except Exception as exc:  # no tokenizer files, ...
            raise StageError(f"{path}: cannot load the reward model's tokenizer ({first_line(exc)})") from None
        if self.tok.pad_token is None:  # GPT-2 reward models have none
            self.tok.pad_token = self.tok.eos_token
            self.model.config.pad_token_id = self.tok.pad_token_id
        from stages.core.distributed import state, world_size

        if device == "cpu":  # the study scored on the CPU (its evaluation notebook moved nothing to a GPU)
            self.device = "cpu"
        elif world_size() > 1:  # one device per process under accelerate
            self.device = state().device
        else:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self.input_format, self.batch_size, self.name = input_format, batch_size, Path(path).name
        if input_format == "chat":  # an over-long dialogue loses its oldest turns, never the response
            self.tok.truncation_side = "left"
        self.limit = {"max_length": max_length} if max_length else {}  # none: the tokenizer's model_max_length

    def chat_text(self, prompt: str, response: str) -> str:
        """The dialogue as the model's chat template writes it (Skywork-Reward-V2's documented use): the prompt's
        turns as user/assistant messages, the response as the last assistant message; a leading BOS the template
        writes is dropped, as the tokenizer adds its own."""
        text = self.tok.apply_chat_template(chat_messages(prompt, response), tokenize=False)
        bos = self.tok.bos_token
        return text[len(bos) :] if bos and text.startswith(bos) else text

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        scores: list[float] = []
        starts = range(0, len(prompts), self.batch_size)
        for i in track(starts, len(starts), f"score ({self.name})", show=is_main()):
            enc = self.format(prompts[i : i + self.batch_size], responses[i : i + self.batch_size])
            with torch.inference_mode():
                logits = self.model(**enc.to(self.device)).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
        return scores


def chat_messages(prompt: str, response: str) -> list[dict]:
    """HH prompt turns as chat messages (Human -> user, Assistant -> assistant), then the response."""
    turns = [(speaker, text) for speaker, text in hh.turns(hh.normalise_prompt(prompt)) if text]
    messages = [{"role": "user" if s == "Human" else "assistant", "content": text} for s, text in turns]
    return messages + [{"role": "assistant", "content": response}]
