"""The documents a user and a reader of the code rely on: a README short enough to read, a methods document inside
the repository that every citation in the code finds, and a README recipe that is the method it names."""
from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import yaml

from wsseg.config import load_config, merge_overrides
from wsseg.wsss.methods import method_config

REPOSITORY = Path(__file__).resolve().parent.parent
README = REPOSITORY / "README.md"
METHODS = REPOSITORY / "docs" / "METHODS.md"
README_MAX_LINES = 200
# The spec the project was built from, outside the repository: a user's clone does not have it. Spelled in pieces
# so that this file does not point at it.
OUTSIDE_DOCS = "/".join(["..", "shared", "docs"])
CITATION = re.compile(r"METHODS\.md`? §(\d+(?:\.\d+)*)")
SECTION = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)[. ]", re.MULTILINE)
QUICK_RECIPE = re.compile(r"cat > quick\.yaml <<'EOF'\n(.*?)\nEOF\n", re.DOTALL)
# The method the README's tags-only recipe names as the default, and the one its quick look spells out as settings.
DEFAULT_METHOD = "ensemble"
QUICK_METHOD = "cam"


def tracked_files() -> list[Path]:
    """The repository's files as git tracks them; without git (an unpacked archive), every file outside the
    environment and caches."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        skipped = {".git", ".venv", "build", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}
        return [path for path in REPOSITORY.rglob("*")
                if path.is_file() and not skipped & set(path.relative_to(REPOSITORY).parts)]
    return [REPOSITORY / name for name in listed.decode().split("\0") if name]


def text_of(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError):
        return ""


def citations(text: str) -> set[str]:
    return set(CITATION.findall(text))


def methods_sections(text: str) -> set[str]:
    return set(SECTION.findall(text))


def test_readme_fits_in_two_hundred_lines():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; experiment history belongs in docs/RESULTS.md"


def test_readme_opens_with_the_two_commands():
    first_block = README.read_text(encoding="utf-8").split("```")[1]
    assert "make demo" in first_block
    assert "make test" in first_block


def test_no_file_points_at_the_docs_outside_the_repository():
    pointing = [str(path.relative_to(REPOSITORY)) for path in tracked_files() if OUTSIDE_DOCS in text_of(path)]
    assert pointing == [], f"these files cite {OUTSIDE_DOCS}, which a clone does not have: {pointing}"


def test_every_methods_citation_in_the_repository_names_a_section_of_docs_methods():
    sections = methods_sections(METHODS.read_text(encoding="utf-8"))
    cited = {(str(path.relative_to(REPOSITORY)), number) for path in tracked_files()
             for number in citations(text_of(path))}
    assert cited, "the code cites docs/METHODS.md by section; none found"
    unknown = sorted((path, number) for path, number in cited if number not in sections)
    assert unknown == [], f"citations of docs/METHODS.md sections it does not have: {unknown}"


def test_methods_keeps_the_four_sections_the_code_cites():
    sections = methods_sections(METHODS.read_text(encoding="utf-8"))
    assert {"1", "2", "3", "4"} <= sections


def test_the_section_check_finds_a_missing_section():
    # Spelled in pieces, so that the scan of the repository does not read these examples as citations.
    methods = "METHODS" + ".md"
    assert citations(f"see docs/{methods} §2.9, and `docs/{methods}` §1.1") == {"2.9", "1.1"}
    assert "2.9" not in methods_sections("## 2. WILSON\n### 2.1 The model\n### 2.10 More\n")


def test_readme_recipes_for_tags_only_are_the_methods_they_name():
    config = load_config(preset="cpu")
    assert config == method_config(config, DEFAULT_METHOD)
    recipe = yaml.safe_load(QUICK_RECIPE.search(README.read_text(encoding="utf-8")).group(1))
    configured = copy.deepcopy(config)
    merge_overrides(configured, recipe, source="README.md's quick recipe")
    assert configured == method_config(config, QUICK_METHOD)
