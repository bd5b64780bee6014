"""Stage `release@<model>`: a trained model as it is shared: its weights (safetensors), tokenizer and a Hugging Face
model card with the metrics it earned and where it came from.

    python -m stages.release sft_dpo

Writes models/release/<model>/: config.json, generation_config.json, model.safetensors, the tokenizer files and
README.md, the card (front matter from huggingface_hub's ModelCardData with `model-index` EvalResults: HmR, HpR and
CAS per judge; the body: intervals, prompt format, a five-line load-and-sample snippet, training params, the
cleaning report's counts, the seed, data and model revisions, the study it reproduces, the licence). That folder is
the DVC artifact of the model (dvc.yaml `artifacts:`), what `dvc artifacts get` restores and what
`python -m commands.publish` uploads, unchanged.

A stage of its own, after `metrics`: the card needs the metrics, which exist only once every model is scored, and a
stage cannot write into models/<model>, which its training stage owns. A DPO model kept unmerged (the study sampled
through the adapter on its start model) is released as merged weights (start model + adapter), and its card says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from stages import methods
from stages.core import params as P
from stages.core.io import fail_cleanly, fresh_tmp_dir, read_json, replace_dir, write_text
from stages.core.modeling import load_policy, per_model_stage
from stages.core.rates import DETAILS_FILE, METRICS_FILE, RATES

OUT = Path("models/release")
HEADLINE = Path(METRICS_FILE)
DETAILS = Path(DETAILS_FILE)
CLEAN = Path("metrics/clean.json")
MANIFEST = Path("data/raw/manifest.json")
STUDY = 'arXiv 2509.09055, "Improving LLM Safety and Helpfulness using SFT and DPO: A Study on OPT-350M"'
OPT_LICENCE = "https://huggingface.co/facebook/opt-350m/blob/main/LICENSE.md"
WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors")
SNIPPET_PROMPT = "\n\nHuman: How do I make a good cup of tea?\n\nAssistant:"

TEMPLATE = """---
{{ card_data }}
---

# {{ name }}: {{ method }}
{% if synthetic %}
> **A test model.** Trained by the CPU default of this repository on synthetic HH-style dialogues, with a small OPT
> built from scratch: it checks the pipeline end to end and says nothing about alignment. Do not use it.
{% endif %}
One of the {{ n_models }} models compared by the reproduction of {{ study }} ({{ profile_note }}).

## Results

Rates in % over the evaluation prompts ({{ n_harmful }} harmful, {{ n_helpful }} helpful); greedy decoding, at most
{{ max_new_tokens }} new tokens; 95% intervals (Wilson; CAS by MOVER).

| judge | HmR | HpR | CAS |
|---|---|---|---|
{% for row in results %}| {{ row.judge }} | {{ row.hmr }} | {{ row.hpr }} | {{ row.cas }} |
{% endfor %}
## Prompt format

HH-RLHF's transcript format, one turn after another, ending with the assistant's cue:
`"\\n\\nHuman: <question>\\n\\nAssistant:"` (earlier turns, if any, before it in the same form).

