"""The README's two commands stay true: CI runs the test command verbatim, and the app
command starts the app this repository holds."""
import re

from tests.conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick_start, flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim():
    app_command, test_command = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()
    assert "pytest" in test_command and "requirements.txt" in test_command


def test_the_app_command_starts_app_py_from_the_requirements():
    app_command, _ = readme_commands()
    assert "pip install -r requirements.txt" in app_command and "streamlit run app.py" in app_command
    assert (ROOT / "app.py").exists()
    for package in ("streamlit", "openai", "rouge-score", "pandas", "duckdb"):
        assert re.search(rf"^{package}==", (ROOT / "requirements.txt").read_text(), flags=re.M), package
