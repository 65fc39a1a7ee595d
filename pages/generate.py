import time

import streamlit as st

from pages.common import current_pool, current_user, job_manager, pause_and_stop
from pages.endpoint import endpoint_form, test_connection
from selfinstruct import charts, embed, monitor, render
from selfinstruct.filters import ALPACA_EXTRA_KEYWORDS, PAPER_KEYWORDS
from selfinstruct import local
from selfinstruct.backend import LOCAL, OFFLINE, OWN_SERVERS
from selfinstruct.embed import bundled_available
from selfinstruct.llm import Sampling
from selfinstruct.model import COSINE_THRESHOLD, ROUGE_THRESHOLD, UNFINISHED_STATUSES
from selfinstruct.pipeline import NEXT_STEPS, estimate_run
from selfinstruct.settings import RunConfig, STRUCTURED_SETTINGS

pool = current_pool()
manager = job_manager()
# The form starts from the settings of this pool's newest run (or the defaults, for a new pool).
newest_run = next(iter(pool.runs.all()), None)
defaults = RunConfig.from_dict(newest_run["config"]) if newest_run else RunConfig()

st.title("Generate")
if pool.counts().seeds == 0:
    st.warning("The pool has no seed tasks yet; every round imitates them.", icon=":material/spa:")
    st.page_link("pages/seed.py", label="Load seeds first", icon=":material/spa:")
    st.stop()

