"""What a newcomer reads and types: every command in the README's code blocks parses as written (in a shell where
the virtual environment is active), and every relative link in README.md and docs/ leads somewhere."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the virtual environment's bin/, as activation puts it first on PATH


def commands() -> list[str]:
    """The commands of README.md's bash blocks, continuation lines joined, each `&&`-joined part on its own."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL):
        text = block.replace("\\\n", " ")
        if text.lstrip().startswith(".venv/bin/python -c"):  # a snippet of Python, run by its own test below
            continue
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                found += [part.strip() for part in line.split("&&")]
    return found


SKIPPED = ("python3 -m venv", "pip ", ".venv/bin/pip", "python -m pytest", ".venv/bin/python -m pytest", ". .venv")


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.mark.parametrize("command", commands())
def test_every_readme_command_parses_as_written(command):
    if command.startswith(SKIPPED):
        pytest.skip("the install and test commands: what CI itself runs")
    words = shlex.split(command)
    if words[0].startswith(".venv/bin/"):
        words[0] = words[0].removeprefix(".venv/bin/")
    if words[:2] == ["accelerate", "launch"]:
        config = words[words.index("--config_file") + 1]
        assert (ROOT / config).is_file(), config
        words = ["shoptune", *words[words.index("shoptune") + 1 :]]
    if words[0] == "bash":
        assert (ROOT / words[1]).is_file(), words[1]
        return
    if words[0] == "shoptune":
        done = run([*words, "--help"])  # every option as written must be one the verb knows
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        return
    if words[0] in ("python", "python3"):
        script = ROOT / words[1]
        assert script.is_file(), words[1]
        done = run([words[0], str(script), "--help"])
        assert done.returncode == 0, done.stderr[-2000:]
        for option in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert option in done.stdout, f"{command}: {option} is not an option of {words[1]}"
        return
    pytest.fail(f"a README command of a kind this test does not know: {command}")


def test_the_readme_registry_snippet_runs():
    snippet = re.search(r"```bash\n\.venv/bin/python -c \"(.*?)\"\n```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert snippet is not None
    done = run([sys.executable, "-c", snippet.group(1)])
    assert done.returncode == 0 and "subtasks:" in done.stdout, done.stderr[-2000:]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a file's headings: lower case, punctuation dropped, spaces as dashes."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    text = document.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # links inside code are examples, not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        assert file.exists(), f"{document.relative_to(ROOT)}: {target} leads nowhere"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text(encoding="utf-8")), f"{document.relative_to(ROOT)}: #{anchor}"
