"""Look up what to pin for hub ids: the commit a revision resolves to, and, for a model published only as
`pytorch_model.bin`, that file's sha256 (for `pickle_sha256`). Needs the hub; not a DVC stage.

    python -m commands.pin facebook/opt-350m OpenAssistant/reward-model-deberta-v3-large-v2
    python -m commands.pin --dataset Anthropic/hh-rlhf
    python -m commands.pin --params          # every hub download the current params.yaml makes, pinned or not
    python -m commands.pin --fetch-commands --profile improved   # the `hf download` commands that fill a cache
    python -m commands.pin --fetch --profile improved            # fill it (on a machine with a network)
    python -m commands.pin --fetch --profile study -S refusal=xstest   # the same for a changed composition

Prints one YAML-style line per value, e.g. `facebook/opt-350m: {revision: 08ab08cc..., pickle_sha256: a5223ae6...}`.
`--fetch` downloads, at the pinned commits, exactly the files the stages read (and the prompt files pinned by URL and
sha256 into $HF_HOME/url-cache), so a GPU node sharing HF_HOME runs with HF_HUB_OFFLINE=1.

A model whose pinned commit serves no safetensors (the study's judge, OpenAssistant/reward-model-deberta-v3-large-v2
at c355404, has only pytorch_model.bin) and whose `pickle_sha256` is null is trusted here, once, on the user's word:
`--fetch` downloads its pickle at the pinned commit, checks the file against the digest the hub publishes for it
(online), and writes that sha256 into every conf/profile/*.yaml entry of that model and commit. The digest is then a
tracked param: the stages read the pickle (weights-only) only while its bytes match, and `git diff` shows the pin.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from stages.core import params as P
from stages.core.io import StageError, fail_cleanly, first_line, sha256_file, write_text
from stages.core.modeling import PICKLE_WEIGHTS

PROFILES = Path("conf/profile")


def lookup(repo: str, revision: str | None = None, dataset: bool = False, api=None) -> dict:
    """{revision, and for a model without safetensors, pickle_sha256} for `repo` at `revision` (None = main)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        if dataset:
            return {"revision": api.dataset_info(repo, revision=revision).sha}
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except Exception as exc:  # offline, unknown repo, unknown revision
        raise StageError(f"{repo}: cannot look it up on the hub ({type(exc).__name__}: {first_line(exc)})") from None
    out = {"revision": info.sha}
    files = {s.rfilename: s for s in info.siblings or []}
    if not any(name.endswith(".safetensors") for name in files):
        lfs = getattr(files.get(PICKLE_WEIGHTS), "lfs", None)
        digest = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        out["pickle_sha256"] = digest  # None: no single pytorch_model.bin, the loader will refuse it
    return out


def flow(values: dict) -> str:
    return "{" + ", ".join(f"{k}: {'null' if v is None else v}" for k, v in values.items()) + "}"


def params_references(params: P.Params | None = None) -> list[tuple[str, str, str | None, bool]]:
    params = params or P.load()
    return [(key, repo, rev, key.startswith(("download.", "xstest."))) for key, repo, rev in params.hub_references()]


def downloads(params: P.Params) -> list[tuple[str, str | None, list[str], str]]:
    """(repo, commit, file patterns, repo type) of every hub download `params` makes: what the stages read."""
    from stages.core.hh import dataset_files
    from stages.core.modeling import hub_files
    from stages.judges import kinds, specs

    out = []
    for key, repo, rev, dataset in params_references(params):
        if key == "download.revision":
            out.append((repo, rev, dataset_files(params.download), "dataset"))
        elif key == "xstest.revision":
            out.append((repo, rev, [params.xstest.dataset_file], "dataset"))
        elif key == "xstest.labelled.revision":
            labelled = params.xstest.labelled
            out.append((repo, rev, [labelled.refusal_file, labelled.harm_file], "dataset"))
        elif key.startswith("base."):
            out.append((repo, rev, hub_files(params.base.pickle_sha256), "model"))
        else:  # a judge: its kind's class says which files it reads
            keys = [k for k, _ in params.score.entries()]
            spec = specs(params)[keys.index(key.removesuffix(".revision"))]
            out.append((repo, rev, kinds()[spec.kind].hub_files(spec), "model"))
    return out


