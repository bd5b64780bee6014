"""Loading models and tokenizers safely, from a local folder or a hub snapshot pinned to a commit.

A hub id is first resolved to its snapshot folder in the Hugging Face cache (stages/core/hub.py: downloaded when
online, read as it is under HF_HUB_OFFLINE=1), so transformers only ever reads local folders, and the commit read is
known and recorded even offline (a config's `_commit_hash` is not).

Safety: `trust_remote_code` is never set; weights load from safetensors. A pickle checkpoint is refused, with one
exception the user states in params: a `pytorch_model.bin` whose sha256 equals a digest given there
(`base.pickle_sha256`, `score.judges[].pickle_sha256`), for hub models never published as safetensors
(facebook/opt-350m). Even then it is read with torch's weights-only unpickler, which builds tensors and never runs
code from the file.

Precision: weights load in float32 unless a caller asks otherwise, whatever dtype the checkpoint was saved in
(facebook/opt-350m's are float16; trained as they are, AdamW's updates underflow and the weights turn to NaN).
"""

from __future__ import annotations

from pathlib import Path

from . import hub
from .io import StageError, first_line, is_local, sha256_file

PICKLE_WEIGHTS = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


class MissingFiles(StageError):
    """A model folder without the files any load needs (config, weights)."""


def check_model_dir(path: str | Path, pickle_sha256: str | None = None, what: str = "model") -> bool:
    """A clear one-line error for a missing, incomplete or pickle-only model folder. True if it holds safetensors,
    False if only the pickle that `pickle_sha256` may vouch for (load_pretrained checks the digest)."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFiles(f"{path}: {what} folder not found (a path in params, or run the stage that makes it)")
    if not (path / "config.json").exists():
        raise MissingFiles(f"{path}: not a model folder (no config.json)")
    if any(path.glob("*.safetensors")):
        return True
    if pickle_sha256 and (path / PICKLE_WEIGHTS).is_file():
        return False
    pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
    if pickles:
        raise StageError(
            f"{path}: only pickle weights ({', '.join(sorted(pickles))}); refusing to load them, "
            "convert to safetensors (or give the file's sha256 as pickle_sha256 in params)"
        )
    raise MissingFiles(f"{path}: no model weights (*.safetensors)")


def hub_files(pickle_sha256: str | None) -> list[str]:
    """The files of a hub model a stage needs: the pickle checkpoint only when params trust its digest."""
    return hub.MODEL_FILES + ([PICKLE_WEIGHTS] if pickle_sha256 else [])


def model_folder(path: str, revision: str | None = None, pickle_sha256: str | None = None) -> tuple[Path, str | None]:
    """(folder, commit): `path` itself when it is on disk (commit None), else its hub snapshot at `revision`."""
    if is_local(path):
        return Path(path), None
    folder = hub.snapshot(path, revision, hub_files(pickle_sha256))
    return folder, folder.name


def _trusted_pickle(folder: Path, pickle_sha256: str) -> dict:
    file = folder / PICKLE_WEIGHTS
    digest = sha256_file(file)
    if digest != pickle_sha256:
        raise StageError(
            f"{file}: sha256 {digest} is not the trusted {pickle_sha256} given in params; refusing to unpickle it"
        )
    return {"file": PICKLE_WEIGHTS, "sha256": digest}


def load_pretrained(
    cls,
    path: str,
    revision: str | None = None,
    pickle_sha256: str | None = None,
    what: str = "model",
    dtype: str = "float32",
    **kwargs,
):
    """`cls.from_pretrained` the safe way: safetensors, or a pickle checkpoint only when its digest is the trusted one.

    Returns (model, record): record = {source, revision (the commit read; None for a local folder), weights (what
    was read: safetensors, or the pickle file and its sha256)}. `what` names the model in errors."""
    import torch

    folder, commit = model_folder(path, revision, pickle_sha256)
    try:
        has_safetensors = check_model_dir(folder, pickle_sha256, what)
    except MissingFiles as exc:
        if commit is None:
            raise
        raise hub.incomplete(path, commit, str(exc).split(": ", 1)[1], hub_files(pickle_sha256)) from None
    if has_safetensors:
        weights, how = {"format": "safetensors"}, {"use_safetensors": True}
    else:  # transformers reads .bin files with torch.load(weights_only=True): tensors only, no code
        weights, how = (
            {"format": "pickle", **_trusted_pickle(folder, pickle_sha256)},
            {"use_safetensors": False, "weights_only": True},
        )
    try:
        model = cls.from_pretrained(str(folder), trust_remote_code=False, dtype=getattr(torch, dtype), **how, **kwargs)
    except Exception as exc:  # OSError, ValueError, SafetensorError (corrupt file), UnpicklingError, ...
        raise StageError(f"{path}: cannot load the {what} ({first_line(exc)})") from None
    return model, {"source": path, "revision": commit, "weights": weights}


def load_tokenizer(path: str, revision: str | None = None, padding_side: str = "right"):
    from transformers import AutoTokenizer

    folder, _ = model_folder(path, revision)
    if not folder.is_dir():
        raise StageError(f"{folder}: tokenizer folder not found")
    if not any((folder / name).exists() for name in TOKENIZER_FILES):  # e.g. a mistyped path such as ../../etc
        raise StageError(
            f"{path}: not a model folder (no tokenizer files: {', '.join(TOKENIZER_FILES)}); give a "
            "hub id or a folder saved with save_pretrained"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # OSError, ValueError (no tokenizer files), ...
        raise StageError(f"{path}: cannot load the tokenizer ({first_line(exc)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(path: str, revision: str | None = None, attn_implementation: str | None = None):
    """A causal LM, in float32 (every model the pipeline writes is saved as safetensors); `attn_implementation`:
    transformers' attention kernel (None: its default, sdpa for OPT)."""
    from transformers import AutoModelForCausalLM

    kernel = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return load_pretrained(AutoModelForCausalLM, path, revision, **kernel)[0]


