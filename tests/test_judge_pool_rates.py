"""Pool-wide rates from a pool judge run and a labeled study (judge.pool_rates, issue 17): the
offline judge answers with a known error rate, people label with the known truth, and the PPI
interval covers the truth over the whole pool; the human-only interval and the paper's rate come
beside it. Real HTTP to the offline server, real DuckDB."""
import pyarrow as pa
import pytest

from selfinstruct import calibration, quality
from selfinstruct.judge import JudgeConfig, JudgeRunner, pool_rates, start_judge
from selfinstruct.model import ALL_VALID
from selfinstruct.model import NO, PAPER_RATES, QUESTIONS, YES
from selfinstruct.offline import OfflineServer, judge_truth
from selfinstruct.store import Pool

ERROR = 0.15          # the offline judge flips each true answer with this probability


def fill(pool: Pool, tasks: int, *, second_instance_every: int = 0) -> None:
    """`tasks` accepted tasks, one kept instance each (a second one on every k-th task)."""
    run_id = pool.create_run({"model": "fixture"})
    round_id = pool.create_round(run_id, 1, "done")
    first = pool.next_id("candidates")
    ids = list(range(first, first + tasks))
    pool.bulk_insert("candidates", pa.table({
        "id": ids, "round_id": [round_id] * tasks, "position": [i % 40 for i in range(tasks)],
        "instruction": [f"Describe item number {i} of the catalogue in one sentence." for i in range(tasks)],
        "status": ["accepted"] * tasks}), constants={"run_id": run_id})
    extra = [c for k, c in enumerate(ids) if second_instance_every and k % second_instance_every == 0]
    pool.bulk_insert("instances", pa.table({
        "candidate_id": ids + extra, "position": [0] * tasks + [1] * len(extra),
        "input": [f"item {i}" if i % 2 else "" for i in range(tasks)] + ["another"] * len(extra),
        "output": [f"Item {i} is a thing with the number {i}." for i in range(tasks)]
        + [f"Another answer {c}." for c in extra]}))


def texts(pool: Pool, candidate_id: int, instance_id: int) -> tuple[str, str, str]:
    return pool.cursor().execute(
        "SELECT c.instruction, i.input, i.output FROM candidates c JOIN instances i ON i.id = ? WHERE c.id = ?",
        [instance_id, candidate_id]).fetchone()


def label_with_truth(pool: Pool, study_id: int, how_many: int | None = None) -> int:
    """People answer every question with the truth (offline.judge_truth) on the first items."""
    items = pool.judge_study_items(study_id)[:how_many]
    for candidate_id, instance_id, item_id in items:
        pool.save_label(study_id, item_id, "ann", **judge_truth(*texts(pool, candidate_id, instance_id)))
    return len(items)


def endpoint(srv, **kw) -> JudgeConfig:
    return JudgeConfig(backend="openai-compatible", base_url=srv.base_url, model="selfinstruct-demo",
                       structured="off", concurrency=16, **kw)


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """1,500 tasks judged by a judge wrong 15% of the time; 180 of 200 study items labeled."""
    path = tmp_path_factory.mktemp("pool_rates") / "pool.duckdb"
    with Pool.open(path) as pool:
        fill(pool, 1500)
        study_id = quality.create_study(pool, "truth", size=200, seed=5).study_id
        labeled = label_with_truth(pool, study_id, 180)
        with OfflineServer(judge_error=ERROR, judge_seed=2) as srv:
            judge_run_id = start_judge(pool, endpoint(srv), "pool")
            assert JudgeRunner(pool, judge_run_id).run().status == "finished"
        truth = [judge_truth(*texts(pool, c, i)) for c, i, _ in pool.judge_pool_items()]
        pool.checkpoint()     # one file, so a test may copy it
        yield {"path": path, "study_id": study_id, "judge_run_id": judge_run_id, "labeled": labeled,
               "truth": truth}


def true_rate(truth: list[dict], measure: str) -> float:
    if measure == ALL_VALID:
        return sum(all(t[q] == YES for q in QUESTIONS) for t in truth) / len(truth)
    return sum(t[measure] == YES for t in truth) / len(truth)


