"""The README's two commands and CI stay in step (CI must run what a new user runs)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_commands_and_ci_runs_both():
    commands = readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text()
    setup, tests = commands
    for part in setup.split(" && "):
        assert part.strip() in ci, f"CI does not run README step {part!r}"
    assert "python -m pytest -q" in tests and "python -m pytest -q" in ci
    assert "python -m bench run" in setup, "command (a) must run the main job"
