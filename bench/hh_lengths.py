"""Sequence lengths of real HH-RLHF, carried to the GPU check as a small file (bench/hh_lengths.json), since
../shared/data/hh-rlhf may not travel with the working tree and the look-alike data's dialogues are shorter.

    python bench/hh_lengths.py            # reads ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz (2,312 pairs)

Token counts come from a byte-level BPE with OPT's vocabulary size (50,265) trained on that text: OPT's own tokenizer
(GPT-2's BPE) is not reachable offline; a BPE fitted to the text it counts gives somewhat fewer tokens than GPT-2's,
so the projection made from these lengths leans short (the file records the characters per token, to compare). Per
pair: the whole chosen transcript (what the study's SFT trains on), the prompt up to the last "Assistant:", and the
chosen and rejected replies (what DPO trains on), as histograms with 8-token bins.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SLICE = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
OUT = ROOT / "bench" / "hh_lengths.json"
BIN = 8
OPT_VOCAB = 50265


def histogram(lengths: list[int]) -> list[list[int]]:
    """[[bin start, count], ...]: each length counted in its 8-token bin (the bin's upper end is used as the length)."""
    counts = Counter(n // BIN * BIN for n in lengths)
    return [[start, counts[start]] for start in sorted(counts)]


def main() -> None:
    from tokenizers import ByteLevelBPETokenizer

    from stages.core import hh

    if not SLICE.exists():
        raise SystemExit(f"{SLICE}: not present (this script needs the real slice; the GPU check reads its output)")
    with gzip.open(SLICE, "rt", encoding="utf-8") as fh:
        pairs = [json.loads(line) for line in fh if line.strip()]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
        vocab_size=OPT_VOCAB,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        show_progress=False,
    )

    def count(text: str) -> int:
        return len(bpe.encode(text).ids)

    transcript, prompt, chosen, rejected, chars = [], [], [], [], 0
    for p in pairs:
        cut = p["chosen"].rfind(hh.ASSISTANT)
        head = p["chosen"][: cut + len(hh.ASSISTANT)] if cut >= 0 else ""
        transcript.append(count(p["chosen"]) + 1)  # + BOS, as the study's SFT saw it
        prompt.append(count(head))
        chosen.append(count(p["chosen"][len(head) :]) + 1)  # + EOS
        rejected.append(
            count(p["rejected"][len(head) :]) + 1
            if p["rejected"].startswith(head)
            else count(p["rejected"]) - count(head) + 1
        )
        chars += len(p["chosen"])
    out = {
        "source": "Anthropic/hh-rlhf harmless-base test (../shared/data/hh-rlhf), 2,312 pairs",
        "tokenizer": f"byte-level BPE, vocabulary {OPT_VOCAB}, trained on these pairs (OPT's own is GPT-2's BPE)",
        "pairs": len(pairs),
        "bin": BIN,
        "chars_per_token": round(chars / sum(transcript), 3),
        "mean": {
            k: round(sum(v) / len(v), 1)
            for k, v in (("transcript", transcript), ("prompt", prompt), ("chosen", chosen), ("rejected", rejected))
        },
        "histograms": {
            "transcript": histogram(transcript),
            "prompt": histogram(prompt),
            "chosen": histogram(chosen),
            "rejected": histogram(rejected),
        },
    }
    OUT.write_text(json.dumps(out) + "\n", encoding="utf-8")
    print(f"hh_lengths: wrote {OUT} (mean tokens {out['mean']}, {out['chars_per_token']} characters per token)")


if __name__ == "__main__":
    main()
