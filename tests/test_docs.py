"""The README and benchmarks/README.md: their links resolve, and the outputs they cite exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "benchmarks/README.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITED = re.compile(r"`(benchmarks/[^`\s]+?)[.,;:]?`")


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.add(slug(line))
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_reaches_a_file_and_heading(doc):
    source = ROOT / doc
    broken = []
    for target in LINK.findall(source.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        dest = (source.parent / path).resolve() if path else source
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc}: " + "; ".join(sorted(set(broken)))


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_benchmark_output_is_committed(doc):
    cited = set(CITED.findall((ROOT / doc).read_text()))
    assert len(cited) > 5  # the pattern still finds what the page cites
    missing = [p for p in sorted(cited) if not any(ROOT.glob(p))]
    assert not missing, f"{doc} cites what benchmarks/ does not hold: {missing}"


def test_every_benchmark_script_is_described():
    text = "\n".join((ROOT / doc).read_text() for doc in DOCS)
    scripts = [
        p.name
        for p in sorted((ROOT / "benchmarks").iterdir())
        if p.suffix in (".py", ".sh") and not p.name.startswith("_")
    ]
    assert scripts
    assert not [s for s in scripts if s not in text], "benchmark scripts no document names"


def test_slug_follows_githubs_rule():
    assert slug("## Search quality (`benchmarks/search_quality.py`)") == (
        "search-quality-benchmarkssearch_qualitypy"
    )
    assert slug("### `report`, `evaluate`, `predict`") == "report-evaluate-predict"