def load_policy(folder: str | Path):
    """A model to sample from: its own weights, or, for a DPO model kept unmerged (`dpo.merge_adapter: false`, as
    the study sampled), its start model (`start/`) with the LoRA adapter (`adapter/`) applied on top, unmerged."""
    folder = Path(folder)
    if (folder / "adapter").is_dir() and not any(folder.glob("*.safetensors")):
        from peft import PeftModel

        start = load_causal_lm(str(folder / "start"))
        try:
            return PeftModel.from_pretrained(start, str(folder / "adapter"), is_trainable=False)
        except Exception as exc:
            raise StageError(f"{folder / 'adapter'}: cannot load the adapter ({first_line(exc)})") from None
    return load_causal_lm(str(folder))


# The dropout probabilities models keep as floats on their modules and apply functionally at each forward pass
# (OPT: `dropout` on its decoder and layers, `attention_dropout` as its attention's `dropout`; `layerdrop`)
FUNCTIONAL_DROPOUT = ("dropout", "attention_dropout", "activation_dropout", "layerdrop")


def set_dropout(model, setting: str, who: str = "") -> list[str]:
    """`setting` keep: `model` as loaded. zero: every dropout at 0 while it trains, the nn.Dropout modules (all that
    TRL's `disable_dropout` zeroes: in a LoRA model only the adapter's) and the probabilities applied functionally
    (FUNCTIONAL_DROPOUT; OPT's own dropout, 0.1 in opt-350m, is one). The saved config is left as it was. Returns the
    names of the probabilities that were above 0, and says how many under `who` (the training's name) when given."""
    import torch

    changed = []
    if setting == "keep":
        return changed
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            if module.p:
                changed.append(f"{name}.p")
            module.p = 0.0
        for attr in FUNCTIONAL_DROPOUT:
            value = module.__dict__.get(attr)  # a plain attribute, not a submodule or a parameter
            if isinstance(value, float):
                if value:
                    changed.append(f"{name}.{attr}")
                setattr(module, attr, 0.0)
    if who and changed:
        print(f"{who}: model_dropout zero: {len(changed)} dropout probabilities set to 0 ({changed[0]}, ...)")
    return changed


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def per_model_stage(argv: list[str] | None, description: str):
    """The shared start of the per-model stages (sample, score): the model argument, validated params, seed, threads."""
    import argparse

    from . import params as P
    from .determinism import seed_and_pin

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("model")
    name = ap.parse_args(argv).model
    params = P.load()
    if name not in params.models:
        from .io import StageError

        raise StageError(f"params.yaml: models: no model '{name}' (the table has {', '.join(params.models)})")
    seed_and_pin(params.seed)
    return name, params


def fit_prompt(tok, prompt: str, responses: list[str], max_length: int, max_prompt_length: int | None = None) -> str:
    """Truncate a prompt from the left so that prompt + the longest response fit in `max_length` tokens.

    TRL 1.x has no max_prompt_length and cuts prompt+completion at the end, which can remove the response
    entirely (chosen and rejected then look identical to the trainer). The response is never cut here; at least
    one quarter of `max_length` stays for the prompt.
    """
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in responses)
    budget = max(max_length - longest - 2, max_length // 4)
    if max_prompt_length:
        budget = min(budget, max_prompt_length)
    if len(ids) <= budget:
        return prompt
    return tok.decode(ids[-budget:])