# -- settings ----------------------------------------------------------------------
with st.expander("Model and settings", expanded=not pool.counts().runs, icon=":material/tune:"):
    if newest_run:
        st.caption(f"Starting from the settings of run {newest_run['id']}, this pool's newest; change any.")
    endpoint = endpoint_form("gen", newest_run["config"] if newest_run else None)
    backend, kind, base_url, model, api_key = (endpoint.backend, endpoint.kind, endpoint.base_url, endpoint.model,
                                               endpoint.api_key)
    gguf, threads, ctx_size = endpoint.gguf, endpoint.threads, endpoint.ctx_size
    price_in, price_out = endpoint.price_in, endpoint.price_out
    kind_defaults, per_kind = endpoint.defaults, endpoint.per_kind
    mode_col, gen_col = st.columns(2)
    mode = mode_col.segmented_control(
        "Mode", ["chat", "completion"], key=f"gen_mode{per_kind}", default=kind_defaults["mode"],
        required=True,
        help="chat: chat completions (instruction-tuned models). completion: the completions "
             "endpoint, for base models, as in the paper.")
    generation = gen_col.segmented_control(
        "Generation", ["selfinstruct", "alpaca"], key="gen_generation", default=defaults.generation, required=True,
        format_func={"selfinstruct": "Self-Instruct (list, then instances)",
                     "alpaca": "Alpaca (whole tasks per request)"}.get)
    structured = st.segmented_control(
        "Structured output", list(STRUCTURED_SETTINGS), key="gen_structured", default=defaults.structured,
        required=True,
        disabled=mode != "chat",
        help="Chat mode: ask for JSON that matches a schema per stage instead of the text layout (servers "
             "that support it make the model write exactly that shape). auto: one probe request per run "
             "finds out whether the server does. Completion mode always uses the text layout.")
    test_connection("gen", endpoint, mode)

    paper, sampling = Sampling(), Sampling(**defaults.sampling)
    st.markdown(f"**Sampling** (the paper: temperature {paper.temperature}, top_p {paper.top_p}, "
                f"presence penalty {paper.presence_penalty:g}, {paper.max_tokens} tokens)")
    s1, s2, s3, s4 = st.columns(4)
    temperature = s1.number_input("Temperature", 0.0, 2.0, sampling.temperature, 0.05, key="gen_temperature")
    top_p = s2.number_input("top_p", 0.0, 1.0, sampling.top_p, 0.05, key="gen_top_p")
    presence = s3.number_input("Presence penalty", -2.0, 2.0, sampling.presence_penalty, 0.1, key="gen_presence")
    max_tokens = s4.number_input("Max tokens", 16, 32768, sampling.max_tokens, 64, key="gen_max_tokens")

    st.markdown("**Each round**")
    r1, r2, r3, r4 = st.columns(4)
    requests_per_round = r1.number_input("Requests per round", 1, 1000, defaults.requests_per_round, key="gen_requests")
    concurrency = r2.number_input("Concurrent requests", 1, 256, kind_defaults["concurrency"],
                                  key=f"gen_concurrency{per_kind}",
                                  help="At most this many requests in flight; lowered automatically while "
                                       "the endpoint answers 429 (rate limited), and raised again after.")
    example_lag = r2.number_input("Example lag (rounds)", 1, 100, defaults.lag(), key="gen_example_lag",
                                  help="Round N takes generated examples from rounds up to N minus this. 2 (the "
                                       "default): the same seed gives the same pool at any concurrency. More "
                                       "keeps more requests in flight at a high concurrency, with other examples.")
    human_examples = r3.number_input("Seed examples per prompt", 0, 16, defaults.human_examples, key="gen_human")
    machine_examples = r4.number_input("Generated examples per prompt", 0, 16, defaults.machine_examples, key="gen_machine",
                                       help="Used once the pool has generated instructions.")

    st.markdown("**Requests**")
    q1, q2, q3, q4 = st.columns(4)
    timeout_s = q1.number_input("Timeout (s)", 1.0, 3600.0, float(kind_defaults["timeout_s"]), 5.0,
                                key=f"gen_timeout{per_kind}",
                                help="A deadline for each whole request attempt, however slowly the "
                                     "server sends its answer.")
    rpm = q2.number_input("Requests per minute (0: no cap)", 0, 10_000_000, int(defaults.rpm or 0), key="gen_rpm",
                          help="Your provider's limit, if you know it.")
    tpm = q3.number_input("Tokens per minute (0: no cap)", 0, 1_000_000_000, int(defaults.tpm or 0), key="gen_tpm")
    use_batch = q4.toggle("Batch API (half price)", value=defaults.batch, key="gen_batch", disabled=kind in OWN_SERVERS,
                          help="Requests go to the provider's Batch API in batches: half the list "
                               "price, but each batch may take up to 24 h and a round needs up to "
                               "three of them (instructions, classification, instances).")
    batch_poll, batch_discount = defaults.batch_poll_s, defaults.batch_discount
    if use_batch and kind not in OWN_SERVERS:
        batch_poll = q4.number_input("Check batches every (s)", 0.1, 3600.0, defaults.batch_poll_s, 5.0, key="gen_batch_poll")
        batch_discount = q4.number_input("Batch price (fraction of the list price)", 0.05, 1.0, defaults.batch_discount, 0.05,
                                         key="gen_batch_discount",
                                         help="Providers charge about half for batches; check yours.")

    st.markdown("**Filters**")
    f1, f2 = st.columns([1, 2])
    threshold = f1.slider("ROUGE-L threshold (reject above)", 0.3, 1.0, float(defaults.rouge_threshold), 0.01,
                          key="gen_threshold")
    no_embedder = embed.bundled_available()
    gate_on = f1.toggle("Semantic gate: reject the same task reworded", key="gen_gate",
                        value=no_embedder is None and (defaults.cosine_threshold is not None or not newest_run),
                        disabled=no_embedder is not None,
                        help="Sentence vectors from the bundled WordLlama model: a candidate whose cosine with a "
                             "pool instruction is above the threshold is rejected (semantic_dup). Fixed for the run.")
    cosine = f1.slider("Cosine threshold (reject above)", 0.5, 1.0,
                       float(defaults.cosine_threshold or COSINE_THRESHOLD), 0.01, key="gen_cosine",
                       disabled=not gate_on)
    if no_embedder is not None:
        f1.caption("The semantic gate is off: the bundled embedding model could not be loaded here.")
        f1.text(no_embedder)
    remembered_alpaca = set(ALPACA_EXTRA_KEYWORDS) <= set(defaults.keywords)
    alpaca_words = f1.checkbox("Also Alpaca's words (video, audio, music, flowchart, diagram)",
                               value=remembered_alpaca, key="gen_alpaca_words")
    default_words = (list(defaults.keywords) if alpaca_words == remembered_alpaca
                     else list(PAPER_KEYWORDS) + (list(ALPACA_EXTRA_KEYWORDS) if alpaca_words else []))
    keywords_text = f2.text_area("Keywords that reject an instruction (whole words, one per line)",
                                 value="\n".join(default_words), key=f"gen_keywords_{alpaca_words}",
                                 height=130)

    steer_blocked = bundled_available()
    steer_on = st.toggle("Steer toward thin topics", value=getattr(defaults, "steer", "off") == "coverage",
                         key="gen_steer", disabled=steer_blocked is not None,
                         help="In-context examples (seed and generated) are drawn so that every topic of the pool "
                              "is as likely as any other, and never from a topic marked \"avoid\" on the Topics "
                              "page. Each round's topics are stored with the run. Fixed for the run.")
    if steer_blocked is not None:
        st.caption("Steering needs the bundled embedding model, which could not be loaded here.")

    st.markdown("**Stop when** (whichever comes first)")
    c1, c2, c3 = st.columns(3)
    rounds = c1.number_input("Rounds", 0, 10_000, defaults.rounds or 0 if newest_run else 3, key="gen_rounds",
                             help="0: no limit")
    target = c2.number_input("Generated instructions in the pool", 0, 10_000_000, int(defaults.target or 0), key="gen_target",
                             help="0: no limit")
    budget = c3.number_input("Budget (USD)", 0.0, 100_000.0, float(defaults.budget_usd or 0.0), 1.0, key="gen_budget",
                            help="0: no limit")

