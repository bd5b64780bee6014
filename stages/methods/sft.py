"""Method `sft`: supervised fine-tuning on the chosen responses, with TRL's SFTTrainer (section `sft`: SFTConfig).

Full fine-tuning, as the study did. `sft.loss_on: response` (the paper's description, our default) trains on
{prompt, completion} with the loss on the completion only; `transcript` (what the study's code did) trains on the
whole chosen transcript. Prompts are truncated from the left first; the response is never truncated away.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from stages.core import hh
from stages.core import params as P
from stages.core.modeling import count_trainable, fit_prompt
from stages.core.training import Job, Method, Trained, effective_batch_size, model_writer, throughput


class Params(P.Section):
    """sft's own keys; every other key is a field of TRL's SFTConfig."""

    loss_on: Literal["response", "transcript"]
    max_train_pairs: Optional[int] = Field(default=None, ge=1)


def sft_dataset(rows: list[dict], tok, own: Params, max_length: int):
    from datasets import Dataset

    if own.loss_on == "transcript":  # the study: the raw chosen transcript, cut on the right at max_length
        return Dataset.from_dict({"text": [hh.transcripts(r)[0] for r in rows]})
    prompts = [fit_prompt(tok, r["prompt"], [" " + r["chosen"]], max_length) for r in rows]
    return Dataset.from_dict({"prompt": prompts, "completion": [" " + r["chosen"] for r in rows]})


def build_trainer(own: Params, cfg, model, tok, rows: list[dict], callbacks=None):
    """The SFTTrainer of the method (also what tests/test_study_tokens.py reads the token ids from)."""
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=sft_dataset(rows, tok, own, cfg.max_length),
        processing_class=tok,
        callbacks=callbacks,
    )


class SFT(Method):
    """Supervised fine-tuning (TRL's SFTTrainer), full weights."""

    name = "sft"
    description = "supervised fine-tuning on HH-RLHF's chosen replies"  # on its model card and DVC artifact
    tags = ("sft",)  # hub tags on its card, labels of its artifact
    curves = ()  # DVCLive metrics it logs beyond loss and learning rate: its plots
    owned = {"completion_only_loss": "loss_on"}  # TRL fields it sets from its own keys
    Params = Params

    @staticmethod
    def config_class():
        from trl import SFTConfig

        return SFTConfig

    def managed(self, own: Params) -> dict:
        return {"packing": False, "completion_only_loss": own.loss_on == "response"}

    def train(self, job: Job) -> Trained:
        cfg = job.config  # checked before anything is loaded
        tok, model = job.load_start()
        resume = job.run.resume_from()
        trainer = build_trainer(job.own, cfg, model, tok, job.rows, job.run.callbacks(resume=bool(resume)))
        job.run.attach(trainer)
        out = trainer.train(resume_from_checkpoint=resume)

        print(f"{job.name}: loss {out.training_loss:.3f}")
        return Trained(
            model_writer(trainer, tok),
            {
                "final_loss": round(out.training_loss, 4),
                "steps": out.global_step,
                "effective_batch_size": effective_batch_size(trainer.args),
                "trainable_parameters": count_trainable(model),
            },
            record={
                "start": str(job.start),
                "loss_on": job.own.loss_on,
                "precision": job.params.distributed.mixed_precision,
            },
            timing=throughput(trainer, out),
        )
