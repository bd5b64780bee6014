"""Write params.yaml from conf/ (the cpu profile), keeping conf/config.yaml's comments.

    python -m commands.compose           # rewrite params.yaml
    python -m commands.compose --check   # exit 1 if params.yaml differs from conf/ composed with the cpu profile

`dvc exp run` composes params.yaml itself (Hydra) before each experiment; `dvc repro` reads the committed file,
which must therefore equal the composed default. Hydra composition drops comments; this keeps them.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

CONF = Path("conf")
PARAMS = Path("params.yaml")
HEADER = ("# Composed from conf/config.yaml with the cpu profile: edit conf/, then run `python -m commands.compose`.\n"
          "# The study's configurations: `dvc exp run -S profile=study` or `-S profile=improved` (see README).\n")


def compose(profile: str = "cpu", overrides: tuple[str, ...] = ()) -> dict:
    """conf/ composed as `dvc exp run -S profile=<profile> -S <override> ...` composes it (Hydra)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF.resolve()), version_base=None):
        cfg = hydra_compose("config", overrides=[f"profile={profile}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


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
    body = text[text.index("\nprofile: cpu") + 1:]
    seed_line = body.index("\nseed:") + 1
    after_seed = body.index("\n", seed_line) + 1  # the table of models follows the seed, as in the composition
    return resolve_interpolations(HEADER + body[:after_seed] + models_block() + body[after_seed:], compose("cpu"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = commented_default()
    if yaml.safe_load(text) != compose("cpu"):
        print("error: conf/config.yaml body differs from its cpu composition (does conf/profile/cpu.yaml change values?)",
              file=sys.stderr)
        return 1
    if args.check:
        current = yaml.safe_load(PARAMS.read_text()) if PARAMS.exists() else None
        if current != yaml.safe_load(text):
            print("error: params.yaml is not conf/ composed with the cpu profile; run python -m commands.compose",
                  file=sys.stderr)
            return 1
        return 0
    PARAMS.write_text(text, encoding="utf-8")
    print("compose: wrote params.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
