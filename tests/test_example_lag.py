"""The example lag (round N takes generated examples from rounds up to N - lag) is 2 unless a run
asks for another, whatever the concurrency, so the same seed gives the same pool at any
concurrency (issue 22, item 7). Real DuckDB files, real HTTP to the offline server."""
from selfinstruct import seeds
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool
from tests.conftest import app_pool, run_cli, served_offline
from tests.test_page_generate import manager, open_generate, use_endpoint, wait_for


def _accepted(pool: Pool) -> list[str]:
    return sorted(c["instruction"] for c in pool.runs.candidates(1) if c["status"] == "accepted")


def test_same_seed_accepts_the_same_instructions_at_any_concurrency(tmp_path):
    accepted = {}
    for concurrency in (8, 12, 18):
        with OfflineServer(seed=7, latency_median_s=0.01, latency_sigma=0.8, latency_seed=concurrency) as server, \
                Pool.open(tmp_path / f"c{concurrency}.duckdb") as pool:
            seeds.load_starter_seeds(pool)
            config = RunConfig(base_url=server.base_url, backend="openai-compatible", seed=3, rounds=5,
                               requests_per_round=4, concurrency=concurrency, timeout_s=10.0, max_retries=2)
            run_id = start_run(pool, config)
            assert pool.runs.get(run_id)["config"]["example_lag"] == 2
            assert Runner(pool, run_id).run().status == "finished"
            accepted[concurrency] = _accepted(pool)
    assert len(accepted[8]) > 40
    assert accepted[12] == accepted[8] and accepted[18] == accepted[8]


def test_cli_example_lag_is_stored_kept_on_resume_and_not_changed_by_it(tmp_path):
    db = str(tmp_path / "pool.duckdb")
    with served_offline() as base_url:
        args = ["generate", "--base-url", base_url, "--model", "selfinstruct-demo", "--requests-per-round", "3",
                "--concurrency", "24", "--db", db]
        assert run_cli(*args, "--rounds", "3", "--example-lag", "3").returncode == 0
        with Pool.open(db) as pool:
            assert pool.runs.get(1)["config"]["example_lag"] == 3
            # round 3 with a lag of 3 may use generated examples from round 0 only: none
            assert pool.runs.machine_instructions_until(1, 0) == []
        refused = run_cli("generate", "--resume", "1", "--example-lag", "2", "--rounds", "4", "--db", db)
        assert refused.returncode == 2
        assert "lag of 3" in refused.stderr and "cannot change" in refused.stderr
        resumed = run_cli("generate", "--resume", "1", "--rounds", "4", "--concurrency", "2", "--db", db)
        assert resumed.returncode == 0, resumed.stderr
        with Pool.open(db) as pool:
            assert pool.runs.get(1)["config"]["example_lag"] == 3
        bad = run_cli(*args, "--example-lag", "0")
        assert bad.returncode == 2 and "at least 1 round" in bad.stderr


def test_an_older_runs_stored_lag_is_honoured_on_resume(tmp_path):
    """A run stored with the old concurrency-derived lag (4 at C=24, 8 a round) keeps it."""
    with OfflineServer(seed=7) as server, Pool.open(tmp_path / "old.duckdb") as pool:
        seeds.load_starter_seeds(pool)
        stored = RunConfig(base_url=server.base_url, backend="openai-compatible", seed=3, rounds=2,
                           requests_per_round=3, concurrency=24, timeout_s=10.0).to_dict()
        stored["example_lag"] = 4
        run_id = pool.runs.create(stored)
        assert Runner(pool, run_id, overrides={"rounds": 5}).run().status == "finished"
        assert RunConfig.from_dict(pool.runs.get(run_id)["config"]).lag() == 4
        # round 5 took its generated examples from round 1 at most: its prompts quote nothing later
        later = {c["instruction"] for c in pool.runs.candidates(run_id) if c["round"] >= 2 and c["status"] == "accepted"}
        assert later
        round5 = [r["prompt"] for r in pool.requests.requests_for(pool.runs.rounds(run_id)[4]["id"], "instructions")]
        assert not any(text in prompt for text in later for prompt in round5)


def test_generate_page_has_the_lag_and_stores_it(app_env):
    with OfflineServer() as server:
        at = open_generate(app_env)
        use_endpoint(at, server)
        assert at.number_input(key="gen_example_lag").value == 2
        at.number_input(key="gen_rounds").set_value(1).run()
        at.number_input(key="gen_requests").set_value(2).run()
        at.number_input(key="gen_example_lag").set_value(3).run()
        at.button(key="gen_start").click().run()
        wait_for(at, lambda: not manager(app_env).status().busy)
    assert app_pool(app_env).runs.get(1)["config"]["example_lag"] == 3
