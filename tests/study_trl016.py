"""Run inside a side environment with the study's libraries (TRL 0.16.1, transformers 4.51.0, datasets 3.5.0; see
tests/test_study_tokens.py): the token ids the study's own trainers made from its notebook's datasets.

    python tests/study_trl016.py <in.json> <out.json>

in.json: {"tokenizer": tokenizer.json path, "pairs": [{"chosen": transcript, "rejected": transcript}, ...],
          "batches": [[pair index, ...], ...], "output_dir": scratch folder}
out.json: {"versions", "sft": [input_ids per pair], "dpo": [{prompt_input_ids, chosen_input_ids, rejected_input_ids}],
           "batches": [[the ids each row of the batch's forward pass saw, chosen rows then rejected rows], ...]}

Nothing here re-implements TRL: the notebook's datasets go through TRL 0.16.1's own `SFTTrainer._prepare_dataset`,
`DPOTrainer._prepare_dataset` (prompt extraction, tokenize_row), its preference collator and `concatenated_forward`
(with a stand-in model that records its input), called on stand-ins for the trainers' `self` that hold the study's
settings (the notebook's DPOConfig / SFTConfig, defaults included).
"""

import json
import sys
from types import SimpleNamespace

import datasets
import torch
import transformers
import trl
from transformers import PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference


def main(src: str, dst: str) -> None:
    job = json.loads(open(src, encoding="utf-8").read())
    tok = PreTrainedTokenizerFast(
        tokenizer_file=job["tokenizer"], bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>"
    )
    tok.pad_token = tok.eos_token  # the notebook's cells 4, 13 and 22
    pairs = job["pairs"]
    out = {
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "datasets": datasets.__version__}
    }

    # SFT, main.ipynb cells 7-8: {"text": chosen}, max_seq_length=512, everything else TRL's default
    sft_args = SFTConfig(output_dir=job["output_dir"], max_seq_length=512, use_cpu=True, report_to="none")
    sft = SFTTrainer._prepare_dataset(
        SimpleNamespace(),
        datasets.Dataset.from_dict({"text": [p["chosen"] for p in pairs]}),
        tok,
        sft_args,
        packing=sft_args.packing,
        formatting_func=None,
        dataset_name="train",
    )
    out["sft"] = sft["input_ids"]

    # DPO, main.ipynb cells 15-17: the raw {chosen, rejected} strings, DPOConfig with beta 0.1, TRL's defaults besides
    dpo_args = DPOConfig(output_dir=job["output_dir"], beta=0.1, use_cpu=True, report_to="none")
    trainer = SimpleNamespace(tokenize_row=DPOTrainer.tokenize_row, is_vision_model=False)
    raw = datasets.Dataset.from_dict(
        {"chosen": [p["chosen"] for p in pairs], "rejected": [p["rejected"] for p in pairs]}
    )
    dpo = DPOTrainer._prepare_dataset(trainer, raw, tok, dpo_args, "train")
    out["dpo"] = [{k: row[k] for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")} for row in dpo]

    # What the model saw per step: the collator, then concatenated_forward's flush-left and keep_end truncation
    collate = DataCollatorForPreference(pad_token_id=tok.pad_token_id)
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, **kwargs):
            seen.append([ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)])
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, len(tok)))

    forward_self = SimpleNamespace(
        concatenated_inputs=DPOTrainer.concatenated_inputs,
        padding_value=tok.pad_token_id,
        aux_loss_enabled=False,
        is_encoder_decoder=False,
        label_pad_token_id=-100,
        padding_free=dpo_args.padding_free,
        max_length=dpo_args.max_length,
        truncation_mode=dpo_args.truncation_mode,
        use_logits_to_keep=dpo_args.use_logits_to_keep,
        use_weighting=dpo_args.use_weighting,
        args=dpo_args,
        loss_type=dpo_args.loss_type,
    )
    for batch in job["batches"]:
        features = [
            {k: dpo[i][k] for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")} for i in batch
        ]
        DPOTrainer.concatenated_forward(forward_self, Recorder(), collate(features))
    out["batches"] = seen
    out["settings"] = {
        "max_prompt_length": dpo_args.max_prompt_length,
        "max_length": dpo_args.max_length,
        "max_completion_length": dpo_args.max_completion_length,
        "truncation_mode": dpo_args.truncation_mode,
        "sft_max_length": sft_args.max_length,
    }
    open(dst, "w", encoding="utf-8").write(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
