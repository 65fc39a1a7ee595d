"""Model text made safe for the browser.

Text produced by a model is untrusted. Pages show it with `st.text`, `st.code` or in
dataframes (all plain text), or, when words must be marked, as the HTML built here:
every character of the text is escaped, so tags, scripts and markdown in it stay inert,
and only our own <mark> and <span> elements are live.
"""
from __future__ import annotations

import html
from typing import Iterable

_BOX = ("white-space: pre-wrap; word-break: break-word; overflow-wrap: anywhere; "
        "font-family: var(--font, sans-serif); line-height: 1.5;")


def escape_text(text: str) -> str:
    """`text` as inert HTML on a single line: line breaks become character references
    (the pre-wrap box still shows them). A raw blank line would end the HTML block in
    st.markdown, and markdown after it would render."""
    escaped = html.escape(text or "", quote=True)
    return escaped.replace("\r\n", "&#10;").replace("\r", "&#10;").replace("\n", "&#10;")


def marked_html(text: str, spans: Iterable[tuple[int, int]], *, mark_style: str = "") -> str:
    """`text` escaped, with the character ranges in `spans` wrapped in <mark>.
    Overlapping or unsorted spans are merged first."""
    merged: list[list[int]] = []
    for start, end in sorted((max(0, s), min(len(text), e)) for s, e in spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    style = f' style="{escape_text(mark_style)}"' if mark_style else ""
    parts, pos = [], 0
    for start, end in merged:
        parts.append(escape_text(text[pos:start]))
        parts.append(f"<mark{style}>{escape_text(text[start:end])}</mark>")
        pos = end
    parts.append(escape_text(text[pos:]))
    return f'<div style="{_BOX}">{"".join(parts)}</div>'


# Every ASCII punctuation character CommonMark lets a backslash escape, ':' included: Streamlit
# reads ':material/...:' and ':red[...]' in markdown too.
_MARKDOWN_SPECIAL = set("\\`*_{}[]()#+-.!|<>~$:&@")   # '@': an email would become a mailto link


def escape_markdown(text: str) -> str:
    """`text` (a name, a path, an endpoint's words) as markdown that shows exactly those
    characters: for the few places where such text sits inside our own markdown sentence.
    Line breaks become spaces (a blank line would start a new block)."""
    flat = " ".join((text or "").splitlines())
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in flat)


def table(data, columns=None, gap: str = "–"):
    """Rows for st.dataframe with each gap shown as `gap` (st.dataframe prints a missing value as
    "None", which reads like text a model wrote). `columns` limits it to those columns; a column
    with a gap becomes text, so keep number-formatted columns out of `columns`."""
    import pandas as pd

    frame = data.copy() if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    for column in frame.columns if columns is None else [c for c in columns if c in frame.columns]:
        missing = frame[column].isna()
        if missing.any():
            frame[column] = [gap if gone else str(value) for value, gone in zip(frame[column], missing)]
    return frame
