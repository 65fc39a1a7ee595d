"""The endpoint a run talks to, chosen on a page: backend, local model file, URL, model, key,
prices. Shared by the pages that send requests (Generate, Judge), each with its own widget keys.
Not a page itself."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from selfinstruct import local
from selfinstruct.backend import (LOCAL, OFFLINE, OPENAI_COMPATIBLE, OPENAI_URL, OWN_SERVERS, Backend,
                                  defaults_for, owner_base_url)
from selfinstruct.llm import LLMError, PriceTable

BACKENDS = {
    "local": "Local model",
    "offline": "Offline demo",
    "openai": "OpenAI",
    "compatible": "OpenAI-compatible endpoint",
}


def server_has_key() -> bool:
    """Whether the server holds a key for OpenAI (never the key itself: the page must not hold
    it). Asked on every run of a page: the environment may change while the app runs."""
    return Backend(kind=OPENAI_COMPATIBLE, base_url=OPENAI_URL).api_key_source() != "none"


@dataclass
class Endpoint:
    backend: str            # the choice on the page (a key of BACKENDS)
    kind: str               # backend.BACKEND_KINDS
    base_url: str
    model: str
    api_key: str | None     # typed in this session only
    gguf: str
    threads: int | None
    ctx_size: int | None
    price_in: float
    price_out: float
    defaults: dict          # mode, concurrency, timeout_s: remembered for this kind, else its defaults
    per_kind: str           # a suffix for settings whose default depends on the backend


# What the local model's pace means for the work of each page (one home, the right words per page;
# issue 26: the generation figure was shown on the Judge and Evaluate pages too).
LOCAL_PACE = {
    "generate": "A round of 8 requests takes about a minute and a half on two CPU cores.",
    "judge": "The judge sends one request per item, one after another on a small machine: on two CPU "
             "cores count on many seconds per item, so try a small study first.",
    "evaluate": "Each answer (and each pre-rating) is one request: on two CPU cores count on many seconds "
                "per answer, so try a few instructions first.",
}


def remembered_choice(remembered: dict | None) -> str | None:
    """The page's backend choice for a stored run configuration (None: nothing stored)."""
    if not remembered:
        return None
    kind = remembered.get("backend")
    return ({OFFLINE: "offline", LOCAL: "local"}.get(kind)
            or ("openai" if (remembered.get("base_url") or "").rstrip("/") == OPENAI_URL.rstrip("/")
                else "compatible"))


