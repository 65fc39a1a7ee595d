"""The house keeps its shape: the import contracts in .importlinter hold, every module has its
place in them, and the pool stays a small front door onto per-area query objects."""
import configparser
import subprocess
import sys
from functools import cached_property
from pathlib import Path

import pytest

from selfinstruct.store import AREAS, Pool, Queries
from tests.conftest import ROOT

MAX_PUBLIC = 30      # issue 27: Pool and each area at most this many public methods


def public(cls) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_") and n != "pool")


def test_import_contracts_are_kept():
    # lint-imports is import-linter's own command (pinned in requirements.txt); run as a process so
    # the graph it builds is the files on disk, not what this test session has imported.
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / ".importlinter")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


def test_every_module_has_a_tier():
    """A new module must be placed in the tiers; the layers contract says nothing about one it
    does not name."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    named = {name.strip() for line in config["importlinter:contract:tiers"]["layers"].split("\n")
             for name in line.replace("|", ":").split(":") if name.strip()}
    package = ROOT / "selfinstruct"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert modules - named == set(), f"place these in .importlinter's tiers: {sorted(modules - named)}"
    assert named - modules == set(), f"these tiers name no module: {sorted(named - modules)}"


def test_the_pool_is_a_small_front_door():
    own = [n for n in public(Pool) if n not in AREAS]
    assert sorted(own) == ["close", "counts", "cursor", "open", "schema_version", "transaction"]
    assert len(public(Pool)) <= MAX_PUBLIC
    assert set(AREAS) == {"seeds", "runs", "requests", "review", "quality", "judge", "evaluations", "explore",
                          "audit", "embeddings", "topics", "bulk"}


@pytest.mark.parametrize("area", AREAS)
def test_each_area_is_a_small_query_object(area, tmp_path):
    cls = vars(Pool)[area]
    assert isinstance(cls, cached_property)
    with Pool.open(tmp_path / "p.duckdb") as pool:
        queries = getattr(pool, area)
        assert isinstance(queries, Queries) and queries.pool is pool
        assert getattr(pool, area) is queries          # one object per pool, not one per access
        names = public(type(queries))
        assert 0 < len(names) <= MAX_PUBLIC, f"pool.{area} has {len(names)} public methods"


def test_the_old_mixin_names_are_gone():
    """A call written against the old flat Pool fails loudly instead of finding a stale method."""
    for old in ("judge_run", "record_eval_answer", "reject_rows", "create_study", "export_counts", "read_state",
                "add_round", "seed_tasks", "bulk_insert", "audit_entries"):
        assert not hasattr(Pool, old), old


def test_no_call_site_uses_an_old_pool_method_name():
    """tools/pool_areas.py --check finds no `pool.<old name>` left (code written before the split
    would otherwise only fail when that line runs)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "pool_areas.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_codemod_rewrites_pool_calls_and_nothing_else():
    import importlib.util

    import libcst

    spec = importlib.util.spec_from_file_location("pool_areas", ROOT / "tools" / "pool_areas.py")
    codemod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codemod)
    CallSites = codemod.CallSites
    before = ("pool.judge_run(3)\nself.pool.record_eval_answer(1, {})\nasyncio.run(main())\n"
              "pool.runs()\npool.runs.get(2)\nargs.run\nrunner.run()\nseeded.reject_rows(f)\n")
    after = libcst.parse_module(before).visit(CallSites({"judge", "evaluations", "runs", "review"})).code
    assert after == ("pool.judge.run(3)\nself.pool.evaluations.record_answer(1, {})\nasyncio.run(main())\n"
                     "pool.runs.all()\npool.runs.get(2)\nargs.run\nrunner.run()\nseeded.review.reject_rows(f)\n")
    again = libcst.parse_module(after).visit(CallSites({"judge", "evaluations", "runs", "review"})).code
    assert again == after
