"""Run a stage and SIGKILL it at a chosen moment, on purpose rather than by luck of timing (tests only).

    python tests/killer.py <moment> <n> <module> [stage args]

moments:
  checkpoint-save  during the n-th checkpoint save: weights, optimizer and scheduler written, RNG state and
                   trainer_state.json not yet
  state-write      while writing the n-th trainer_state.json (half of it on disk)
  generate         at the n-th call of model.generate (sampling)
  judge            at the n-th judge call (scoring)
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

import stages  # noqa: F401  (pins the CPU before torch loads, as a stage process does)


def kill_on(n: int):
    calls = {"n": 0}

    def due() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    return due


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    moment, n, module, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    due = kill_on(n)
    if moment == "checkpoint-save":
        from transformers import Trainer

        original = Trainer._save_rng_state

        def save_rng_state(self, output_dir):
            if due():
                die()
            return original(self, output_dir)

        Trainer._save_rng_state = save_rng_state
    elif moment == "state-write":
        from transformers.trainer_callback import TrainerState

        original_json = TrainerState.save_to_json

        def save_to_json(self, json_path):
            if due():
                original_json(self, json_path)
                with open(json_path, "rb") as fh:
                    text = fh.read()
                with open(json_path, "wb") as fh:
                    fh.write(text[: len(text) // 2])
                die()
            return original_json(self, json_path)

        TrainerState.save_to_json = save_to_json
    elif moment == "generate":
        from transformers import GenerationMixin

        original_generate = GenerationMixin.generate

        def generate(self, *a, **k):
            if due():
                die()
            return original_generate(self, *a, **k)

        GenerationMixin.generate = generate
    elif moment == "judge":
        from stages import judges

        for cls in judges.kinds().values():
            original_call = cls.__call__

            def call(self, *a, _original=original_call, **k):
                if due():
                    die()
                return _original(self, *a, **k)

            cls.__call__ = call
    else:
        raise SystemExit(f"unknown moment {moment!r}")
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
