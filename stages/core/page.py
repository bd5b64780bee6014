"""One self-contained HTML page over one or more runs: the experiment table, swept-param curves, claims, training
curves, a reply browser and provenance. Written by the `report` stage (metrics/report.html, this run) and by
`python -m commands.view` (every experiment of the repository); both hand `render` a list of `Run`s.

Self-contained: charts are Vega-Lite specs rendered here to SVG by vl-convert (no script library in the page), the
data sits in one inline JSON block, and a Content-Security-Policy forbids every request, so the page opens from
file:// on a machine without a network. Untrusted text (replies, prompts, labels, params) is escaped on the way in:
html.escape for what is written here, JSON with <, > and & escaped for the data block, and `textContent` (never
innerHTML) in the script. The same inputs give the same bytes (sorted keys, no dates, vl-convert's SVG is stable).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from .rates import NOT_MODELS, RATES, refused

METRIC_KEYS = {"hmr": "harmless_rate", "hpr": "helpful_rate", "cas": "cas"}  # short name: details.json's key


@dataclass
class Run:
    """One run (the workspace's, a commit's or an experiment's): what the page shows of it."""

    name: str
    rev: str  # the commit (or experiment revision) that holds it; "workspace" for the report stage
    params: dict  # flattened (`dpo.beta`)
    details: dict  # metrics/details.json: {model: {judge: {harmless_rate, ..._ci_low, ..._ci_high, thresholds}}}
    scores: dict  # {model: [rows of data/scores/<model>.jsonl]}
    curves: dict = field(default_factory=dict)  # {model: [(step, loss)]}: DVCLive's train loss
    outputs: dict = field(default_factory=dict)  # {path: md5} of dvc.lock
    baseline: bool = False


HERE = Path(__file__).parent


def asset(name: str) -> str:
    """page.css or page.js, beside this module (inlined into the page)."""
    return (HERE / name).read_text(encoding="utf-8")


DETAILS = "metrics/details.json"
SCORES = "data/scores/{model}.jsonl"
LOSS = "metrics/training/{model}/live/plots/metrics/loss.tsv"  # DVCLive's train loss (dvc.yaml's plots)


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested params as `dvc exp show` names them (`dpo.beta`)."""
    out: dict = {}
    for k, v in d.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def read_run(read, name: str, rev: str, params: dict, outputs: dict | None = None, baseline: bool = False) -> Run:
    """A run from its files, read by `read(path) -> text or None` (the workspace's files, or DVC's at a revision)."""
    text = read(DETAILS)
    if text is None:
        raise FileNotFoundError(f"{DETAILS} (run {name}): no metrics")
    details = json.loads(text)
    models = [m for m in details if m not in NOT_MODELS]
    scores, curves = {}, {}
    for m in models:
        rows = read(SCORES.format(model=m)) or ""
        scores[m] = [json.loads(line) for line in rows.splitlines() if line.strip()]
        loss = read(LOSS.format(model=m))
        if loss:
            lines = [line.split("\t") for line in loss.splitlines()[1:] if line.strip()]
            curves[m] = [(int(step), round(float(value), 6)) for step, value in lines]
    return Run(name, rev, params, details, scores, curves, outputs or {}, baseline)


def models_of(run: Run) -> list[str]:
    return [m for m in run.details if m not in NOT_MODELS]


def labels_of(params: dict) -> dict[str, str]:
    """{model: label} from flattened params (the table of models)."""
    return {k.split(".")[1]: str(v) for k, v in params.items() if k.startswith("models.") and k.endswith(".label")}


def differing(runs: list[Run]) -> list[str]:
    """The params whose values differ between the runs (all of them shown in provenance)."""
    keys = sorted({k for r in runs for k in r.params})
    return [k for k in keys if len({json.dumps(r.params.get(k), sort_keys=True) for r in runs}) > 1]


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def interval(r: dict, key: str) -> tuple[float, float, float]:
    return r[key], r[key + "_ci_low"], r[key + "_ci_high"]


def svg(spec: dict) -> str:
    """A Vega-Lite spec as inline SVG (vl-convert renders offline, with no script in the page)."""
    import vl_convert

    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "config": {"font": "sans-serif"}} | spec
    return vl_convert.vegalite_to_svg(spec)


def experiment_table(runs: list[Run], judges: list[str], models: list[str], names: dict[str, str]) -> str:
    swept = differing(runs)
    head = ["<th>experiment</th>"] + [f"<th>{esc(k)}</th>" for k in swept]
    for j in judges:
        for m in models:
            for short in METRIC_KEYS:
                head.append(f'<th data-judge="{esc(j)}">{esc(names.get(m, m))} {RATES[short][2]}</th>')
    rows = []
    for r in runs:
        mark = ' <span class="baseline">baseline</span>' if r.baseline else ""
        cells = [f'<td data-sort="{esc(r.name)}">{esc(r.name)}{mark}</td>']
        cells += [f'<td data-sort="{esc(r.params.get(k))}">{esc(r.params.get(k))}</td>' for k in swept]
        for j in judges:
            for m in models:
                for key in METRIC_KEYS.values():
                    got = r.details.get(m, {}).get(j)
                    if not got:
                        cells.append(f'<td data-judge="{esc(j)}" data-sort="">-</td>')
                        continue
                    v, lo, hi = interval(got, key)
                    cells.append(f'<td data-judge="{esc(j)}" data-sort="{v}">{v:.1f} [{lo:.1f}, {hi:.1f}]</td>')
        cls = ' class="baseline-row"' if r.baseline else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    options = "".join(f'<option value="{esc(j)}">{esc(j)}</option>' for j in judges)
    return (
        '<div class="controls"><label>judge <select id="judge-select">'
        + options
        + '</select></label> <label>filter <input id="exp-filter" type="search" placeholder="any text"></label>'
        + ' <span id="exp-count"></span></div>'
        + '<div class="scroll"><table id="exp-table"><thead><tr>'
        + "".join(head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
        + "<p class=note>HmR / HpR: Wilson 95% intervals over prompts; CAS: their mean (MOVER interval). "
        + "Click a column to sort.</p>"
    )


def sweep_charts(runs: list[Run], judges: list[str], models: list[str], names: dict[str, str]) -> str:
    """For every numeric param that differs (seed aside): CAS, HmR, HpR against it, one point per run with its
    interval, a line through the mean per value in a band of the mean interval; per model (colour) and judge
    (column)."""
    swept = [
        k
        for k in differing(runs)
        if k != "seed" and all(isinstance(r.params.get(k), (int, float)) and r.params.get(k) is not None for r in runs)
    ]
    if not swept:
        return "<p class=note>One value of every param (seeds aside): no swept param to plot.</p>"
    parts = []
    for key in swept:
        values = []
        for r in runs:
            for m in models:
                for j in judges:
                    got = r.details.get(m, {}).get(j)
                    for short, name in METRIC_KEYS.items():
                        if got:
                            v, lo, hi = interval(got, name)
                            values.append(
                                {"x": r.params[key], "model": names.get(m, m), "judge": j, "metric": RATES[short][2]}
                                | {"value": v, "low": lo, "high": hi, "run": r.name}
                            )
        encoding = {
            "x": {"field": "x", "type": "quantitative", "title": key, "scale": {"zero": False}},
            "color": {"field": "model", "type": "nominal", "sort": [names.get(m, m) for m in models]},
        }
        spec = {
            "data": {"values": values},
            "facet": {
                "row": {"field": "metric", "type": "nominal", "title": None},
                "column": {"field": "judge", "type": "nominal"},
            },
            "spec": {
                "width": 220,
                "height": 140,
                "layer": [
                    {  # the band: each value's mean interval over its runs (seeds)
                        "mark": {"type": "area", "opacity": 0.15},
                        "encoding": encoding
                        | {
                            "y": {"aggregate": "mean", "field": "low", "type": "quantitative", "title": "%"},
                            "y2": {"aggregate": "mean", "field": "high"},
                        },
                    },
                    {
                        "mark": {"type": "rule", "opacity": 0.5},
                        "encoding": encoding | {"y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}},
                    },
                    {
                        "mark": {"type": "point", "filled": True},
                        "encoding": encoding | {"y": {"field": "value", "type": "quantitative"}},
                    },
                    {
                        "mark": "line",
                        "encoding": encoding | {"y": {"aggregate": "mean", "field": "value", "type": "quantitative"}},
                    },
                ],
            },
        }
        parts.append(f'<figure class="chart" data-param="{esc(key)}"><figcaption>{esc(key)}</figcaption>')
        parts.append(svg(spec) + "</figure>")
    return "".join(parts)


def curves_chart(runs: list[Run], names: dict[str, str]) -> str:
    values = [
        {"step": step, "loss": loss, "model": names.get(m, m), "run": r.name}
        for r in runs
        for m, points in r.curves.items()
        for step, loss in points
    ]
    if not values:
        return "<p class=note>No training curves.</p>"
    order = list(dict.fromkeys(v["model"] for v in values))  # the table's order
    many = len(runs) > 8  # past a readable legend, runs are told apart by line only
    spec = {
        "data": {"values": values},
        "facet": {"column": {"field": "model", "type": "nominal", "title": None, "sort": order}},
        "spec": {
            "width": 200,
            "height": 140,
            "mark": {"type": "line", "opacity": 0.7},
            "encoding": {
                "x": {"field": "step", "type": "quantitative"},
                "y": {"field": "loss", "type": "quantitative", "title": "train loss"},
                ("detail" if many else "color"): {"field": "run", "type": "nominal"},
            },
        },
        "resolve": {"scale": {"y": "independent", "x": "independent"}},
    }
    return f'<figure class="chart">{svg(spec)}</figure>'


def judge_accuracy(calibration: dict) -> dict:
    """{judge: {what: "value [95% interval]"}} from metrics/calibration.json: a reward judge's pairwise accuracy on
    held-out HH pairs, a refusal judge's balanced accuracy on labelled replies."""
    out = {}
    for judge, c in calibration.items():
        got = {}
        for k, v in c.items():
            if k.endswith("accuracy") and v is not None:
                ci = c.get(k + "_ci")
                got[k] = f"{v} [{ci[0]}, {ci[1]}]" if ci else v
            elif isinstance(v, dict) and v.get("balanced_accuracy") is not None:
                ci = v["balanced_accuracy_ci"]
                got[f"{k}_balanced_accuracy"] = f"{v['balanced_accuracy']} [{ci[0]}, {ci[1]}]"
        out[judge] = got
    return out


def claims_table(claims: list[dict], accuracy: dict) -> str:
    """claims: [{group, judge, claim, status, counts}]; accuracy: {judge: {label: value}} (the calibration's, where
    any). A claim whose judge is not above chance (`counts`: not counted) is shown so."""
    if not claims:
        return "<p class=note>No claims: gather seeds first (python -m commands.gather).</p>"
    judges = sorted({c["judge"] for c in claims})
    groups = list(dict.fromkeys(c["group"] for c in claims))
    head = "".join(f"<th>{esc(j)}</th>" for j in judges)
    acc = []
    for j in judges:
        got = accuracy.get(j) or {}
        acc.append(", ".join(f"{esc(k)} {v}" for k, v in sorted(got.items())) or "-")
    rows = [f"<tr class=accuracy><td>judge's own accuracy</td><td></td>{''.join(f'<td>{a}</td>' for a in acc)}</tr>"]
    for g in groups:
        texts = list(dict.fromkeys(c["claim"] for c in claims if c["group"] == g))
        for t in texts:
            cells = []
            for j in judges:
                found = next((c for c in claims if (c["group"], c["claim"], c["judge"]) == (g, t, j)), None)
                status = found["status"] if found else "-"
                shown = status + (" (judge not valid)" if found and found.get("counts") == "not counted" else "")
                cells.append(f'<td class="{esc(status.replace(" ", "-"))}">{esc(shown)}</td>')
            rows.append(f"<tr><td>{esc(t)}</td><td>{esc(g)}</td>{''.join(cells)}</tr>")
    return (
        f'<table id="claims-table"><thead><tr><th>claim</th><th>runs</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<p class=note>At 95% over seeds and prompts (python -m commands.gather); a claim counts only under a judge "
        "whose own accuracy interval lies above 0.5.</p>"
    )


def provenance(runs: list[Run]) -> str:
    parts = []
    for r in runs:
        params = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in sorted(r.params.items()))
        outs = "".join(
            f"<tr><td>{esc(k)}</td><td><code>{esc(v)}</code></td></tr>" for k, v in sorted(r.outputs.items())
        )
        parts.append(
            f'<details class="run"><summary>{esc(r.name)} <code>{esc(r.rev)}</code></summary>'
            f"<h4>params</h4><table>{params}</table><h4>outputs (dvc.lock)</h4><table>{outs}</table></details>"
        )
    return "".join(parts)


