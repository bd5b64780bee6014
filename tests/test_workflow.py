"""The pull-request workflow: linted (GitHub's workflow schema, zizmor's audits, both offline), doing what it says
(CPU torch, pip cache, no hidden failure, pinned actions), and its comment built for real on a pipeline run, with
every image link resolving beside the comment file (how CML finds the images it uploads)."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import ROOT, run_env, sh

WORKFLOW = ROOT / ".github" / "workflows" / "pull-request.yml"


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_the_workflow_passes_the_schema_and_zizmor():
    schema = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    audit = subprocess.run(
        [tool("zizmor"), "--offline", "--config", str(ROOT / ".github" / "zizmor.yml"), str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "No findings to report" in audit.stdout + audit.stderr


def test_the_workflow_does_what_it_says():
    text = WORKFLOW.read_text()
    steps = yaml.safe_load(text)["jobs"]["pipeline"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "|| true" not in text  # no failure hidden
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs
    assert runs.index("download.pytorch.org/whl/cpu") < runs.index("pip install -r requirements.txt")
    setup_python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup_python["with"]["cache"] == "pip"
    for s in steps:
        if "uses" in s:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", s["uses"]), s["uses"]  # pinned to a commit
    assert "python -m pytest -q" in runs  # the README's test command
    assert "dvc pull" in runs and "dvc repro" in runs
    assert "python -m commands.pr_comment --rev origin/main --out pr-comment" in runs
    assert "cml comment update pr-comment/comment.md" in runs  # images sit beside the comment file


def test_the_comment_has_the_diffs_and_working_image_links(tiny_repo, tmp_path):
    repo, _ = tiny_repo
    out = tmp_path / "pr-comment"
    sh([sys.executable, "-m", "commands.pr_comment", "--rev", "HEAD", "--out", str(out)], repo, env=run_env())
    comment = (out / "comment.md").read_text()
    assert "## HmR / HpR / CAS against `HEAD`" in comment and "## Params against `HEAD`" in comment
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", comment)
    titles = re.findall(r"!\[([^\]]*)\]", comment)
    assert {"Training loss", "CAS by model", "Held-out reward accuracy"} <= set(titles)
    assert len(links) >= 10
    for link in links:  # relative to the comment file, and there
        assert not link.startswith(("/", "http")) and (out / link).is_file(), link
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
