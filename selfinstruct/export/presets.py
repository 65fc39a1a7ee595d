"""Hand-off to trainers: export presets that TRL, axolotl and LLaMA-Factory read as
they are. A preset is not a format: it picks one of the existing formats (`formats.py`
writes the data) and adds what that trainer needs beside the data.

===================  ================  ==============================================
preset               formats           beside the data
===================  ================  ==============================================
``trl``              chat (default),   nothing: the card gets a "Training with TRL"
                     prompt-completion section (load with `datasets`, pass to SFTTrainer)
``axolotl``          alpaca (default), ``<stem>_axolotl.yml`` (``axolotl.yml`` in a zip):
                     chat              the ``datasets:`` entry, ``type: alpaca`` or
                                       ``type: chat_template`` with the field mapping
``llama-factory``    alpaca (default), ``dataset_info.json``: one entry named after the
                     chat              data file (``formatting`` alpaca or sharegpt,
                                       ``columns``, and ``tags`` for chat), merged
                                       into the folder's existing file
===================  ================  ==============================================

Every preset also gets a card section saying how to train with that trainer.

`to_yaml` writes the small YAML documents we need (the axolotl snippet and the
card's Hugging Face metadata) in one fixed block style, as PyYAML is not a
dependency: mappings, lists of scalars or mappings, and scalars (plain when
that is unambiguous, else JSON-quoted, which YAML reads as a double-quoted
string)."""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["PRESETS", "PRESET_NAMES", "Preset", "ConfigFile", "PresetError", "get_preset", "resolve_format",
           "config_files", "card_section", "prepare_config_files", "write_config_files", "to_yaml", "dataset_key",
           "AXOLOTL_MARKER", "LLAMA_FACTORY_INFO"]

AXOLOTL_MARKER = "# selfinstruct: axolotl dataset entry"
LLAMA_FACTORY_INFO = "dataset_info.json"


class PresetError(ValueError):
    """A preset cannot be used as asked (a format it does not take, a config file
    beside the data that is not ours to change). One plain sentence."""


@dataclass(frozen=True)
class ConfigFile:
    name: str           # file name beside the data file (or inside the zip)
    text: str
    language: str       # for st.code: "yaml", "json"


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    default_format: str
    formats: tuple[str, ...]
    description: str
    # (data file name, format, in a zip?) -> the config files written beside the data
    configs: Callable[[str, str, bool], list[ConfigFile]]
    # (data file name, format, config file names) -> the card's Markdown section
    card_section: Callable[[str, str, list[str]], str]


# ---------------------------------------------------------------------------- YAML
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/<>]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def to_yaml(value: dict, indent: int = 0) -> str:
    """A mapping as block YAML: nested mappings indented by two, list items as
    "- " at the key's indentation, a mapping item's first key on its "- " line."""
    return "\n".join(_yaml_lines(value, indent)) + "\n"


