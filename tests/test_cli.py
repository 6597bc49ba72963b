"""The `wsseg` command's help: what the tool does and its pipelines, for a user who has read nothing else."""
import pytest

from wsseg.cli import main
from wsseg.runtime.runner import PIPELINES


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


def _line_of(text: str, name: str) -> list[str]:
    """The lines of `text` that list `name` as an entry: indented, the name, then its description."""
    return [line for line in text.splitlines() if line.split()[:1] == [name] and line.startswith("  ")]


def test_wsseg_help_says_what_the_tool_does_before_anything_else(capsys):
    text = _help(capsys)
    opening = text.split("\n\n")[1]
    assert "image tags instead of pixel masks" in opening
    assert "register(subparsers)" not in text


def test_wsseg_help_lists_every_pipeline_with_what_it_does(capsys):
    from pipelines import PIPELINES as COMPILED

    text = _help(capsys)
    listed = text[text.index("\npipelines:\n"):]
    for name in COMPILED:
        assert len(_line_of(listed, name)) == 1, f"pipeline {name} is not listed once in `wsseg --help`"
    for name, what in PIPELINES.items():
        assert what in _line_of(listed, name)[0]


def test_run_help_gives_one_line_per_pipeline(capsys):
    text = _help(capsys, "run")
    for name, what in PIPELINES.items():
        lines = _line_of(text, name)
        assert len(lines) == 1, f"`wsseg run --help` lists {name} on {len(lines)} lines"
        assert lines[0].split(None, 1)[1] == what


def test_each_pipeline_help_says_what_it_runs(capsys):
    for name, what in PIPELINES.items():
        assert what[1:] in " ".join(_help(capsys, "run", name).split())
