import json

import pytest

from selfinstruct import seeds
from selfinstruct.seeds import SeedImportError, import_seeds, read_seed_file
from tests.conftest import shared_file


def jsonl(*rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


GOOD = {"id": "t1", "name": "capital", "instruction": "Name the capital of the given country.",
        "instances": [{"input": "Peru", "output": "Lima"}], "is_classification": False}


def messages(report):
    return [(i.line, i.message) for i in report.issues]


def test_released_self_instruct_seed_file_imports_cleanly(pool):
    path = shared_file("selfinstruct_seed_tasks.jsonl")
    result = import_seeds(pool, path)
    assert result.imported == 175 and result.instances == 175
    tasks = pool.seed_tasks()
    assert len(tasks) == 175
    # The paper says 25 classification seeds; the released file flags 26.
    assert sum(t["is_classification"] for t in tasks) == 26
    assert tasks[0]["source_id"] == "seed_task_0"


def test_starter_seeds_are_valid_and_varied(pool):
    report = read_seed_file(seeds.STARTER_SEEDS_PATH)
    assert report.ok, report.issues
    assert len(report.tasks) >= 40
    assert sum(t.is_classification for t in report.tasks) >= 8
    assert all(1 <= len(t.instances) <= 2 for t in report.tasks)
    result = seeds.load_starter_seeds(pool)
    assert result.imported == len(report.tasks)
    again = seeds.load_starter_seeds(pool)
    assert again.imported == 0 and pool.counts().seeds == len(report.tasks)


@pytest.mark.parametrize("row, expected", [
    ("{not json", "Not valid JSON"),
    ("[1, 2]", "Expected a JSON object, found a list"),
    ({"name": "x"}, 'Missing "instruction"'),
    ({"instruction": "   "}, '"instruction" is empty'),
    ({"instruction": 42}, '"instruction" must be text, found a number'),
    ({"instruction": "Sort the list.", "is_classification": "yes"}, '"is_classification" must be true or false'),
    ({"instruction": "Sort the list.", "instances": {"input": ""}}, '"instances" must be a list'),
    ({"instruction": "Sort the list.", "instances": [{"input": "3 1 2"}]}, 'instance 1 has no "output"'),
    ({"instruction": "Sort the list.", "instances": [{"input": 3, "output": "x"}]}, '"input" must be text'),
])
def test_each_jsonl_problem_is_named_with_its_line(row, expected):
    report = read_seed_file(jsonl(GOOD, row), "s.jsonl")
    assert len(report.issues) == 1
    line, message = messages(report)[0]
    assert line == 2 and expected in message
    assert [t.instruction for t in report.tasks] == [GOOD["instruction"]]


def test_duplicate_instruction_in_jsonl_names_the_first_line():
    report = read_seed_file(jsonl(GOOD, {**GOOD, "id": "t2"}, GOOD), "s.jsonl")
    assert messages(report) == [(2, 'The same instruction is already on line 1: '
                                    "'Name the capital of the given country.'"),
                                (3, 'The same instruction is already on line 1: '
                                    "'Name the capital of the given country.'")]


def test_not_utf8_binary_and_too_large_files(tmp_path, monkeypatch):
    latin1 = "instruction\nTraduire le mot « été ».\n".encode("latin-1")
    report = read_seed_file(latin1, "s.csv")
    assert report.tasks == [] and "not UTF-8" in report.issues[0].message and report.issues[0].line == 2
    binary = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    assert "binary" in read_seed_file(binary, "s.jsonl").issues[0].message
    monkeypatch.setattr(seeds, "MAX_SEED_FILE_BYTES", 1000)
    big = tmp_path / "big.jsonl"
    big.write_bytes(jsonl(*[GOOD] * 30))
    assert "limited to" in read_seed_file(big).issues[0].message


def test_all_or_nothing_then_valid_only(pool):
    data = jsonl(GOOD, "oops", {**GOOD, "instruction": "List three prime numbers above fifty."})
    with pytest.raises(SeedImportError) as err:
        import_seeds(pool, data, "s.jsonl")
    assert "line 2: Not valid JSON" in str(err.value)
    assert pool.counts().seeds == 0
    result = import_seeds(pool, data, "s.jsonl", valid_only=True)
    assert result.imported == 2 and result.skipped_lines == [2]
    assert pool.counts().seeds == 2


def test_instruction_already_in_the_pool_is_reported(pool):
    import_seeds(pool, jsonl(GOOD), "a.jsonl")
    with pytest.raises(SeedImportError, match="line 1: This instruction is already in the pool"):
        import_seeds(pool, jsonl(GOOD), "b.jsonl")
    assert pool.counts().seeds == 1


def test_alpaca_rows_sharing_an_instruction_become_one_task(pool):
    rows = [
        {"instruction": "Classify the animal as a mammal or a bird.", "input": "eagle", "output": "bird"},
        {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
        {"instruction": "Classify the animal as a mammal or a bird.", "input": "whale", "output": "mammal",
         "is_classification": True},
    ]
    result = import_seeds(pool, json.dumps(rows, indent=2).encode(), "a.json")
    assert result.imported == 2 and result.instances == 3
    tasks = {t["instruction"]: t for t in pool.seed_tasks()}
    animal = tasks["Classify the animal as a mammal or a bird."]
    assert animal["instances"] == [{"input": "eagle", "output": "bird"}, {"input": "whale", "output": "mammal"}]
    assert animal["is_classification"] is True


def test_alpaca_problems_carry_the_line_of_their_element():
    text = '[\n  {"instruction": "Add the numbers.", "input": "2 3", "output": "5"},\n' \
           '  {"instruction": "", "output": "x"},\n  {"instruction": "Sum it.", "input": ["a"], "output": "y"},\n' \
           '  "just text"\n]'
    report = read_seed_file(text.encode(), "a.json")
    assert [(i.line, i.message.split(",")[0]) for i in report.issues] == [
        (3, '"instruction" is empty.'),
        (4, 'This row: "input" must be text'),
        (5, "Expected an object with instruction"),
    ]
    wrong_shape = read_seed_file(b'{"instruction": "x"}', "a.json")
    assert "Expected a JSON list" in wrong_shape.issues[0].message


def test_csv_import_groups_rows_and_checks_flags(pool):
    text = ("instruction,input,output,is_classification\n"
            "Is the number even or odd?,4,even,true\n"
            "Is the number even or odd?,7,odd,true\n"
            '"Rewrite the sentence, politely.",Give me that.,Could you pass me that?,false\n'
            ",x,y,false\n"
            "Spell the word backwards.,cat,tac,maybe\n")
    report = read_seed_file(text.encode(), "s.csv")
    assert messages(report) == [(5, '"instruction" is empty.'),
                                (6, "is_classification must be true or false, found 'maybe'.")]
    result = import_seeds(pool, text.encode(), "s.csv", valid_only=True)
    assert result.imported == 2 and result.instances == 3
    missing_column = read_seed_file(b"prompt,answer\nhi,there\n", "s.csv")
    assert "must name an 'instruction' column" in missing_column.issues[0].message


def test_table_edits_are_validated_then_written(pool):
    import_seeds(pool, jsonl(GOOD, {**GOOD, "instruction": "Spell the word backwards."}), "s.jsonl")
    table = pool.seed_table()
    bad = seeds.apply_seed_edits(pool, table, {"edited_rows": {1: {"instruction": GOOD["instruction"]}},
                                               "added_rows": [{"instruction": ""}], "deleted_rows": []})
    assert not bad.ok and len(bad.issues) == 2
    assert [t["instruction"] for t in pool.seed_tasks()][1] == "Spell the word backwards."
    good = seeds.apply_seed_edits(pool, table, {
        "edited_rows": {0: {"output": "Lima, Peru", "is_classification": True}},
        "added_rows": [{"instruction": "Count the vowels in the word.", "input": "banana", "output": "3"}],
        "deleted_rows": [1],
    })
    assert good.ok and (good.changed, good.added, good.deleted) == (1, 1, 1)
    tasks = pool.seed_tasks()
    assert [t["instruction"] for t in tasks] == [GOOD["instruction"], "Count the vowels in the word."]
    assert tasks[0]["instances"][0]["output"] == "Lima, Peru" and tasks[0]["is_classification"]