def test_the_ppi_interval_covers_the_pools_truth_and_the_human_interval_is_beside_it(judged):
    with Pool.open(judged["path"]) as pool:
        rates = pool_rates(pool, judged["judge_run_id"], judged["study_id"])
        classic = pool_rates(pool, judged["judge_run_id"], judged["study_id"], method="ppi")
    assert set(rates) == {*QUESTIONS, ALL_VALID}
    for measure, rate in rates.items():
        truth = true_rate(judged["truth"], measure)
        assert rate.method == "ppi++" and classic[measure].method == "ppi"
        assert rate.low <= truth <= rate.high, (measure, truth, rate)
        assert classic[measure].low <= truth <= classic[measure].high, (measure, truth, classic[measure])
        # the labeled items are the rectifier's; every other task's verdict is the unlabeled set
        assert rate.n_human == judged["labeled"] and rate.n_judge == 1500 - judged["labeled"]
        assert rate.human_low is not None and rate.human_low <= rate.human_estimate <= rate.human_high
        assert rate.paper_rate == PAPER_RATES[measure]
    for q in QUESTIONS:   # an 85%-accurate judge narrows every question's interval (bench/calibration.py)
        assert rates[q].width < rates[q].human_width


def test_the_figures_are_calibration_pool_rate_on_the_rows(judged):
    """The same numbers, computed by hand from the verdict rows and the labels."""
    with Pool.open(judged["path"]) as pool:
        rates = pool_rates(pool, judged["judge_run_id"], judged["study_id"])
        labels = pool.study_labels(judged["study_id"])
        verdicts = {(v["candidate_id"], v["instance_id"]): v for v in pool.judge_verdicts(judged["judge_run_id"])}
    labeled = {(r["candidate_id"], r["instance_id"]): r for r in labels}
    tasks = {c for c, _ in labeled}
    unlabeled = [v for key, v in verdicts.items() if key[0] not in tasks]
    for q in QUESTIONS:
        expected = calibration.pool_rate([v[q] for v in unlabeled], [verdicts[k][q] for k in labeled],
                                         [[labeled[k][q]] for k in labeled], question=q)
        assert rates[q].estimate == pytest.approx(expected.estimate)
        assert (rates[q].low, rates[q].high) == pytest.approx((expected.low, expected.high))
        human_yes = sum(labeled[k][q] == YES for k in labeled)
        assert rates[q].human_estimate == pytest.approx(human_yes / len(labeled))


def test_split_and_unsure_count_as_not_yes(judged, tmp_path):
    """Two annotators who disagree make the item split: not-yes for the human side."""
    import shutil

    path = tmp_path / "copy.duckdb"
    shutil.copy(judged["path"], path)
    with Pool.open(path) as pool:
        before = pool_rates(pool, judged["judge_run_id"], judged["study_id"])["valid_task"]
        item = next(r for r in pool.study_labels(judged["study_id"]) if r["valid_task"] == YES)
        pool.save_label(judged["study_id"], item["item_id"], "bo", valid_task=NO, input_ok=item["input_ok"],
                        output_ok=item["output_ok"])
        after = pool_rates(pool, judged["judge_run_id"], judged["study_id"])["valid_task"]
    assert after.n_human == before.n_human
    assert after.human_estimate == pytest.approx(before.human_estimate - 1 / before.n_human)


def test_labeled_items_the_pool_run_did_not_judge_name_the_run_to_start(tmp_path):
    with Pool.open(tmp_path / "pool.duckdb") as pool:
        fill(pool, 120, second_instance_every=2)      # the study draws the second instance of some tasks
        study_id = quality.create_study(pool, "s", size=40, seed=1).study_id
        label_with_truth(pool, study_id)
        with OfflineServer(judge_error=ERROR) as srv:
            judge_run_id = start_judge(pool, endpoint(srv), "pool")
            JudgeRunner(pool, judge_run_id).run()
            with pytest.raises(ValueError, match=rf"selfinstruct judge --study {study_id} --base-url {srv.base_url} --model selfinstruct-demo"):
                pool_rates(pool, judge_run_id, study_id)
            # another judge on the study does not stand in for this one
            other = start_judge(pool, endpoint(srv, sampling={"temperature": 0.5, "max_tokens": 256}), "study",
                                study_id)
            JudgeRunner(pool, other).run()
            with pytest.raises(ValueError, match="no readable verdict for"):
                pool_rates(pool, judge_run_id, study_id)
            same = start_judge(pool, endpoint(srv), "study", study_id)
            JudgeRunner(pool, same).run()
        rates = pool_rates(pool, judge_run_id, study_id)
        assert rates["output_ok"].n_human == 40 and rates["output_ok"].n_judge == 120 - 40
        with pytest.raises(ValueError, match="not the pool"):
            pool_rates(pool, same, study_id)
        empty = quality.create_study(pool, "nobody yet", size=5, seed=2).study_id
        with pytest.raises(ValueError, match="Nobody has labeled"):
            pool_rates(pool, judge_run_id, empty)
