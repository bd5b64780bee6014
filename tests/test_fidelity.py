"""The fidelity table (conf/fidelity.yaml, rendered into docs/fidelity.md) is the one source of truth for what the
study did:
the composed `study` profile holds every value it names, the `improved` profile differs from the study only where a
row names a fix, and docs/fidelity.md shows the table as rendered from the profiles."""

from commands import compose, fidelity

from .conftest import ROOT


def leaves(params, prefix=""):
    items = params.items() if isinstance(params, dict) else enumerate(params)
    out = {}
    for k, v in items:
        out |= leaves(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) and v else {f"{prefix}{k}": v}
    return out


def test_the_study_profile_holds_every_value_of_the_table(monkeypatch):
    monkeypatch.chdir(ROOT)
    study = compose.compose("study")
    wrong = [
        (key, value, fidelity.get(study, key))
        for row in fidelity.rows()
        for key, value in row.get("study_params", {}).items()
        if fidelity.get(study, key) != value
    ]
    assert wrong == []


def test_improved_differs_from_the_study_only_by_named_fixes(monkeypatch):
    monkeypatch.chdir(ROOT)
    study, improved = leaves(compose.compose("study")), leaves(compose.compose("improved"))
    fixes = [fix.rstrip("*") for row in fidelity.rows() for fix in fidelity.fixes(row)]
    changed = {k for k in study.keys() | improved.keys() if study.get(k) != improved.get(k)} - {"profile"}
    added_models = {k for k in changed if k.startswith("models.") and k not in study}  # models the study never had
    undocumented = {k for k in changed - added_models if not any(k.startswith(f) for f in fixes)}
    assert undocumented == set()
    for fix in fixes:  # and every fix does change something
        assert any(k.startswith(fix) for k in changed), fix


def test_the_docs_show_the_rendered_table(monkeypatch):
    monkeypatch.chdir(ROOT)
    doc = (ROOT / "docs/fidelity.md").read_text()
    assert fidelity.render() in doc, "run: python -m commands.fidelity --write"