config = RunConfig(
    model=model or "", base_url=base_url, backend=kind, gguf=gguf, threads=threads, ctx_size=ctx_size,
    mode=mode, generation=generation, requests_per_round=int(requests_per_round), structured=structured or "auto",
    human_examples=int(human_examples), machine_examples=int(machine_examples),
    rouge_threshold=float(threshold), keywords=[w.strip() for w in keywords_text.splitlines() if w.strip()],
    steer="coverage" if steer_on and steer_blocked is None else "off",
    embedder=None if no_embedder else embed.EmbedderSpec(kind=embed.BUNDLED).to_dict(),
    cosine_threshold=float(cosine) if gate_on and no_embedder is None else None,
    sampling=Sampling(temperature=temperature, top_p=top_p, presence_penalty=presence,
                      max_tokens=int(max_tokens)).to_dict(),
    concurrency=int(concurrency), example_lag=int(example_lag), rounds=int(rounds) or None, target=int(target) or None,
    budget_usd=float(budget) or None, timeout_s=float(timeout_s), rpm=float(rpm) or None,
    tpm=float(tpm) or None, batch=bool(use_batch) and kind not in OWN_SERVERS, batch_poll_s=float(batch_poll),
    batch_discount=float(batch_discount),
    price_per_m=[float(price_in), float(price_out)] if kind not in OWN_SERVERS else None,
)
if not (config.rounds or config.target or config.budget_usd):
    st.info("No stop condition set: the run goes on until you stop it.", icon=":material/all_inclusive:")

estimate = estimate_run(pool, config)
e1, e2, e3, e4 = st.columns(4)
e1.metric("Requests (est.)", f"~{estimate.requests:,}")
e2.metric("Tokens (est.)", f"~{estimate.tokens:,}")
e3.metric("Cost (est.)", f"~${estimate.cost_usd:,.2f}")
e4.metric("Time (est.)", f"~{estimate.time_text}")
st.caption(f"Estimated {estimate.basis}.")

status = manager.status()
if st.button("Start run", key="gen_start", type="primary", icon=":material/play_arrow:",
             disabled=status.busy or (kind != OFFLINE and not model)):
    try:
        run_id = manager.start(config, api_key=api_key, actor=current_user())
    except (RuntimeError, ValueError) as exc:
        st.error("The run did not start.", icon=":material/error:")
        st.text(str(exc))   # may quote the typed URL or model: plain text
    else:
        st.session_state["gen_view_run"] = run_id   # show the new run
        st.rerun()


# -- live view --------------------------------------------------------------------------
PAGE_SAW_BUSY = status.busy


