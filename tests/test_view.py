"""The results page (stages/core/page.py): what the `report` stage writes for a run and `python -m commands.view` for
every experiment. Built from runs made here, opened in a real headless Chromium (tests/browser.py)."""

import json
import random
import re

import pytest
import yaml

from stages.core import page

from .browser import Page, browser

MODELS = {"base": "base", "sft": "SFT", "dpo": "DPO", "sft_dpo": "SFT+DPO", "orpo": "ORPO"}
WORDS = "the a to of and you can it is not I will help with that here how do make time process python safe".split()


def rates(rng) -> dict:
    out = {}
    for key in ("harmless_rate", "helpful_rate", "cas"):
        v = round(rng.uniform(10, 90), 4)
        out |= {key: v, f"{key}_ci_low": round(v - 8, 4), f"{key}_ci_high": round(v + 8, 4)}
    return out | {"thresholds": {"harmful": -3.0, "helpful": -2.0}}


def make_runs(n_runs=4, models=MODELS, n_prompts=10, judges=("oasst", "judge"), seed=0, distinct=True):
    """Runs like a sweep's: dpo.beta varies, every model answers every prompt, each judge rewards every reply."""
    rng = random.Random(seed)
    prompts = [
        (
            "harmful" if i % 2 == 0 else "helpful",
            i // 2,
            f"\n\nHuman: question {i} {' '.join(rng.choices(WORDS, k=12))}\n\nAssistant:",
        )
        for i in range(n_prompts)
    ]
    runs = []
    for r in range(n_runs):
        params = {"seed": 1 + r % 2, "dpo.beta": [0.05, 0.1, 0.2, 0.5][r % 4] if r < 4 else round(0.01 * (r + 1), 3)}
        params |= {f"models.{m}.label": label for m, label in models.items()}
        details = {m: {j: rates(rng) for j in judges} for m in models}
        scores = {
            m: [
                {
                    "model": m,
                    "prompt_set": s,
                    "prompt_id": i,
                    "prompt": text,
                    "response": f"{m} run {r if distinct else 0} says " + " ".join(rng.choices(WORDS, k=45)),
                    "n_tokens": 50,
                    "stopped_by": "length",
                    "rewards": {j: round(rng.uniform(-5, 2), 4) for j in judges},
                }
                for s, i, text in prompts
            ]
            for m in models
        }
        curves = {
            m: [(step, round(3 - 0.01 * step + rng.random() * 0.1, 6)) for step in range(0, 200, 4)] for m in models
        }
        runs.append(page.Run(f"exp-{r}", f"{r:040x}", params, details, scores, curves, {"dvc.lock/out": "0" * 32}))
    runs[0].baseline = True
    return runs


def test_fifty_runs_of_five_models_fit_in_ten_megabytes_and_regenerate_the_same_bytes():
    runs = make_runs(n_runs=50, n_prompts=100)
    html = page.render(runs, "50 runs", [], {})
    size = len(html.encode())
    assert size < 10_000_000, f"{size / 1e6:.1f} MB"
    assert html == page.render(make_runs(n_runs=50, n_prompts=100), "50 runs", [], {})
    assert "<svg" in html and html.count("<tr") > 50


