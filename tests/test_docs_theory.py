"""Every citation of the theory reference resolves to a section of docs/THEORY.md."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "THEORY.md"

# "THEORY.md §8", "THEORY §2", "THEORY.md §2-9", "THEORY.md §§7-9", "THEORY.md Sec. 4".
PREFIXED = re.compile(r"THEORY(?:\.md)?(?:'s)?\s*(?:§§?|Sec\.?|Section)\s*(\d+)(?:\s*[-–]\s*§?(\d+))?")
BARE = re.compile(r"(?<![\w§])§§?\s*(\d+)(?:\s*[-–]\s*§?(\d+))?")  # "§8" in a file that cites THEORY
LINK = re.compile(r"\]\(([^)#\s]*THEORY\.md)(?:#[^)]*)?\)")  # markdown links to the file


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in names.splitlines():
        path = ROOT / name
        if name in ("docs/THEORY.md", "tests/test_docs_theory.py") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def section_numbers():
    return {int(m) for m in re.findall(r"^#+\s*(\d+)\.", THEORY.read_text(encoding="utf-8"), re.M)}


def cited_sections(text):
    prefixed = list(PREFIXED.finditer(text))
    taken = {m.end() for m in prefixed}  # a bare match ending there is the same citation
    bare = [m for m in BARE.finditer(text) if m.end() not in taken] if "THEORY" in text else []
    for match in sorted(prefixed + bare, key=lambda m: m.start()):
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        line = text.count("\n", 0, match.start()) + 1
        yield line, match.group(0), range(first, max(first, last) + 1)


def broken_citations():
    sections = section_numbers()
    broken = []
    for name, text in tracked_text_files():
        for line, cited, numbers in cited_sections(text):
            missing = [n for n in numbers if n not in sections]
            if missing:
                broken.append(f"{name}:{line}: {cited!r} (no section {missing})")
        for match in LINK.finditer(text):
            target = (ROOT / name).parent / match.group(1)
            if not match.group(1).startswith("http") and not target.resolve().is_file():
                line = text.count("\n", 0, match.start()) + 1
                broken.append(f"{name}:{line}: link to {match.group(1)!r} does not resolve")
    return broken


def test_theory_reference_exists_with_the_cited_numbering():
    assert THEORY.is_file(), "docs/THEORY.md is missing"
    assert set(range(1, 11)) <= section_numbers()  # §1-§10 are cited across the code


def test_every_citation_resolves():
    broken = broken_citations()
    assert not broken, "citations of sections that docs/THEORY.md does not have:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see THEORY.md §8.", [8]),
        ("THEORY §2 and THEORY.md §2-9", [2, 2, 3, 4, 5, 6, 7, 8, 9]),
        ("THEORY.md §§7–9", [7, 8, 9]),
        ("THEORY.md Sec. 4", [4]),
        ("THEORY: the §8 estimator", [8]),
        ("no reference, §8 of another paper", []),
    ],
)
def test_citation_forms_are_recognized(text, expected):
    assert [n for _, _, numbers in cited_sections(text) for n in numbers] == expected


def test_a_citation_of_a_missing_section_is_reported():
    assert 99 not in section_numbers()
    assert [list(n) for _, _, n in cited_sections("THEORY.md §99")] == [[99]]
