"""docs/architecture.md's folder map is true of the tree: every module is in it, and every
module it names exists."""

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
ARCHITECTURE = PROJECT_ROOT / "docs" / "architecture.md"
MAPPED_PACKAGES = ("recsys_assets", "bentos")
CONTINUATION = 16  # lines indented this far continue the description above them


def folder_map(text: str) -> set[str]:
    """The paths of the code block under '## Folders': a name per line, two spaces a level."""
    block = re.search(r"^## Folders\n.*?^```\n(.*?)^```", text, re.S | re.M)
    assert block, "docs/architecture.md has no '## Folders' code block"
    paths, stack = set(), []
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if not line.strip() or indent >= CONTINUATION:
            continue
        assert indent % 2 == 0, f"odd indentation in the folder map: {line!r}"
        name = line.split()[0]
        stack = stack[: indent // 2]
        paths.add("".join(stack) + name)
        if name.endswith("/"):
            stack.append(name)
    return paths


def modules() -> set[str]:
    found = set()
    for package in MAPPED_PACKAGES:
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                found.add(path.relative_to(PROJECT_ROOT).as_posix())
    return found


def test_every_module_is_in_the_folder_map():
    missing = sorted(modules() - folder_map(ARCHITECTURE.read_text()))
    assert missing == [], f"add these to the folder map of docs/architecture.md: {missing}"


def test_every_mapped_module_exists():
    mapped = {p for p in folder_map(ARCHITECTURE.read_text()) if p.startswith(MAPPED_PACKAGES)}
    gone = sorted(p for p in mapped if not (PROJECT_ROOT / p).exists())
    assert gone == [], f"the folder map of docs/architecture.md names what is not there: {gone}"


def test_the_parser_reads_nesting():
    block = ["a/", "  b.py    x", "                  more of x", "  c/", "    d.py", "e.py"]
    text = "## Folders\n\n```\n" + "\n".join(block) + "\n```\n"
    assert folder_map(text) == {"a/", "a/b.py", "a/c/", "a/c/d.py", "e.py"}
