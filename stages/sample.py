"""Stage `sample@<model>`: one model's responses to the harmful and helpful evaluation prompts, and to XSTest's.

    python -m stages.sample sft

As in the study by default: greedy decoding, 50 new tokens. Fixes over it, each a `sample` param on by default:
prompts end with "\\n\\nAssistant:" (`prompts.format: hh`), generation stops at "\\n\\nHuman:" and at the
end token and the response is cut there, whitespace and special tokens are stripped.
Writes data/samples/<model>.jsonl: model, prompt_set, prompt_id, prompt, response, n_tokens, stopped_by; and
data/samples/<model>.xstest.jsonl: the same for data/eval/xstest.jsonl's prompts (stage `xstest`; empty when
`xstest.source` is none), with each prompt's XSTest type and label. The two sets are decoded apart, the study's prompts
first, so the XSTest switch leaves the study's replies as they were.
"""

from __future__ import annotations

import time
from pathlib import Path

from stages.core import distributed as dist
from stages.core import params as P
from stages.core.generation import generate
from stages.core.io import StageError, fail_cleanly, iter_jsonl, write_jsonl
from stages.core.modeling import load_policy, load_tokenizer, per_model_stage
from stages.core.runinfo import log_timing

PROMPTS = Path("data/eval/prompts.jsonl")
XSTEST = Path("data/eval/xstest.jsonl")
OUT_DIR = Path("data/samples")


def sample_model(
    name: str, params: P.Params, model_dir: Path = Path("models"), prompt_files: tuple[Path, ...] = (PROMPTS,)
) -> list[list[dict]]:
    """The model's replies to each file's prompts, file by file (each decoded alone: the same replies whatever
    other files there are)."""
    import torch

    sets = [[r for _, r in iter_jsonl(f)] for f in prompt_files]
    tok = load_tokenizer(str(model_dir / name))
    model = load_policy(model_dir / name)  # float32, as the study decoded
    check_context(model, tok, [r["prompt"] for prompts in sets for r in prompts], params.sample, name)
    if dist.world_size() > 1:
        model = model.to(dist.state().device)
    elif torch.cuda.is_available() and params.sample.device == "auto":
        model = model.to("cuda")
    out = []
    for prompts in sets:
        # Each process generates for a contiguous share of the prompts; gathered back in prompt order.
        gens = (
            dist.map_in_order(
                [r["prompt"] for r in prompts], lambda share: generate(model, tok, share, params.sample, params.seed)
            )
            if prompts
            else []
        )
        out.append(
            [
                {
                    "model": name,
                    "prompt_set": r["prompt_set"],
                    "prompt_id": r["prompt_id"],
                    **({"type": r["type"], "label": r["label"]} if "label" in r else {}),
                    "prompt": r["prompt"],
                    "response": g.response,
                    "n_tokens": g.n_tokens,
                    "stopped_by": g.stopped_by,
                }
                for r, g in zip(prompts, gens)
            ]
        )
    return out


def check_context(model, tok, prompts: list[str], s: P.SampleParams, name: str) -> None:
    """The longest prompt (as cut to `sample.max_prompt_tokens`) plus `sample.max_new_tokens` must fit the model's
    positions: past them OPT's position embedding fails with an IndexError deep in generate()."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        return
    longest = min(max((len(tok(p)["input_ids"]) for p in prompts), default=0), s.max_prompt_tokens)
    if longest + s.max_new_tokens > context:
        raise StageError(
            f"params.yaml: sample.max_new_tokens: {s.max_new_tokens} new tokens after a prompt of up to "
            f"{longest} tokens exceed models/{name}'s {context} positions; lower sample.max_new_tokens or "
            "sample.max_prompt_tokens"
        )


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    name, params = per_model_stage(argv, __doc__.splitlines()[0])
    started = time.perf_counter()
    rows, xstest = sample_model(name, params, prompt_files=(PROMPTS, XSTEST))
    if not dist.is_main():
        return
    write_jsonl(OUT_DIR / f"{name}.jsonl", rows)
    write_jsonl(OUT_DIR / f"{name}.xstest.jsonl", xstest)
    rows = rows + xstest
    spent, new_tokens = time.perf_counter() - started, sum(r["n_tokens"] for r in rows)
    log_timing(
        f"sample@{name}",
        {
            "wall_time_s": round(spent, 1),
            "prompts": len(rows),
            "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / spent, 1),
        },
    )
    empty = sum(not r["response"] for r in rows)
    print(f"sample@{name}: {len(rows)} responses ({empty} empty)")


if __name__ == "__main__":
    main()
