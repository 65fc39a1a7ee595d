"""The app's data directory: the one place on the server where the app reads and writes files
that a visitor names (pool files, exports written on the server).

Anyone who can open the app can type a path, so a typed path is taken as a name inside the data
directory and refused when it leads anywhere else: `../` segments, an absolute path outside, a
symlink whose target is outside. The refusal says the same words whether or not the path exists
outside, and a path that is outside by its spelling is refused before the file system is asked
anything about it.

The data directory is `$SELFINSTRUCT_DATA_DIR` when the owner sets it, else `data/` beside the
package. The CLI, run by the machine's own user, writes wherever it is told and does not use this.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Iterable

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PACKAGE_ROOT / "data"
# The files the project ships in data/ (the bottom layer names them, so nothing above has to
# import the module that reads them just to know where they are).
STARTER_SEEDS_PATH = DEFAULT_DATA_DIR / "seed_tasks.jsonl"
DEFAULT_CORPUS_PATH = DEFAULT_DATA_DIR / "demo_corpus.jsonl"
EVAL_INSTRUCTIONS_PATH = DEFAULT_DATA_DIR / "eval_instructions.jsonl"
DATA_DIR_ENV = "SELFINSTRUCT_DATA_DIR"


class PathRefused(ValueError):
    """A typed path the app will not use, in words a visitor can act on."""


# Longer names than these fail in the file system (Linux: NAME_MAX 255 bytes a part, PATH_MAX
# 4096 a path) with an OSError; a typed name is refused in words before that.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


def check_typed_name(text: str) -> None:
    """The one rule for a file name a person types (a pool, an export, a model file): no control
    characters (NUL, newline, ...) and no invisible format characters, among them the bidi
    controls (U+202E RIGHT-TO-LEFT OVERRIDE shows "fdp.exe" as "exe.pdf"), and not longer than
    the file system allows. PathRefused, naming the character, otherwise."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf"):
            name = unicodedata.name(char, "a control character")
            raise PathRefused(f"A file name cannot hold U+{ord(char):04X} ({name}): it is invisible or "
                              "reorders what is shown. Type the name again without it.")
    if len(os.fsencode(text)) > MAX_PATH_BYTES or any(
            len(os.fsencode(part)) > MAX_NAME_BYTES for part in Path(text).parts):
        raise PathRefused(f"That file name is too long ({len(text):,} characters): a folder or file name "
                          f"may have up to {MAX_NAME_BYTES} bytes, a whole path {MAX_PATH_BYTES}.")


def data_dir() -> Path:
    """`$SELFINSTRUCT_DATA_DIR` when set, else data/ beside the package (absolute)."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(os.path.abspath(Path(env).expanduser() if env else DEFAULT_DATA_DIR))


def _shipped_files() -> set[Path]:
    # The starter seeds and the demo corpus live in the default data directory: an export typed
    # over them would break Load starter seeds and the offline demo for everyone.
    return {STARTER_SEEDS_PATH.resolve(), DEFAULT_CORPUS_PATH.resolve(), EVAL_INSTRUCTIONS_PATH.resolve()}


def _inside(path: Path, root: Path) -> bool:
    return path != root and root in path.parents


def confined_path(user_text: str, root: Path | None = None, *,
                  suffixes: Iterable[str] | None = None) -> Path:
    """The file `user_text` names inside `root` (the data directory by default), resolved
    (symlinks followed); PathRefused for anything else. A relative name is taken from `root`;
    an absolute one must already lie inside it. `suffixes` (".duckdb", ...) limits the kinds of
    file, so a typed name cannot make the app write one kind of file over another."""
    root = Path(os.path.abspath(root if root is not None else data_dir()))
    text = (user_text or "").strip()
    where = f"the data directory ({root})"
    if not text:
        raise PathRefused(f"Type a file name inside {where}.")
    check_typed_name(text)
    spelled = Path(text)
    # Spelling first: normpath drops '..' without touching the disk, so nothing outside is looked at.
    lexical = Path(os.path.normpath(spelled if spelled.is_absolute() else root / spelled))
    refused = PathRefused(f"{text} is outside {where}. The app reads and writes files only there: "
                          "type a name such as exports/data.jsonl.")
    if not _inside(lexical, root):
        raise refused
    if len(os.fsencode(str(lexical))) > MAX_PATH_BYTES:
        raise PathRefused(f"That file name is too long: inside {where} a path may have up to "
                          f"{MAX_PATH_BYTES} bytes.")
    try:
        resolved = lexical.resolve(strict=False)
    except OSError as exc:   # a symlink loop on the way, a folder we may not read
        raise PathRefused(f"{text} cannot be used: {exc.strerror or exc}.") from None
    if not _inside(resolved, root.resolve(strict=False)):
        raise refused   # a symlink on the way leads out
    if resolved in _shipped_files():
        raise PathRefused(f"{text} is a file that selfinstruct ships with; choose another name, "
                          "such as exports/data.jsonl.")
    allowed = tuple(s.lower() for s in suffixes or ())
    if allowed and resolved.suffix.lower() not in allowed:
        raise PathRefused(f"{text} does not end in {' or '.join(allowed)}.")
    return resolved


def shown(path: Path, root: Path | None = None) -> str:
    """`path` as a visitor types it: relative to the data directory when inside it."""
    root = Path(os.path.abspath(root if root is not None else data_dir()))
    for base in (root, root.resolve(strict=False)):
        try:
            return str(Path(path).relative_to(base))
        except ValueError:
            continue
    return str(path)
