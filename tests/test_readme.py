"""The README's two commands stay true: CI runs the test command verbatim, and the app
command starts the app this repository holds; both install the package editable, and the
pins in pyproject.toml and requirements.txt agree."""
import ast
import re
import sys
import tomllib

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
    assert "\n" not in test_command


def test_the_app_command_starts_app_py_from_the_requirements():
    app_command, _ = readme_commands()
    assert "pip install -r requirements.txt" in app_command and "streamlit run app.py" in app_command
    assert "\n" not in app_command
    assert (ROOT / "app.py").exists()
    for package in ("streamlit", "openai", "rouge-score", "pandas", "duckdb"):
        assert re.search(rf"^{package}==", (ROOT / "requirements.txt").read_text(), flags=re.M), package


def test_both_commands_install_the_package_editable():
    for command in readme_commands():
        assert re.search(r"pip install (-q )?-r requirements\.txt -e \. ", command), command


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    return pins


def test_pyproject_pins_its_dependencies_as_requirements_txt_does():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = _pins(project["dependencies"])
    required = _pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert runtime, "pyproject.toml declares no dependencies"
    for name, version in runtime.items():
        assert required.get(name) == version, f"{name}: pyproject {version}, requirements.txt {required.get(name)}"
    assert project["scripts"]["selfinstruct"] == "selfinstruct.cli:main"


def _imported_top_level_names() -> set[str]:
    """Top-level names of the absolute imports in the repository's Python files."""
    names = set()
    for path in ROOT.glob("**/*.py"):
        if {".venv", "test-output"} & set(path.relative_to(ROOT).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_imported_third_party_package_is_pinned():
    from importlib.metadata import packages_distributions

    local = {"selfinstruct", "tests", "pages", "app", "bench", "conftest", "e2e"}
    # Run in a venv of its own, never installed here: tests/data/make_ppi_fixture.py (ppi_py's wheel
    # installs a top-level `tests` package that would shadow ours).
    local |= {"ppi_py"}
    local |= {p.stem for p in (ROOT / "bench").glob("*.py")} | {p.stem for p in (ROOT / "pages").glob("*.py")}
    required = _pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    distributions = packages_distributions()
    missing = []
    for name in sorted(_imported_top_level_names() - set(sys.stdlib_module_names) - local):
        dists = {re.sub(r"[-_.]+", "-", d.lower()) for d in distributions.get(name, [])}
        if not dists & set(required):
            missing.append(f"{name} (from {', '.join(sorted(dists)) or 'no installed distribution'})")
    assert not missing, "imported but not pinned in requirements.txt: " + "; ".join(missing)


def test_the_annotators_pages_in_the_readme_are_the_ones_they_get():
    # Issue 26: the README said three pages while annotators saw four.
    from selfinstruct import access

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    bullet = re.search(r"- \*\*Annotators\*\* see (\w+) pages: (.*?)\n- ", text, re.S)
    assert bullet, "the README's team section lists what annotators see"
    named = {name.lower() for name in re.findall(r"\*\*(\w+)\*\*", bullet.group(2))}
    assert named == set(access.pages_for(access.ANNOTATOR))
    words = {3: "three", 4: "four", 5: "five", 6: "six"}
    assert bullet.group(1) == words[len(named)]
