"""The README is short and every relative link in the documentation leads somewhere: a file of the repository and,
after `#`, a heading of it (GitHub's anchors)."""

import re

from .conftest import ROOT

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def documents():
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def broken_links(doc) -> list[str]:
    broken = []
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z]+:", target):
            continue  # a URL: not checked offline
        path, _, fragment = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{doc.name}: {target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{doc.name}: {target} (no such heading)")
    return broken


def test_every_relative_link_reaches_a_file_and_a_heading():
    broken = [line for doc in documents() for line in broken_links(doc)]
    assert not broken, "\n".join(broken)


def test_the_checker_sees_a_broken_link(tmp_path):
    """A check of the check: a made-up heading and a made-up file are reported, real ones are not."""
    assert anchor("What `dvc repro` produces") == "what-dvc-repro-produces"
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n## What `x` does\n\n[a](#what-x-does) [b](#nowhere) [c](other.md) [d](doc.md#title)\n"
        "```\n[e](ignored-in-code.md)\n```\n[f](https://example.org/x)\n"
    )
    assert broken_links(doc) == ["doc.md: #nowhere (no such heading)", "doc.md: other.md (no such file)"]


def test_the_readme_is_short_and_links_every_document():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for doc in documents()[1:]:
        assert f"({doc.relative_to(ROOT)}" in readme, doc
