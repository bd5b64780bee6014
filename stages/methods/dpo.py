"""Method `dpo`: DPO with a LoRA adapter, with TRL's DPOTrainer and PEFT's LoraConfig (section `dpo`: DPOConfig).

The table of models uses it twice: `dpo` from models/base and `sft_dpo` from models/sft. The reference model is the
starting model itself (the adapter disabled), as in the study. With `dpo.truncation: fit_prompt` prompts are truncated
from the left to `dpo.max_prompt_length` (TRL 1.x has no such option) so responses are never cut away. Held-out
pairs (test split, never trained on) give the reward accuracy and margin curves. Writes models/<name>: the adapter
itself in adapter/, and for sampling the merged plain model (`dpo.merge_adapter: true`) or the start model in start/
(false: sampled through the unmerged adapter, as the study did).

How (prompt, chosen, rejected) strings become the token ids the trainer sees: TRL 1.16's own way, or the study's TRL
0.16.1 way, one switch per difference (`dpo.bos`, `dpo.tokenize`, `dpo.truncation`). TRL 1.16's DPOTrainer always
tokenizes its dataset itself, so the study's way is an override of its `_prepare_dataset` and of its collator's
truncation, not a fork of the trainer. What TRL 0.16.1 did (its `DPOTrainer.tokenize_row` and
`concatenated_forward`, read at v0.16.1; tests/test_study_tokens.py runs that TRL's own code and compares the ids
pair by pair):
- prompt, chosen and rejected tokenized separately with `add_special_tokens=False`: no BOS anywhere, and a word that
  the common-prefix prompt split ("Assistant: S" + "ure") stays split into two tokens;
- EOS appended to each reply;
- the prompt keeps its last `max_prompt_length` tokens; replies are not cut there;
- in each step the padded, left-flushed batch (chosen rows, then rejected rows) keeps its last `max_length` columns,
  so a sequence can lose its start because another sequence of the batch is long.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from stages.core import hh
from stages.core import params as P
from stages.core import reference as reference_store
from stages.core.io import StageError
from stages.core.modeling import count_trainable, fit_prompt, set_dropout
from stages.core.training import Job, Method, Trained, effective_batch_size, throughput


class LoraParams(P.Section):
    r: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str] = Field(min_length=1)


class Params(P.Section):
    """dpo's own keys; every other key is a field of TRL's DPOConfig (beta, loss_type, learning_rate, ...)."""

    max_prompt_length: int = Field(ge=1)
    lora: LoraParams
    eval_pairs: int = Field(ge=1)
    max_train_pairs: Optional[int] = Field(default=None, ge=1)
    # last_assistant: the prompt ends at the last "\n\nAssistant:" (the fix) | common_prefix: TRL's longest common
    # character prefix of the two transcripts (the study: TRL 0.16 extracted it so, splitting words it shares)
    prompt_split: Literal["last_assistant", "common_prefix"]
    # How the trainer turns (prompt, chosen, rejected) into token ids. TRL 1.16's own way is bos: true, tokenize:
    # joint, truncation: fit_prompt; the study's TRL 0.16.1 did bos: false, tokenize: separate, truncation: keep_end.
    # the tokenizer's BOS before the prompt (as in sampling) | false: none (TRL 0.16.1's add_special_tokens=False)
    bos: bool
    # joint: prompt and prompt + reply tokenized together, the reply starting at the last shared token (whole words) |
    # separate: prompt and each reply tokenized alone (TRL 0.16.1: a word split by the prompt stays split)
    tokenize: Literal["joint", "separate"]
    # fit_prompt: the prompt cut from the left so prompt + longest reply fit max_length, replies never cut (ours) |
    # keep_end: the prompt keeps its last max_prompt_length tokens, then each batch keeps its last max_length columns
    # (TRL 0.16.1, applied to the padded batch)
    truncation: Literal["fit_prompt", "keep_end"]
    merge_adapter: bool  # true: sample the merged weights | false: the start model + unmerged adapter (the study)
    # keep: the start model's own dropout stays on, as in the study (TRL's disable_dropout zeroes only nn.Dropout
    # modules: the adapter's; OPT applies its own functionally) | zero: every dropout at 0 (stages/core/modeling.py)
    model_dropout: Literal["keep", "zero"]


def split_pair(r: dict, how: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of a cleaned pair, split as `dpo.prompt_split` says."""
    if how == "common_prefix":  # the study: TRL's own extraction from each side's raw transcript
        from trl import extract_prompt

        chosen, rejected = hh.transcripts(r)
        ex = extract_prompt({"chosen": chosen, "rejected": rejected})
        return ex["prompt"], ex["chosen"], ex["rejected"]
    return r["prompt"], " " + r["chosen"], " " + r["rejected"]


