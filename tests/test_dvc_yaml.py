"""dvc.yaml's code dependencies cannot be forgotten: each stage lists exactly the project modules it runs, derived
from their imports (a module edited without being a dependency would leave results stale while `dvc repro` says
everything is up to date)."""

import ast
import re
from pathlib import Path

import yaml

from .conftest import ROOT


def module_file(name: str) -> Path | None:
    """The file of a project module (`stages.core.io` -> stages/core/io.py), or None for a library."""
    parts = name.split(".")
    if parts[0] != "stages":
        return None
    path = ROOT.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(path: Path) -> set[str]:
    """Every project module `path` imports, anywhere in it (inside functions too), packages included."""
    package = ".".join(path.parent.relative_to(ROOT).parts)  # what a relative import is relative to
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import io` imports a module
    return {m for m in found if module_file(m) is not None and module_file(m).exists()}


def closure(modules: set[str]) -> set[str]:
    """Project files run by these modules: their transitive imports and every package __init__ on the way."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            todo.append(".".join(parts[:i]))
        if m in seen:
            continue
        seen.add(m)
        todo.extend(imports(module_file(m)))
    return {str(module_file(m).relative_to(ROOT)) for m in seen}


def stage_commands(params: dict | None = None) -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (command, deps), foreach stages expanded for every item (`${models}`: the table of models in
    params.yaml, so each model's method module is checked)."""
    params = params or yaml.safe_load((ROOT / "params.yaml").read_text())
    out = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            out[name] = (stage["cmd"], stage["deps"])
            continue
        items = params["models"] if stage["foreach"] == "${models}" else stage["foreach"]
        for key in items:
            item = items[key] if isinstance(items, dict) else key

            def resolve(text: str) -> str:
                text = text.replace("${key}", key).replace("${item}", str(item))
                return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)

            out[f"{name}@{key}"] = (resolve(stage["do"]["cmd"]), [resolve(d) for d in stage["do"]["deps"]])
    return out


def expected_code_deps(cmd: str, params: dict | None = None) -> set[str]:
    """`python -m stages.launch score sft` runs stages.launch and stages.score; `python -m stages.x` runs stages.x;
    `train <model>`, `reference <model>` and `release <model>` also run the model's method module (stages.methods
    loads it by name)."""
    params = params or yaml.safe_load((ROOT / "params.yaml").read_text())
    words = cmd.split()
    module = words[words.index("-m") + 1]
    modules = {module}
    if module == "stages.launch":
        module = f"stages.{words[words.index('-m') + 2]}"
        modules.add(module)
    if module in ("stages.train", "stages.release", "stages.reference"):
        model = words[-1]
        modules.add(f"stages.methods.{params['models'][model]['method']}")
    found = closure(modules)
    # a stage that checks every method of the table (stages.methods.used) runs each method module it may name
    if any("methods.used(" in (ROOT / f).read_text() for f in found if not f.startswith("stages/methods/")):
        found |= closure({f"stages.methods.{p.stem}" for p in (ROOT / "stages/methods").glob("*.py")})
    # a stage that loads judges by kind (stages.judges' kinds, specs, load_judge, score_rows) runs every kind module
    loads = re.compile(
        r"from stages\.judges import [^\n]*\b(kinds|specs|load_judge|score_rows)\b|"
        r"\bjudges\.(kinds|specs|load_judge|score_rows)\("
    )
    if any(loads.search((ROOT / f).read_text()) for f in found if not f.startswith("stages/judges/")):
        kinds = {f"stages.judges.{p.stem}" for p in (ROOT / "stages/judges").glob("*.py") if p.stem != "__init__"}
        found |= closure(kinds)
    return found


def test_every_stage_lists_exactly_the_code_it_runs():
    problems = []
    for name, (cmd, deps) in stage_commands().items():
        listed = {d for d in deps if re.fullmatch(r"stages/.+\.py", d)}
        want = expected_code_deps(cmd)
        if listed != want:
            problems.append(f"{name}: missing {sorted(want - listed)}, not run {sorted(listed - want)}")
        if "stages/core/page.py" in want and not {"stages/core/page.js", "stages/core/page.css"} <= set(deps):
            problems.append(f"{name}: the page's script and style (stages/core/page.js, page.css) are not listed")
    assert not problems, "\n".join(problems)


def test_the_derivation_sees_lazy_relative_and_package_imports():
    """A check of the checker: a function-local relative import counts, and so do package __init__ files."""
    deps = expected_code_deps("python -m stages.launch score base")
    assert "stages/core/hh.py" in deps  # stages/judges/sequence_classifier.py: hh, used by the chat-format judge
    assert "stages/judges/pipeline.py" in deps  # a kind, loaded by name
    assert "stages/core/determinism.py" in deps  # modeling.per_model_stage imports it inside the function
    assert {"stages/__init__.py", "stages/core/__init__.py", "stages/score.py", "stages/launch.py"} <= deps


def stage_modules() -> set[str]:
    """The modules dvc.yaml runs as stages (`python -m stages.x`, `python -m stages.launch x`)."""
    out = set()
    for cmd, _ in stage_commands().values():
        words = cmd.split()
        module = words[words.index("-m") + 1]
        out.add(f"stages.{words[words.index('-m') + 2]}" if module == "stages.launch" else module)
    return out


def test_a_new_model_of_the_table_is_checked_too():
    """The check expands the table of models: a model whose method imports a module its dvc.yaml list lacks fails."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"]["extra"] = {"method": "dpo", "start": "models/sft", "label": "x"}
    commands = stage_commands(params)
    assert {"train@extra", "sample@extra", "score@extra", "release@extra"} <= set(commands)
    cmd, deps = commands["train@extra"]
    assert "stages/methods/dpo.py" in deps and "stages/methods/dpo.py" in expected_code_deps(cmd, params)


def test_stages_is_dvc_yaml_and_no_stage_imports_another():
    """stages/ holds one module per dvc.yaml stage, their launcher and the shared code (stages/core, and the training
    methods in stages/methods); commands that are not stages live in commands/. What two stages share is shared code,
    so a stage never imports another and editing one stage's module re-runs that stage only."""
    modules = {f"stages.{p.stem}" for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    assert modules - {"stages.launch"} == {m for m in stage_modules()}
    assert {p.name for p in (ROOT / "stages").iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "core",
        "methods",
        "judges",
    }
    crossing = {
        (m, i)
        for m in stage_modules()
        for i in imports(module_file(m))
        if i in modules and i != m and i != "stages.launch"
    }
    assert crossing == set()
    for path in (ROOT / "stages").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) commands\b", path.read_text(), re.M), path


def test_no_stage_reads_a_file_inside_another_stages_folder_output():
    """A stage that reads another's output file by file depends on outputs declared as those files. DVC 3.67's
    `exp run` stages each restored stage's files with a file-system view of the index it loaded before the run-cache
    restore; a dependency inside a folder output is looked up in that folder's listing at the committed dvc.lock's
    hash, an object a fresh clone does not have: the second experiment of a seed failed ("failed to load directory
    ('data', 'eval')") once the first had filled the run cache (tests/test_sweep.py starts from such a clone)."""
    from dvc.repo import Repo

    stages = Repo(str(ROOT)).index.stages
    outs = {(s.addressing, str(o.def_path)) for s in stages for o in s.outs}
    inside = [
        f"{s.addressing}: {d.def_path} is inside {name}'s output {out}"
        for s in stages
        for d in s.deps
        if not hasattr(d, "params")
        for name, out in outs
        if str(d.def_path).startswith(out.rstrip("/") + "/")
    ]
    assert not inside, "\n".join(inside)