def test_script_data_cannot_close_its_tag():
    text = page.script_json({"reply": "</script><script>alert(1)</script> & <!--"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["reply"] == "</script><script>alert(1)</script> & <!--"


@pytest.fixture(scope="module")
def chromium():
    with browser() as b:
        yield b


def open_page(chromium, tmp_path, html: str) -> Page:
    path = tmp_path / "page.html"
    path.write_text(html, encoding="utf-8")
    return Page(chromium, path)


def test_the_table_sorts_and_filters_the_charts_draw_and_the_replies_are_the_runs(chromium, tmp_path):
    runs = make_runs()
    shown = open_page(chromium, tmp_path, page.render(runs, "sweep", [], {}))
    p = shown.page
    assert shown.errors == [] and shown.requests == []
    assert shown.visible_rows() == ["exp-0", "exp-1", "exp-2", "exp-3"]
    assert p.inner_text("#exp-table tbody tr:first-child .baseline") == "baseline"
    # sort by the DPO model's CAS under the first judge (shown by default): ascending, then descending
    column = p.eval_on_selector_all("#exp-table th", "hs => hs.findIndex(h => h.textContent === 'DPO CAS')")
    p.locator("#exp-table th").nth(column).click()
    cas = [r.details["dpo"]["judge"]["cas"] for r in runs]
    ascending = [runs[i].name for i in sorted(range(4), key=lambda i: cas[i])]
    assert shown.visible_rows() == ascending
    p.locator("#exp-table th").nth(column).click()
    assert shown.visible_rows() == ascending[::-1]
    p.fill("#exp-filter", "EXP-2")  # any text of a row, any case
    assert shown.visible_rows() == ["exp-2"]
    assert p.inner_text("#exp-count") == "1 of 4 experiments"
    # another judge's columns
    p.select_option("#judge-select", "oasst")
    hidden = p.eval_on_selector_all(
        "#exp-table th[data-judge]", "hs => hs.filter(h => !h.hidden).map(h => h.dataset.judge)"
    )
    assert set(hidden) == {"oasst"}
    # charts: the swept param and the training curves, each a drawn SVG
    for chart in ("#sweep svg", "#curves svg"):
        assert p.locator(chart).count() >= 1
        assert p.eval_on_selector(chart, "s => s.querySelectorAll('path').length") > 10
    # the reply browser: run 2, the helpful prompt #3, every model's own reply
    p.select_option("#run-select", "2")
    p.select_option("#set-select", "helpful")
    prompt = next(
        i for i, row in enumerate(runs[2].scores["dpo"]) if row["prompt_set"] == "helpful" and row["prompt_id"] == 3
    )
    value = p.eval_on_selector_all(
        "#prompt-select option", "os => os.find(o => o.textContent.startsWith('helpful #3')).value"
    )
    p.select_option("#prompt-select", value)
    for model, label in MODELS.items():
        box = p.locator(f'.reply[data-model="{label}"] .reply-text')
        assert box.inner_text() == runs[2].scores[model][prompt]["response"]
    assert p.inner_text("#prompt-text").strip() == runs[2].scores["dpo"][prompt]["prompt"].strip()
    assert shown.errors == [] and shown.requests == []


def test_untrusted_text_stays_text(chromium, tmp_path):
    """A reply, a prompt and a model label holding markup show as written and run nothing."""
    evil = "<script>window.pwned=1</script></table>{{7*7}}<img src=x onerror=window.pwned=2>"
    runs = make_runs(n_runs=2, models={"base": "base", "dpo": "DPO" + evil}, n_prompts=4)
    for run in runs:
        for rows in run.scores.values():
            rows[0]["response"] = "reply " + evil
            rows[0]["prompt"] = "\n\nHuman: prompt " + evil + "\n\nAssistant:"
    shown = open_page(chromium, tmp_path, page.render(runs, "title " + evil, [], {}))
    p = shown.page
    assert p.evaluate("window.pwned") is None
    assert shown.requests == []  # the <img src=x> never became an element
    assert p.locator("script").count() == 2  # the data and the page's own script
    assert p.title() == "title " + evil
    headers = p.eval_on_selector_all("#exp-table th", "hs => hs.map(h => h.textContent)")
    assert "DPO" + evil + " CAS" in headers
    p.select_option("#prompt-select", "0")
    assert p.inner_text("#prompt-text").strip() == ("Human: prompt " + evil + "\n\nAssistant:")
    assert p.locator(".reply .reply-text").first.inner_text() == "reply " + evil
    assert p.locator(f'.reply[data-model="{"DPO" + evil}"] h4').inner_text() == "DPO" + evil
    assert p.eval_on_selector_all("#curves svg text", "ts => ts.map(t => t.textContent)").count("DPO" + evil) >= 1
    assert shown.errors == []


def test_the_report_stage_writes_the_page_of_its_run(tiny_repo, chromium):
    """The CPU default's pipeline (tiny) writes metrics/report.html: one row, every model's replies as scored."""
    repo, _ = tiny_repo
    path = repo / "metrics" / "report.html"
    html = path.read_text(encoding="utf-8")
    assert re.search(r"metrics/report\.html", (repo / "dvc.yaml").read_text())
    shown = Page(chromium, path)
    p = shown.page
    assert shown.errors == [] and shown.requests == []
    assert shown.visible_rows() == ["this run"]
    p.fill("#exp-filter", "no such text")
    assert shown.visible_rows() == []
    assert p.eval_on_selector("#curves svg", "s => s.querySelectorAll('path').length") > 4
    rows = [json.loads(line) for line in (repo / "data/scores/sft_dpo.jsonl").read_text().splitlines()]
    last = rows[-1]
    value = p.eval_on_selector_all(
        "#prompt-select option",
        f"os => os.find(o => o.textContent.startsWith('{last['prompt_set']} #{last['prompt_id']}:')).value",
    )
    p.select_option("#prompt-select", value)
    label = page.labels_of(page.flatten(yaml.safe_load((repo / "params.yaml").read_text())))["sft_dpo"]
    assert p.locator(f'.reply[data-model="{label}"] .reply-text').inner_text() == last["response"]
    assert len(html.encode()) < 2_000_000


def test_view_filters_are_values_of_params():
    from commands.view import keep, parse_filters

    filters = parse_filters(["dpo.beta=0.1,0.2", "profile=cpu"])
    assert filters == {"dpo.beta": [0.1, 0.2], "profile": ["cpu"]}
    assert keep({"dpo.beta": 0.2, "profile": "cpu"}, filters)
    assert not keep({"dpo.beta": 0.5, "profile": "cpu"}, filters)
    assert not keep({"profile": "cpu"}, filters)  # a run without the param is not one of its values
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        parse_filters(["dpo.beta"])


def test_the_view_command_reads_each_run_at_its_revision(tiny_repo, chromium, tmp_path):
    """`python -m commands.view` over the tiny repository's commit: its rates, its replies (from the DVC cache at that
    revision, whatever the workspace holds now) and the hashes its dvc.lock records."""
    from .conftest import sh

    repo, _ = tiny_repo
    out = tmp_path / "view.html"
    printed = sh(["python", "-m", "commands.view", "-o", str(out), "--resamples", "50"], repo).stdout
    assert "view: 1 runs" in printed
    shown = Page(chromium, out)
    p = shown.page
    assert shown.errors == [] and shown.requests == []
    assert len(shown.visible_rows()) == 1
    head = sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert head in p.inner_text("#provenance")
    lock = yaml.safe_load(sh(["git", "show", "HEAD:dvc.lock"], repo).stdout)
    md5 = next(o["md5"] for o in lock["stages"]["score@dpo"]["outs"])
    assert md5 in p.eval_on_selector("#provenance", "e => e.textContent")
    committed = sh(["dvc", "get", ".", "data/scores/dpo.jsonl", "--rev", head, "-o", str(tmp_path / "dpo.jsonl")], repo)
    assert committed.returncode == 0
    first = json.loads((tmp_path / "dpo.jsonl").read_text().splitlines()[0])
    p.select_option("#prompt-select", "0")
    label = page.labels_of(page.flatten(yaml.safe_load(sh(["git", "show", "HEAD:params.yaml"], repo).stdout)))["dpo"]
    assert p.locator(f'.reply[data-model="{label}"] .reply-text').inner_text() == first["response"]
