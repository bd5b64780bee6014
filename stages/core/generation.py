"""Batched generation of responses to HH prompts (left padding, KV cache), cut at the next human turn."""

from __future__ import annotations

from dataclasses import dataclass

from . import distributed as dist
from .hh import HUMAN
from .progress import track


@dataclass
class Generated:
    response: str
    n_tokens: int  # new tokens generated, up to and including the stop
    stopped_by: str  # "eos" | "human_turn" | "max_new_tokens"


def generation_kwargs(s, tok) -> dict:
    kw = {
        "max_new_tokens": s.max_new_tokens,
        "do_sample": s.do_sample,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "use_cache": True,
    }
    if s.do_sample:
        kw |= {"temperature": float(s.temperature), "top_p": float(s.top_p)}
    else:  # greedy, as the study; say so explicitly so generation_config.json defaults cannot change it
        kw |= {"temperature": None, "top_p": None, "top_k": None}
    if s.stop_at_human:
        kw |= {"stop_strings": [HUMAN], "tokenizer": tok}
    return kw


def finish(tok, new_ids: list[int], s) -> Generated:
    """Text of one generated continuation: cut at EOS / the next "\\n\\nHuman:", special tokens stripped."""
    ids = [t for t in new_ids if t != tok.pad_token_id]
    stopped = "max_new_tokens"
    if tok.eos_token_id in ids:
        ids = ids[: ids.index(tok.eos_token_id) + 1]
        stopped = "eos"
    text = tok.decode(ids, skip_special_tokens=True)
    if s.stop_at_human and HUMAN in text:
        text = text[: text.index(HUMAN)]
        stopped = "human_turn"
    if s.strip_response:
        text = text.strip()
    return Generated(text, len(ids), stopped)


def generate(model, tok, prompts: list[str], s, seed: int) -> list[Generated]:
    """Responses in prompt order, `s.batch_size` prompts at a time (left padding keeps prompts flush right)."""
    import torch
    from transformers import set_seed

    tok.padding_side = "left"
    tok.truncation_side = "left"  # an over-long prompt keeps its end, where the question is
    device = next(model.parameters()).device
    model.eval()
    kw = generation_kwargs(s, tok)
    out: list[Generated] = []
    starts = range(0, len(prompts), s.batch_size)
    for start in track(starts, len(starts), "sample", show=dist.is_main()):
        batch = prompts[start : start + s.batch_size]
        set_seed(seed + start)  # sampling, when on, depends only on the seed and the batch position
        enc = tok(
            batch,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=s.max_prompt_tokens,
            add_special_tokens=True,
        ).to(device)
        with torch.inference_mode():
            seqs = model.generate(**enc, **kw)
        for row in seqs[:, enc["input_ids"].shape[1] :].tolist():
            out.append(finish(tok, row, s))
    return out
