"""Pool-wide rates from a pool judge run and a labeled study (judge.pool_rates, issue 17): the
offline judge answers with a known error rate, people label with the known truth, and the PPI
interval covers the truth over the whole pool; the human-only interval and the paper's rate come
beside it. Real HTTP to the offline server, real DuckDB."""
import pyarrow as pa
import pytest

from selfinstruct import calibration, quality
from selfinstruct.judge import JudgeConfig, JudgeRunner, NoPoolRates, pool_rates, start_judge
from selfinstruct.model import ALL_VALID
from selfinstruct.model import NO, PAPER_RATES, QUESTIONS, YES
from selfinstruct.offline import OfflineServer, judge_reply, judge_truth
from selfinstruct.store import Pool

ERROR = 0.15          # the offline judge flips each true answer with this probability


def fill(pool: Pool, tasks: int, *, second_instance_every: int = 0) -> None:
    """`tasks` accepted tasks, one kept instance each (a second one on every k-th task)."""
    run_id = pool.runs.create({"model": "fixture"})
    round_id = pool.runs.create_round(run_id, 1, "done")
    first = pool.bulk.next_id("candidates")
    ids = list(range(first, first + tasks))
    pool.bulk.bulk_insert("candidates", pa.table({
        "id": ids, "round_id": [round_id] * tasks, "position": [i % 40 for i in range(tasks)],
        "instruction": [f"Describe item number {i} of the catalogue in one sentence." for i in range(tasks)],
        "status": ["accepted"] * tasks}), constants={"run_id": run_id})
    extra = [c for k, c in enumerate(ids) if second_instance_every and k % second_instance_every == 0]
    pool.bulk.bulk_insert("instances", pa.table({
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
    items = pool.judge.study_items(study_id)[:how_many]
    for candidate_id, instance_id, item_id in items:
        pool.quality.save_label(study_id, item_id, "ann", **judge_truth(*texts(pool, candidate_id, instance_id)))
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
        truth = [judge_truth(*texts(pool, c, i)) for c, i, _ in pool.judge.pool_items()]
        pool.bulk.checkpoint()     # one file, so a test may copy it
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
        assert rate.method == "by-verdict" and classic[measure].method == "ppi"
        assert rate.low <= truth <= rate.high, (measure, truth, rate)
        assert classic[measure].low <= truth <= classic[measure].high, (measure, truth, classic[measure])
        # the labeled items are the rectifier's; every other task's verdict is the unlabeled set
        assert rate.n_human == judged["labeled"] and rate.n_judge == 1500 - judged["labeled"]
        assert rate.human_low is not None and rate.human_low <= rate.human_estimate <= rate.human_high
        assert rate.paper_rate == PAPER_RATES[measure]
        assert rate.low <= rate.estimate <= rate.high and rate.unreadable == 0
    for q in QUESTIONS:
        # An 85%-accurate judge narrows the interval of a rate away from 0 and 1; near them (valid
        # task: 93%) it barely helps, as bench/calibration.py's grid shows (0.90 of people's width
        # at 90% accuracy and a 92% rate), and the exact cells cost a little.
        truth = true_rate(judged["truth"], q)
        assert rates[q].width < rates[q].human_width * (1.0 if 0.2 < truth < 0.8 else 1.05), (q, truth)


def test_the_figures_are_calibration_pool_rate_on_the_rows(judged):
    """The same numbers, computed by hand from the verdict rows and the labels."""
    with Pool.open(judged["path"]) as pool:
        rates = pool_rates(pool, judged["judge_run_id"], judged["study_id"])
        labels = pool.quality.study_labels(judged["study_id"])
        verdicts = {(v["candidate_id"], v["instance_id"]): v for v in pool.judge.verdicts(judged["judge_run_id"])}
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
        item = next(r for r in pool.quality.study_labels(judged["study_id"]) if r["valid_task"] == YES)
        pool.quality.save_label(judged["study_id"], item["item_id"], "bo", valid_task=NO, input_ok=item["input_ok"],
                        output_ok=item["output_ok"])
        after = pool_rates(pool, judged["judge_run_id"], judged["study_id"])["valid_task"]
    assert after.n_human == before.n_human
    assert after.human_estimate == pytest.approx(before.human_estimate - 1 / before.n_human)


def test_another_instance_refuses_rates_until_the_study_is_drawn_from_the_judged_items(tmp_path):
    """The pool run judges each task's first kept instance; a study that drew another instance of
    some tasks is not a sample of what the judge saw. The old code filled those items in from a
    study-scope run of the same judge (people and judge then see different items): now one
    sentence says why and what to do, and a study drawn from the run's items gets rates."""
    with Pool.open(tmp_path / "pool.duckdb") as pool:
        fill(pool, 120, second_instance_every=2)      # the study draws the second instance of some tasks
        study_id = quality.create_study(pool, "s", size=40, seed=1).study_id
        label_with_truth(pool, study_id)
        with OfflineServer(judge_error=ERROR) as srv:
            judge_run_id = start_judge(pool, endpoint(srv), "pool")
            JudgeRunner(pool, judge_run_id).run()
            same = start_judge(pool, endpoint(srv), "study", study_id)   # the old stand-in
            JudgeRunner(pool, same).run()
        with pytest.raises(NoPoolRates, match=rf"are another instance of their task than the one judge run "
                           rf"{judge_run_id} judged .*; draw a study from judge run {judge_run_id}'s items") as refused:
            pool_rates(pool, judge_run_id, study_id)
        assert str(refused.value).count(". ") == 0          # one sentence
        drawn = quality.create_study(pool, "from the run", size=40, seed=1, judge_run=judge_run_id).study_id
        label_with_truth(pool, drawn)
        rates = pool_rates(pool, judge_run_id, drawn)
        assert rates["output_ok"].n_human == 40 and rates["output_ok"].n_judge == 120 - 40
        with pytest.raises(ValueError, match="not the pool"):
            pool_rates(pool, same, study_id)
        empty = quality.create_study(pool, "nobody yet", size=5, seed=2).study_id
        with pytest.raises(ValueError, match="Nobody has labeled"):
            pool_rates(pool, judge_run_id, empty)


def test_a_population_the_study_did_not_sample_gives_no_rate_and_says_what_to_do(tmp_path):
    """A pool run limited to the first 300 of 1,500 tasks beside a study over all 1,500 (the old
    code gave rates with no warning once a study-scope run filled in the rest); a study with a
    round filter; a study drawn before later tasks were accepted; a run not finished."""
    with Pool.open(tmp_path / "pool.duckdb") as pool:
        fill(pool, 600)
        everything = quality.create_study(pool, "all", size=60, seed=3).study_id
        label_with_truth(pool, everything)
        with OfflineServer(judge_error=ERROR) as srv:
            first = start_judge(pool, endpoint(srv), "pool", limit=120)
            JudgeRunner(pool, first).run()
            filler = start_judge(pool, endpoint(srv), "study", everything)
            JudgeRunner(pool, filler).run()
            with pytest.raises(NoPoolRates, match=rf"tasks judge run {first} did not judge .* judge every item of "
                               r"the pool \(selfinstruct judge --pool\)"):
                pool_rates(pool, first, everything)
            whole = start_judge(pool, endpoint(srv), "pool")
            JudgeRunner(pool, whole).run()
            assert pool_rates(pool, whole, everything)["valid_task"].n_human == 60
            fill(pool, 100)                               # later tasks accepted after the study
            later = start_judge(pool, endpoint(srv), "pool")
            JudgeRunner(pool, later).run()
            with pytest.raises(NoPoolRates, match=r"was drawn from 600 items but judge run \d+ judged 700"):
                pool_rates(pool, later, everything)
            one_round = quality.create_study(pool, "round 1", size=30, seed=4, rounds=[1]).study_id
            label_with_truth(pool, one_round)
            with pytest.raises(NoPoolRates, match=r"was drawn from rounds 1 only"):
                pool_rates(pool, later, one_round)
            unfinished = start_judge(pool, endpoint(srv), "pool")
        with pytest.raises(NoPoolRates, match=rf"has answered 0 of its 700 items.*selfinstruct judge --resume {unfinished}"):
            pool_rates(pool, unfinished, everything)


def test_unreadable_verdicts_are_counted_and_kept_as_a_cell_of_their_own(tmp_path):
    """One answer in about eight cannot be read. The old code dropped those items from the pool
    without a word; now they stay in the population as a cell whose rate comes from people's
    labels, and the count comes with the rate."""
    import zlib

    def responder(text, seed):
        return "I would rather not say." if zlib.crc32(text.encode()) % 8 == 0 else judge_reply(text)

    with Pool.open(tmp_path / "pool.duckdb") as pool:
        fill(pool, 400)
        study_id = quality.create_study(pool, "s", size=120, seed=6).study_id
        label_with_truth(pool, study_id)
        with OfflineServer(responder=responder, judge_answers=False) as srv:
            judge_run_id = start_judge(pool, endpoint(srv, failure_streak=50), "pool")
            assert JudgeRunner(pool, judge_run_id).run().status == "finished"
        unreadable = sum(v["unparseable"] is not None for v in pool.judge.verdicts(judge_run_id))
        assert 20 < unreadable < 90
        rates = pool_rates(pool, judge_run_id, study_id)
        truth = [judge_truth(*texts(pool, c, i)) for c, i, _ in pool.judge.pool_items()]
    for measure, rate in rates.items():
        assert rate.unreadable == unreadable and rate.n_human + rate.n_judge == 400
        assert rate.low <= true_rate(truth, measure) <= rate.high


def test_the_cli_summary_of_a_pool_run_gives_rates_or_one_sentence_why_not(tmp_path):
    """`selfinstruct judge --pool` ends with pool-wide rates against the newest labeled study, or
    the one sentence saying why none is shown and what to do (before: no word on rates at all)."""
    from tests.conftest import run_cli

    path = tmp_path / "pool.duckdb"
    with Pool.open(path) as pool:
        fill(pool, 300)
        study_id = quality.create_study(pool, "s", size=60, seed=8).study_id
        label_with_truth(pool, study_id)
    limited = run_cli("judge", "--pool", "--offline", "--structured", "off", "--limit", "100", "--db", str(path))
    assert limited.returncode == 0, limited.stderr
    refusal = next(line for line in limited.stdout.splitlines() if line.startswith("No pool-wide rate"))
    assert "judge every item of the pool (selfinstruct judge --pool)" in refusal and refusal.count(". ") == 0
    whole = run_cli("judge", "--pool", "--offline", "--structured", "off", "--db", str(path))
    assert whole.returncode == 0, whole.stderr
    assert f"Pool-wide rates with study {study_id} (60 labeled items, 240 other judged items" in whole.stdout
    assert "No pool-wide rate" not in whole.stdout


def test_a_stratified_study_is_weighed_by_its_strata_sizes(tmp_path):
    """A study stratified by classification: pool_rates reads each stratum's size from the study's
    stored allocation (its keys survive the JSON round trip) and puts every judged item in its
    stratum; the rates cover the pool's truth. The weighing itself, with strata sampled out of
    proportion, is test_calibration's test_strata_rate_uses_the_judges_cells_and_the_studys_strata_weights."""
    with Pool.open(tmp_path / "pool.duckdb") as pool:
        fill(pool, 200)
        study_id = quality.create_study(pool, "by class", size=60, seed=9, stratify="classification").study_id
        label_with_truth(pool, study_id)
        with OfflineServer(judge_error=ERROR) as srv:
            judge_run_id = start_judge(pool, endpoint(srv), "pool")
            JudgeRunner(pool, judge_run_id).run()
        stratified = pool_rates(pool, judge_run_id, study_id)
        config = pool.quality.study(study_id)["config"]
        truth = [judge_truth(*texts(pool, c, i)) for c, i, _ in pool.judge.pool_items()]
    assert config["stratify"] == "classification" and config["allocation"][0]["eligible"] == 200
    for measure, rate in stratified.items():
        assert rate.low <= true_rate(truth, measure) <= rate.high
        assert rate.n_human == 60 and rate.n_judge == 140


def test_a_study_drawn_from_the_judged_items_with_a_round_filter_still_gives_no_rate(tmp_path):
    """Drawn from judge run X's items but only from some rounds: not a uniform sample of all of
    them, so no rate (the filter check does not depend on where the study was drawn from)."""
    with Pool.open(tmp_path / "pool.duckdb") as pool:
        fill(pool, 120)
        with OfflineServer(judge_error=ERROR) as srv:
            judge_run_id = start_judge(pool, endpoint(srv), "pool")
            JudgeRunner(pool, judge_run_id).run()
        study_id = quality.create_study(pool, "round 1 of the judged", size=20, seed=3, rounds=[1],
                                        judge_run=judge_run_id).study_id
        label_with_truth(pool, study_id)
        with pytest.raises(NoPoolRates, match=r"was drawn from rounds 1 only.* with no run or round filter\.$"):
            pool_rates(pool, judge_run_id, study_id)
