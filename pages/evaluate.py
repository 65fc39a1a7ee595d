import pandas as pd
import streamlit as st

from pages.common import allowed, ask_for_name, current_pool, current_user, job_manager, require
from pages.endpoint import endpoint_form, test_connection
from selfinstruct import charts, evaluate, judge, quality
from selfinstruct.backend import OFFLINE, OWN_SERVERS
from selfinstruct.settings import STRUCTURED_SETTINGS
from selfinstruct import render
from selfinstruct.render import escape_markdown

require("label")
pool = current_pool()
manager = job_manager()
OWNER_VIEW = allowed("evaluate")

# Rating keys: the number keys in rows of four, as on the Label page: 1 2 3 4 rate the first answer
# A B C D, 5 6 7 8 the second. Streamlit reserves C and R; N, P and U move between instructions.
LEVEL_KEYS = {slot: {level: str(4 * (slot - 1) + k + 1) for k, level in enumerate(evaluate.LEVELS)}
              for slot in (1, 2)}
OFFLINE_NAMES = ("offline-base", "offline-tuned", "offline-third", "offline-fourth")
VIEWS = {"rate": "Rate answers", "setup": "Set up", "collect": "Collect", "results": "Results"}

st.title("Evaluate models")
st.caption("The paper's evaluation: two or more models answer the same instructions, and people rate every "
           "answer on four levels without knowing which model wrote it. "
           + " · ".join(f"{level}: {words}" for level, words in evaluate.LEVEL_WORDS.items()) + ".")

views = list(VIEWS) if OWNER_VIEW else ["rate"]
if pending := st.session_state.pop("eval_view_pending", None):   # set before the widget exists
    st.session_state["eval_view"] = pending
# The view's value lives in session state only: a default beside it made Streamlit warn (issue 26).
if st.session_state.get("eval_view") not in views:
    st.session_state["eval_view"] = "rate"
view = st.segmented_control("View", views, format_func=VIEWS.get, key="eval_view", required=True)
evaluations = pool.evaluations.all()


def pick_evaluation(key: str, *, names: bool = True) -> int | None:
    """The evaluation to work on; `names` False for raters (an evaluation's name might name a model)."""
    if not evaluations:
        st.info("No evaluation yet" + (": set one up first." if OWNER_VIEW else ": an owner sets one up."),
                icon=":material/hourglass_empty:")
        return None
    ids = [e["id"] for e in evaluations]
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[0]
    return st.selectbox("Evaluation", ids, key=key, format_func=lambda i: next(
        f"Evaluation {e['id']}" + (f" · {e['name']}" if e["name"] and names else "")
        + f" · {e['instructions']} instructions"
        for e in evaluations if e["id"] == i))


# -- rating, blind ----------------------------------------------------------------------------
def _rate(evaluation_id: int, answer_id: int, rater: str, level: str, pos_key: str, position: int) -> None:
    evaluate.rate(pool, evaluation_id, answer_id, rater, level)
    # The rating that leaves every answer of the instruction rated is its save: on to the next in
    # your queue, as the Label page's save is.
    queue = evaluate.rating_queue(pool, evaluation_id, rater)
    ready = queue["ready"]
    if position < len(ready) and ready[position] not in queue["todo"]:
        following = quality.next_in_queue([ready.index(i) for i in queue["todo"]], after=position)
        if following is None:
            st.session_state["eval_flash"] = "You have rated every instruction that is ready."
        else:
            st.session_state[pos_key] = following


def _go(key: str, position: int) -> None:
    st.session_state[key] = position


