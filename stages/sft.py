"""Stage `sft`: supervised fine-tuning of models/base on the chosen responses, with TRL's SFTTrainer.

    python -m stages.sft

Full fine-tuning, as the study did. `sft.loss_on: response` (the paper's description, our default) trains on
{prompt, completion} with the loss on the completion only; `transcript` (what the study's code did) trains on the
whole chosen transcript. Prompts are truncated from the left first; the response is never truncated away.
Writes models/sft, metrics/sft/train.json and DVCLive curves in metrics/sft/live.
"""
from __future__ import annotations

from pathlib import Path

from stages.core import hh
from stages.core import params as P
from stages.core.determinism import seed_and_pin
from stages.core.io import StageError, fail_cleanly, read_jsonl
from stages.core.modeling import count_trainable, fit_prompt, load_causal_lm, load_tokenizer
from stages.core.training import TrainingRun, effective_batch_size, throughput, training_kwargs, trl_config

TRAIN = Path("data/clean/train.jsonl")
START = Path("models/base")
OUT = Path("models/sft")
LIVE = Path("metrics/sft/live")


def sft_dataset(rows: list[dict], tok, s: P.SftParams):
    from datasets import Dataset

    if s.loss_on == "transcript":  # the study: the raw chosen transcript, cut on the right at max_length
        return Dataset.from_dict({"text": [hh.transcripts(r)[0] for r in rows]})
    prompts = [fit_prompt(tok, r["prompt"], [" " + r["chosen"]], s.max_length) for r in rows]
    return Dataset.from_dict({"prompt": prompts, "completion": [" " + r["chosen"] for r in rows]})


def sft_config(s: P.SftParams, output_dir: Path, seed: int, d: P.DistributedParams | None = None):
    from trl import SFTConfig

    return trl_config(SFTConfig, {**training_kwargs(s, output_dir, seed, d), "max_length": s.max_length,
                                  "packing": False, "completion_only_loss": s.loss_on == "response",
                                  "dataset_num_proc": None}, s.trainer, "sft.trainer")


def build_trainer(s: P.SftParams, cfg, model, tok, rows: list[dict], callbacks=None):
    """The SFTTrainer of the stage (also what tests/test_study_tokens.py reads the token ids from)."""
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=cfg, train_dataset=sft_dataset(rows, tok, s), processing_class=tok,
                      callbacks=callbacks)


@fail_cleanly
def main() -> None:
    params = P.load()
    s = params.sft
    seed_and_pin(params.seed)
    rows = read_jsonl(TRAIN)
    if s.max_train_pairs:
        rows = rows[: s.max_train_pairs]
    if not rows:
        raise StageError(f"{TRAIN}: no training pairs")
    run = TrainingRun("sft", OUT, LIVE, (s.model_dump(), params.seed, len(rows), (START / "run.json").read_text()))
    cfg = sft_config(s, run.ckpt_dir, params.seed, params.distributed)  # checked before anything is loaded
    tok = load_tokenizer(str(START))
    model = load_causal_lm(str(START))
    resume = run.resume_from()
    trainer = build_trainer(s, cfg, model, tok, rows, run.callbacks(resume=bool(resume)))
    run.attach(trainer)
    out = trainer.train(resume_from_checkpoint=resume)

    def write(tmp: Path):
        trainer.save_model(str(tmp))
        tok.save_pretrained(tmp)

    run.save(write, {"final_loss": round(out.training_loss, 4), "steps": out.global_step,
                     "effective_batch_size": effective_batch_size(trainer.args),
                     "trainable_parameters": count_trainable(model)},
             record={"start": str(START), "loss_on": s.loss_on, "precision": params.distributed.mixed_precision},
             timing=throughput(trainer, out))
    print(f"sft: saved {OUT} (loss {out.training_loss:.3f})")


if __name__ == "__main__":
    main()
