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
    tasks = pool.seeds.seed_tasks()
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
    other = {**GOOD, "instruction": "List three prime numbers above fifty."}
    import_seeds(pool, jsonl(GOOD), "a.jsonl")
    # a file with new rows and rows already in the pool: all or nothing, as for any problem
    with pytest.raises(SeedImportError, match="line 1: This instruction is already in the pool"):
        import_seeds(pool, jsonl(GOOD, other), "b.jsonl")
    assert pool.counts().seeds == 1
    partial = import_seeds(pool, jsonl(GOOD, other), "b.jsonl", valid_only=True)
    assert partial.imported == 1 and partial.in_pool_lines == [1]
    assert partial.summary("b.jsonl") == ("Imported 1 task(s) with 1 instance(s) from b.jsonl. "
                                          "Skipped 1 line(s) already in the pool (1).")


def test_importing_the_same_file_again_writes_nothing_and_says_why(pool):
    rows = [{"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
            {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
            {"instruction": "Add the numbers.", "input": "4 4", "output": "8"}]
    data = ("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]").encode()
    first = import_seeds(pool, data, "a.json")
    assert (first.imported, first.instances) == (2, 3)
    for valid_only in (False, True):
        again = import_seeds(pool, data, "a.json", valid_only=valid_only)
        assert (again.imported, again.instances) == (0, 0)
        assert again.in_pool_lines == [2, 3, 4] and again.invalid_lines == []
        assert again.summary("a.json") == "Nothing new was imported from a.json: 3 line(s) already in the pool (2, 3, 4)."
        assert all(i.message.startswith("This instruction is already in the pool") for i in again.report.issues)
    assert pool.counts().seeds == 2 and len(pool.audit.entries(action="import_seeds")) == 1


def test_reimport_in_the_cli_says_already_in_the_pool(db_path, tmp_path, capsys):
    from selfinstruct import cli

    path = tmp_path / "s.jsonl"
    path.write_bytes(jsonl(GOOD))
    assert cli.main(["seeds", "import", str(path), "--db", str(db_path)]) == 0
    capsys.readouterr()
    assert cli.main(["seeds", "import", str(path), "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Nothing new was imported from {path} (selfinstruct): 1 line(s) already in the pool (1).")


# -- big files, bad rows anywhere, hostile input --------------------------------------------
def big_rows(n: int) -> list[dict]:
    return [{"instruction": f"Write a two-line poem about the number {i} and the sea.",
             "input": f"tone: calm, number {i}" if i % 3 == 0 else "",
             "output": f"The number {i} floats on a quiet sea, / counting waves for you and me."}
            for i in range(n)]


def write_rows(path, rows, fmt: str) -> None:
    import csv

    with path.open("w", encoding="utf-8", newline="") as f:
        if fmt == "alpaca":   # one element per line: row i is on line i + 2
            f.write("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
        elif fmt == "selfinstruct":
            f.writelines(json.dumps({"instruction": r["instruction"], "instances": [
                {"input": r["input"], "output": r["output"]}]}) + "\n" for r in rows)
        else:                 # header on line 1: row i is on line i + 2
            w = csv.writer(f)
            w.writerow(["instruction", "input", "output", "is_classification"])
            w.writerows([r["instruction"], r["input"], r["output"], "false"] for r in rows)


def test_a_100000_row_alpaca_file_over_10_mb_imports_completely_with_progress(pool, tmp_path):
    path = tmp_path / "alpaca.json"
    write_rows(path, big_rows(100_000), "alpaca")
    size = path.stat().st_size
    assert size > 12 * 1024 * 1024   # the old limit was 10 MB
    seen = []
    result = import_seeds(pool, path, progress=lambda done, total: seen.append((done, total)))
    assert (result.imported, result.instances, result.skipped_lines) == (100_000, 100_000, [])
    assert pool.counts().seeds == 100_000
    assert pool._scalar("SELECT count(*) FROM instances WHERE seed_id IS NOT NULL") == 100_000
    audit = pool.audit.entries(action="import_seeds")
    assert len(audit) == 1 and audit[0]["after"]["count"] == 100_000
    assert len(audit[0]["after"]["id_ranges"]) == 1
    # the pool keeps the file's order, and each instance stays with its task
    first, last = pool._q("SELECT min(id), max(id) FROM seed_tasks").fetchone()
    assert pool._q("SELECT instruction FROM seed_tasks WHERE id = ?", [last]).fetchone()[0] == \
        "Write a two-line poem about the number 99999 and the sea."
    assert pool._scalar("SELECT count(*) FROM seed_tasks s JOIN instances i ON i.seed_id = s.id "
                        "WHERE i.output NOT LIKE '%number ' || (s.id - ?) || ' floats%'", [first]) == 0
    assert seen[-1] == (size, size) and len(seen) >= size // seeds.CHUNK_BYTES
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("fmt, name", [("alpaca", "a.json"), ("selfinstruct", "s.jsonl"), ("csv", "s.csv")])
def test_one_bad_row_at_line_99999_rejects_the_whole_file(pool, tmp_path, fmt, name):
    rows = big_rows(100_000)
    offset = 1 if fmt == "selfinstruct" else 2   # the row's number + offset is its line
    rows[99_999 - offset]["instruction"] = "   "
    path = tmp_path / name
    write_rows(path, rows, fmt)
    with pytest.raises(SeedImportError) as err:
        import_seeds(pool, path)
    assert err.value.report.issues == [seeds.SeedIssue(99_999, '"instruction" is empty.')]
    assert "line 99999: \"instruction\" is empty." in str(err.value)
    assert pool.counts().seeds == 0 and pool._scalar("SELECT count(*) FROM instances") == 0
    assert pool.audit.entries(action="import_seeds") == []


def test_reading_in_tiny_chunks_gives_the_same_tasks(monkeypatch):
    rows = big_rows(40)
    rows[5]["output"] = "Café, naïve, 東京, emoji 🙂 — and a \u2028 line separator"
    rows[7]["instruction"] = rows[6]["instruction"]
    text = json.dumps(rows, indent=4, ensure_ascii=False).encode()
    whole = read_seed_file(text, "a.json")
    monkeypatch.setattr(seeds, "CHUNK_BYTES", 7)
    chunked = read_seed_file(text, "a.json")
    assert whole.ok and chunked.ok and len(whole.tasks) == 39
    assert [(t.instruction, t.instances, t.line) for t in chunked.tasks] == \
        [(t.instruction, t.instances, t.line) for t in whole.tasks]
    assert whole.tasks[5].instances[0]["output"] == rows[5]["output"]
    assert whole.tasks[6].line == 2 + 6 * 5 and len(whole.tasks[6].instances) == 2


@pytest.mark.parametrize("name, body", [
    ("s.jsonl", '{"instruction": "Name a fruit."}\n{"instruction": ' + "[" * 100_000 + "]" * 100_000 + "}\n"),
    ("a.json", '[\n{"instruction": "Name a fruit.", "output": "fig"},\n'
               '{"instruction": "x", "output": ' + "[" * 100_000 + "]" * 100_000 + "}\n]"),
])
def test_deeply_nested_json_is_a_one_line_problem(pool, name, body, db_path, tmp_path, capsys):
    report = read_seed_file(body.encode(), name)
    line = 3 if name == "a.json" else 2
    assert [str(i) for i in report.issues] == [
        f"line {line}: The JSON is nested too deeply to read; a seed row holds text fields and a list of instances, "
        "not nested lists or objects." + (" Reading stopped here." if name == "a.json" else "")]
    with pytest.raises(SeedImportError, match=f"line {line}: The JSON is nested too deeply"):
        import_seeds(pool, body.encode(), name)
    from selfinstruct import cli

    path = tmp_path / name
    path.write_text(body)
    assert cli.main(["seeds", "import", str(path), "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert f"line {line}: The JSON is nested too deeply" in err and "Traceback" not in err


@pytest.mark.parametrize("name, data, where", [
    ("s.jsonl", jsonl(GOOD, {"instruction": "Say hi\u0000."}), '"instruction"'),
    ("s.jsonl", jsonl(GOOD, {"instruction": "Say hi.", "instances": [{"input": "", "output": "h\u0000i"}]}),
     'instance 1: "output"'),
    ("s.jsonl", jsonl(GOOD, {"instruction": "Say hi.", "name": "n\u0000"}), '"name"'),
    ("a.json", json.dumps([{"instruction": "Add.", "output": "5"}, {"instruction": "Say hi.", "input": "\u0000", "output": "hi"}],
                          indent=0).encode(), 'This row: "input"'),
    ("s.csv", b"instruction,input,output\nAdd.,2 3,5\nSay hi.,,h\x00i\n", '"output"'),
])
def test_nul_characters_are_refused_naming_the_line_and_field(pool, name, data, where):
    report = read_seed_file(data, name)
    line = {"a.json": 6, "s.csv": 3}.get(name, 2)
    assert [str(i) for i in report.issues] == [
        f"line {line}: {where} holds a NUL character (\\u0000), which a seed cannot hold; remove it."]
    with pytest.raises(SeedImportError):
        import_seeds(pool, data, name)
    assert pool.counts().seeds == 0


def test_alpaca_rows_sharing_an_instruction_become_one_task(pool):
    rows = [
        {"instruction": "Classify the animal as a mammal or a bird.", "input": "eagle", "output": "bird"},
        {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
        {"instruction": "Classify the animal as a mammal or a bird.", "input": "whale", "output": "mammal",
         "is_classification": True},
    ]
    result = import_seeds(pool, json.dumps(rows, indent=2).encode(), "a.json")
    assert result.imported == 2 and result.instances == 3
    tasks = {t["instruction"]: t for t in pool.seeds.seed_tasks()}
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
    table = pool.seeds.seed_table()
    bad = seeds.apply_seed_edits(pool, table, {"edited_rows": {1: {"instruction": GOOD["instruction"]}},
                                               "added_rows": [{"instruction": ""}], "deleted_rows": []})
    assert not bad.ok and len(bad.issues) == 2
    assert [t["instruction"] for t in pool.seeds.seed_tasks()][1] == "Spell the word backwards."
    good = seeds.apply_seed_edits(pool, table, {
        "edited_rows": {0: {"output": "Lima, Peru", "is_classification": True}},
        "added_rows": [{"instruction": "Count the vowels in the word.", "input": "banana", "output": "3"}],
        "deleted_rows": [1],
    })
    assert good.ok and (good.changed, good.added, good.deleted) == (1, 1, 1)
    tasks = pool.seeds.seed_tasks()
    assert [t["instruction"] for t in tasks] == [GOOD["instruction"], "Count the vowels in the word."]
    assert tasks[0]["instances"][0]["output"] == "Lima, Peru" and tasks[0]["is_classification"]
