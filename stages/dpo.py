"""Stage `dpo@<name>`: DPO with a LoRA adapter, with TRL's DPOTrainer and PEFT's LoraConfig.

    python -m stages.dpo dpo        # DPO from models/base  -> models/dpo
    python -m stages.dpo sft_dpo    # the same DPO from models/sft -> models/sft_dpo

The reference model is the starting model itself (the adapter disabled), as in the study. Prompts are truncated
from the left to `dpo.max_prompt_length` (TRL 1.x has no such option) so responses are never cut away. Held-out
pairs (test split, never trained on) give the reward accuracy and margin curves.
Writes models/<name> (the merged plain model, for sampling) with the adapter itself in models/<name>/adapter,
metrics/<name>/train.json and DVCLive curves in metrics/<name>/live.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from stages.core import params as P
from stages.core.io import StageError, fail_cleanly, read_jsonl
from stages.core.modeling import (TrainingRun, count_trainable, effective_batch_size, fit_prompt, load_causal_lm,
                                  load_tokenizer, set_threads, tokens_per_s, training_kwargs)

TRAIN = Path("data/clean/train.jsonl")
HELDOUT = Path("data/clean/heldout.jsonl")
STARTS = {"dpo": "base", "sft_dpo": "sft"}


def preference_dataset(rows: list[dict], tok, d: P.DpoParams):
    from datasets import Dataset

    out = {"prompt": [], "chosen": [], "rejected": []}
    for r in rows:
        chosen, rejected = " " + r["chosen"], " " + r["rejected"]
        out["prompt"].append(fit_prompt(tok, r["prompt"], [chosen, rejected], d.max_length, d.max_prompt_length))
        out["chosen"].append(chosen)
        out["rejected"].append(rejected)
    return Dataset.from_dict(out)


def dpo_config(d: P.DpoParams, output_dir: Path, seed: int, dd: P.DistributedParams | None = None):
    from trl import DPOConfig

    return DPOConfig(**training_kwargs(d, output_dir, seed, dd), beta=float(d.beta), loss_type=d.loss_type,
                     max_length=d.max_length, truncation_mode="keep_start",
                     precompute_ref_log_probs=d.precompute_ref_log_probs,
                     eval_strategy="steps", eval_steps=d.eval_steps, dataset_num_proc=None)


def lora_config(d: P.DpoParams):
    from peft import LoraConfig

    return LoraConfig(r=d.lora.r, lora_alpha=d.lora.alpha, lora_dropout=float(d.lora.dropout),
                      target_modules=list(d.lora.target_modules), bias="none", task_type="CAUSAL_LM")


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    from trl import DPOTrainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(STARTS))
    name = ap.parse_args(argv).name
    params = P.load()
    d = params.dpo
    P.seed_everything(params.seed)
    set_threads()
    start = Path("models") / STARTS[name]
    out_dir, live = Path("models") / name, Path("metrics") / name / "live"
    rows = read_jsonl(TRAIN)
    if d.max_train_pairs:
        rows = rows[: d.max_train_pairs]
    heldout = read_jsonl(HELDOUT)[: d.eval_pairs]
    if not rows or not heldout:
        raise StageError(f"{TRAIN if not rows else HELDOUT}: no preference pairs")
    tok = load_tokenizer(str(start))
    model = load_causal_lm(str(start))
    run = TrainingRun(name, out_dir, live, (d.model_dump(), params.seed, len(rows), (start / "run.json").read_text()))
    resume = run.resume_from()
    trainer = DPOTrainer(model=model, ref_model=None, args=dpo_config(d, run.ckpt_dir, params.seed, params.distributed),
                         train_dataset=preference_dataset(rows, tok, d),
                         eval_dataset=preference_dataset(heldout, tok, d), processing_class=tok,
                         peft_config=lora_config(d), callbacks=run.callbacks(resume=bool(resume)))
    trainable = count_trainable(trainer.model)
    before = {k: v for k, v in trainer.evaluate().items()} if not resume else {}
    out = trainer.train(resume_from_checkpoint=resume)
    final = trainer.evaluate()

    def write(tmp: Path):
        trainer.model.save_pretrained(tmp / "adapter", safe_serialization=True)  # the adapter itself
        merged = trainer.model.merge_and_unload()  # sampling needs a plain model
        merged.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    metrics = {
        "start": str(start), "final_loss": round(out.training_loss, 4), "steps": out.global_step,
        "trainable_parameters": trainable, "beta": d.beta,
        "effective_batch_size": effective_batch_size(trainer.args),
        "heldout_pairs": len(heldout),
        "heldout_reward_accuracy": round(final.get("eval_rewards/accuracies", float("nan")), 4),
        "heldout_reward_margin": round(final.get("eval_rewards/margins", float("nan")), 4),
        "heldout_reward_margin_before": round(before.get("eval_rewards/margins", float("nan")), 4) if before else None,
        "tokens_per_s": tokens_per_s(trainer, out, d.num_train_epochs, ("prompt_ids", "chosen_ids", "rejected_ids")),
    }
    run.save(write, metrics)
    print(f"{name}: saved {out_dir} (held-out accuracy {metrics['heldout_reward_accuracy']}, "
          f"margin {metrics['heldout_reward_margin']})")


if __name__ == "__main__":
    main()