def endpoint_form(prefix: str, remembered: dict | None = None, *, work: str = "generate") -> Endpoint:
    """The backend and its settings, starting from `remembered` (a stored run's configuration);
    `work` (a key of LOCAL_PACE) picks what the local model's pace is said in terms of."""
    remembered_backend = remembered_choice(remembered)
    backend = st.segmented_control(
        "Backend", list(BACKENDS), format_func=BACKENDS.get, key=f"{prefix}_backend",
        default=remembered_backend or ("openai" if server_has_key() else "local"), required=True)
    kind = {"local": LOCAL, "offline": OFFLINE}.get(backend, OPENAI_COMPATIBLE)
    same_kind = remembered is not None and remembered.get("backend") == kind
    kind_defaults = ({k: remembered.get(k, v) for k, v in defaults_for(kind).items()}
                     if same_kind else defaults_for(kind))
    # Settings whose default depends on the backend get a key per backend, so switching shows
    # that backend's default rather than the value chosen for another one.
    per_kind = "_local" if kind == LOCAL else ""
    gguf, threads, ctx_size = "", None, None
    api_key = None
    price_in = price_out = 0.0
    if backend == "offline":
        base_url, model = "", "selfinstruct-demo"
        st.caption("The offline demo replays example tasks bundled with selfinstruct through a local "
                   "OpenAI-compatible server. It is not a language model: use it to learn the workflow.")
    elif backend == "local":
        base_url, model = "", ""
        files = local.available_ggufs()
        bundled = local.bundled_gguf()
        if not files:
            st.warning(f"No model file found. Install the bundled one with `{local.BUNDLED_INSTALL}`, or put "
                       f"a .gguf file in {local.models_dir()}.", icon=":material/warning:")
        else:
            # Only files the server found itself: a page never opens a path typed in a browser.
            choice = st.selectbox(
                "Model file", [str(f) for f in files], key=f"{prefix}_gguf",
                format_func=lambda f: local.model_name(f) + (" (bundled)" if bundled and f == str(bundled) else ""),
                help=f"The bundled model, and the .gguf files in {local.models_dir()}.")
            gguf = "" if bundled and choice == str(bundled) else choice   # '' finds the bundled file again
            model = local.model_name(choice)
            t_col, c_col = st.columns(2)
            threads = int(t_col.number_input("Threads", 1, 256, (same_kind and remembered.get("threads")) or local.default_threads(),
                                             key=f"{prefix}_threads",
                                             help="CPU threads llama.cpp uses (default: all cores)."))
            ctx_size = int(c_col.number_input(
                "Context size (tokens per request)", local.MIN_CTX_SIZE, 131072,
                (same_kind and remembered.get("ctx_size")) or local.DEFAULT_CTX_SIZE, 256,
                key=f"{prefix}_ctx_size", help="Prompt and answer together; the instruction prompt is about 300 "
                                         "tokens and answers may run to Max tokens."))
        st.caption("A real language model running on this machine through llama.cpp, with no key and no "
                   "network. The bundled SmolLM2-135M-Instruct is small: good for trying the loop, not for "
                   "a dataset worth training on (use a bigger GGUF or an endpoint for that). "
                   + LOCAL_PACE[work] + " Completion mode (the paper's) suits it best.")
    else:
        url_col, model_col = st.columns(2)
        base_url = url_col.text_input(
            "Base URL", value=OPENAI_URL if backend == "openai" else
            (same_kind and remembered.get("base_url")) or owner_base_url() or "http://localhost:8000/v1",
            key=f"{prefix}_base_url_{backend}", disabled=backend == "openai",
            help="vLLM: http://host:8000/v1 · Ollama: http://localhost:11434/v1 · "
                 "llama.cpp server: http://localhost:8080/v1")
        if backend == "openai":   # not whatever a disabled box sent back
            base_url = OPENAI_URL
        model = model_col.text_input("Model", value=(same_kind and remembered_backend == backend and remembered.get("model"))
                                     or ("gpt-4o-mini" if backend == "openai" else ""),
                                     key=f"{prefix}_model_{backend}")
        known = PriceTable.default().get(model or "") or (0.0, 0.0)
        p1, p2 = st.columns(2)
        price_in = p1.number_input("USD per 1M input tokens", 0.0, 1000.0, float(known[0]), 0.01,
                                   key=f"{prefix}_price_in_{model}", format="%.3f",
                                   help="Prefilled from selfinstruct's defaults when the model is known; "
                                        "check your provider's prices. Stored with the run.")
        price_out = p2.number_input("USD per 1M output tokens", 0.0, 1000.0, float(known[1]), 0.01,
                                    key=f"{prefix}_price_out_{model}", format="%.3f")
        api_key = st.text_input(
            "API key", value="", type="password", key=f"{prefix}_api_key",
            help="Held in this browser session only; never written to the pool, logs or exports. "
                 "Local servers usually need none.") or None
        if not api_key:
            source = Backend(kind=OPENAI_COMPATIBLE, base_url=base_url or OPENAI_URL).api_key_source()
            st.caption(f"Without a typed key, this endpoint gets the server's key ({source})."
                       if source != "none" else
                       "Without a typed key, no key is sent: the server's own key goes only to the "
                       "endpoint its owner configured.")
    return Endpoint(backend, kind, base_url, model, api_key, gguf, threads, ctx_size, price_in, price_out,
                    kind_defaults, per_kind)


def test_connection(prefix: str, endpoint: Endpoint, mode: str) -> None:
    """A "Test connection" button for endpoints that are not our own servers."""
    if endpoint.kind not in OWN_SERVERS and st.button("Test connection", key=f"{prefix}_test", icon=":material/cable:"):
        try:
            message = Backend(kind=OPENAI_COMPATIBLE, base_url=endpoint.base_url, api_key=endpoint.api_key).check(
                model=endpoint.model, mode=mode)
        except (LLMError, ValueError) as exc:
            st.error("The connection test failed.", icon=":material/error:")
            st.text(str(exc))   # may quote the endpoint: plain text, never markdown
        else:
            st.success("Connected.", icon=":material/check_circle:")
            st.text(message)    # names what the endpoint answered