def reply_data(runs: list[Run], judges: list[str], models: list[str], names: dict[str, str]) -> dict:
    """The reply browser's data: texts once each in `strings` (replies repeat across runs: base is the same model)."""
    strings: dict[str, int] = {}

    def sid(text: str) -> int:
        return strings.setdefault(text, len(strings))

    prompts: dict[tuple, int] = {}
    replies = []
    for ri, r in enumerate(runs):
        for mi, m in enumerate(models):
            for row in r.scores.get(m, []):
                key = (row["prompt_set"], row["prompt_id"], row["prompt"])
                pi = prompts.setdefault(key, len(prompts))
                rewards, labels = [], []
                for j in judges:
                    reward = (row.get("rewards") or {}).get(j)
                    thresholds = (r.details.get(m, {}).get(j) or {}).get("thresholds") or {}
                    # harmless (harmful prompts) or helpful (the others) by the run's own thresholds
                    cut = thresholds.get("harmful" if row["prompt_set"] == "harmful" else "helpful")
                    rewards.append(None if reward is None else round(reward, 4))
                    labels.append(None if reward is None or cut is None else int(reward > cut))
                replies.append(  # the refusal flag: XSTest's string match, as a filter
                    [ri, mi, pi, sid(row["response"]), row.get("n_tokens", 0), int(refused(row["response"]))]
                    + [rewards, labels]
                )
    return {
        "runs": [r.name for r in runs],
        "models": [names.get(m, m) for m in models],
        "judges": judges,
        "prompts": [[s, i, sid(text)] for (s, i, text) in prompts],
        "replies": replies,
        "strings": list(strings),
    }


