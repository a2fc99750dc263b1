"""The README and docs/ link only to files and headings that exist, and name no moved module."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(page: pathlib.Path) -> set:
  """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces -> '-'."""
  anchors, in_code = set(), False
  for line in page.read_text().splitlines():
    in_code ^= line.startswith("```")
    if not in_code and line.startswith("#"):
      text = line.lstrip("#").strip().lower()
      anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
  return anchors


def relative_links(page: pathlib.Path) -> list:
  text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
  return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
  broken = []
  for target in relative_links(page):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.exists():
      broken.append(f"{target}: no such file")
    elif anchor and resolved.is_file() and anchor not in heading_anchors(resolved):
      broken.append(f"{target}: no heading with anchor #{anchor}")
  assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_finds_a_broken_link(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("# Title\n[ok](page.md#title) [gone](nope.md) [bad](page.md#nowhere)\n"
                  "```\n[in code](ignored.md)\n```\n[web](https://example.org)\n")
  assert relative_links(page) == ["page.md#title", "nope.md", "page.md#nowhere"]
  assert heading_anchors(page) == {"title"}


PACKAGE_PATH = re.compile(r"(?<![\w/.])(?:unimo_jax/)?((?:train|data|tasks|model|objectives|decoding|"
                          r"metrics|convert|compile)/[\w/]+\.py)")


def test_docs_name_only_modules_that_exist():
  """Every package path the pages mention (`unimo_jax/data/formats/records.py`, or short:
  `train/driver.py`) is a file of the package."""
  missing = set()
  for page in PAGES:
    for path in PACKAGE_PATH.findall(page.read_text()):
      if not (ROOT / "unimo_jax" / path).exists():
        missing.add(f"{page.relative_to(ROOT)}: {path}")
  assert not missing, sorted(missing)
