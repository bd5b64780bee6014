"""Stage `dpo@<name>`: DPO with a LoRA adapter, with TRL's DPOTrainer and PEFT's LoraConfig.

    python -m stages.dpo dpo        # DPO from models/base  -> models/dpo
    python -m stages.dpo sft_dpo    # the same DPO from models/sft -> models/sft_dpo

The reference model is the starting model itself (the adapter disabled), as in the study. With `dpo.truncation:
fit_prompt` prompts are truncated from the left to `dpo.max_prompt_length` (TRL 1.x has no such option) so responses
are never cut away; `dpo.bos`, `dpo.tokenize` and `keep_end` reproduce TRL 0.16.1's token ids for the study
(stages/core/preference.py). Held-out pairs (test split, never trained on) give the reward accuracy and margin curves.
Writes models/<name>: the adapter itself in adapter/, and for sampling the merged plain model (`dpo.merge_adapter:
true`) or the start model in start/ (false: sampled through the unmerged adapter, as the study did);
metrics/<name>/train.json and DVCLive curves in metrics/<name>/live.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from stages.core import hh, preference
from stages.core import params as P
from stages.core.determinism import seed_and_pin
from stages.core.io import StageError, fail_cleanly, read_jsonl
from stages.core.modeling import count_trainable, fit_prompt, load_causal_lm, load_tokenizer
from stages.core.training import TrainingRun, effective_batch_size, throughput, training_kwargs, trl_config

TRAIN = Path("data/clean/train.jsonl")
HELDOUT = Path("data/clean/heldout.jsonl")
STARTS = {"dpo": "base", "sft_dpo": "sft"}


def split_pair(r: dict, how: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of a cleaned pair, split as `dpo.prompt_split` says."""
    if how == "common_prefix":  # the study: TRL's own extraction from each side's raw transcript
        from trl import extract_prompt

        chosen, rejected = hh.transcripts(r)
        ex = extract_prompt({"chosen": chosen, "rejected": rejected})
        return ex["prompt"], ex["chosen"], ex["rejected"]
    return r["prompt"], " " + r["chosen"], " " + r["rejected"]


def preference_dataset(rows: list[dict], tok, d: P.DpoParams):
    from datasets import Dataset

    out = {"prompt": [], "chosen": [], "rejected": []}
    for r in rows:
        prompt, chosen, rejected = split_pair(r, d.prompt_split)
        if d.truncation == "fit_prompt":  # keep_end: cut in token ids by the trainer (stages/core/preference.py)
            prompt = fit_prompt(tok, prompt, [chosen, rejected], d.max_length, d.max_prompt_length)
        out["prompt"].append(prompt)
        out["chosen"].append(chosen)
        out["rejected"].append(rejected)
    return Dataset.from_dict(out)


def dpo_config(d: P.DpoParams, output_dir: Path, seed: int, dd: P.DistributedParams | None = None):
    from trl import DPOConfig

    return trl_config(DPOConfig, {**training_kwargs(d, output_dir, seed, dd), "beta": float(d.beta),
                                  "loss_type": d.loss_type, "max_length": d.max_length,
                                  "truncation_mode": "keep_end" if d.truncation == "keep_end" else "keep_start",
                                  "precompute_ref_log_probs": d.precompute_ref_log_probs,
                                  "eval_strategy": "steps", "eval_steps": d.eval_steps, "dataset_num_proc": None},
                      d.trainer, "dpo.trainer")


def lora_config(d: P.DpoParams):
    from peft import LoraConfig

    return LoraConfig(r=d.lora.r, lora_alpha=d.lora.alpha, lora_dropout=float(d.lora.dropout),
                      target_modules=list(d.lora.target_modules), bias="none", task_type="CAUSAL_LM")


def check_lora_targets(model, targets: list[str], where: Path) -> None:
    """Every `dpo.lora.target_modules` name is a module of the model (PEFT would stop with a page of traceback)."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise StageError(f"params.yaml: dpo.lora.target_modules: {', '.join(missing)} not in {where}'s model "
                         f"(its linear layers: {', '.join(linear)})")


def build_trainer(d: P.DpoParams, cfg, model, tok, rows: list[dict], heldout: list[dict], callbacks=None):
    """The DPOTrainer of the stage (also what tests/test_study_tokens.py reads the token ids from)."""
    return preference.trainer_class()(model=model, ref_model=None, args=cfg, train_dataset=preference_dataset(rows, tok, d),
                                      eval_dataset=preference_dataset(heldout, tok, d), processing_class=tok,
                                      peft_config=lora_config(d), callbacks=callbacks, tokenization=d)


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(STARTS))
    name = ap.parse_args(argv).name
    params = P.load()
    d = params.dpo
    seed_and_pin(params.seed)
    start = Path("models") / STARTS[name]
    out_dir, live = Path("models") / name, Path("metrics") / name / "live"
    rows = read_jsonl(TRAIN)
    if d.max_train_pairs:
        rows = rows[: d.max_train_pairs]
    heldout = read_jsonl(HELDOUT)[: d.eval_pairs]
    if not rows or not heldout:
        raise StageError(f"{TRAIN if not rows else HELDOUT}: no preference pairs")
    run = TrainingRun(name, out_dir, live, (d.model_dump(), params.seed, len(rows), (start / "run.json").read_text()))
    cfg = dpo_config(d, run.ckpt_dir, params.seed, params.distributed)  # checked before anything is loaded
    tok = load_tokenizer(str(start))
    model = load_causal_lm(str(start))
    check_lora_targets(model, d.lora.target_modules, start)
    resume = run.resume_from()
    trainer = build_trainer(d, cfg, model, tok, rows, heldout, run.callbacks(resume=bool(resume)))
    run.attach(trainer)
    trainable = count_trainable(trainer.model)
    before = {k: v for k, v in trainer.evaluate().items()} if not resume else {}
    out = trainer.train(resume_from_checkpoint=resume)
    final = trainer.evaluate()

    def write(tmp: Path):
        trainer.model.save_pretrained(tmp / "adapter", safe_serialization=True)  # the adapter itself
        if d.merge_adapter:
            trainer.model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
        else:  # sampled as the study did, start model + unmerged adapter (DVC's cache stores identical files once)
            shutil.copytree(start, tmp / "start", ignore=shutil.ignore_patterns("run.json"))
        tok.save_pretrained(tmp)

    metrics = {
        "final_loss": round(out.training_loss, 4), "steps": out.global_step,
        "trainable_parameters": trainable, "effective_batch_size": effective_batch_size(trainer.args),
        "heldout_pairs": len(heldout),
        "heldout_reward_accuracy": round(final.get("eval_rewards/accuracies", float("nan")), 4),
        "heldout_reward_margin": round(final.get("eval_rewards/margins", float("nan")), 4),
        "heldout_reward_margin_before": round(before.get("eval_rewards/margins", float("nan")), 4) if before else None,
    }
    run.save(write, metrics, timing=throughput(trainer, out),
             record={"start": str(start), "beta": d.beta, "precision": params.distributed.mixed_precision})
    print(f"{name}: saved {out_dir} (held-out accuracy {metrics['heldout_reward_accuracy']}, "
          f"margin {metrics['heldout_reward_margin']})")


if __name__ == "__main__":
    main()
