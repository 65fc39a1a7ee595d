"""Page keys that queue: every key a person types is kept, in order, until the server has
handled it. Not a page itself.

A button's `shortcut` is a click: when one arrives while the page is busy redrawing (a slow
machine, a save in flight), Streamlit may drop it or bind it to the item that was on screen
before (issue 26: 1-4-8 typed 0.4 s apart kept only one answer, and Ctrl+S then saved nothing).
Here the browser keeps a numbered log of the keys typed and sends the whole log as the
component's state; the server handles the entries it has not handled yet, in order, and tells
the browser how far it got, so the browser drops those and sends the rest again. A lost message
costs nothing: the next one carries the same keys.

Keys typed in a text box, or with Alt or a command key, are left alone; so is every key while
no queue is mounted (another page, another view). The buttons keep their `shortcut` for the
badge they draw and as a fallback; the queue takes the key first (capture on window), so a key
is never handled twice."""
from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

_JS = """
export default function(component) {
  const { data, setStateValue, parentElement } = component;
  const q = (window.__selfinstructKeys = window.__selfinstructKeys || {log: [], seq: 0, scope: null});
  if (q.scope !== data.scope) {
    q.scope = data.scope;
    q.log = [];
    q.seq = data.done;
  }
  q.seq = Math.max(q.seq, data.done);
  q.keys = data.keys;
  q.send = setStateValue;
  // Live while this element is in the page, the stale copy of a redraw included; gone on
  // another page or view, where the same keys may mean something else.
  q.host = parentElement.host || parentElement;
  q.log = q.log.filter((entry) => entry[0] > data.done);
  if (!q.listening) {
    q.listening = true;
    window.addEventListener("keydown", (event) => {
      if (!q.host || !q.host.isConnected || event.altKey || event.metaKey || event.repeat) return;
      const target = event.target;
      if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
      let key = (event.key || "").toLowerCase();
      if (event.ctrlKey) key = "ctrl+" + key;
      if (!q.keys.includes(key)) return;
      event.preventDefault();
      event.stopImmediatePropagation();
      q.seq += 1;
      q.log.push([q.seq, key]);
      q.send("typed", q.log.slice());
    }, true);
  }
  // Keys the server has not handled yet (a message lost while it was busy): send them again.
  if (q.log.length) q.send("typed", q.log.slice());
}
"""

_component = st.components.v2.component("selfinstruct_keyqueue", js=_JS)


def key_queue(key: str, scope: str, keys: Sequence[str], handle: Callable[[str], None]) -> None:
    """Mount the queue for `keys` ("1", "y", "ctrl+s", ...; lower case) and call `handle(key)`
    for each key typed since the last run, in the order typed, before the page draws. `scope`
    names what the keys act on (a new scope starts a new log)."""
    done_key = f"{key}_done_{scope}"

    def drain() -> None:
        state = st.session_state.get(key) or {}
        typed = state.get("typed") if hasattr(state, "get") else getattr(state, "typed", None)
        done = int(st.session_state.get(done_key, 0))
        for seq, name in typed or []:
            if int(seq) > done and name in keys:
                done = int(seq)
                st.session_state[done_key] = done   # before handling: a key is handled once
                handle(name)

    _component(key=key, data={"scope": scope, "done": int(st.session_state.get(done_key, 0)), "keys": list(keys)},
               height=0, on_typed_change=drain)
