"""The callbacks every training run attaches: the non-finite guard, plain progress lines in logs, and DVCLive curves
without wall-clock figures."""

from __future__ import annotations

import math
import time

from . import distributed as dist
from .io import StageError
from .progress import duration

WALL_CLOCK = ("runtime", "per_second", "_time")  # log keys that measure the machine, not the model: kept out of curves


class FiniteGuard:
    """Stop training at the first non-finite loss or gradient, with one line naming the stage and the step, before any
    checkpoint or the final model is written.

    Without it a float16 model (or a too-high learning rate) trains on in NaN: the Trainer's logged loss hides it
    and the stage saves NaN weights that later stages turn into empty responses and a metrics file that looks valid.

    Attached to its Trainer (`attach`), it reuses the gradient norm the Trainer computes before every optimizer step
    (for clipping and logging) and keeps the first non-finite step in a device-side counter: nothing waits for the
    device on the steps between. The counter is read at each logging step, before each checkpoint and at the end of
    training. Unattached (a Trainer without that hook), it computes the norm itself before every step, as it used to.
    """

    def __init__(self, stage: str):
        from transformers import TrainerCallback

        guard = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if model is not None:
                    guard.check_dtype(model)

            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                if guard.attached or args.fp16 or model is None:  # fp16's loss scaler skips inf steps by design
                    return
                guard.check_gradients(model, state.global_step + 1)

            def on_log(self, args, state, control, logs=None, model=None, **kwargs):
                guard.check_recorded(model, state.global_step)
                for k in ("loss", "grad_norm"):
                    v = (logs or {}).get(k)
                    if isinstance(v, float) and not math.isfinite(v):
                        raise StageError(
                            f"{guard.stage}: step {state.global_step}: {k} is {v}; stopping (check the "
                            "model's dtype and the learning rate)"
                        )

            def on_train_end(self, args, state, control, model=None, **kwargs):
                guard.check_recorded(model, state.global_step)

        self.stage, self.callback = stage, Callback()
        self.attached = False
        self.first_bad = None  # a device tensor: the first optimizer step whose gradient norm was not finite, or 0

    def attach(self, trainer) -> None:
        """Record the Trainer's own gradient norm at every optimizer step, and check it before every checkpoint."""
        get_norm, save = getattr(trainer, "_get_grad_norm", None), getattr(trainer, "_save_checkpoint", None)
        if get_norm is None or save is None or trainer.args.fp16:  # another Trainer: the per-step check stays
            return
        guard = self

        def recorded_norm(model, grad_norm=None):
            norm = get_norm(model, grad_norm=grad_norm)
            guard.record(norm, trainer.state.global_step + 1)
            return norm

        def checked_save(model, *args, **kwargs):
            guard.check_recorded(model, trainer.state.global_step)
            return save(model, *args, **kwargs)

        trainer._get_grad_norm, trainer._save_checkpoint = recorded_norm, checked_save
        self.attached = True

    def record(self, norm, step: int) -> None:
        import torch

        if not isinstance(norm, torch.Tensor):  # DeepSpeed gives a float: already on the host
            norm = torch.tensor(float(norm) if norm is not None else 0.0)
        if self.first_bad is None:
            self.first_bad = torch.zeros((), dtype=torch.long, device=norm.device)
        self.first_bad = torch.where((self.first_bad == 0) & ~torch.isfinite(norm), step, self.first_bad)

    def check_recorded(self, model, step: int) -> None:
        if self.first_bad is None or not int(self.first_bad):  # the one read of the device, at these points only
            return
        bad = next((n for n, p in model.named_parameters() if not p.isfinite().all()), None) if model else None
        where = f"; weights now non-finite from {bad}" if bad else ""
        raise StageError(
            f"{self.stage}: step {int(self.first_bad)}: non-finite gradient norm; stopping at step {step} before "
            f"anything is saved{where} (check the precision and the learning rate)"
        )

    def check_dtype(self, model) -> None:
        """Trainable weights are float32 whatever the precision (bf16/fp16 are autocast over float32 weights)."""
        import torch

        low = sorted(
            {
                str(p.dtype).replace("torch.", "")
                for p in model.parameters()
                if p.requires_grad and p.dtype != torch.float32
            }
        )
        if low:
            raise StageError(
                f"{self.stage}: trainable weights in {', '.join(low)}; stopping before step 1 (AdamW's "
                "updates underflow there: load the model in float32)"
            )

    def check_gradients(self, model, step: int) -> None:
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:  # DeepSpeed / FSDP keep gradients elsewhere: the logged loss is still checked
            return
        norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(norm):
            first = next(n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all())
            dtype = next(model.parameters()).dtype
            raise StageError(
                f"{self.stage}: step {step}: non-finite gradient ({float(norm)}) in {first}; stopping "
                f"(weights are {str(dtype).replace('torch.', '')}; check the precision and learning rate)"
            )