def _yaml_lines(mapping: dict, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for key, value in mapping.items():
        key = _scalar(key)
        if isinstance(value, dict):
            out.append(f"{pad}{key}:" + (" {}" if not value else ""))
            out += _yaml_lines(value, indent + 2)
        elif isinstance(value, (list, tuple)):
            if not value:
                out.append(f"{pad}{key}: []")
                continue
            out.append(f"{pad}{key}:")
            for item in value:
                if isinstance(item, dict):
                    lines = _yaml_lines(item, indent + 2)
                    out.append(f"{pad}- {lines[0].lstrip()}")
                    out += lines[1:]
                else:
                    out.append(f"{pad}- {_scalar(item)}")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


# ---------------------------------------------------------------------------- the presets
def dataset_key(data_file: str) -> str:
    """The name LLaMA-Factory knows a data file by: its stem in lower case, with
    anything but letters, digits and _ as _ (train.json -> train)."""
    stem = Path(data_file).stem
    key = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    return key or "selfinstruct"


def _trl_configs(data_file: str, fmt: str, archive: bool) -> list[ConfigFile]:
    return []


def _trl_card(data_file: str, fmt: str, files: list[str]) -> str:
    if fmt == "chat":
        what = ("Each row is a conversation in `messages` (a list of `{role, content}` turns: an "
                "optional `system`, then `user` and `assistant`), the conversational shape TRL's "
                "SFTTrainer reads; it applies the model's chat template to it.")
        extra = ""
    else:
        what = ("Each row has a `prompt` and a `completion` (strings), the prompt-completion shape "
                "TRL's SFTTrainer reads; the `template` column only names the prompt layout used "
                "and is dropped below.")
        extra = 'dataset = dataset.remove_columns("template")\n'
    code = ("from datasets import load_dataset\n"
            "from trl import SFTConfig, SFTTrainer\n\n"
            f'dataset = load_dataset("json", data_files={json.dumps(data_file)}, split="train")\n'
            + extra +
            'trainer = SFTTrainer(\n'
            '    model="Qwen/Qwen2.5-0.5B",          # your base model\n'
            '    train_dataset=dataset,\n'
            '    args=SFTConfig(output_dir="sft-output"),\n'
            ')\n'
            "trainer.train()")
    return (f"## Training with TRL\n\n{what} Load the file with the `datasets` library and pass it "
            f"to the trainer:\n\n```python\n{code}\n```\n")


def _axolotl_entry(data_file: str, fmt: str) -> dict:
    if fmt == "alpaca":
        return {"path": data_file, "ds_type": "json", "type": "alpaca"}
    return {"path": data_file, "ds_type": "json", "type": "chat_template", "field_messages": "messages",
            "message_property_mappings": {"role": "role", "content": "content"},
            "roles_to_train": ["assistant"]}


def _axolotl_configs(data_file: str, fmt: str, archive: bool) -> list[ConfigFile]:
    name = "axolotl.yml" if archive else f"{Path(data_file).stem}_axolotl.yml"
    head = (f"{AXOLOTL_MARKER} for {json.dumps(data_file)}\n"
            "# Copy these lines into your axolotl config; `path` is relative to the folder you run\n"
            "# axolotl from, so give the full path if the data lives elsewhere.\n")
    if fmt == "chat":
        head += ("# The conversations are rendered with the model's chat template (set `chat_template`\n"
                 "# in the config to choose another) and only assistant turns are trained on.\n")
    return [ConfigFile(name, head + to_yaml({"datasets": [_axolotl_entry(data_file, fmt)]}), "yaml")]


def _axolotl_card(data_file: str, fmt: str, files: list[str]) -> str:
    kind = "`type: alpaca`" if fmt == "alpaca" else "`type: chat_template`, reading `messages`"
    name = files[0] if files else "the axolotl snippet"
    return (f"## Training with axolotl\n\n`{name}` holds the `datasets:` entry for `{data_file}` "
            f"({kind}); copy it into your axolotl config, with the path to the data file as seen "
            "from where you run axolotl.\n")


def _llama_factory_entry(data_file: str, fmt: str) -> dict:
    if fmt == "alpaca":
        return {"file_name": data_file, "formatting": "alpaca",
                "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    return {"file_name": data_file, "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"}}


def _llama_factory_configs(data_file: str, fmt: str, archive: bool) -> list[ConfigFile]:
    entry = {dataset_key(data_file): _llama_factory_entry(data_file, fmt)}
    return [ConfigFile(LLAMA_FACTORY_INFO, json.dumps(entry, indent=2, ensure_ascii=False) + "\n", "json")]


def _llama_factory_card(data_file: str, fmt: str, files: list[str]) -> str:
    key = dataset_key(data_file)
    shape = ("the Alpaca format (`instruction`, `input`, `output`)" if fmt == "alpaca" else
             "the sharegpt format with OpenAI-style `messages` (`role`, `content`)")
    return (f"## Training with LLaMA-Factory\n\n`{LLAMA_FACTORY_INFO}` beside the data registers "
            f"`{data_file}` as the dataset `{key}` in {shape}. Point `dataset_dir` at this folder "
            f"and set `dataset: {key}` in your LLaMA-Factory training config. Other entries "
            f"already in that `{LLAMA_FACTORY_INFO}` are kept.\n")


PRESETS: dict[str, Preset] = {
    "trl": Preset("trl", "TRL", "chat", ("chat", "prompt-completion"),
                  "Hugging Face TRL's SFTTrainer: chat messages (or prompt/completion); the card says "
                  "how to load the file with `datasets` and train.",
                  _trl_configs, _trl_card),
    "axolotl": Preset("axolotl", "axolotl", "alpaca", ("alpaca", "chat"),
                      "axolotl: Alpaca JSON (type: alpaca) or chat messages (type: chat_template), with "
                      "the datasets: entry for its config in a YAML file beside the data.",
                      _axolotl_configs, _axolotl_card),
    "llama-factory": Preset("llama-factory", "LLaMA-Factory", "alpaca", ("alpaca", "chat"),
                            "LLaMA-Factory: Alpaca JSON (formatting alpaca) or chat messages (formatting "
                            "sharegpt), registered in a dataset_info.json beside the data.",
                            _llama_factory_configs, _llama_factory_card),
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


def get_preset(name: str | None) -> Preset | None:
    if name is None:
        return None
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"Unknown preset {name!r}; use one of {', '.join(PRESET_NAMES)}.") from None


def resolve_format(preset: str | None, fmt: str | None) -> str:
    """The format of an export: `fmt` when given (and the preset takes it), else the
    preset's default. Raises `PresetError` with the formats the preset takes."""
    chosen = get_preset(preset)
    if chosen is None:
        if fmt is None:
            raise PresetError("Choose a format (or a trainer preset, which picks one).")
        return fmt
    if fmt is None:
        return chosen.default_format
    if fmt not in chosen.formats:
        raise PresetError(f"The {chosen.name} preset takes the {' or '.join(chosen.formats)} format "
                          f"({chosen.default_format} by default), not {fmt}.")
    return fmt


def config_files(preset: str | None, data_file: str, fmt: str, *, archive: bool = False) -> list[ConfigFile]:
    """The files `preset` writes beside `data_file` (our own content only: a
    dataset_info.json entry is merged into the folder's file by `prepare_config_files`)."""
    chosen = get_preset(preset)
    if chosen is None:
        return []
    resolve_format(preset, fmt)
    return chosen.configs(data_file, fmt, archive)


def card_section(preset: str | None, data_file: str, fmt: str, *, archive: bool = False) -> str:
    chosen = get_preset(preset)
    if chosen is None:
        return ""
    names = [f.name for f in config_files(preset, data_file, fmt, archive=archive)]
    return chosen.card_section(data_file, fmt, names)


def prepare_config_files(preset: str | None, data_path: Path, fmt: str) -> list[tuple[Path, str]]:
    """What `preset` will write beside `data_path`, checked before anything is written:
    (path, full text) pairs. A dataset_info.json already there gets our entry added (or
    replaced) and keeps every other entry; an axolotl snippet there that we did not
    write is never overwritten. Raises `PresetError`."""
    data_path = Path(data_path)
    out = []
    for config in config_files(preset, data_path.name, fmt):
        path = data_path.with_name(config.name)
        text = config.text
        if config.name == LLAMA_FACTORY_INFO:
            text = _merged_dataset_info(path, json.loads(config.text))
        elif path.exists() and not _ours(path):
            raise PresetError(f"{path} is already there and was not written by selfinstruct; it is left "
                              "as it is. Export under another name, or move that file.")
        out.append((path, text))
    return out


def _ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.readline().startswith(AXOLOTL_MARKER)
    except OSError:
        return False


def _merged_dataset_info(path: Path, entry: dict) -> str:
    existing: dict = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PresetError(f"{path} is there but is not a JSON file we can read ({exc}); it is left as "
                              "it is. Fix or move it, then export again.") from None
        if not isinstance(existing, dict):
            raise PresetError(f"{path} is there but does not hold a JSON object of datasets; it is left "
                              "as it is. Fix or move it, then export again.")
    merged = {**existing, **entry}
    return json.dumps(merged, indent=2, ensure_ascii=False) + "\n"


def write_config_files(files: list[tuple[Path, str]]) -> list[Path]:
    """Write prepared config files, each whole or not at all (a temporary file, then a rename)."""
    written = []
    for path, text in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
                out.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    return written
