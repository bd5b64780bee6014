"""Stage `base`: the starting model, saved to models/base (safetensors + tokenizer).

    python -m stages.base

`base.source: pretrained` (the study's profiles) saves `base.pretrained` (`facebook/opt-350m` or a local folder)
at the revision in params. `base.source: scratch` (the offline CPU default) trains a byte-level BPE tokenizer on
the training text, builds a small OPTForCausalLM from an OPTConfig sized for a CPU, and pre-trains it briefly on
all dialogue text, chosen and rejected alike, so that "base" has seen both kinds of reply, as a pretrained model has.
"""
from __future__ import annotations

from pathlib import Path

from stages.core import hh
from stages.core import params as P
from stages.core.determinism import seed_and_pin
from stages.core.io import StageError, fail_cleanly, read_jsonl
from stages.core.modeling import count_trainable, load_pretrained, load_tokenizer
from stages.core.training import TrainingRun, throughput, training_kwargs, trl_config

TRAIN = Path("data/clean/train.jsonl")
OUT = Path("models/base")
LIVE = Path("metrics/base/live")
START_LOSS_TEXTS = 64  # pretrained path: transcripts for the starting loss


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE with OPT's special tokens (</s> is both BOS and EOS, as in OPT)."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
    eos = bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="</s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=1 << 30)


def build_model(tok, cfg: P.ScratchModel):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                       num_attention_heads=cfg.num_attention_heads, ffn_dim=cfg.ffn_dim,
                       max_position_embeddings=cfg.max_position_embeddings, word_embed_proj_dim=cfg.hidden_size,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       dropout=0.0, attention_dropout=0.0)
    return OPTForCausalLM(config)


def dialogue_texts(rows: list[dict]) -> list[str]:
    """Every distinct transcript, chosen and rejected alike."""
    seen: dict[str, None] = {}
    for r in rows:
        for text in hh.transcripts(r):
            seen.setdefault(text)
    return list(seen)


def pretraining_config(params: P.Params, output_dir: Path):
    from trl import SFTConfig

    b = params.base.pretrain
    return trl_config(SFTConfig, {**training_kwargs(b, output_dir, params.seed, params.distributed),
                                  "max_length": b.max_length, "packing": False, "dataset_num_proc": None},
                      b.trainer, "base.pretrain.trainer")


def _pretrained(params: P.Params, rows: list[dict]) -> None:
    """Save `base.pretrained` as safetensors in float32, and log its loss on training transcripts (SFT's starting
    point: a wrong or broken checkpoint shows here, before hours of training)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    b = params.base
    run = TrainingRun("base", OUT, LIVE, (b.model_dump(),))
    cfg = pretraining_config(params, run.ckpt_dir)
    tok = load_tokenizer(b.pretrained, b.revision)
    # facebook/opt-350m is published only as pytorch_model.bin: read once here, with its digest checked against
    # base.pickle_sha256, and saved as safetensors, which is all any later stage loads
    model, origin = load_pretrained(AutoModelForCausalLM, b.pretrained, b.revision, b.pickle_sha256)
    texts = [hh.transcripts(r)[0] for r in rows[:START_LOSS_TEXTS]]  # what SFT trains on
    texts_data = Dataset.from_dict({"text": texts})  # (SFTTrainer needs a train set; nothing is trained)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=texts_data, eval_dataset=texts_data, processing_class=tok,
                         callbacks=run.callbacks(resume=False))
    start_loss = trainer.evaluate()["eval_loss"]

    def write(tmp: Path):
        model.save_pretrained(tmp)  # safetensors (transformers 5 writes nothing else), float32
        tok.save_pretrained(tmp)

    run.save(write, {"parameters": count_trainable(model), "start_loss": round(start_loss, 4),
                     "start_loss_texts": len(texts)}, record=origin)


def _scratch(params: P.Params, rows: list[dict]) -> None:
    from datasets import Dataset
    from trl import SFTTrainer

    b = params.base
    if b.pretrain.max_train_pairs:
        rows = rows[: b.pretrain.max_train_pairs]
    texts = dialogue_texts(rows)
    run = TrainingRun("base", OUT, LIVE, (b.model_dump(), params.seed, len(rows), texts[:3]))
    cfg = pretraining_config(params, run.ckpt_dir)
    tok = train_tokenizer(texts, b.scratch.vocab_size)
    model = build_model(tok, b.scratch)
    resume = run.resume_from()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=tok, callbacks=run.callbacks(resume=bool(resume)))
    run.attach(trainer)
    out = trainer.train(resume_from_checkpoint=resume)

    def write(tmp: Path):
        trainer.save_model(str(tmp))
        tok.save_pretrained(tmp)

    run.save(write, {"final_loss": round(out.training_loss, 4), "steps": out.global_step,
                     "parameters": count_trainable(model), "vocab_size": len(tok)},
             record={"source": "scratch", "precision": params.distributed.mixed_precision},
             timing=throughput(trainer, out))


@fail_cleanly
def main() -> None:
    params = P.load()
    seed_and_pin(params.seed)
    rows = read_jsonl(TRAIN)
    if not rows:
        raise StageError(f"{TRAIN}: no training pairs (is 'train' in download.splits?)")
    if params.base.source == "pretrained":
        _pretrained(params, rows)
    else:
        _scratch(params, rows)
    print(f"base: saved {OUT}")


if __name__ == "__main__":
    main()