@st.fragment(run_every=1 if status.busy else None)
def live_view() -> None:
    status = manager.status()
    if PAGE_SAW_BUSY and not status.busy:
        st.rerun(scope="app")  # the run ended: redraw the page without the 1 s refresh
    runs = pool.runs.all()
    if not runs:
        st.caption("No runs yet. Choose a backend and press Start run.")
        return
    ids = [r["id"] for r in runs]
    if st.session_state.get("gen_view_run") not in ids:
        st.session_state["gen_view_run"] = status.run_id if status.run_id in ids else ids[0]
    # The labels hold nothing that changes while a run goes on (a browser may keep showing an
    # option's old label): how a run stands is the line under the picker.
    run_id = st.selectbox(
        "Run", ids, key="gen_view_run",
        format_func=lambda i: next(f"Run {r['id']} · {r['config'].get('model')} · "
                                   f"created {r['created_at']:%Y-%m-%d %H:%M}" for r in runs if r["id"] == i))
    view = monitor.run_view(pool, run_id)
    running_this = status.busy and status.run_id == run_id

    if running_this:
        st.markdown(f"**{status.line()}**")
        if status.round and status.started_at:   # the run's own pace, once it has rounds
            pace = monitor.run_pace(pool, run_id, elapsed_s=time.time() - status.started_at)
            st.caption(pace.words())
            if pace.note():
                st.warning(pace.note(), icon=":material/speed:")
        if status.total:
            st.progress(min(1.0, status.done / status.total),
                        text=f"{status.done:,} of {status.total:,} planned requests done")
        if not view.run["config"].get("batch"):
            c1, c2, c3 = st.columns(3)
            c1.metric("In flight", f"{status.in_flight}", help="Requests being answered now.")
            c2.metric("Concurrency now", f"{status.limit or '–'} of {view.run['config'].get('concurrency')}",
                      help="Halved on a 429 (rate limited), then raised one step per window of answers.")
            c3.metric("Rate-limited (429)", f"{status.rate_limited:,}")
        waiting = monitor.rate_limit_words(status.rate_limit_wait_s)
        if waiting:
            st.warning(f"{waiting.capitalize()}: the endpoint asked to slow down, and the run goes on after "
                       "the wait.", icon=":material/hourglass_top:")
        pause_and_stop("gen", status)
    else:
        state = view.run["status"]
        st.markdown(f"**{monitor.run_headline(run_id, state, view.run['stop_reason'])}**")
        if view.run["error"]:
            st.error(f"Run {run_id} ended on an error ({view.run['stop_reason']}). "
                     f"{NEXT_STEPS.get(view.run['stop_reason'], 'Fix the cause, then resume.')}",
                     icon=":material/error:")
            # The message may quote the endpoint: plain text, never markdown.
            st.text(view.run["error"])
        if state in UNFINISHED_STATUSES:
            run_cfg = view.run["config"]
            with st.expander("Settings for the resumed run", expanded=state == "failed",
                             icon=":material/build:"):
                st.caption("Correct what made the run fail; unanswered requests are sent again, "
                           "answered ones never.")
                o1, o2 = st.columns(2)
                fix_model = o1.text_input("Model", value=run_cfg.get("model", ""), key=f"gen_fix_model_{run_id}",
                                          disabled=run_cfg.get("backend") in OWN_SERVERS)
                fix_url = o2.text_input("Base URL", value=run_cfg.get("base_url", ""), key=f"gen_fix_url_{run_id}",
                                        disabled=run_cfg.get("backend") in OWN_SERVERS)
                o3, o4 = st.columns(2)
                fix_timeout = o3.number_input("Timeout (s)", 1.0, 3600.0, float(run_cfg.get("timeout_s", RunConfig.timeout_s)),
                                              5.0, key=f"gen_fix_timeout_{run_id}")
                fix_concurrency = o4.number_input("Concurrent requests", 1, 256, int(run_cfg.get("concurrency", RunConfig.concurrency)),
                                                  key=f"gen_fix_concurrency_{run_id}")
                if run_cfg.get("backend") == LOCAL:   # a busy CPU: fewer threads keep llama.cpp going (monitor.Pace.note)
                    fix_threads = st.number_input("Threads", 1, 256, int(run_cfg.get("threads") or local.default_threads()),
                                                  key=f"gen_fix_threads_{run_id}")
            overrides = {"timeout_s": float(fix_timeout), "concurrency": int(fix_concurrency)}
            if run_cfg.get("backend") == LOCAL:
                overrides["threads"] = int(fix_threads)
            if run_cfg.get("backend") not in OWN_SERVERS:
                overrides.update(model=fix_model.strip(), base_url=fix_url.strip())
            b1, b2, _ = st.columns([1, 1, 4])
            if b1.button("Resume", key="gen_resume", icon=":material/play_arrow:", disabled=status.busy):
                try:
                    # Only a key typed in this session; the server's key is the Backend's to give.
                    manager.resume(run_id, api_key=st.session_state.get("gen_api_key") or None,
                                   overrides=overrides, actor=current_user())
                except (RuntimeError, ValueError) as exc:
                    st.error("The run did not resume.", icon=":material/error:")
                    st.text(str(exc))
                else:
                    st.rerun(scope="app")
            if state != "stopped" and b2.button("End run", key="gen_end", icon=":material/stop:"):
                manager.stop(run_id)
                st.rerun(scope="app")

    rounds = view.rounds
    m = st.columns(6)
    m[0].metric("Rounds done", view.rounds_done)
    m[1].metric("Accepted", f"{int(rounds['accepted'].sum()):,}")
    m[2].metric("Rejected", f"{int(rounds['rejected'].sum()):,}")
    total = int(rounds["candidates"].sum())
    m[3].metric("Acceptance", f"{rounds['accepted'].sum() / total:.0%}" if total else "–")
    m[4].metric("Tokens", f"{view.usage['tokens']:,}")
    m[5].metric("Cost", f"${view.usage['cost_usd']:,.4f}")

    for error in view.errors:
        st.warning(f"{error['n']} request(s) failed ({error['error_kind']}) after their retries; "
                   "they are sent again when the run goes on.", icon=":material/warning:")
        st.text(error["example"])   # may quote the endpoint: plain text

    if view.health or view.run.get("structured_note"):
        st.markdown("**Parse health**: per stage, the answers read, how many yielded something (tasks, a "
                    "yes/no, examples), how many items they yielded, and how many were structured (JSON)")
        if view.run.get("structured_note"):
            st.text(f"Structured output: {view.run['structured_note']}")   # may quote a server: plain text
        if view.health:
            st.dataframe(monitor.health_table(view.health), hide_index=True, key="gen_health")
        for hint in view.hints:
            st.warning(hint, icon=":material/lightbulb:")
        st.page_link("pages/rejects.py", label="See the raw answers on the Rejects page",
                     icon=":material/manage_search:")

    if view.batches:
        st.markdown("**Batches** (sent to the provider's Batch API; each may take up to its 24 h window)")
        st.dataframe(render.table([{"batch": b["id"], "provider id": b["remote_id"], "status": b["status"],
                                    "requests": b["requests"], "created": b["created_at"],
                                    "finished": b["finished_at"]} for b in view.batches]),
                     hide_index=True, key="gen_batches")
    st.dataframe(
        # percentages as whole numbers, as the Acceptance metric above shows them
        rounds.drop(columns=["round_id"]).assign(acceptance=lambda f: (100 * f["acceptance"]).round()),
        hide_index=True, key="gen_rounds_table",
        # a reason's name is longer than its count: its column is widened so the name is not cut
        column_config={**{label: st.column_config.NumberColumn(label, width="medium")
                          for label in view.reasons.get("label", [])},
                       "acceptance": st.column_config.ProgressColumn("accepted", min_value=0, max_value=100,
                                                                     format="%.0f%%", width="medium",
                                                                     help="Share of the round's candidates accepted"),
                       "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
                       "seconds": st.column_config.NumberColumn("seconds", format="%.1f")})
    if len(rounds):
        left, right = st.columns(2)
        left.markdown("**Pool size**")
        left.altair_chart(charts.pool_growth(view.growth))
        right.markdown("**Rejections by reason**")
        if len(view.reasons):
            right.altair_chart(charts.rejections_by_round(view.reasons))
        else:
            right.caption("Nothing rejected yet.")
        left, right = st.columns(2)
        left.markdown(f"**ROUGE-L of round {view.latest_round}'s candidates**")
        if len(view.rouge):
            threshold_used = view.run["config"].get("rouge_threshold", ROUGE_THRESHOLD)
            left.altair_chart(charts.round_rouge(view.rouge, threshold_used))
        else:
            left.caption("No scores yet for this round.")
        right.markdown("**Newest accepted instructions**")
        right.dataframe([{"round": n["round"], "instruction": n["instruction"],
                          "ROUGE-L": round(n["max_rouge"] or 0.0, 3)} for n in view.newest],
                        hide_index=True, key="gen_newest")
    with st.expander("Configuration of this run"):
        st.json(view.run["config"], expanded=False)


live_view()
