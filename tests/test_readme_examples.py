"""The README's command-line examples print what the README says they print.

A ```console block preceded by the line `<!-- test_readme_examples: runs this block -->` (an
HTML comment: invisible on GitHub) is run: each line starting with `$ ` is a command and the
lines after it, up to the next command, are its expected output (stdout and stderr together).
All marked blocks run in README order in one temporary directory, so later examples see the
pool the earlier ones made, with `SELFINSTRUCT_DB=data/pool.duckdb` (relative to that directory)
and only the offline demo backend: no model, no network. Timings, ports and the temporary
directory's path are normalised before comparing, so they never count as drift.

When the output changes on purpose, rewrite the expected outputs in place and review the diff:

    SELFINSTRUCT_UPDATE_README=1 .venv/bin/python -m pytest tests/test_readme_examples.py
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
MARKER = "<!-- test_readme_examples: runs this block -->"
BLOCK = re.compile(re.escape(MARKER) + r"\n```console\n(.*?)\n```", flags=re.S)
UPDATE = os.environ.get("SELFINSTRUCT_UPDATE_README") == "1"

# The seed file the README's failed import reads: line 2 is not JSON, line 3 has no instruction.
MY_TASKS = ('{"instruction": "Name a color that rhymes with the given word.", "instances": []}\n'
            'not json\n'
            '{"instruction": ""}\n')

# What may differ from run to run, and what it becomes before comparing.
VOLATILE = [
    (re.compile(r"\b\d+:\d\d:\d\d(\.\d+)?\b"), "H:MM:SS"),                 # 0:00:03
    (re.compile(r"\d[\d,]*(\.\d+)? ?(s|ms|seconds?)\b"), "<time> s"),       # 2.5 s, 80 ms
    (re.compile(r"\b(127\.0\.0\.1|localhost|0\.0\.0\.0):\d+"), r"\1:<port>"),
    (re.compile(r"\bPID \d+"), "PID <pid>"),
]


@dataclass
class Example:
    command: str
    expected: list[str]


@dataclass
class Block:
    start: int                      # offsets of the block's body in README.md
    end: int
    examples: list[Example] = field(default_factory=list)

    @property
    def title(self) -> str:
        return " / ".join(e.command for e in self.examples)


def parse_blocks(text: str) -> list[Block]:
    blocks = []
    for match in BLOCK.finditer(text):
        block = Block(match.start(1), match.end(1))
        for line in match.group(1).split("\n"):
            if line.startswith("$ "):
                block.examples.append(Example(line[2:].strip(), []))
            elif block.examples:
                block.examples[-1].expected.append(line)
            elif line.strip():
                raise ValueError(f"README block with output before its first `$ ` command: {line!r}")
        for example in block.examples:
            while example.expected and not example.expected[-1].strip():
                example.expected.pop()
        blocks.append(block)
    return blocks


def normalise(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        for pattern, replacement in VOLATILE:
            line = pattern.sub(replacement, line)
        out.append(line.rstrip())
    while out and not out[-1]:
        out.pop()
    return out


def merged(expected: list[str], actual: list[str]) -> list[str]:
    """The new output, keeping the README's own lines where only volatile parts differ (so an
    update does not rewrite every timing)."""
    out = []
    matcher = difflib.SequenceMatcher(a=normalise(expected), b=normalise(actual), autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        out.extend(expected[a1:a2] if op == "equal" else actual[b1:b2])
    return out


def console_command() -> str:
    beside = Path(sys.executable).with_name("selfinstruct")
    if not beside.exists():
        pytest.fail("No `selfinstruct` command beside this Python: install the package with "
                    "`.venv/bin/pip install -r requirements.txt -e .`", pytrace=False)
    return str(beside)


def run_example(command: str, cwd: Path, env: dict) -> list[str]:
    argv = shlex.split(command)
    if argv[0] != "selfinstruct":
        raise ValueError(f"README examples run the selfinstruct command only, not {command!r}")
    if (argv[1:2] == ["generate"] and "--offline" not in argv and "--resume" not in argv) \
            or {"--local", "--gguf", "--base-url"} & set(argv):
        raise ValueError(f"README examples run on the offline demo only (generate --offline): {command!r}")
    proc = subprocess.run([console_command(), *argv[1:]], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=180)
    # the temporary directory as the README's reader would see it: the current one
    text = proc.stdout.replace(f"{cwd}/", "").replace(str(cwd), ".")
    return text.rstrip("\n").split("\n") if text.strip() else []


BLOCKS = parse_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_runnable_examples():
    assert len(BLOCKS) >= 3, f"expected the README's marked console blocks ({MARKER})"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> list[list[list[str]]]:
    """Every marked example's output, run in README order in one temporary directory."""
    work = tmp_path_factory.mktemp("readme-examples")
    (work / "my_tasks.jsonl").write_text(MY_TASKS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SELFINSTRUCT_", "OPENAI_")) and k not in ("COLUMNS", "LINES")}
    env.update({"SELFINSTRUCT_DB": "data/pool.duckdb", "SELFINSTRUCT_DATA_DIR": str(work / "data"),
                "SELFINSTRUCT_MODELS": str(work / "models"), "COLUMNS": "100", "PYTHONUNBUFFERED": "1"})
    results = [[run_example(e.command, work, env) for e in block.examples] for block in BLOCKS]
    if UPDATE:
        text = README.read_text(encoding="utf-8")
        fresh = parse_blocks(text)
        assert [b.title for b in fresh] == [b.title for b in BLOCKS], "README.md changed during the run"
        for block, got in reversed(list(zip(fresh, results))):
            body = "\n\n".join("\n".join([f"$ {e.command}", *merged(e.expected, out)])
                                 for e, out in zip(block.examples, got))
            text = text[:block.start] + body + text[block.end:]
        README.write_text(text, encoding="utf-8")
    return results


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[b.title for b in BLOCKS])
def test_readme_example_output(index, outputs):
    problems = []
    for example, got in zip(BLOCKS[index].examples, outputs[index]):
        expected, actual = normalise(example.expected), normalise(got)
        if expected != actual:
            diff = difflib.unified_diff(expected, actual, "README.md", "actual output", lineterm="")
            problems.append(f"$ {example.command}\n" + "\n".join(diff))
    if problems and not UPDATE:
        pytest.fail("The README's example output drifted (timings, ports and temporary paths are "
                    "already ignored):\n\n" + "\n\n".join(problems)
                    + "\n\nIf the change is intended: SELFINSTRUCT_UPDATE_README=1 "
                      ".venv/bin/python -m pytest tests/test_readme_examples.py", pytrace=False)