def pin_pickle_digest(text: str, repo: str, revision: str, digest: str) -> str:
    """`text` (a profile's YAML) with `pickle_sha256: null` set to `digest` in each entry naming `repo` (as `path:` or
    `pretrained:`) at `revision`; comments and layout kept. An entry is the lines indented alike after the name."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        named = re.match(rf"^(\s*)(- )?(path|pretrained): {re.escape(repo)}\s*(#.*)?$", line)
        if not named:
            continue
        indent = len(named.group(1)) + (2 if named.group(2) else 0)
        block = []
        for j in range(i + 1, len(lines)):
            stripped = lines[j].lstrip()
            if stripped and (len(lines[j]) - len(stripped) < indent or stripped.startswith("- ")):
                break
            block.append(j)
        if not any(re.match(rf"^\s*revision: {revision}\b", lines[j]) for j in block):
            continue
        for j in block:
            lines[j] = re.sub(r"^(\s*pickle_sha256: )null\b", rf"\g<1>{digest}", lines[j])
    return "\n".join(lines)


def trust_pickle(repo: str, revision: str, folder: Path, api=None, trust_cached: bool = False) -> str:
    """The sha256 of `repo`'s pickle checkpoint at `revision` (in `folder`), to be pinned: checked against the digest
    the hub publishes for that file when the hub is reachable. Offline nothing can check it, so a cached pickle is
    pinned only when the user says so (`trust_cached`, the --trust-cached-pickle flag): the pin is the trust decision,
    and a shared cache may hold a file nobody checked. The digest is printed either way."""
    from huggingface_hub import constants

    digest = sha256_file(folder / PICKLE_WEIGHTS)
    if constants.HF_HUB_OFFLINE:
        if not trust_cached:
            raise StageError(
                f"{folder / PICKLE_WEIGHTS}: HF_HUB_OFFLINE=1, so the hub's published digest cannot be checked; "
                f"its sha256 is {digest}: compare it with the file page of {repo} at {revision}, then run again "
                "with --trust-cached-pickle to pin it"
            )
        print(f"{repo}: pinning the cached {PICKLE_WEIGHTS} as told (--trust-cached-pickle, offline): sha256 {digest}")
        return digest
    published = lookup(repo, revision, api=api).get("pickle_sha256")
    if published != digest:
        raise StageError(
            f"{folder / PICKLE_WEIGHTS}: sha256 {digest} is not the {published} the hub publishes for "
            f"{repo} at {revision}; not trusting it (delete the file and fetch again)"
        )
    print(f"{repo}: {PICKLE_WEIGHTS} matches the hub's published sha256 {digest}: pinning it")
    return digest


def write_pins(pins: dict[tuple[str, str], str], profiles: Path = PROFILES) -> list[Path]:
    """Write each (repo, revision) -> digest into the profiles that name that model with no digest."""
    changed = []
    for file in sorted(profiles.glob("*.yaml")):
        text = file.read_text(encoding="utf-8")
        new = text
        for (repo, revision), digest in pins.items():
            new = pin_pickle_digest(new, repo, revision, digest)
        if new != text:
            yaml.safe_load(new)  # still valid YAML
            write_text(file, new)
            changed.append(file)
    return changed


def fetch(params: P.Params, trust_cached: bool = False) -> None:
    """Fill the Hugging Face cache (and the URL cache) with what these params read; pin the digest of any pickle-only
    model that params do not yet trust (written into conf/profile/; see the module's docstring)."""
    from stages.core import hub
    from stages.core.prompt_files import fetch_url

    pins = {}
    for repo, rev, patterns, kind in downloads(params):
        folder = hub.snapshot(repo, rev, patterns, kind)
        if kind == "model" and PICKLE_WEIGHTS not in patterns and not any(folder.glob("*.safetensors")):
            folder = hub.snapshot(repo, rev, patterns + [PICKLE_WEIGHTS], kind)
            if (folder / PICKLE_WEIGHTS).is_file():
                pins[(repo, folder.name)] = trust_pickle(repo, folder.name, folder, trust_cached=trust_cached)
        print(f"{repo} at {rev}: {folder}")
    for path in write_pins(pins):
        print(
            f"{path}: pickle_sha256 written for {', '.join(repo for repo, _ in pins)} (commit it; "
            "docs/study-on-gpu.md: The "
            "study's judge)"
        )
    files = [
        (getattr(params.prompts, f"{n}_file"), getattr(params.prompts, f"{n}_sha256")) for n in ("harmful", "helpful")
    ]
    if params.xstest.source == "file":
        files.append((params.xstest.file, params.xstest.sha256))
    for file, digest in files:
        if file and file.startswith(("http://", "https://")):
            fetch_url(file, digest)  # downloads, checks the digest, caches
            print(f"{file}: cached by sha256 {digest}")


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repos", nargs="*", help="hub ids (models, or data sets with --dataset)")
    ap.add_argument("--dataset", action="store_true", help="the ids are data sets")
    ap.add_argument("--revision", default=None, help="branch, tag or commit to resolve (default: main)")
    ap.add_argument("--params", action="store_true", help="every hub download in params.yaml, at its revision")
    ap.add_argument("--profile", help="a profile of conf/ (study, improved) instead of params.yaml")
    ap.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="with --fetch: a change to the composition, as `dvc exp run -S` takes it (-S refusal=xstest)",
    )
    ap.add_argument("--fetch-commands", action="store_true", help="print the hf download commands")
    ap.add_argument("--fetch", action="store_true", help="download what the stages read into the caches")
    ap.add_argument(
        "--trust-cached-pickle",
        action="store_true",
        help="offline (HF_HUB_OFFLINE=1): pin the digest of a pickle already in the cache (the hub cannot confirm it)",
    )
    args = ap.parse_args(argv)
    if args.fetch or args.fetch_commands:
        from commands.compose import composed_nested
        from stages.core import hub

        chosen = ([f"profile={args.profile}"] if args.profile else []) + args.set
        params = P.validate(composed_nested(chosen)) if chosen else P.load()
        if args.fetch:
            fetch(params, trust_cached=args.trust_cached_pickle)
        else:
            for repo, rev, patterns, kind in downloads(params):
                print(hub.fetch_command(repo, rev, patterns, kind))
        return
    if args.params:
        refs = params_references()
        if not refs:
            print("params.yaml: no hub downloads (local or synthetic data, scratch model, local judges)")
        for key, repo, rev, dataset in refs:
            found = lookup(repo, rev, dataset)
            note = "" if rev == found["revision"] else f"  # params.yaml has {rev}"
            print(f"{key}: {repo}: {flow(found)}{note}")
        return
    if not args.repos:
        ap.error("give hub ids, or --params")
    for repo in args.repos:
        print(f"{repo}: {flow(lookup(repo, args.revision, args.dataset))}")


if __name__ == "__main__":
    main()
