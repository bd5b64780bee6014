"""Write params.yaml from conf/ (the cpu profile), keeping conf/config.yaml's comments, and dvc.yaml's per-model
artifacts and plots from the table of models.

    python -m commands.compose           # rewrite params.yaml and dvc.yaml's per-model sections
    python -m commands.compose --check   # exit 1 if either differs from what conf/ gives

`dvc exp run` composes params.yaml itself (Hydra) before each experiment; `dvc repro` reads the committed file,
which must therefore equal the composed default. Hydra composition drops comments; this keeps them.

DVC 3 has `foreach` for stages but not for `artifacts:` and `plots:`, so their per-model entries are written here,
between marker comments, from every table of conf/models/ (the widest: a model run only with `-S models=all` is a
registered artifact with plotted curves too): a model added to the table is added there by this command, and a test
fails while dvc.yaml lags behind.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

CONF = Path("conf")
PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")
BEGIN = "  # >>> per model, from conf/models/: written by `python -m commands.compose`, not by hand\n"
END = "  # <<< per model\n"
STUDY = "arXiv 2509.09055"
# The training curves plotted per model: (title, DVCLive metrics). A model is drawn in a plot when its method logs
# every metric of it (its module's CURVES, beyond the loss and learning rate that every method logs).
PLOTS = [
    ("Training loss", ["loss"]),
    ("Learning rate", ["learning_rate"]),
    ("Reward margins (train)", ["rewards/margins"]),
    ("Rewards chosen/rejected (train)", ["rewards/chosen", "rewards/rejected"]),
    ("Held-out reward accuracy", ["eval/rewards/accuracies"]),
    ("Held-out reward margins", ["eval/rewards/margins"]),
]
HEADER = (
    "# Composed from conf/config.yaml with the cpu profile: edit conf/, then run `python -m commands.compose`.\n"
    "# The study's configurations: `dvc exp run -S profile=study` or `-S profile=improved` (see README).\n"
)


def compose(profile: str = "cpu", overrides: tuple[str, ...] = ()) -> dict:
    """conf/ composed as `dvc exp run -S profile=<profile> -S <override> ...` composes it (Hydra)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF.resolve()), version_base=None):
        cfg = hydra_compose("config", overrides=[f"profile={profile}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def flat(d: dict, prefix: str = "") -> dict:
    """Nested params flattened to dotted keys (`dpo.beta`), as `dvc exp show` and `dvc params diff` name them."""
    out = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def composed_nested(overrides: list[str]) -> dict:
    """The params.yaml `dvc exp run -S <override> ...` composes (Hydra, from conf/); a bad override is one line naming
    the overrides."""
    from stages.core.io import StageError

    def key(override: str) -> str:
        return override.partition("=")[0].lstrip("+~")

    profile = [o for o in overrides if key(o) == "profile"]
    rest = tuple(o for o in overrides if key(o) != "profile")
    try:
        return compose(profile[-1].partition("=")[2] if profile else "cpu", rest)
    except Exception as exc:
        raise StageError(f"-S {' -S '.join(overrides)}: {str(exc).strip().splitlines()[0]}") from None


def composed(overrides: list[str]) -> dict:
    """composed_nested, flattened as `dvc exp show` shows params (`dpo.beta`)."""
    return flat(composed_nested(overrides))


def models_block(option: str = "study") -> str:
    """conf/models/<option>.yaml as params.yaml's `models:` section, its comments kept."""
    lines = (CONF / "models" / f"{option}.yaml").read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    entries = ["  " + line for line in lines if line.strip() and not line.startswith("#")]
    return "\n".join(comments + ["models:"] + entries) + "\n"


INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")


def resolve_interpolations(text: str, composed: dict) -> str:
    """`key: ${sft.learning_rate}` (an OmegaConf interpolation: one value shared by two sections, resolved by Hydra in
    every profile) written with the cpu profile's value, its comment kept, for `dvc repro`'s params.yaml."""

    def value(match: re.Match) -> str:
        node = composed
        for part in match.group(1).split("."):
            node = node[part]
        return yaml.safe_dump(node, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()

    return INTERPOLATION.sub(value, text)


def commented_default() -> str:
    text = (CONF / "config.yaml").read_text(encoding="utf-8")
    body = text[text.index("\nprofile: cpu") + 1 :]
    seed_line = body.index("\nseed:") + 1
    after_seed = body.index("\n", seed_line) + 1  # the table of models follows the seed, as in the composition
    return resolve_interpolations(HEADER + body[:after_seed] + models_block() + body[after_seed:], compose("cpu"))


def every_model() -> dict:
    """The union of the tables of models in conf/models/ (all.yaml's order first), validated."""
    from stages.core import params as P

    tables = sorted(CONF.glob("models/*.yaml"), key=lambda f: (f.stem != "all", f.stem))
    merged: dict = {}
    for table in tables:
        for name, entry in (yaml.safe_load(table.read_text(encoding="utf-8")) or {}).items():
            merged.setdefault(name, P.ModelEntry.model_validate(entry))
    return merged


def artifact_name(model: str) -> str:
    return model.replace("_", "-")  # DVC's artifact names allow no underscore


def per_model_sections() -> tuple[str, str]:
    """dvc.yaml's generated `artifacts:` entries (each model's release folder) and `plots:` entries (its curves)."""
    from stages import methods

    def flow(value) -> str:  # one YAML value on one line ([a, b], {k: v}, a string quoted only where YAML needs it)
        return (
            yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
            .strip()
            .removesuffix("...")
            .strip()
        )

    models = every_model()
    artifacts = []
    for name, entry in models.items():
        how, tags = methods.how_made(name, models)
        start = entry.start.removeprefix("models/") if entry.start.startswith("models/") else "none"
        meta = {"method": entry.method, "start": start, "dataset": "Anthropic/hh-rlhf", "study": STUDY}
        artifacts += [
            f"  {artifact_name(name)}:",
            f"    path: models/release/{name}",
            "    type: model",
            f"    desc: {flow(how[0].upper() + how[1:])}",
            f"    labels: {flow(list(dict.fromkeys([*(tags or [name]), 'opt', 'full-weights'])))}",
            f"    meta: {flow(meta)}",
        ]
    plots = []
    logged = {name: {"loss", "learning_rate", *methods.load(entry.method).curves} for name, entry in models.items()}
    for title, metrics in PLOTS:
        lines = [
            f"        metrics/training/{name}/live/plots/metrics/{m}.tsv: {m.split('/')[-1]}"
            for name in models
            if set(metrics) <= logged[name]
            for m in metrics
        ]
        if lines:
            plots += [f"  - {title}:", "      x: step", "      y:", *lines]
    return "".join(line + "\n" for line in artifacts), "".join(line + "\n" for line in plots)


def dvc_yaml_text(current: str) -> str:
    """dvc.yaml with its two generated blocks (in `artifacts:`, then in `plots:`) written anew."""
    blocks = per_model_sections()
    parts = current.split(BEGIN)
    if len(parts) != 3 or any(END not in part for part in parts[1:]):
        raise SystemExit(f"error: {DVC_YAML}: expected two blocks between '{BEGIN.strip()}' and '{END.strip()}'")
    return parts[0] + "".join(BEGIN + block + END + part.split(END, 1)[1] for block, part in zip(blocks, parts[1:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = commented_default()
    if yaml.safe_load(text) != compose("cpu"):
        print(
            "error: conf/config.yaml body differs from its cpu composition (does conf/profile/cpu.yaml change values?)",
            file=sys.stderr,
        )
        return 1
    dvc_yaml = DVC_YAML.read_text(encoding="utf-8")
    if args.check:
        current = yaml.safe_load(PARAMS.read_text()) if PARAMS.exists() else None
        if current != yaml.safe_load(text):
            print(
                "error: params.yaml is not conf/ composed with the cpu profile; run python -m commands.compose",
                file=sys.stderr,
            )
            return 1
        if dvc_yaml != dvc_yaml_text(dvc_yaml):
            print(
                "error: dvc.yaml's per-model artifacts or plots differ from conf/models/; run python -m "
                "commands.compose",
                file=sys.stderr,
            )
            return 1
        return 0
    PARAMS.write_text(text, encoding="utf-8")
    DVC_YAML.write_text(dvc_yaml_text(dvc_yaml), encoding="utf-8")
    print("compose: wrote params.yaml and dvc.yaml's per-model artifacts and plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
