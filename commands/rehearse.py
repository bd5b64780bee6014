"""A rehearsal of the study's path without a network or a GPU: a Hugging Face cache holding look-alikes of every hub
download of the `study` and `improved` profiles, at the commits those profiles pin. Not a DVC stage.

    python -m commands.rehearse /tmp/rehearsal            # small look-alikes (CI: tests/test_rehearsal.py)
    python -m commands.rehearse /tmp/rehearsal --shape real   # real shapes, random weights (bench/gpu_check.py)

then pin the judge's pickle as a user would, and run the study's profile against it, offline (the command prints
the overrides it needs):

    HF_HOME=/tmp/rehearsal/hf HF_HUB_OFFLINE=1 python -m commands.pin --fetch --profile study --trust-cached-pickle
    HF_HOME=/tmp/rehearsal/hf HF_HUB_OFFLINE=1 dvc exp run -S profile=study -S base.pickle_sha256=<digest> ...

The look-alikes are made here, small, and faithful in every trait the pipeline depends on:
- Anthropic/hh-rlhf: the four preference subsets, train and test, as `<subset>/<split>.jsonl.gz` in Anthropic's
  format (synthetic text; harmless-base test is the real slice in ../shared/data/hh-rlhf where present);
- facebook/opt-350m: an OPT with opt-350m's structure (word_embed_proj_dim < hidden_size, so project_in/out exist;
  post-layer-norm; dropout 0.1; config dtype float16 and float16 weights; published as pytorch_model.bin only) and a
  byte-level BPE tokenizer with OPT's conventions (`</s>` is BOS and EOS and is prepended; `<pad>` separate);
- OpenAssistant/reward-model-deberta-v3-large-v2: a DeBERTa-v2 sequence classifier with one label and a
  DeBERTa-v3-style tokenizer ([CLS] question [SEP] answer [SEP]), published as a pickle only, as the real commit
  c355404 is (its safetensors conversion is an unmerged pull request), and with no digest in the overrides: the
  profiles hold none until `python -m commands.pin --fetch --profile <study|improved>` pins it, the one step a user
  runs;
- Skywork/Skywork-Reward-V2-Qwen3-0.6B: a Qwen3 sequence classifier with one label, bfloat16 safetensors, and a
  tokenizer with a chat template;
- the study's prompt files (by URL in the profiles): the real files from ../shared/data/paper-eval, stored in the
  URL cache under their sha256, when present.
Writes <folder>/hf (set HF_HOME to it) and <folder>/rehearsal.json: the environment, and the params overrides the
look-alikes need (the pickle digests).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

from stages.core import hh, synthetic
from stages.core import params as P
from stages.core.io import fail_cleanly, sha256_file, write_json
from stages.judges import kinds, specs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SUBSETS = ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]
PAIRS = {"train": 240, "test": 120}  # per file (the rehearsal caps them further with download.max_pairs_per_file)
SHAPES = {  # tiny: CI on two cores; real: the released models' dimensions (random weights), for the GPU check
    "tiny": {
        "opt": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128, word_embed_proj_dim=32),
        "deberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "qwen": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        ),
    },
    "real": {
        "opt": dict(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            ffn_dim=4096,
            word_embed_proj_dim=512,
            vocab_size=50272,
        ),
        "deberta": dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=128100
        ),
        "qwen": dict(
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=151669,
        ),
    },
}
QWEN_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def snapshot_dir(hf_home: Path, repo: str, commit: str, kind: str = "model") -> Path:
    """The cache layout huggingface_hub reads: <kind>s--<owner>--<name>/snapshots/<commit>, refs/main -> commit."""
    root = hf_home / "hub" / f"{kind}s--{repo.replace('/', '--')}"
    folder = root / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return folder


def write_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def dataset(folder: Path, seed: int, real_everywhere: bool = False) -> list[str]:
    """Anthropic's layout; returns the texts, for training the look-alike tokenizers. `real_everywhere`: the real
    slice (where present) in every file, for realistic sequence lengths (the GPU check)."""
    texts = []
    for subset in SUBSETS:
        for split, n in PAIRS.items():
            real = (
                SHARED
                / "hh-rlhf"
                / ("harmless-base/test.jsonl.gz" if real_everywhere else f"{subset}/{split}.jsonl.gz")
            )
            target = folder / subset / f"{split}.jsonl.gz"
            if real.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(real, target)
                with gzip.open(real, "rt", encoding="utf-8") as fh:
                    rows = [json.loads(line) for _, line in zip(range(n), fh)]
            else:
                rows, _ = synthetic.generate(subset, split, n, seed, noise_rate=0.05, multi_turn_rate=0.3)
                write_gz(target, rows)
            texts += [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    return texts


def opt_lookalike(folder: Path, texts: list[str], shape: dict) -> str:
    """facebook/opt-350m's traits; returns the sha256 of its pytorch_model.bin."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import OPTConfig, OPTForCausalLM

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        texts, vocab_size=1000, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False
    )  # OPT's ids 0-3
    bpe.save_model(str(folder))  # vocab.json + merges.txt, as facebook/opt-350m ships them
    write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_prefix_space": False,
            "errors": "replace",
            "bos_token": "</s>",
            "eos_token": "</s>",
            "unk_token": "</s>",
            "pad_token": "<pad>",
            "model_max_length": 1000000000000000019884624838656,
            "tokenizer_class": "GPT2Tokenizer",
        },
    )
    write_json(
        folder / "special_tokens_map.json",
        {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>"},
    )
    dims = {"vocab_size": bpe.get_vocab_size(), **shape}
    config = OPTConfig(
        **dims,
        max_position_embeddings=2048,
        do_layer_norm_before=False,
        dropout=0.1,
        attention_dropout=0.0,
        activation_function="relu",
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        prefix="</s>",
    )
    torch.manual_seed(0)
    model = OPTForCausalLM(config).to(torch.float16)  # released in float16
    config_json = {k: v for k, v in config.to_dict().items() if k not in ("dtype", "torch_dtype")}
    write_json(folder / "config.json", config_json | {"architectures": ["OPTForCausalLM"], "torch_dtype": "float16"})
    write_json(folder / "generation_config.json", {"bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1})
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    return sha256_file(folder / "pytorch_model.bin")


def deberta_lookalike(folder: Path, texts: list[str], shape: dict) -> str:
    """OpenAssistant/reward-model-deberta-v3-large-v2's traits; returns the sha256 of its pytorch_model.bin."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2TokenizerFast

    tok = Tokenizer(models.Unigram())  # DeBERTa-v3's sentencepiece unigram, with its special tokens' ids
    tok.normalizer = normalizers.Sequence([normalizers.Replace("``", '"'), normalizers.Replace("''", '"')])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        texts,
        trainers.UnigramTrainer(
            vocab_size=800,
            special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
            unk_token="[UNK]",
            show_progress=False,
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    fast = DebertaV2TokenizerFast(
        tokenizer_object=tok,
        bos_token="[CLS]",
        eos_token="[SEP]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(folder)
    dims = {"vocab_size": tok.get_vocab_size(), **shape}
    config = DebertaV2Config(
        **dims,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        num_labels=1,
        pad_token_id=0,
    )
    torch.manual_seed(1)
    model = DebertaV2ForSequenceClassification(config)
    model.config.to_json_file(folder / "config.json")
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    return sha256_file(folder / "pytorch_model.bin")


def qwen_lookalike(folder: Path, texts: list[str], shape: dict) -> None:
    """Skywork/Skywork-Reward-V2-Qwen3-0.6B's traits: bfloat16 safetensors, a chat template."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForSequenceClassification

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=900, min_frequency=2, special_tokens=specials, show_progress=False)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
        model_max_length=32768,
    )
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(folder)
    dims = {"vocab_size": bpe.get_vocab_size(), **shape}
    config = Qwen3Config(
        **dims, max_position_embeddings=4096, num_labels=1, tie_word_embeddings=False, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(2)
    model = Qwen3ForSequenceClassification(config).to(torch.bfloat16)
    model.save_pretrained(folder)


def build(root: Path, shape: str = "tiny", seed: int = 0, real_everywhere: bool = False) -> dict:
    """The rehearsal cache for the pinned commits of the improved profile (a superset of the study's downloads)."""
    from commands.compose import compose
    from stages.core.prompt_files import url_cache

    hf = root / "hf"
    improved = P.validate(compose("improved"))
    pins = {repo: rev for _, repo, rev in improved.hub_references()}
    dims = SHAPES[shape]
    texts = dataset(
        snapshot_dir(hf, improved.download.dataset, pins[improved.download.dataset], "dataset"), seed, real_everywhere
    )
    overrides = {
        "base.pickle_sha256": opt_lookalike(
            snapshot_dir(hf, "facebook/opt-350m", pins["facebook/opt-350m"]), texts, dims["opt"]
        )
    }
    builders = {"deberta": deberta_lookalike, "qwen": qwen_lookalike}
    for judge in specs(improved):  # each hub judge's kind names its look-alike (stages/judges/)
        lookalike = kinds()[judge.kind].lookalike(judge)
        if lookalike and judge.path in pins:
            # the DeBERTa one is pickle-only with no digest in the profiles, as the real repository: `commands.pin
            # --fetch` must pin it
            builders[lookalike](snapshot_dir(hf, judge.path, pins[judge.path]), texts, dims[lookalike])
    prompts = {}
    for name in ("harmful", "helpful"):
        real = SHARED / "paper-eval" / f"{name}_prompts.json"
        digest = getattr(improved.prompts, f"{name}_sha256")
        if real.exists() and sha256_file(real) == digest:
            target = url_cache(hf) / digest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real, target)
            prompts[name] = "the study's file (URL cache)"
        else:  # without the shared copy: a local look-alike file, which the rehearsal must name in its overrides
            path = root / f"{name}_prompts.json"
            rows = synthetic.generate(
                "harmless-base" if name == "harmful" else "helpful-base", "test", 50, seed, 0, 0.3
            )[0]
            path.write_text(json.dumps([r["chosen"].rsplit(hh.ASSISTANT, 1)[0].strip() for r in rows]))
            overrides |= {f"prompts.{name}_file": str(path), f"prompts.{name}_sha256": sha256_file(path)}
            prompts[name] = f"look-alike {path}"
    manifest = {
        "env": {"HF_HOME": str(hf), "HF_HUB_OFFLINE": "1"},
        "overrides": overrides,
        "shape": shape,
        "commits": pins,
        "prompts": prompts,
    }
    write_json(root / "rehearsal.json", manifest)
    return manifest


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="model sizes (real: the GPU check)")
    args = ap.parse_args(argv)
    manifest = build(args.folder, args.shape)
    env = " ".join(f"{k}={v}" for k, v in manifest["env"].items())
    sets = " ".join(f"-S {k}={v}" for k, v in manifest["overrides"].items())
    print(f"rehearse: wrote {args.folder / 'hf'} (look-alikes at the pinned commits; {args.shape} shapes)")
    print(f"pin the judge's pickle: {env} python -m commands.pin --fetch --profile study --trust-cached-pickle")
    print(f"run: {env} dvc exp run -S profile=study {sets} <scale overrides, tests/test_rehearsal.py>")


if __name__ == "__main__":
    main()