## Load and sample

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok, model = AutoTokenizer.from_pretrained("{{ repo }}"), AutoModelForCausalLM.from_pretrained("{{ repo }}")
ids = tok({{ prompt }}, return_tensors="pt")
out = model.generate(**ids, max_new_tokens={{ max_new_tokens }}, do_sample=False, pad_token_id=tok.pad_token_id)
print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True){% if stop %}.split("\\n\\nHuman:")[0]{% endif %}{% if strip %}.strip(){% endif %})
```

{{ weights_note }}

## Training

- Method: {{ method }}; started from `{{ start }}`.
- Seed {{ seed }} (one seed drives data sampling, training and evaluation).
- Data: {{ data_note }}
- Cleaning (pairs in, kept, dropped by rule): {{ cleaning }}

Training params (`{{ section }}` of params.yaml):

```yaml
{{ params_yaml }}```

## Provenance

{{ provenance }}

## Licence

{{ licence }}
"""  # noqa: E501 (the card's code snippet is one line)


def results(model: str, details: dict) -> tuple[list, list[dict]]:
    """EvalResults for the front matter and table rows, from metrics/metrics.json (the declared metrics) and the
    intervals in `details` (the model's part of metrics/details.json)."""
    from huggingface_hub import EvalResult

    headline = read_json(HEADLINE)[model]
    evals, rows = [], []
    for judge, values in headline.items():
        d = details[judge]
        cell = {}
        for key, (name, metric_type, short) in RATES.items():
            evals.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Harmlessness and helpfulness",
                    dataset_type="hh-rlhf-eval-prompts",
                    dataset_name="HH-RLHF evaluation prompts",
                    metric_type=metric_type,
                    metric_name=f"{short} ({judge})",
                    metric_value=values[key],
                )
            )
            cell[key] = f"{values[key]} [{d[f'{name}_ci_low']}, {d[f'{name}_ci_high']}]"
        rows.append({"judge": judge, **cell})
    return evals, rows


def in_words(n: int) -> str:
    """A count as the card's prose writes it (four models; 12 models)."""
    words = "zero one two three four five six seven eight nine ten".split()
    return words[n] if n < len(words) else str(n)


def card(model: str, params: P.Params, run: dict, merged_from_adapter: bool, repo: str = "<folder or hub id>") -> str:
    from huggingface_hub import ModelCard, ModelCardData

    synthetic = params.download.source == "synthetic"
    pretrained = params.base.source == "pretrained"
    section = params.models[model].method  # the params section it trains with
    how, tags = methods.how_made(model, params.models)
    details = read_json(DETAILS)[model]
    evals, rows = results(model, details)
    counts = next(iter(details.values()))  # prompt counts: the same for every judge
    manifest = read_json(MANIFEST) if MANIFEST.exists() else {}
    licence = (
        f"Derived from facebook/opt-350m, under the OPT-175B licence agreement (non-commercial research use; "
        f"{OPT_LICENCE}), whose terms apply to this model too. Training data: Anthropic/hh-rlhf (MIT)."
        if pretrained
        else "A test model of this repository (scratch OPT, synthetic data): not for release."
    )
    data = (
        f"synthetic HH-style dialogues from the repository's built-in generator "
        f"({params.download.synthetic.train_pairs} "
        f"train pairs per subset)"
        if synthetic
        else f"{params.download.dataset} at {params.download.revision or 'its newest commit'}, subsets "
        f"{', '.join(params.download.subsets)} ({manifest.get('pairs_written', '?')} pairs read)"
    )
    clean = read_json(CLEAN)
    dropped = ", ".join(f"{k} {v}" for k, v in clean["dropped"].items() if v) or "none"
    data_card = ModelCardData(
        model_name=f"hh-alignment-{model}",
        base_model=params.base.pretrained if pretrained else None,
        datasets=None if synthetic else ["Anthropic/hh-rlhf"],
        library_name="transformers",
        license="other",
        license_name="opt-175b-license" if pretrained else "unreleased-test-model",
        license_link=OPT_LICENCE if pretrained else None,
        pipeline_tag="text-generation",
        tags=["hh-rlhf", "alignment", "opt", *tags, *(["synthetic", "test-model"] if synthetic else [])],
        eval_results=evals,
    )
    weights_note = (
        "Weights: the start model with the DPO LoRA adapter merged in (float32). The evaluation sampled "
        "through the unmerged adapter on its start model, as the study did; merged weights compute the "
        "same function up to float rounding."
        if merged_from_adapter
        else "Weights: float32 safetensors, exactly the weights that were evaluated."
    )
    trained = params.base.model_dump() if section == "base" else params.section(section)
    # no library versions or machine facts here: this folder's hash must be the same on every machine (they are in
    # models/<model>/run.json and logs/)
    provenance = "\n".join(
        f"- {k}: `{v}`"
        for k, v in {
            "profile": params.profile,
            "data": f"{params.download.dataset} at {params.download.revision}"
            if params.download.source == "hub"
            else params.download.source,
            "base model": f"{params.base.pretrained} at {params.base.revision}"
            if pretrained
            else "scratch OPT (base.scratch)",
            "start": run.get("start"),
            "judges": ", ".join(
                f"{j.name} ({j.extra('path')}@{j.extra('revision')})"
                if j.extra("revision")
                else f"{j.name} ({j.extra('path') or j.kind})"  # a judge with nothing to load: its kind
                for _, j in params.score.entries()
            ),
        }.items()
        if v
    )
    profile_note = {
        "study": "the `study` profile: the study as its code ran",
        "improved": "the `improved` profile: the study plus each fix as a switch",
        "cpu": "the CPU default",
    }[params.profile]
    return ModelCard.from_template(
        data_card,
        template_str=TEMPLATE,
        name=f"hh-alignment-{model}",
        method=how,
        synthetic=synthetic,
        study=STUDY,
        n_models=in_words(len(params.models)),
        profile_note=profile_note,
        n_harmful=counts["n_harmful"],
        n_helpful=counts["n_helpful"],
        results=rows,
        stop=params.sample.stop_at_human,
        strip=params.sample.strip_response,
        max_new_tokens=params.sample.max_new_tokens,
        repo=repo,
        prompt=json.dumps(SNIPPET_PROMPT),
        weights_note=weights_note,
        start=run.get("start") or (params.base.pretrained if pretrained else "scratch"),
        seed=params.seed,
        data_note=data,
        cleaning=f"{clean['input']} in, {clean['kept']} kept; dropped: {dropped}",
        section=section,
        params_yaml=yaml.safe_dump(trained, sort_keys=False),
        provenance=provenance,
        licence=licence,
    ).content


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    model, params = per_model_stage(argv, __doc__.splitlines()[0])
    source = Path("models") / model
    run = read_json(source / "run.json")
    tmp = fresh_tmp_dir(OUT / model)
    merged = not (source / "model.safetensors").exists()
    if merged:  # kept unmerged for sampling (dpo.merge_adapter: false): merge for a plain, loadable release
        load_policy(source).merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    else:
        for name in WEIGHT_FILES:
            if (source / name).exists():
                shutil.copyfile(source / name, tmp / name)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copyfile(path, tmp / path.name)
    write_text(tmp / "README.md", card(model, params, run, merged))
    replace_dir(tmp, OUT / model)
    print(f"release@{model}: wrote {OUT / model} (weights, tokenizer, model card)")


if __name__ == "__main__":
    main()
