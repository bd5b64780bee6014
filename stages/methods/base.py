"""Method `base`: the starting model, saved to models/base (safetensors + tokenizer).

`base.source: pretrained` (the study's profiles) saves `base.pretrained` (`facebook/opt-350m` or a local folder)
at the revision in params. `base.source: scratch` (the offline CPU default) trains a byte-level BPE tokenizer on
the training text, builds a small OPTForCausalLM from an OPTConfig sized for a CPU, and pre-trains it briefly on
all dialogue text, chosen and rejected alike, so that "base" has seen both kinds of reply, as a pretrained model has.
Its TRL section is `base.pretrain` (SFTConfig fields).
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from stages.core import hh
from stages.core import params as P
from stages.core.modeling import count_trainable, load_pretrained, load_tokenizer
from stages.core.training import Job, Method, Trained, model_writer, throughput

START_LOSS_TEXTS = 64  # pretrained path: transcripts for the starting loss


class Params(P.Section):
    """base.pretrain's own keys; every other key is a field of TRL's SFTConfig."""

    max_train_pairs: Optional[int] = Field(default=None, ge=1)


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE with OPT's special tokens (</s> is both BOS and EOS, as in OPT)."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        show_progress=False,
    )
    eos = bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=1 << 30,
    )


def build_model(tok, cfg: P.ScratchModel):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        ffn_dim=cfg.ffn_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        word_embed_proj_dim=cfg.hidden_size,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return OPTForCausalLM(config)


def dialogue_texts(rows: list[dict]) -> list[str]:
    """Every distinct transcript, chosen and rejected alike."""
    seen: dict[str, None] = {}
    for r in rows:
        for text in hh.transcripts(r):
            seen.setdefault(text)
    return list(seen)


def pretrained(job: Job) -> Trained:
    """Save `base.pretrained` as safetensors in float32, and log its loss on training transcripts (SFT's starting
    point: a wrong or broken checkpoint shows here, before hours of training)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    b = job.params.base
    cfg = job.config
    tok = load_tokenizer(b.pretrained, b.revision)
    # facebook/opt-350m is published only as pytorch_model.bin: read once here, with its digest checked against
    # base.pickle_sha256, and saved as safetensors, which is all any later stage loads
    model, origin = load_pretrained(AutoModelForCausalLM, b.pretrained, b.revision, b.pickle_sha256)
    texts = [hh.transcripts(r)[0] for r in job.rows[:START_LOSS_TEXTS]]  # what SFT trains on
    texts_data = Dataset.from_dict({"text": texts})  # (SFTTrainer needs a train set; nothing is trained)
    trainer = SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=texts_data,
        eval_dataset=texts_data,
        processing_class=tok,
        callbacks=job.run.callbacks(resume=False),
    )
    start_loss = trainer.evaluate()["eval_loss"]
    return Trained(
        model_writer(model, tok),
        {"parameters": count_trainable(model), "start_loss": round(start_loss, 4), "start_loss_texts": len(texts)},
        record=origin,
    )


def scratch(job: Job) -> Trained:
    from datasets import Dataset
    from trl import SFTTrainer

    texts = dialogue_texts(job.rows)
    cfg = job.config
    tok = train_tokenizer(texts, job.params.base.scratch.vocab_size)
    model = build_model(tok, job.params.base.scratch)
    resume = job.run.resume_from()
    trainer = SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tok,
        callbacks=job.run.callbacks(resume=bool(resume)),
    )
    job.run.attach(trainer)
    out = trainer.train(resume_from_checkpoint=resume)
    return Trained(
        model_writer(trainer, tok),
        {
            "final_loss": round(out.training_loss, 4),
            "steps": out.global_step,
            "parameters": count_trainable(model),
            "vocab_size": len(tok),
        },
        record={"source": "scratch", "precision": job.params.distributed.mixed_precision},
        timing=throughput(trainer, out),
    )


class Base(Method):
    """The starting model: a pretrained checkpoint saved as safetensors, or a small OPT trained here."""

    name = "base"
    description = "the base model (no alignment training)"  # on its model card and DVC artifact
    tags = ()  # hub tags on its card, labels of its artifact
    curves = ()  # DVCLive metrics it logs beyond loss and learning rate: its plots
    owned = {}  # TRL fields it sets from its own keys
    Params = Params

    @staticmethod
    def config_class():
        from trl import SFTConfig

        return SFTConfig

    def managed(self, own: Params) -> dict:
        return {"packing": False}

    def train(self, job: Job) -> Trained:
        return pretrained(job) if job.params.base.source == "pretrained" else scratch(job)