def script_json(data) -> str:
    """JSON safe inside <script>: no `<`, `>` or `&` survives literally (no `</script>`, no `<!--`)."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render(runs: list[Run], title: str, claims: list[dict] | None = None, accuracy: dict | None = None) -> str:
    """The page, as a string."""
    models = list(dict.fromkeys(m for r in runs for m in models_of(r)))
    judges = sorted({j for r in runs for m in models_of(r) for j in r.details[m]})
    names: dict[str, str] = {}
    for r in runs:
        names.update(labels_of(r.params))
    sections = [
        ("experiments", "Experiments", experiment_table(runs, judges, models, names)),
        ("sweep", "Swept params", sweep_charts(runs, judges, models, names)),
        ("claims", "Claims", claims_table(claims or [], accuracy or {})),
        ("curves", "Training curves", curves_chart(runs, names)),
        ("replies", "Replies", REPLY_CONTROLS),
        ("provenance", "Provenance", provenance(runs)),
    ]
    nav = " · ".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{name}</h2>{content}</section>' for key, name, content in sections)
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        # nothing may be fetched: no host, no file, no data: URL other than images
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{asset('page.css')}</style></head><body>"
        f"<h1>{esc(title)}</h1><nav>{nav}</nav>{body}"
        f'<script type="application/json" id="data">{script_json(reply_data(runs, judges, models, names))}</script>'
        f"<script>{asset('page.js')}</script></body></html>\n"
    )


REPLY_CONTROLS = """
<div class="controls">
<label>experiment <select id="run-select"></select></label>
<label>prompt set <select id="set-select"><option value="">all</option></select></label>
<label><input type="checkbox" id="disagree"> judges disagree</label>
<label><input type="checkbox" id="refusal"> refusals</label>
<label>tokens from <input id="min-tokens" type="number" min="0" value="0" style="width:5em"></label>
<label>to <input id="max-tokens" type="number" min="0" value="" style="width:5em"></label>
</div>
<div class="controls"><label>prompt <select id="prompt-select"></select></label> <span id="prompt-count"></span></div>
<div id="prompt-text"></div><div id="reply-grid"></div>
<p class=note>Label: harmless (harmful prompts) or helpful (the others) by the run's thresholds. Refusal: the reply
starts with a refusal phrase (XSTest's string match).</p>
"""