def rate_view() -> None:
    rater = current_user()
    if rater == "user":
        ask_for_name("rating")
        return
    evaluation_id = pick_evaluation("eval_rate_pick", names=False)
    if evaluation_id is None:
        return
    queue = evaluate.rating_queue(pool, evaluation_id, rater)
    ready = queue["ready"]
    if not ready:
        st.info("No answers to rate yet: they are still being collected.", icon=":material/hourglass_empty:")
        return
    pos_key = f"eval_pos_{evaluation_id}"
    if pos_key not in st.session_state or st.session_state[pos_key] >= len(ready):
        st.session_state[pos_key] = ready.index(queue["todo"][0]) if queue["todo"] else 0
    position = st.session_state[pos_key]
    item = evaluate.blind_item(pool, evaluation_id, rater, ready[position])
    if flash := st.session_state.pop("eval_flash", None):
        st.success(flash, icon=":material/check:")
    st.progress(queue["rated"] / len(ready) if ready else 0.0,
                text=f"You rated {queue['rated']} of {len(ready)} instructions · this is instruction "
                     f"{position + 1}" + (" (rated)" if item.rated else ""))
    st.markdown("**Instruction**")
    st.code(item.instruction, language=None, wrap_lines=True)
    if item.input.strip():
        st.markdown("**Input**")
        st.code(item.input, language=None, wrap_lines=True)
    columns = st.columns(len(item.answers), gap="medium")
    for column, answer in zip(columns, item.answers):
        with column, st.container(border=True, key=f"eval_answer_{answer.slot}"):
            st.markdown(f"**Answer {answer.slot}**")
            st.code(answer.text or " ", language=None, wrap_lines=True,
                    height=320 if answer.text.count("\n") + len(answer.text) // 60 > 14 else "content")
            with st.container(horizontal=True):
                for level in evaluate.LEVELS:
                    shortcut = LEVEL_KEYS.get(answer.slot, {}).get(level)
                    st.button(level, key=f"eval_rate_{answer.slot}_{level}", shortcut=shortcut,
                              type="primary" if answer.rating == level else "secondary",
                              help=f"{level}: {evaluate.LEVEL_WORDS[level]}" + (f" (key {shortcut})" if shortcut else ""),
                              on_click=_rate, args=(evaluation_id, answer.answer_id, rater, level, pos_key,
                                                    position))
    with st.container(horizontal=True):
        st.button("Previous", key="eval_prev", icon=":material/chevron_left:", shortcut="P", disabled=position == 0,
                  on_click=_go, args=(pos_key, position - 1))
        st.button("Next", key="eval_next", icon=":material/chevron_right:", shortcut="N",
                  disabled=position >= len(ready) - 1, on_click=_go, args=(pos_key, position + 1))
        first = quality.next_in_queue([ready.index(i) for i in queue["todo"]])
        st.button("First in your queue", key="eval_next_unrated", icon=":material/skip_next:", shortcut="U",
                  disabled=first is None, on_click=_go, args=(pos_key, position if first is None else first))
    st.caption("Keys: 1 2 3 4 rate Answer 1 A / B / C / D, 5 6 7 8 rate Answer 2; rating the last answer of an "
               "instruction moves on to the next one you have not rated, as saving does on the Label page; N and "
               "P move to the next and previous instruction, U to the first in your queue (instructions you have "
               "not rated whole). The answers' order is yours alone (other raters see another) and never tells "
               "which model wrote them.")


# -- set up (owners) ----------------------------------------------------------------------------
def setup_view() -> None:
    require("evaluate")
    st.text_input("Name", key="eval_name", placeholder="e.g. base vs tuned")
    count = int(st.number_input("Models to compare", 2, 4, 2, key="eval_model_count"))
    models, keys = [], {}
    for index in range(count):
        with st.container(border=True):
            st.markdown(f"**Model {index + 1}**")
            endpoint = endpoint_form(f"eval_m{index}", work="evaluate")
            model = endpoint.model
            if endpoint.kind == OFFLINE:
                model = st.text_input("Offline model name", value=OFFLINE_NAMES[index], key=f"eval_m{index}_offline",
                                      help="The offline stand-in answers better or worse depending on this name.")
            mode = st.segmented_control("Mode", ["chat", "completion"], key=f"eval_m{index}_mode{endpoint.per_kind}",
                                        default=endpoint.defaults["mode"], required=True)
            label = st.text_input("Name in the results", value="", key=f"eval_m{index}_label",
                                  placeholder=model or "the model's name",
                                  help="Shown only in the results, never to raters.")
            test_connection(f"eval_m{index}", endpoint, mode)
            models.append(evaluate.EvalModel(
                backend=endpoint.kind, base_url=endpoint.base_url, model=model or "", label=label.strip(), mode=mode,
                concurrency=int(endpoint.defaults["concurrency"]), timeout_s=float(endpoint.defaults["timeout_s"]),
                gguf=endpoint.gguf, threads=endpoint.threads, ctx_size=endpoint.ctx_size,
                price_per_m=[endpoint.price_in, endpoint.price_out] if endpoint.kind not in OWN_SERVERS else None))
            if endpoint.api_key:
                keys[index] = endpoint.api_key
    source = st.segmented_control("Instructions", ["file", "holdout"], key="eval_source", required=True,
                                  default="file", format_func={"file": "From a file",
                                                               "holdout": "Held out from the pool"}.get)
    instructions, problem = None, None
    if source == "file":
        upload = st.file_uploader("Instructions file", type=["jsonl", "json", "csv"], key="eval_file",
                                  help="JSON lines or JSON (Self-Instruct seed tasks, the paper's 252 user-oriented "
                                       "instructions, Alpaca records) or CSV with instruction and input columns.")
        limit = int(st.number_input("At most (0: all)", 0, 100_000, 0, key="eval_limit"))
        if upload is not None:
            try:
                instructions = evaluate.read_instruction_text(upload.getvalue().decode("utf-8"), upload.name,
                                                              limit=limit or None)
            except (ValueError, UnicodeDecodeError) as exc:
                problem = str(exc)
    else:
        h1, h2 = st.columns(2)
        k = int(h1.number_input("Tasks to hold out", 1, 10_000, 50, key="eval_holdout"))
        seed = int(h2.number_input("Seed", 0, 1_000_000, 0, key="eval_holdout_seed"))
        try:
            instructions = evaluate.holdout_instructions(pool, k, seed=seed)
        except ValueError as exc:
            problem = str(exc)
    if problem:
        st.error("These instructions cannot be used.", icon=":material/error:")
        st.text(problem)
    elif instructions:
        st.caption(f"{len(instructions)} instruction(s) x {count} models = {len(instructions) * count} answers.")
    if st.button("Create the evaluation", key="eval_create", type="primary", icon=":material/add_circle:",
                 disabled=not instructions):
        try:
            evaluation_id = evaluate.create_evaluation(pool, models, instructions,
                                                       name=st.session_state.get("eval_name") or None,
                                                       actor=current_user())
        except ValueError as exc:
            st.error("The evaluation was not created.", icon=":material/error:")
            st.text(str(exc))
        else:
            st.session_state[f"eval_keys_{evaluation_id}"] = keys   # this session only, never stored
            st.session_state["eval_collect_pick"] = evaluation_id
            st.session_state["eval_view_pending"] = "collect"
            st.rerun()


# -- collect and pre-rate (owners) ----------------------------------------------------------------
def collect_view() -> None:
    require("evaluate")
    evaluation_id = pick_evaluation("eval_collect_pick")
    if evaluation_id is None:
        return
    status = manager.status()
    keys = st.session_state.get(f"eval_keys_{evaluation_id}") or {}
    progress = pool.evaluations.progress(evaluation_id)
    if progress["pending"]:
        estimate = evaluate.estimate_collection(pool, evaluation_id)
        e1, e2, e3 = st.columns(3)
        e1.metric("Answers to collect", f"{estimate.answers:,}")
        e2.metric("Tokens (est.)", f"~{estimate.tokens:,}")
        e3.metric("Cost (est.)", f"~${estimate.cost_usd:,.2f}")
        st.caption(f"Estimated: {estimate.basis}.")
    c1, c2 = st.columns(2)
    if c1.button("Collect answers" if not progress["answered"] else "Go on collecting", key="eval_collect",
                 type="primary", icon=":material/play_arrow:", disabled=status.busy or not progress["pending"]):
        try:
            manager.collect_evaluation(evaluation_id, api_keys=keys)
        except (RuntimeError, ValueError) as exc:
            st.error("Collecting did not start.", icon=":material/error:")
            st.text(str(exc))
        else:
            st.rerun()
    if c2.button("Pause", key="eval_pause", icon=":material/pause:",
                 disabled=not (status.busy and status.kind in ("evaluate", "prerate"))):
        manager.pause()
        st.rerun()
    live(evaluation_id, status.busy)

    with st.expander("Let a judge model pre-rate the answers", icon=":material/gavel:"):
        st.caption("A model rates each answer A-D first. Its ratings are kept apart from people's: they never "
                   "count as a rater, and the results show how far it agrees with the people.")
        endpoint = endpoint_form("eval_judge", work="evaluate")
        j1, j2 = st.columns(2)
        mode = j1.segmented_control("Mode", ["chat", "completion"], key=f"eval_judge_mode{endpoint.per_kind}",
                                    default=endpoint.defaults["mode"], required=True)
        structured = j2.segmented_control("Structured output", list(STRUCTURED_SETTINGS), key="eval_judge_structured",
                                          default="auto", required=True, disabled=mode != "chat")
        config = judge.JudgeConfig(
            backend=endpoint.kind, base_url=endpoint.base_url, model=endpoint.model or "", mode=mode,
            structured=structured or "auto", concurrency=int(endpoint.defaults["concurrency"]),
            timeout_s=float(endpoint.defaults["timeout_s"]), gguf=endpoint.gguf, threads=endpoint.threads,
            ctx_size=endpoint.ctx_size,
            price_per_m=[endpoint.price_in, endpoint.price_out] if endpoint.kind not in OWN_SERVERS else None)
        if st.button("Pre-rate the answers", key="eval_prerate", icon=":material/gavel:",
                     disabled=status.busy or not progress["answered"]):
            try:
                manager.prerate_evaluation(evaluation_id, config, api_key=endpoint.api_key, actor=current_user())
            except (RuntimeError, ValueError) as exc:
                st.error("Pre-rating did not start.", icon=":material/error:")
                st.text(str(exc))
            else:
                st.rerun()


def live(evaluation_id: int, saw_busy: bool) -> None:
    @st.fragment(run_every=1 if saw_busy else None)
    def body() -> None:
        status = manager.status()
        if saw_busy and not status.busy:
            st.rerun(scope="app")
        v = evaluate.evaluation_view(pool, evaluation_id)
        if status.busy and status.run_id == evaluation_id and status.kind in ("evaluate", "prerate"):
            st.markdown(f"**{escape_markdown(status.line())}**")
        p = v.progress
        m1, m2, m3 = st.columns(3)
        m1.metric("Answers", f"{p['answered']:,} / {p['total']:,}")
        m2.metric("Tokens", f"{p['tokens']:,}")
        m3.metric("Cost", f"${p['cost_usd']:,.4f}")
        st.progress(p["answered"] / p["total"] if p["total"] else 0.0,
                    text=f"Collection: {v.evaluation['status']}"
                    + (f" · {p['failing']} waiting to be sent again" if p["failing"] else ""))
        if v.evaluation.get("error"):
            st.error("Collecting stopped on an error.", icon=":material/error:")
            st.text(v.evaluation["error"])
        usage = pd.DataFrame([{"model": v.models[u["model_index"]].name, "answers": u["answered"],
                               "tokens": u["prompt_tokens"] + u["completion_tokens"], "cost ($)": u["cost_usd"],
                               "mean latency (s)": u["latency_s"]} for u in v.usage])
        st.dataframe(render.table(usage, ["mean latency (s)"]), hide_index=True)   # "–" before any answer
        if v.prerate_progress is not None:
            pp = v.prerate_progress
            st.progress(pp["answered"] / pp["total"] if pp["total"] else 0.0,
                        text=f"Judge pre-ratings: {pp['answered']} / {pp['total']} · {v.evaluation['judge_status']}"
                        + (f" · {pp['unparseable']} unreadable" if pp["unparseable"] else ""))
            if v.evaluation.get("judge_error"):
                st.text(v.evaluation["judge_error"])

    body()


# -- results (owners) ---------------------------------------------------------------------------
def _agreement_line(agreement) -> str:
    value = f"{agreement.value:.2f}" if agreement.value is not None else "not defined"
    return f"{agreement.method}: {value} over {agreement.items} answer(s)"


def _share_table(rows) -> pd.DataFrame:
    def cell(share) -> str:
        return "–" if share.share is None else f"{share.share:.0%} ({share.low:.0%} to {share.high:.0%})"
    return pd.DataFrame([{"model": m.name, "rated answers": m.rated,
                          **{level: cell(m.levels[level]) for level in evaluate.LEVELS},
                          "A or B": cell(m.acceptable)} for m in rows])


def results_view() -> None:
    require("evaluate")
    evaluation_id = pick_evaluation("eval_results_pick")
    if evaluation_id is None:
        return
    res = evaluate.results(pool, evaluation_id)
    st.subheader("People's ratings")
    if not any(m.rated for m in res.models):
        st.info("Nobody has rated these answers yet.", icon=":material/hourglass_empty:")
    else:
        st.caption(f"Rated by {len(res.raters)} person(s). An answer's rating is the median of its raters' "
                   "(the worse middle one on a tie); shares with 95% Wilson intervals, whiskers at \"at least A\", "
                   "\"A or B\" and \"A to C\".")
        st.altair_chart(charts.eval_levels(pd.DataFrame(evaluate.results_table(res))), width="stretch")
        st.dataframe(_share_table(res.models), hide_index=True)
        offline = [m for m in evaluate.evaluation_view(pool, evaluation_id).models if m.backend == OFFLINE]
        if offline:
            st.caption("Offline stand-ins answer at random with odds set by their names (offline-tuned answers "
                       "A or B about three times in four, offline-base about half the time), so with few "
                       "instructions rated the order can come out the other way: the intervals say how sure "
                       "each share is.")
        if res.agreement is not None:
            st.markdown("**Agreement between raters**")
            st.text(_agreement_line(res.agreement)
                    + (f" ({res.agreement.why_undefined})" if res.agreement.why_undefined else ""))
        else:
            st.caption("Agreement between raters needs at least two raters.")
    if res.judge_models:
        st.subheader("The judge's pre-ratings")
        st.caption("Kept apart: never counted as a rater above.")
        st.text(f"Judge: {res.judge_model}")
        st.altair_chart(charts.eval_levels(pd.DataFrame(evaluate.results_table(res, judge=True))),
                        width="stretch")
        st.dataframe(_share_table(res.judge_models), hide_index=True)
        if res.judge_agreement is not None:
            st.markdown("**The judge against the people's rating**")
            st.text(_agreement_line(res.judge_agreement)
                    + (f"; the same level on {res.judge_exact.share:.0%} ({res.judge_exact.low:.0%} to "
                       f"{res.judge_exact.high:.0%}) of them" if res.judge_exact and res.judge_exact.n else ""))


{"rate": rate_view, "setup": setup_view, "collect": collect_view, "results": results_view}[view]()
