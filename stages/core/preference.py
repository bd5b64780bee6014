"""How DPO's (prompt, chosen, rejected) strings become the token ids the trainer sees: TRL 1.16's own way, or the
study's TRL 0.16.1 way, one switch per difference (`dpo.bos`, `dpo.tokenize`, `dpo.truncation`).

TRL 1.16's DPOTrainer always tokenizes its dataset itself, so the study's way is an override of its
`_prepare_dataset` and of its collator's truncation, not a fork of the trainer. What TRL 0.16.1 did (its
`DPOTrainer.tokenize_row` and `concatenated_forward`, read at v0.16.1; tests/test_study_tokens.py runs that TRL's own
code and compares the ids pair by pair):
- prompt, chosen and rejected tokenized separately with `add_special_tokens=False`: no BOS anywhere, and a word that
  the common-prefix prompt split ("Assistant: S" + "ure") stays split into two tokens;
- EOS appended to each reply;
- the prompt keeps its last `max_prompt_length` tokens; replies are not cut there;
- in each step the padded, left-flushed batch (chosen rows, then rejected rows) keeps its last `max_length` columns,
  so a sequence can lose its start because another sequence of the batch is long.
"""
from __future__ import annotations

import dataclasses


def study_way(d) -> bool:
    """True when `d` (params.dpo) asks for anything but TRL 1.16's own tokenization and truncation."""
    return not (d.bos and d.tokenize == "joint" and d.truncation == "fit_prompt")


def tokenize_pair(tok, prompt: str, chosen: str, rejected: str, bos: bool, tokenize: str,
                  max_prompt_length: int | None) -> dict:
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
            whole = DataCollatorForPreference(pad_token_id=self.pad_token_id, max_length=None,
                                              pad_to_multiple_of=self.pad_to_multiple_of)
            out = whole.torch_call(examples)  # right-padded: each row's tokens start at column 0, as after flush_left
            if self.max_length is not None and out["input_ids"].shape[1] > self.max_length:
                for key in ("input_ids", "attention_mask", "completion_mask"):
                    out[key] = out[key][:, -self.max_length:]
            return out

    return KeepEndOfBatch(pad_token_id=pad_token_id, max_length=max_length, truncation_mode="keep_end")


def trainer_class():
    """TRL's DPOTrainer, tokenizing as `dpo.bos` / `dpo.tokenize` / `dpo.truncation` say (pass `tokenization=params.dpo`);
    with TRL's own settings it is TRL's code unchanged."""
    from trl import DPOTrainer

    class PreferenceTrainer(DPOTrainer):
        def __init__(self, *args, tokenization=None, **kwargs):
            self.tokenization = tokenization
            if tokenization is not None and tokenization.truncation == "keep_end" and "data_collator" not in kwargs:
                tok = kwargs["processing_class"]
                kwargs["data_collator"] = keep_end_collator(tok.pad_token_id, kwargs["args"].max_length)
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            d = self.tokenization
            if d is None or not study_way(d):
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            limit = d.max_prompt_length if d.truncation == "keep_end" else None
            return dataset.map(lambda row: tokenize_pair(processing_class, row["prompt"], row["chosen"],
                                                         row["rejected"], d.bos, d.tokenize, limit),
                               desc=f"Tokenizing {dataset_name} dataset")

    return PreferenceTrainer
