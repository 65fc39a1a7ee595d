"""One rule for keeping API keys out of text that came back from an endpoint.

Some gateways quote the caller's request in their error messages, ``Authorization`` header
included. Any error or status text an endpoint sends us may be stored (``runs.error``,
``requests.error``, judge and evaluation errors, batch errors), printed, logged or shown on a
page, so it goes through `redact` first. Completions (the model's answers) are never redacted:
they are the data.

`redact(text)` removes

* every key this process has sent to an endpoint (`remember`: every `llm.LLMConfig` with a key
  registers it, which covers every client the project builds), and any piece of one that is 8 or
  more characters long (a gateway may quote the key's tail, or cut it in the middle);
* any ``Bearer <token>`` value and any ``Authorization: <value>`` (also ``"authorization":
  "..."`` and ``authorization=...``), whatever the token is, known key or not.

The keys are kept in memory only, for the life of the process. Keys shorter than 8 characters
are removed whole only (their pieces would be too common), and the placeholder key that local
servers get is not a secret.

A leaf module (it imports nothing from the package), so `llm`, `batch` and any future client
(an embedder, say) use the same rule without import cycles.
"""
from __future__ import annotations

import re
import threading
from typing import Iterable

__all__ = ["MIN_PIECE", "MASK", "redact", "remember", "forget"]

MIN_PIECE = 8                 # the shortest piece of a key that is removed on its own
MASK = "[redacted]"
_PLACEHOLDERS = frozenset({"not-needed"})   # llm.PLACEHOLDER_API_KEY: not a secret

_lock = threading.Lock()
_keys: set[str] = set()
_pieces: set[str] = set()     # every MIN_PIECE-long substring of a remembered key

# `Authorization: Bearer abc`, `"authorization": "abc"`, `authorization=abc`: the value up to the
# end of the quoted string or the line.
_AUTH_VALUE = re.compile(r"""(?i)(\bauthorization\b["']?\s*[:=]\s*)(["']?)([^"'\r\n]*)""")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;)}\]]+")


def remember(key: str | None) -> None:
    """Treat `key` as a secret from now on (in this process)."""
    if not key or key in _PLACEHOLDERS or len(key) < 4:
        return
    with _lock:
        if key in _keys:
            return
        _keys.add(key)
        _pieces.update(key[i:i + MIN_PIECE] for i in range(len(key) - MIN_PIECE + 1))


def forget() -> None:
    """Drop every remembered key (tests)."""
    with _lock:
        _keys.clear()
        _pieces.clear()


def _mask_pieces(text: str, keys: set[str], pieces: set[str]) -> str:
    for key in sorted(keys, key=len, reverse=True):
        text = text.replace(key, MASK)
    if not pieces or len(text) < MIN_PIECE:
        return text
    # Any substring of a key of MIN_PIECE or more characters is a run of overlapping
    # MIN_PIECE-long pieces: mark every window that is a piece, and mask each marked span once.
    marked = [False] * len(text)
    for i in range(len(text) - MIN_PIECE + 1):
        if text[i:i + MIN_PIECE] in pieces:
            for j in range(i, i + MIN_PIECE):
                marked[j] = True
    if not any(marked):
        return text
    out, i = [], 0
    while i < len(text):
        if marked[i]:
            while i < len(text) and marked[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def redact(text, extra_keys: Iterable[str | None] = ()):
    """`text` without any remembered key (or `extra_keys`), piece of one (8+ characters),
    Bearer token or Authorization value. Anything that is not a string is returned as it is."""
    if not isinstance(text, str) or not text:
        return text
    with _lock:
        keys, pieces = set(_keys), set(_pieces)
    for key in extra_keys:
        if key and key not in _PLACEHOLDERS and len(key) >= 4:
            keys.add(key)
            pieces.update(key[i:i + MIN_PIECE] for i in range(len(key) - MIN_PIECE + 1))
    text = _mask_pieces(text, keys, pieces)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
