"""Hand-off to trainers: each preset's files read the way that trainer reads them, without
the trainers installed.

- TRL: `datasets.load_dataset("json", data_files=...)` reads JSON lines with pyarrow's JSON
  reader, so the file is read here with `pyarrow.json.read_json` and its schema checked
  (conversational `messages`: a list of {role, content} strings; or `prompt`/`completion`
  strings), and every record in Python (roles system/user/assistant, in order).
- axolotl: the YAML snippet, parsed (by a small reader for the one block style we write,
  as PyYAML is not a dependency), points at the data file with `type: alpaca` (records
  with instruction/input/output strings) or `type: chat_template` (its field and property
  mapping name keys every record has).
- LLaMA-Factory: the dataset_info.json entry's keys, its file, its columns and tags present
  in every record; an existing dataset_info.json keeps its other entries.
- The card's Hugging Face YAML header, the CLI and the Export page.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pa_json
import pytest

from selfinstruct import export
from selfinstruct.export import (FORMAT_INFO, PRESETS, ExportFilters, ExportOptions, PresetError, export_dataset,
                                 resolve_format, size_category, to_yaml)
from selfinstruct.store import Pool
from tests.conftest import app_pool, open_page, run_cli

ROLES = {"system", "user", "assistant"}


# -- a reader for the YAML we write ---------------------------------------------------------
def read_yaml(text: str):
    """Block YAML as `presets.to_yaml` writes it: "key: value", "key:" then an indented
    mapping or "- " items (at the key's indentation or deeper), a mapping item's first key
    on its "- " line; scalars plain or double-quoted (JSON escapes); "#" comment lines.
    Anything else fails the test."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    value, end = _block(lines, 0, _indent(lines[0]))
    assert end == len(lines), f"unread YAML from line {end}: {lines[end]!r}"
    return value


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _scalar(text: str):
    text = text.strip()
    if text.startswith('"'):
        return json.loads(text)
    assert not text.startswith(("'", "{", "[", "&", "*", "!", "|", ">")) or text in ("[]", "{}"), text
    if text == "[]":
        return []
    if text == "{}":
        return {}
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    assert ": " not in text and " #" not in text, f"ambiguous plain scalar {text!r}"
    return text


def _block(lines: list[str], i: int, indent: int):
    if lines[i].lstrip().startswith("- "):
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


def _mapping(lines: list[str], i: int, indent: int):
    out: dict = {}
    while i < len(lines) and _indent(lines[i]) == indent and not lines[i].lstrip().startswith("- "):
        key, sep, rest = lines[i].strip().partition(":")
        assert sep, f"not a mapping line: {lines[i]!r}"
        key = _scalar(key)
        assert key not in out, f"duplicate key {key!r}"
        i += 1
        if rest.strip():
            out[key] = _scalar(rest)
        else:
            assert i < len(lines) and (_indent(lines[i]) > indent or (
                _indent(lines[i]) == indent and lines[i].lstrip().startswith("- "))), f"{key} has no value"
            out[key], i = _block(lines, i, _indent(lines[i]))
    return out, i


def _sequence(lines: list[str], i: int, indent: int):
    out: list = []
    while i < len(lines) and _indent(lines[i]) == indent and lines[i].lstrip().startswith("- "):
        item = lines[i].lstrip()[2:]
        if re.match(r'^("(?:[^"\\]|\\.)*"|[^":\s][^:]*):( |$)', item):   # a mapping item
            lines = lines[:i] + [" " * (indent + 2) + item] + lines[i + 1:]
            value, i = _mapping(lines, i, indent + 2)
            out.append(value)
        else:
            out.append(_scalar(item))
            i += 1
    return out, i


def yaml_header(card: str) -> dict:
    assert card.startswith("---\n"), card[:80]
    end = card.index("\n---\n", 4)
    return read_yaml(card[4:end + 1])


def test_the_yaml_reader_and_writer_agree_on_awkward_text():
    data = {"pretty_name": 'He said: "yes" # not a comment', "license": "other", "a": "yes", "b": "no",
            "c": "1K<n<10K", "d": "n<1K", "e": "- dash", "f": "line one\nline two", "g": "", "h": [],
            "nested": {"list": [{"k": "v", "deep": {"x": ["p", "q"]}}, {"k": "w"}], "flag": True}}
    text = to_yaml(data)
    assert read_yaml(text) == data
    assert "a: \"yes\"" in text and "- n<1K" not in text     # words YAML would read as booleans are quoted


# -- presets and formats --------------------------------------------------------------------------
def test_each_preset_picks_its_format_and_refuses_others_plainly():
    assert (resolve_format("trl", None), resolve_format("axolotl", None), resolve_format("llama-factory", None)) \
        == ("chat", "alpaca", "alpaca")
    assert resolve_format("trl", "prompt-completion") == "prompt-completion"
    assert resolve_format("axolotl", "chat") == "chat" and resolve_format(None, "csv") == "csv"
    with pytest.raises(PresetError, match=r"The trl preset takes the chat or prompt-completion format "
                                          r"\(chat by default\), not alpaca\."):
        resolve_format("trl", "alpaca")
    with pytest.raises(PresetError, match="llama-factory preset takes the alpaca or chat format"):
        resolve_format("llama-factory", "parquet")
    with pytest.raises(PresetError, match="Unknown preset 'unsloth'"):
        resolve_format("unsloth", None)
    for preset in PRESETS.values():
        assert preset.default_format in preset.formats


# -- TRL ----------------------------------------------------------------------------------------
def test_trl_conversational_file_reads_as_messages(demo_pool, tmp_path):
    out = tmp_path / "train.jsonl"
    result = export_dataset(demo_pool, None, out, ExportFilters(), ExportOptions(system_prompt="Be brief."),
                            preset="trl")
    assert result.format == "chat" and result.config_paths == []
    table = pa_json.read_json(out)                 # what datasets' "json" builder does with JSON lines
    assert table.column_names == ["messages"]
    assert table.schema.field("messages").type == pa.list_(pa.struct([("role", pa.string()),
                                                                        ("content", pa.string())]))
    rows = table.to_pylist()
    assert len(rows) == result.records == demo_pool.explore.export_counts(ExportFilters())["instances"]
    for row in rows:
        messages = row["messages"]
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"] == "Be brief." and messages[2]["content"].strip()
    card = result.card_path.read_text(encoding="utf-8")
    assert "## Training with TRL" in card
    assert 'load_dataset("json", data_files="train.jsonl", split="train")' in card and "SFTTrainer(" in card


def test_trl_prompt_completion_file_reads_as_strings(demo_pool, tmp_path):
    out = tmp_path / "pc.jsonl"
    result = export_dataset(demo_pool, "prompt-completion", out, ExportFilters(), preset="trl")
    table = pa_json.read_json(out)
    assert table.schema.field("prompt").type == pa.string() and table.schema.field("completion").type == pa.string()
    for row in table.to_pylist():
        assert isinstance(row["prompt"], str) and row["prompt"] and isinstance(row["completion"], str)
        assert row["completion"].strip()
    card = result.card_path.read_text(encoding="utf-8")
    assert 'data_files="pc.jsonl"' in card and 'dataset.remove_columns("template")' in card


def test_trl_without_a_system_prompt_starts_with_the_user(demo_pool, tmp_path):
    out = tmp_path / "t.jsonl"
    export_dataset(demo_pool, None, out, preset="trl", card=False)
    for row in pa_json.read_json(out).to_pylist():
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


# -- axolotl --------------------------------------------------------------------------------------
def test_axolotl_alpaca_snippet_points_at_alpaca_records(demo_pool, tmp_path):
    out = tmp_path / "train.json"
    result = export_dataset(demo_pool, None, out, preset="axolotl")
    snippet_path = tmp_path / "train_axolotl.yml"
    assert result.config_paths == [snippet_path]
    text = snippet_path.read_text(encoding="utf-8")
    assert text.startswith("# selfinstruct: axolotl dataset entry")
    config = read_yaml(text)
    assert config == {"datasets": [{"path": "train.json", "ds_type": "json", "type": "alpaca"}]}
    dataset = config["datasets"][0]
    rows = json.loads((snippet_path.parent / dataset["path"]).read_text(encoding="utf-8"))
    assert isinstance(rows, list) and len(rows) == result.records > 0
    for row in rows:
        assert set(row) == {"instruction", "input", "output"}
        assert all(isinstance(row[k], str) for k in row) and row["instruction"] and row["output"]
    assert any(row["input"] for row in rows) and any(not row["input"] for row in rows)
    card = result.card_path.read_text(encoding="utf-8")
    assert "## Training with axolotl" in card and "`train_axolotl.yml`" in card


def test_axolotl_chat_template_snippet_maps_the_message_fields(demo_pool, tmp_path):
    out = tmp_path / "chat.jsonl"
    export_dataset(demo_pool, "chat", out, ExportFilters(), ExportOptions(system_prompt="Hi."), preset="axolotl", card=False)
    (dataset,) = read_yaml((tmp_path / "chat_axolotl.yml").read_text(encoding="utf-8"))["datasets"]
    assert dataset["type"] == "chat_template" and dataset["path"] == "chat.jsonl" and dataset["ds_type"] == "json"
    field, mapping = dataset["field_messages"], dataset["message_property_mappings"]
    assert set(mapping) == {"role", "content"}
    for row in pa_json.read_json(tmp_path / dataset["path"]).to_pylist():
        messages = row[field]
        assert all(isinstance(m[mapping["role"]], str) and isinstance(m[mapping["content"]], str)
                   for m in messages)
        assert {m[mapping["role"]] for m in messages} == ROLES
        assert set(dataset["roles_to_train"]) <= {m[mapping["role"]] for m in messages}


def test_an_axolotl_file_we_did_not_write_is_left_alone(demo_pool, tmp_path):
    mine = tmp_path / "train_axolotl.yml"
    mine.write_text("datasets: []\n", encoding="utf-8")
    with pytest.raises(PresetError, match="train_axolotl.yml is already there"):
        export_dataset(demo_pool, None, tmp_path / "train.json", preset="axolotl")
    assert mine.read_text(encoding="utf-8") == "datasets: []\n"
    assert not (tmp_path / "train.json").exists()          # refused before anything was written
    again = export_dataset(demo_pool, None, tmp_path / "other.json", preset="axolotl")
    assert again.config_paths == [tmp_path / "other_axolotl.yml"]
    export_dataset(demo_pool, None, tmp_path / "other.json", preset="axolotl")   # its own file: replaced


# -- LLaMA-Factory ----------------------------------------------------------------------------------
def _check_llama_factory_entry(folder: Path, name: str, entry: dict) -> list[dict]:
    assert set(entry) <= {"file_name", "formatting", "columns", "tags"}
    assert entry["formatting"] in ("alpaca", "sharegpt")
    data = folder / entry["file_name"]
    rows = (json.loads(data.read_text(encoding="utf-8")) if data.suffix == ".json"
            else pa_json.read_json(data).to_pylist())
    assert rows
    if entry["formatting"] == "alpaca":
        assert entry["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}
        for row in rows:
            assert all(isinstance(row[column], str) for column in entry["columns"].values())
    else:
        tags = entry["tags"]
        messages_column = entry["columns"]["messages"]
        for row in rows:
            messages = row[messages_column]
            roles = [m[tags["role_tag"]] for m in messages]
            assert all(isinstance(m[tags["content_tag"]], str) for m in messages)
            if roles[0] == tags["system_tag"]:            # LLaMA-Factory takes a leading system turn apart
                roles = roles[1:]
            # then user and assistant turns alternate, user first, ending with the assistant
            assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2) and roles
    return rows


def test_llama_factory_alpaca_entry(demo_pool, tmp_path):
    result = export_dataset(demo_pool, None, tmp_path / "Self Instruct.json", preset="llama-factory")
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert result.config_paths == [tmp_path / "dataset_info.json"]
    assert list(info) == ["self_instruct"]
    assert info["self_instruct"]["file_name"] == "Self Instruct.json"
    assert info["self_instruct"]["formatting"] == "alpaca" and "tags" not in info["self_instruct"]
    rows = _check_llama_factory_entry(tmp_path, "self_instruct", info["self_instruct"])
    assert len(rows) == result.records
    card = result.card_path.read_text(encoding="utf-8")
    assert "## Training with LLaMA-Factory" in card and "`dataset: self_instruct`" in card


def test_llama_factory_sharegpt_entry_is_merged_into_an_existing_file(demo_pool, tmp_path):
    theirs = {"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
              "chat": {"file_name": "old.json", "formatting": "alpaca"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(theirs), encoding="utf-8")
    export_dataset(demo_pool, "chat", tmp_path / "chat.jsonl", ExportFilters(), ExportOptions(system_prompt="Sys."),
                   preset="llama-factory")
    export_dataset(demo_pool, None, tmp_path / "more.json", preset="llama-factory", card=False)
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(info) == ["alpaca_en_demo", "chat", "more"]
    assert info["alpaca_en_demo"] == theirs["alpaca_en_demo"]            # kept as it was
    chat = info["chat"]                                                  # ours, replacing the same name
    assert chat["file_name"] == "chat.jsonl" and chat["formatting"] == "sharegpt"
    assert chat["columns"] == {"messages": "messages"}
    assert chat["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant", "system_tag": "system"}
    _check_llama_factory_entry(tmp_path, "chat", chat)
    _check_llama_factory_entry(tmp_path, "more", info["more"])


def test_a_dataset_info_we_cannot_read_is_left_alone(demo_pool, tmp_path):
    for text in ("{not json", "[1, 2]"):
        (tmp_path / "dataset_info.json").write_text(text, encoding="utf-8")
        with pytest.raises(PresetError, match="dataset_info.json is there but"):
            export_dataset(demo_pool, None, tmp_path / "d.json", preset="llama-factory")
        assert (tmp_path / "dataset_info.json").read_text(encoding="utf-8") == text
        assert not (tmp_path / "d.json").exists()


def test_a_zip_holds_the_preset_files(demo_pool, tmp_path):
    result = export_dataset(demo_pool, None, tmp_path / "bundle.zip", preset="axolotl")
    assert result.files[:2] == ["bundle.json", "axolotl.yml"] and "README.md" in result.files
    with zipfile.ZipFile(tmp_path / "bundle.zip") as zf:
        config = read_yaml(zf.read("axolotl.yml").decode("utf-8"))
        assert config["datasets"][0]["path"] == "bundle.json"
        assert "`axolotl.yml`" in zf.read("README.md").decode("utf-8")
    result = export_dataset(demo_pool, None, tmp_path / "lf.zip", preset="llama-factory", card=False)
    with zipfile.ZipFile(tmp_path / "lf.zip") as zf:
        assert sorted(zf.namelist()) == ["dataset_info.json", "lf.json"]
        assert json.loads(zf.read("dataset_info.json"))["lf"]["file_name"] == "lf.json"
    # a download is a zip when there is a card or a config file; TRL alone with no card is the data file
    assert export.zipped("alpaca", card=False, preset="axolotl")
    assert not export.zipped("chat", card=False, preset="trl") and not export.zipped("alpaca", card=False)
    data = export.export_archive_bytes(demo_pool, "chat", card=False, preset="trl")
    assert data.startswith(b'{"messages"')
    assert export.download_name("alpaca", card=False, preset="llama-factory").startswith(
        "selfinstruct-llama-factory-alpaca-") and export.download_name(
        "alpaca", card=False, preset="llama-factory").endswith(".zip")


# -- the card's Hugging Face metadata -----------------------------------------------------------------
@pytest.mark.parametrize("n, bucket", [
    (0, "n<1K"), (1, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (9_999, "1K<n<10K"),
    (10_000, "10K<n<100K"), (99_999, "10K<n<100K"), (100_000, "100K<n<1M"), (999_999, "100K<n<1M"),
    (1_000_000, "1M<n<10M"), (10_000_000, "10M<n<100M"), (100_000_000, "100M<n<1B"),
    (1_000_000_000, "1B<n<10B"), (10**12, "n>1T")])
def test_size_categories_are_the_hub_buckets(n, bucket):
    assert size_category(n) == bucket


def test_the_card_header_is_hub_metadata(demo_pool, tmp_path):
    result = export_dataset(demo_pool, "alpaca", tmp_path / "data.json", title='My "set"')
    card = result.card_path.read_text(encoding="utf-8")
    header = yaml_header(card)
    assert header == {
        "pretty_name": 'My "set"', "license": "other", "language": ["en"],
        "task_categories": ["text-generation"], "tags": ["self-instruct", "instruction-tuning", "synthetic"],
        "size_categories": ["n<1K"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data.json"}]}]}
    assert result.records < 1000
    assert "No license was chosen" in card and "upload this card as README.md beside `data.json`" in card
    assert export.card.card_data_file(card) == "data.json"        # the card still names its data file

    chosen = export_dataset(demo_pool, "chat", tmp_path / "bundle.zip", license="Apache-2.0", language="en, fr")
    with zipfile.ZipFile(tmp_path / "bundle.zip") as zf:
        card = zf.read("README.md").decode("utf-8")
    header = yaml_header(card)
    assert header["license"] == "apache-2.0" and header["language"] == ["en", "fr"]
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "bundle.jsonl"}]
    assert chosen.files[0] == "bundle.jsonl"
    assert "Released under `apache-2.0`" in card and "upload this card as README.md" not in card


def test_the_size_category_counts_the_records_of_the_file(demo_pool, tmp_path, monkeypatch):
    from selfinstruct.export import card as card_module

    counts = demo_pool.explore.export_counts(ExportFilters())
    real = demo_pool.explore.export_counts

    def counted(filters):           # the demo pool is small: pretend it has 1,000 instances
        out = dict(real(filters))
        out["instances"] = 1_000
        return out

    monkeypatch.setattr(demo_pool.explore, "export_counts", counted)
    built = card_module.build_card(demo_pool, "alpaca", ExportFilters(), data_file="x.json")
    assert yaml_header(built.markdown)["size_categories"] == ["1K<n<10K"]
    per_task = card_module.build_card(demo_pool, "selfinstruct", ExportFilters(), data_file="x.jsonl")
    assert counts["tasks"] < 1000 and yaml_header(per_task.markdown)["size_categories"] == ["n<1K"]


@pytest.mark.parametrize("license, language, message", [
    ("Apache 2.0", None, "is not a license id"), (None, "english", "is not a language code")])
def test_bad_metadata_is_refused_before_writing(demo_pool, tmp_path, license, language, message):
    with pytest.raises(ValueError, match=message):
        export_dataset(demo_pool, "alpaca", tmp_path / "d.json", license=license, language=language)
    assert not (tmp_path / "d.json").exists()


# -- CLI --------------------------------------------------------------------------------------
def test_cli_presets(demo_db_path, tmp_path):
    with Pool.open(demo_db_path) as pool:
        instances = pool.explore.export_counts(ExportFilters())["instances"]
    done = run_cli("export", "--db", str(demo_db_path), "--preset", "axolotl", "--out", str(tmp_path / "a.json"),
                   "--license", "cc-by-4.0")
    assert done.returncode == 0, done.stderr
    assert f"Wrote {instances:,} Alpaca JSON record(s)" in done.stdout
    assert f"axolotl config: {tmp_path / 'a_axolotl.yml'}" in done.stdout
    assert read_yaml((tmp_path / "a_axolotl.yml").read_text(encoding="utf-8"))["datasets"][0]["type"] == "alpaca"
    assert yaml_header((tmp_path / "a_README.md").read_text(encoding="utf-8"))["license"] == "cc-by-4.0"

    done = run_cli("export", "--db", str(demo_db_path), "--preset", "llama-factory", "--format", "chat",
                   "--out", str(tmp_path / "c.jsonl"), "--no-card")
    assert done.returncode == 0, done.stderr
    assert f"LLaMA-Factory config: {tmp_path / 'dataset_info.json'}" in done.stdout
    assert json.loads((tmp_path / "dataset_info.json").read_text())["c"]["formatting"] == "sharegpt"

    done = run_cli("export", "--db", str(demo_db_path), "--preset", "trl", "--out", str(tmp_path / "t.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "Chat messages JSONL" in done.stdout and 'the card\'s "Training with TRL" section' in done.stdout

    refused = run_cli("export", "--db", str(demo_db_path), "--preset", "trl", "--format", "alpaca",
                      "--out", str(tmp_path / "x.json"))
    assert refused.returncode == 2
    assert "The trl preset takes the chat or prompt-completion format (chat by default), not alpaca." \
        in refused.stderr
    assert not (tmp_path / "x.json").exists()
    neither = run_cli("export", "--db", str(demo_db_path), "--out", str(tmp_path / "y.json"))
    assert neither.returncode == 2 and "Give --format" in neither.stderr and "--preset" in neither.stderr
    bad = run_cli("export", "--db", str(demo_db_path), "--format", "alpaca", "--language", "English",
                  "--out", str(tmp_path / "z.json"))
    assert bad.returncode == 2 and "is not a language code" in bad.stderr


# -- the page -----------------------------------------------------------------------------------
def test_the_page_trainer_choice_sets_the_format_and_shows_the_config(demo_app_env, tmp_path):
    at = open_page("pages/export.py")
    at.segmented_control(key="exp_trainer").set_value("llama-factory").run()
    assert not at.exception
    control = at.segmented_control(key="exp_format_llama-factory")
    assert control.value == "alpaca" and list(control.options) == [FORMAT_INFO["alpaca"].label,
                                                                     FORMAT_INFO["chat"].label]
    codes = [c.value for c in at.code]
    entry = json.loads(next(c for c in codes if '"formatting"' in c))
    assert entry == {"selfinstruct_data": {"file_name": "selfinstruct-data.json", "formatting": "alpaca",
                                           "columns": {"prompt": "instruction", "query": "input",
                                                       "response": "output"}}}
    download = at.get("download_button")[0].proto
    assert re.fullmatch(r"Download selfinstruct-llama-factory-alpaca-\d{8}-\d{4}\.zip", download.label)

    at.toggle(key="exp_card").set_value(False).run()            # no card: still a zip, for the config
    assert at.get("download_button")[0].proto.label.endswith(".zip")
    target = tmp_path / "lf" / "train.json"
    (tmp_path / "lf").mkdir()
    (tmp_path / "lf" / "dataset_info.json").write_text('{"keep": {"file_name": "k.json"}}', encoding="utf-8")
    at.text_input(key="exp_path_alpaca_True").input(str(target)).run()
    at.button(key="exp_write").click().run()
    assert not at.exception, at.exception
    assert any("LLaMA-Factory config:" in t.value for t in at.text)
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(info) == ["keep", "train"] and info["train"]["file_name"] == "train.json"
    rows = json.loads(target.read_text(encoding="utf-8"))
    assert len(rows) == app_pool(demo_app_env).explore.export_counts(ExportFilters())["instances"]


def test_the_page_trl_and_axolotl_choices(demo_app_env, tmp_path):
    at = open_page("pages/export.py")
    at.segmented_control(key="exp_trainer").set_value("trl").run()
    assert not at.exception
    assert at.segmented_control(key="exp_format_trl").value == "chat"
    assert any("## Training with TRL" in c.value and "SFTTrainer" in c.value for c in at.code)
    at.segmented_control(key="exp_format_trl").set_value("prompt-completion").run()
    assert any('remove_columns("template")' in c.value for c in at.code)

    at.segmented_control(key="exp_trainer").set_value("axolotl").run()
    at.segmented_control(key="exp_format_axolotl").set_value("chat").run()
    assert not at.exception
    snippet = next(c.value for c in at.code if "datasets:" in c.value)
    assert read_yaml(snippet)["datasets"][0]["type"] == "chat_template"
    at.text_input(key="exp_license").input("MIT").run()
    target = tmp_path / "ax.zip"
    at.text_input(key="exp_path_chat_True").input(str(target)).run()
    at.button(key="exp_write").click().run()
    assert not at.exception
    with zipfile.ZipFile(target) as zf:
        assert set(zf.namelist()) >= {"ax.jsonl", "axolotl.yml", "README.md"}
        assert yaml_header(zf.read("README.md").decode("utf-8"))["license"] == "mit"

    at.text_input(key="exp_language").input("English").run()
    assert "is not a language code" in " ".join(t.value for t in at.text)
    assert not at.get("download_button")
