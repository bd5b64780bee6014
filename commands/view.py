"""One self-contained page over every experiment of the repository: the experiment table with intervals, the swept
params' curves, the claims per group of seeds, training curves, every reply and the provenance of each run.

    python -m commands.view -o view.html                      # the baseline commit and every finished experiment
    python -m commands.view -o view.html -S dpo.beta=0.1,0.2  # only runs whose dpo.beta is one of these
    python -m commands.view -o view.html -S seed=1 -S profile=cpu

Experiments come from `dvc exp show --json` (as commands.gather reads them); each run's metrics, replies, rewards and
training curves are read at its revision with DVC's API (from the DVC cache, or the remote). The page is the one the
`report` stage writes for a single run (stages/core/page.py): it opens from file://, offline, with no request.
"""

from __future__ import annotations

import argparse
import json

import yaml

from commands.gather import experiments, labels, read_calibration, read_outcomes, read_refusals, summarise
from stages.core import page
from stages.core.io import StageError, fail_cleanly, write_text


def reader(rev: str):
    """read(path) -> text at `rev`, or None where the run has no such file."""
    import dvc.api

    def read(path: str) -> str | None:
        try:
            return dvc.api.read(path, rev=rev)
        except Exception:  # FileNotFoundError, PathMissingError, ...: the run has no such file
            return None

    return read


def parse_filters(overrides: list[str]) -> dict[str, list]:
    """`-S key=v1,v2` as {key: [v1, v2]} (values read as YAML, as DVC reads them)."""
    filters: dict[str, list] = {}
    for item in overrides:
        key, sep, values = item.partition("=")
        if not sep or not key:
            raise StageError(f"-S {item}: expected KEY=VALUE[,VALUE...]")
        filters[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return filters


def keep(params: dict, filters: dict[str, list]) -> bool:
    return all(params.get(key) in values for key, values in filters.items())


def outputs(read) -> dict[str, str]:
    lock = yaml.safe_load(read("dvc.lock") or "{}") or {}
    return {o["path"]: o.get("md5", "") for stage in (lock.get("stages") or {}).values() for o in stage.get("outs", [])}


def claims_by_group(runs: list[dict], resamples: int) -> list[dict]:
    """The study's claims (commands.gather) over each group of runs that differ only in seed."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        rest = {k: v for k, v in r["params"].items() if k != "seed"}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(r)
    swept = page.differing([page.Run(r["name"], r["rev"], r["params"], {}, {}) for r in runs])
    out = []
    for members in groups.values():
        if len({m["params"].get("seed") for m in members}) < len(members):
            continue  # two runs of one seed: not a sample of seeds (commands.gather refuses them too)
        fixed = ", ".join(f"{k}={members[0]['params'].get(k)}" for k in swept if k != "seed")
        seeds = ", ".join(str(m["params"].get("seed")) for m in members)
        name = f"{fixed + '; ' if fixed else ''}seeds {seeds}"
        try:
            outcomes = [read_outcomes(m["rev"]) for m in members]
        except StageError as exc:  # a run's outcomes are in no cache or remote here
            print(f"view: no claims for {name}: {exc}")
            continue
        refusals = [read_refusals(m["rev"]) for m in members]
        calibrations = [read_calibration(m["rev"]) for m in members]
        summary = summarise(outcomes, resamples, 0, labels(members[0]["params"]), refusals, calibrations)
        for judge, res in summary["judges"].items():
            out += [
                {"group": name, "judge": judge, "claim": c["claim"], "status": c["status"], "counts": c["counts"]}
                for c in res["claims"]
            ]
    return out


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="view.html", help="the page to write (default: view.html)")
    ap.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE[,VALUE]",
        help="keep only the runs whose param KEY is one of these values (the keys sweep and gather take)",
    )
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the claims (commands.gather)")
    args = ap.parse_args(argv)
    filters = parse_filters(args.overrides)
    baseline, finished = experiments()
    chosen = [r | {"baseline": r is baseline} for r in [baseline, *finished] if keep(r["params"], filters)]
    if not chosen:
        raise StageError("no run has the params given by -S (dvc exp show lists them)")
    runs = []
    for r in chosen:
        read = reader(r["rev"])
        try:
            runs.append(page.read_run(read, r["name"], r["rev"], r["params"], outputs(read), r["baseline"]))
        except FileNotFoundError as exc:
            raise StageError(f"{exc} at {r['rev'][:12]}: dvc pull, or dvc exp pull <remote> {r['name']}") from None
    missing = [r.name for r in runs if not any(r.scores.values())]
    if missing:
        print(f"view: no replies for {', '.join(missing)} (not in the DVC cache: dvc pull, or dvc exp pull)")
    calibration = reader(baseline["rev"])("metrics/calibration.json")
    accuracy = page.judge_accuracy(json.loads(calibration)) if calibration else {}
    claims = claims_by_group(chosen, args.resamples)
    html = page.render(runs, f"{len(runs)} runs of {baseline['name']}", claims, accuracy)
    write_text(args.output, html)
    print(f"view: {len(runs)} runs -> {args.output} ({len(html.encode()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
