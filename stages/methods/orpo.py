"""Method `orpo`: odds-ratio preference optimization (Hong et al. 2024), SFT and preference alignment in one stage,
with TRL's ORPOTrainer (section `orpo`: ORPOConfig; `beta` is the paper's lambda, the weight of the odds-ratio term).

The rival to the study's thesis that SFT and DPO complement each other: one full fine-tune from the base model on the
same cleaned pairs, no reference model, no LoRA. Prompts are cut from the left so prompt + the longer reply fit
`max_length` (as for DPO: a reply is never cut away). Held-out pairs give its reward accuracy and margin (ORPO's
rewards are beta x the replies' mean log-probabilities). TRL 1.16 takes the loss's NLL term over the whole chosen
transcript, prompt included, where the paper takes the reply's (tests/test_orpo.py pins which).

TRL marks ORPO experimental (`trl.experimental.orpo`, TRL 1.16): requirements.txt pins TRL, and tests/test_orpo.py
trains it and checks what it optimises, so a TRL upgrade that moves or changes it fails there first.
"""

from __future__ import annotations

import os
from typing import Literal, Optional

from pydantic import Field

from stages.core import params as P
from stages.core.modeling import count_trainable, fit_prompt, set_dropout
from stages.core.training import Job, Method, Trained, effective_batch_size, model_writer, throughput


class Params(P.Section):
    """orpo's own keys; every other key is a field of TRL's ORPOConfig (beta, learning_rate, max_length, ...)."""

    eval_pairs: int = Field(ge=1)  # held-out pairs for reward accuracy / margin
    max_train_pairs: Optional[int] = Field(default=None, ge=1)
    model_dropout: Literal["keep", "zero"]  # as dpo's: zero sets every dropout of the model to 0


def preference_dataset(rows: list[dict], tok, max_length: int):
    from datasets import Dataset

    prompts = [fit_prompt(tok, r["prompt"], [" " + r["chosen"], " " + r["rejected"]], max_length) for r in rows]
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "chosen": [" " + r["chosen"] for r in rows],
            "rejected": [" " + r["rejected"] for r in rows],
        }
    )


class ORPO(Method):
    """ORPO (TRL's ORPOTrainer): SFT and preference alignment in one full fine-tune."""

    name = "orpo"
    description = "ORPO (SFT and preference alignment in one full fine-tune)"  # on its model card and DVC artifact
    tags = ("orpo",)  # hub tags on its card, labels of its artifact
    curves = (
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "eval/rewards/accuracies",
        "eval/rewards/margins",
    )  # DVCLive metrics it logs beyond loss and learning rate: its plots
    owned = {}  # TRL fields it sets from its own keys
    Params = Params

    @staticmethod
    def config_class():
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # pinned and tested: see the module's docstring
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig

    def managed(self, own: Params) -> dict:
        return {"eval_strategy": "steps"}

    def train(self, job: Job) -> Trained:
        heldout = job.heldout(job.own.eval_pairs)
        cfg = job.config  # checked before anything is loaded (and TRL's experimental module imported, silenced)
        from trl.experimental.orpo import ORPOTrainer

        tok, model = job.load_start()
        resume = job.run.resume_from()
        set_dropout(model, job.own.model_dropout, who=job.name)
        trainer = ORPOTrainer(
            model=model,
            args=cfg,
            train_dataset=preference_dataset(job.rows, tok, cfg.max_length),
            eval_dataset=preference_dataset(heldout, tok, cfg.max_length),
            processing_class=tok,
            callbacks=job.run.callbacks(resume=bool(resume)),
        )
        job.run.attach(trainer)
        out = trainer.train(resume_from_checkpoint=resume)
        final = trainer.evaluate()

        metrics = {
            "final_loss": round(out.training_loss, 4),
            "steps": out.global_step,
            "effective_batch_size": effective_batch_size(trainer.args),
            "trainable_parameters": count_trainable(model),
            "heldout_pairs": len(heldout),
            "heldout_reward_accuracy": round(final.get("eval_rewards/accuracies", float("nan")), 4),
            "heldout_reward_margin": round(final.get("eval_rewards/margins", float("nan")), 4),
        }
        return Trained(
            model_writer(trainer, tok),
            metrics,
            timing=throughput(trainer, out),
            record={"start": str(job.start), "beta": cfg.beta, "precision": job.params.distributed.mixed_precision},
        )
