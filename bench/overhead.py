"""Benchmark: the project's SFT training steps per second against a bare PyTorch loop doing the same forward, backward
and AdamW step on the same batches (the same model start, the same collated batches from the same SFTTrainer). The
ratio is the time a step spends outside the model's own work: TRL's per-micro-batch metrics, our callbacks (the
finite guard, DVCLive, checkpoints), the Trainer's bookkeeping. Prints one Markdown table; not a test.

    python bench/overhead.py             # the CPU default's SFT (needs models/base and data/clean: dvc repro)
    python bench/overhead.py --steps 40  # fewer optimizer steps each way

Run it on a quiet machine: a second busy process makes 2-thread torch several times slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

import stages  # noqa: E402,F401  (pins CPU kernels and threads before torch loads, as a stage does)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps each way (default 60)")
    args = ap.parse_args()

    import torch

    from stages import methods
    from stages.core import params as P
    from stages.core.determinism import seed_and_pin
    from stages.core.io import read_jsonl
    from stages.core.training import TRAIN, Job, TrainingRun
    from stages.methods.sft import build_trainer

    params = P.load()
    method = methods.load("sft")
    own, _ = method.parse(params)
    rows = read_jsonl(TRAIN)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = method.config(params, tmp / "checkpoints")
        config.max_steps = args.steps

        # the project's way: the stage's trainer with the stage's callbacks (guard, DVCLive, checkpoints)
        seed_and_pin(params.seed)
        run = TrainingRun("sft", tmp / "models/sft", tmp / "live", ("bench",))
        job = Job(name="sft", params=params, own=own, config=config, rows=rows, run=run)
        tok, model = job.load_start()
        trainer = build_trainer(own, config, model, tok, rows, run.callbacks(resume=False))
        run.attach(trainer)
        out = trainer.train()
        project = out.metrics["train_steps_per_second"]

        # the bare loop: a fresh start model, the same batches in the same order, the same optimizer settings
        seed_and_pin(params.seed)
        tok, model = job.load_start()
        batches = build_trainer(own, config, model, tok, rows).get_train_dataloader()
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        accumulation = config.gradient_accumulation_steps
        model.train()
        steps, micro, started = 0, 0, time.perf_counter()
        while steps < args.steps:
            for batch in batches:
                inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels") if k in batch}
                loss = model(**inputs).loss / accumulation
                loss.backward()
                micro += 1
                if micro % accumulation == 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    steps += 1
                    if steps == args.steps:
                        break
        bare = steps / (time.perf_counter() - started)

    print("| SFT, CPU default | steps/s | ms per step |")
    print("|---|---|---|")
    print(f"| the project's stage (TRL-logged) | {project:.2f} | {1000 / project:.1f} |")
    print(f"| bare PyTorch loop, same batches | {bare:.2f} | {1000 / bare:.1f} |")
    print(f"\nratio {bare / project:.2f}x ({args.steps} optimizer steps each, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