def events(every: float, strategy, steps: int) -> int:
    """How many times a `*_steps` cadence fires in `steps` optimizer steps (a value below 1 is a share of the run, as
    the Trainer reads it); 0 when its strategy is not "steps"."""
    if str(getattr(strategy, "value", strategy)) != "steps" or not every or steps <= 0:
        return 0
    interval = math.ceil(every * steps) if every < 1 else int(every)
    return steps // max(interval, 1)


class CadenceCheck:
    """Refuse, before step 1, a save or evaluation cadence that would fire more than `limit` times in this run: each
    save writes the weights and the optimizer state (several GB at the study's scale) and each evaluation runs the
    held-out set, so a CPU-sized cadence left in a study-sized run costs hours. The run knows its step count only
    here (the Trainer computes it from the data), hence a check at the start of training, not in the `check` stage."""

    def __init__(self, stage: str, section: str, limit: int):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                for key, every, strategy in (
                    ("save_steps", args.save_steps, args.save_strategy),
                    ("eval_steps", args.eval_steps, args.eval_strategy),
                ):
                    n = events(every, strategy, state.max_steps)
                    if n > limit:
                        least = math.ceil(state.max_steps / limit)
                        raise StageError(
                            f"params.yaml: {section}.{key}: {every:g} fires {n} times in this run's "
                            f"{state.max_steps} steps, more than speed.max_saves ({limit}); set it to at least "
                            f"{least} ({stage}, before step 1)"
                        )

        self.callback = Callback()


class ProgressLines:
    """In logs (no terminal), a plain line per logging step: step, share done, loss, speed, ETA."""

    def __init__(self, stage: str):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                self.start, self.start_step = time.perf_counter(), state.global_step

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not dist.is_main() or not state.max_steps:
                    return
                done = state.global_step - self.start_step
                rate = done / max(time.perf_counter() - self.start, 1e-9)
                left = (state.max_steps - state.global_step) / rate if rate else 0.0
                shown = {
                    k: v
                    for k, v in (logs or {}).items()
                    if k in ("loss", "eval_loss", "rewards/margins", "eval_rewards/accuracies")
                }
                values = " ".join(f"{k} {v:.4g}" for k, v in shown.items() if isinstance(v, (int, float)))
                print(
                    f"{stage}: step {state.global_step}/{state.max_steps} "
                    f"({100 * state.global_step / state.max_steps:.1f}%) {values} | {rate:.2f} steps/s | "
                    f"ETA {duration(left)}",
                    flush=True,
                )

        self.callback = Callback()


def curves(live_dir, resume: bool):
    """DVCLive's Trainer callback writing the run's curves into `live_dir`, without wall-clock figures (runtime, samples
    or steps per second): the curves are then the same bytes on every run; timings go to logs/."""
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class Curves(DVCLiveCallback):
        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            logs = {k: v for k, v in (logs or {}).items() if not k.endswith(WALL_CLOCK)}
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    # dvcyaml=False: never rewrite the root dvc.yaml; its plots are written by commands.compose.
    live = Live(str(live_dir), resume=resume, dvcyaml=False, save_dvc_exp=False, report=None)
    return Curves(live=live)