def preference_dataset(rows: list[dict], tok, own: Params, max_length: int):
    from datasets import Dataset

    out = {"prompt": [], "chosen": [], "rejected": []}
    for r in rows:
        prompt, chosen, rejected = split_pair(r, own.prompt_split)
        if own.truncation == "fit_prompt":  # keep_end: cut in token ids by the trainer (trainer_class below)
            prompt = fit_prompt(tok, prompt, [chosen, rejected], max_length, own.max_prompt_length)
        out["prompt"].append(prompt)
        out["chosen"].append(chosen)
        out["rejected"].append(rejected)
    return Dataset.from_dict(out)


def lora_config(own: Params):
    from peft import LoraConfig

    return LoraConfig(
        r=own.lora.r,
        lora_alpha=own.lora.alpha,
        lora_dropout=float(own.lora.dropout),
        target_modules=list(own.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def check_lora_targets(model, targets: list[str], where: Path) -> None:
    """Every `dpo.lora.target_modules` name is a module of the model (PEFT would stop with a page of traceback)."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise StageError(
            f"params.yaml: dpo.lora.target_modules: {', '.join(missing)} not in {where}'s model "
            f"(its linear layers: {', '.join(linear)})"
        )


def build_trainer(own: Params, cfg, model, tok, rows: list[dict], heldout: list[dict], callbacks=None, reference=None):
    """The DPOTrainer of the method (also what tests/test_study_tokens.py reads the token ids from). `reference`: the
    stored reference's log-probs (a stages.core.reference.Stored, from read()), used instead of TRL's precompute."""
    set_dropout(model, own.model_dropout, who="dpo")  # before the adapter: the start model's own
    return trainer_class()(
        model=model,
        ref_model=None,
        args=cfg,
        train_dataset=preference_dataset(rows, tok, own, cfg.max_length),
        eval_dataset=preference_dataset(heldout, tok, own, cfg.max_length),
        processing_class=tok,
        peft_config=lora_config(own),
        callbacks=callbacks,
        tokenization=own,
        reference=reference,
    )


# What TRL's precompute of the reference reads beyond the token ids (its batch layout, padding and precision): with
# the start model, the pairs and the token ids, the reference's identity (stages/core/reference.py)
REFERENCE_FIELDS = (
    "max_length",
    "truncation_mode",
    "padding_free",
    "pad_to_multiple_of",
    "precompute_ref_batch_size",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "ld_alpha",
    "bf16",
    "fp16",
    "tf32",
    "pad_token",
)


def reference_identity(job: Job) -> dict:
    """What the stored reference of `job`'s training is computed from, beyond the token ids (hashed per split)."""
    own, cfg = job.own, job.config
    return {
        "start": str(job.start),
        "start_run_sha256": reference_store.file_hash(job.start / "run.json"),
        "train_pairs": len(job.rows),
        "eval_pairs": own.eval_pairs,
        "attn_implementation": job.params.speed.attn_implementation,
        **{field: getattr(cfg, field) for field in REFERENCE_FIELDS},
    }


class DPO(Method):
    """DPO with a LoRA adapter (TRL's DPOTrainer, PEFT's LoraConfig), the reference being the start model."""

    name = "dpo"
    description = "DPO (LoRA)"  # on its model card and DVC artifact
    tags = ("dpo", "lora")  # hub tags on its card, labels of its artifact
    curves = (
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "eval/rewards/accuracies",
        "eval/rewards/margins",
    )  # DVCLive metrics it logs beyond loss and learning rate: its plots
    owned = {"truncation_mode": "truncation"}  # TRL fields it sets from its own keys
    Params = Params

    @staticmethod
    def config_class():
        from trl import DPOConfig

        return DPOConfig

    def managed(self, own: Params) -> dict:
        return {
            "truncation_mode": "keep_end" if own.truncation == "keep_end" else "keep_start",
            "eval_strategy": "steps",
        }

    def check(self, own: Params, config) -> None:
        if config.max_length is not None and own.max_prompt_length >= config.max_length:
            raise StageError(
                f"params.yaml: {self.key}.max_prompt_length: {own.max_prompt_length} leaves no room for a reply in "
                f"{self.key}.max_length ({config.max_length})"
            )

    def reference(self, job: Job) -> tuple[dict, dict] | None:
        """(identity, {split: (chosen, rejected, token hash)}) of the start model's log-probs, by TRL's own precompute
        (the trainer's __init__, adapter disabled, model in eval mode), for the `reference@<model>` stage; None when
        the reference is live (`precompute_ref_log_probs: false`: computed in every step, as in the study)."""
        if not job.config.precompute_ref_log_probs:
            return None
        tok, model = job.load_start()
        check_lora_targets(model, job.own.lora.target_modules, job.start)
        trainer = build_trainer(job.own, job.config, model, tok, job.rows, job.heldout(job.own.eval_pairs))
        splits = {}
        for split, dataset in (("train", trainer.train_dataset), ("eval", trainer.eval_dataset)):
            chosen = torch_column(dataset, "ref_chosen_logps")
            splits[split] = (chosen, torch_column(dataset, "ref_rejected_logps"), reference_store.token_hash(dataset))
        return reference_identity(job), splits

    def train(self, job: Job) -> Trained:
        own = job.own
        heldout = job.heldout(own.eval_pairs)
        cfg = job.config  # checked before anything is loaded
        reference = None
        if cfg.precompute_ref_log_probs:  # computed once per start model by the reference stage
            reference = reference_store.read(job.name, reference_identity(job))
            tensors, _ = reference_store.paths(job.name)
            pairs = " + ".join(str(int(r[0].numel())) for r in reference.splits.values())
            print(f"{job.name}: the reference's log-probs of {pairs} pairs read from {tensors}, not computed")
        tok, model = job.load_start()
        check_lora_targets(model, own.lora.target_modules, job.start)
        resume = job.run.resume_from()
        trainer = build_trainer(
            own, cfg, model, tok, job.rows, heldout, job.run.callbacks(resume=bool(resume)), reference=reference
        )
        job.run.attach(trainer)
        trainable = count_trainable(trainer.model)
        before = {k: v for k, v in trainer.evaluate().items()} if not resume else {}
        out = trainer.train(resume_from_checkpoint=resume)
        final = trainer.evaluate()
        start = job.start

        def write(tmp: Path):
            trainer.model.save_pretrained(tmp / "adapter", safe_serialization=True)  # the adapter itself
            if own.merge_adapter:
                trainer.model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
            else:  # sampled as the study did, start model + unmerged adapter (DVC's cache stores identical files once)
                shutil.copytree(start, tmp / "start", ignore=shutil.ignore_patterns("run.json"))
            tok.save_pretrained(tmp)

        metrics = {
            "final_loss": round(out.training_loss, 4),
            "steps": out.global_step,
            "trainable_parameters": trainable,
            "effective_batch_size": effective_batch_size(trainer.args),
            "heldout_pairs": len(heldout),
            "heldout_reward_accuracy": round(final.get("eval_rewards/accuracies", float("nan")), 4),
            "heldout_reward_margin": round(final.get("eval_rewards/margins", float("nan")), 4),
            "heldout_reward_margin_before": round(before.get("eval_rewards/margins", float("nan")), 4)
            if before
            else None,
        }
        print(
            f"{job.name}: held-out accuracy {metrics['heldout_reward_accuracy']}, "
            f"margin {metrics['heldout_reward_margin']}"
        )
        return Trained(
            write,
            metrics,
            timing=throughput(trainer, out),
            record={"start": str(start), "beta": cfg.beta, "precision": job.params.distributed.mixed_precision},
        )


# TRL 0.16.1's tokenization, for the study's settings


def study_way(d) -> bool:
    """True when `d` (dpo's own keys) asks for anything but TRL 1.16's own tokenization and truncation."""
    return not (d.bos and d.tokenize == "joint" and d.truncation == "fit_prompt")


def tokenize_pair(
    tok, prompt: str, chosen: str, rejected: str, bos: bool, tokenize: str, max_prompt_length: int | None
) -> dict:
    """{prompt_ids, chosen_ids, rejected_ids} of one pair. `tokenize`: "separate" (TRL 0.16.1's tokenize_row) or
    "joint" (TRL 1.16: prompt and prompt + reply + EOS tokenized together, the reply starting at their last shared
    token). `bos`: the tokenizer's BOS first. `max_prompt_length`: keep the prompt's last tokens (None: all)."""
    from trl.data_utils import common_prefix_length  # TRL 1.16's own rule for where the reply starts

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    head = [tok.bos_token_id] if bos and tok.bos_token_id is not None else []
    if tokenize == "separate":
        prompt_ids = head + ids(prompt)
        chosen_ids, rejected_ids = ids(chosen) + [tok.eos_token_id], ids(rejected) + [tok.eos_token_id]
    else:
        eos = tok.eos_token
        prompt_ids = head + ids(prompt)
        with_chosen = head + ids(prompt + (chosen if chosen.endswith(eos) else chosen + eos))
        with_rejected = head + ids(prompt + (rejected if rejected.endswith(eos) else rejected + eos))
        shared = min(common_prefix_length(prompt_ids, with_chosen), common_prefix_length(prompt_ids, with_rejected))
        prompt_ids, chosen_ids, rejected_ids = prompt_ids[:shared], with_chosen[shared:], with_rejected[shared:]
    if max_prompt_length is not None:
        prompt_ids = prompt_ids[-max_prompt_length:]
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def keep_end_collator(pad_token_id: int, max_length: int | None):
    """TRL 1.16's preference collator with TRL 0.16.1's truncation: pad the batch first, then keep its last
    `max_length` columns (0.16.1 cut the padded batch, not each sequence)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    @dataclasses.dataclass
    class KeepEndOfBatch(DataCollatorForPreference):
        def torch_call(self, examples):
            whole = DataCollatorForPreference(
                pad_token_id=self.pad_token_id, max_length=None, pad_to_multiple_of=self.pad_to_multiple_of
            )
            out = whole.torch_call(examples)  # right-padded: each row's tokens start at column 0, as after flush_left
            if self.max_length is not None and out["input_ids"].shape[1] > self.max_length:
                for key in ("input_ids", "attention_mask", "completion_mask"):
                    out[key] = out[key][:, -self.max_length :]
            return out

    return KeepEndOfBatch(pad_token_id=pad_token_id, max_length=max_length, truncation_mode="keep_end")


def trainer_class():
    """TRL's DPOTrainer, tokenizing as `dpo.bos` / `dpo.tokenize` / `dpo.truncation` say (pass `tokenization=`
    dpo's own keys);
    with TRL's own settings it is TRL's code unchanged."""
    from trl import DPOTrainer

    class PreferenceTrainer(DPOTrainer):
        def __init__(self, *args, tokenization=None, reference=None, **kwargs):
            self.tokenization = tokenization
            self.stored_reference = reference  # a reference_store.Stored: TRL's precompute not run
            if tokenization is not None and tokenization.truncation == "keep_end" and "data_collator" not in kwargs:
                tok = kwargs["processing_class"]
                kwargs["data_collator"] = keep_end_collator(tok.pad_token_id, kwargs["args"].max_length)
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            d = self.tokenization
            if d is None or not study_way(d):
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            limit = d.max_prompt_length if d.truncation == "keep_end" else None
            return dataset.map(
                lambda row: tokenize_pair(
                    processing_class, row["prompt"], row["chosen"], row["rejected"], d.bos, d.tokenize, limit
                ),
                desc=f"Tokenizing {dataset_name} dataset",
            )

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if self.stored_reference is None:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            return reference_store.columns(dataset, name, self.stored_reference)

    return PreferenceTrainer


def torch_column(dataset, column: str):
    """A float column of a datasets.Dataset as a float32 tensor (TRL's precompute stores float32 values)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(dataset.with_format("numpy")[column], dtype=np.float32))
