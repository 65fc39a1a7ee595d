import pandas as pd
import streamlit as st

from pages.common import current_pool, current_user, job_manager, pause_and_stop, require
from pages.endpoint import endpoint_form, test_connection
from selfinstruct import calibration, charts, judge, monitor, quality, render
from selfinstruct.backend import OWN_SERVERS
from selfinstruct.model import PAPER_RATES, QUESTIONS, RESUMABLE_STATUSES
from selfinstruct.settings import STRUCTURED_SETTINGS
from selfinstruct.quality import MEASURE_LABELS

require("judges")
pool = current_pool()
manager = job_manager()

st.title("Judge")
st.caption("A model answers the paper's three questions (valid task? input appropriate? output acceptable?) "
           "for a study's items or for the whole pool. Its verdicts are kept apart from people's labels: they "
           "never count as a label. Judge a labeled study to see how far it agrees with people, then the pool "
           "to get pool-wide rates that use both.")

studies = pool.quality.studies()
runs = pool.judge.runs()
newest = runs[0] if runs else None
status = manager.status()

# -- settings ----------------------------------------------------------------------
with st.expander("Judge model and what to judge", expanded=not runs, icon=":material/tune:"):
    remembered = newest["config"] if newest else None
    if newest:
        st.caption(f"Starting from the settings of judge run {newest['id']}, this pool's newest; change any.")
    endpoint = endpoint_form("judge", remembered, work="judge")
    m1, m2, m3 = st.columns(3)
    mode = m1.segmented_control("Mode", ["chat", "completion"], key=f"judge_mode{endpoint.per_kind}",
                                default=endpoint.defaults["mode"], required=True)
    structured = m2.segmented_control(
        "Structured output", list(STRUCTURED_SETTINGS), key="judge_structured", required=True,
        default=(remembered or {}).get("structured", "auto"), disabled=mode != "chat",
        help="Chat mode: ask for JSON that matches the verdict's schema. auto: one probe request finds out "
             "whether the server supports it.")
    concurrency = m3.number_input("Concurrent requests", 1, 256, int(endpoint.defaults["concurrency"]),
                                  key=f"judge_concurrency{endpoint.per_kind}")
    test_connection("judge", endpoint, mode)
    scope = st.segmented_control("Judge", list(judge.SCOPES), key="judge_scope", required=True,
                                 default=judge.SCOPE_STUDY if studies else judge.SCOPE_POOL,
                                 format_func={judge.SCOPE_STUDY: "A study's items",
                                              judge.SCOPE_POOL: "The whole pool"}.get)
    study_id = None
    s2, s3 = st.columns([3, 1])
    if scope == judge.SCOPE_STUDY:
        if not studies:
            s2.info("No study yet: draw one on the Label page.", icon=":material/fact_check:")
        else:
            study_id = s2.selectbox("Study", [s["id"] for s in studies], key="judge_study",
                                    format_func=lambda i: next(f"{s['name']} ({s['items']} items, "
                                                               f"{s['labeled_items']} labeled)"
                                                               for s in studies if s["id"] == i))
    else:
        s2.caption("Every accepted instruction, with one kept instance each.")
    limit = s3.number_input("At most (0: all)", 0, 10_000_000, 0, key="judge_limit")

config = judge.JudgeConfig(
    backend=endpoint.kind, base_url=endpoint.base_url, model=endpoint.model or "", mode=mode,
    structured=structured or "auto", concurrency=int(concurrency), timeout_s=float(endpoint.defaults["timeout_s"]),
    gguf=endpoint.gguf, threads=endpoint.threads, ctx_size=endpoint.ctx_size,
    price_per_m=[endpoint.price_in, endpoint.price_out] if endpoint.kind not in OWN_SERVERS else None)
ready = scope == judge.SCOPE_POOL or study_id is not None
if ready:
    estimate = judge.estimate_judge(pool, config, scope, study_id, int(limit) or None)
    e1, e2, e3 = st.columns(3)
    e1.metric("Items", f"{estimate.items:,}")
    e2.metric("Tokens (est.)", f"~{estimate.tokens:,}")
    e3.metric("Cost (est.)", f"~${estimate.cost_usd:,.2f}")
    st.caption(f"Estimated: {estimate.basis}.")
if st.button("Start judging", key="judge_start", type="primary", icon=":material/gavel:",
             disabled=status.busy or not ready or (endpoint.kind not in OWN_SERVERS and not endpoint.model)):
    try:
        judge_run_id = manager.start_judge(config, scope, study_id, int(limit) or None,
                                           api_key=endpoint.api_key, actor=current_user())
    except (RuntimeError, ValueError) as exc:
        st.error("The judge run did not start.", icon=":material/error:")
        st.text(str(exc))   # may quote the typed URL or model: plain text
    else:
        st.session_state["judge_view_run"] = judge_run_id
        st.rerun()


# -- live view ------------------------------------------------------------------------
PAGE_SAW_BUSY = status.busy


def calibration_table(calibrated: dict) -> pd.DataFrame:
    rows = []
    for q, cal in calibrated.items():
        k = cal.kappa
        rows.append({
            "question": MEASURE_LABELS[q],
            "kappa": "–" if k.value is None else f"{k.value:.2f} ({k.low:.2f} to {k.high:.2f})"
            + (" *" if sum(cal.confusion["unsure"].values()) else ""),
            "compared": cal.items,
            "left out": ", ".join(f"{n} {why}" for why, n in cal.left_out.items() if n) or "none",
            "finds 'no' (recall)": "–" if cal.recall.n == 0 else
            f"{cal.recall.hits} of {cal.recall.n} ({cal.recall.low:.0%} to {cal.recall.high:.0%})",
            "its 'no' right (precision)": "–" if cal.precision.n == 0 else
            f"{cal.precision.hits} of {cal.precision.n} ({cal.precision.low:.0%} to {cal.precision.high:.0%})",
        })
    return pd.DataFrame(rows)


@st.fragment(run_every=1 if status.busy else None)
def live_view() -> None:
    status = manager.status()
    if PAGE_SAW_BUSY and not status.busy:
        st.rerun(scope="app")   # the run ended: redraw the page without the refresh
    runs = pool.judge.runs()
    if not runs:
        st.caption("No judge runs yet.")
        return
    ids = [r["id"] for r in runs]
    if st.session_state.get("judge_view_run") not in ids:
        st.session_state["judge_view_run"] = ids[0]
    # Labels hold nothing that changes while a run goes on; how it stands is the line below.
    run_id = st.selectbox("Judge run", ids, key="judge_view_run",
                          format_func=lambda i: next(
                              f"Judge run {r['id']} · {r['config'].get('model')} · "
                              + (f"study {r['study_id']}" if r["scope"] == judge.SCOPE_STUDY else "the pool")
                              + f" · created {r['created_at']:%Y-%m-%d %H:%M}" for r in runs if r["id"] == i))
    view = judge.judge_view(pool, run_id)
    running_this = status.busy and status.kind == "judge" and status.run_id == run_id
    if running_this:
        st.markdown(f"**{status.line()}**")
        if status.total:
            st.progress(min(1.0, status.done / status.total),
                        text=f"{status.done:,} of {status.total:,} items answered")
        pause_and_stop("judge", status)
    else:
        state = view.run["status"]
        st.markdown(f"**{monitor.run_headline(run_id, state, view.run['stop_reason'], noun='Judge run')}**")
        if view.run["error"]:
            st.text(view.run["error"])   # may quote the endpoint: plain text
        if state in RESUMABLE_STATUSES and view.progress["answered"] < view.progress["total"]:
            b1, b2, _ = st.columns([1, 1, 4])
            if b1.button("Resume", key="judge_resume", icon=":material/play_arrow:", disabled=status.busy):
                try:
                    manager.resume_judge(run_id, api_key=st.session_state.get("judge_api_key") or None,
                                         actor=current_user())
                except (RuntimeError, ValueError) as exc:
                    st.error("The judge run did not resume.", icon=":material/error:")
                    st.text(str(exc))
                else:
                    st.rerun(scope="app")
            if state != "stopped" and b2.button("End run", key="judge_end", icon=":material/stop:"):
                manager.stop_judge(run_id)
                st.rerun(scope="app")

    progress, usage = view.progress, view.usage
    m = st.columns(5)
    m[0].metric("Items answered", f"{progress['answered']:,} of {progress['total']:,}")
    m[1].metric("Unreadable answers", f"{progress['unparseable']:,}")
    m[2].metric("Tokens", f"{usage['tokens']:,}")
    m[3].metric("Cost", f"${usage['cost_usd']:,.4f}")
    m[4].metric("Structured", "JSON" if view.run.get("structured") else "text")
    if view.run.get("structured_note"):
        st.text(f"Structured output: {view.run['structured_note']}")   # may quote a server: plain text

    readable = view.rates[QUESTIONS[0]]["n"]
    if readable:
        st.markdown(f"**The judge's answers** ({readable:,} readable verdicts)")
        st.dataframe(pd.DataFrame([{"question": MEASURE_LABELS[q], "yes (%)": 100 * view.rates[q]["yes_rate"],
                                    "yes": view.rates[q]["yes"], "no": view.rates[q]["no"],
                                    "unsure": view.rates[q]["unsure"], "paper (%)": 100 * PAPER_RATES[q]}
                                   for q in QUESTIONS]),
                     hide_index=True, key="judge_rates",
                     column_config={"yes (%)": st.column_config.NumberColumn(format="%.0f%%"),
                                    "paper (%)": st.column_config.NumberColumn(format="%.0f%%")})

    if view.calibration:
        st.subheader("Agreement with people")
        st.caption("On the study's labeled items, against the people's majority answer (an unanswered question "
                   "counts as unsure). Study items nobody labeled, items where people are split or unsure, and "
                   f"items without a readable verdict are left out and counted ({', '.join(calibration.LEFT_OUT)}). "
                   "Cohen's kappa with a 95% interval computed with one item added to each cell in use (the plain "
                   "interval collapses when judge and people rarely disagree; this one covered at least 93% in "
                   "simulations of 30-200 items, rates 2-98%, lenient to 99%-accurate judges answering yes or no; "
                   "* marks a judge that also answered unsure, where it can be too narrow at small samples: 54% "
                   "at 30 items with 5% unsure); recall: how many of "
                   "the items people called 'no' the judge called 'no'; precision: how many of the judge's 'no' "
                   "people agree with (exact-enough Wilson intervals).")
        st.dataframe(calibration_table(view.calibration), hide_index=True, key="judge_calibration")
        question = st.segmented_control("Confusion matrix of", list(QUESTIONS), key="judge_confusion_q",
                                        default=QUESTIONS[0], required=True, format_func=MEASURE_LABELS.get)
        confusion = view.calibration[question].confusion
        st.dataframe(render.table(pd.DataFrame(confusion).T.rename_axis("judge \\ people").reset_index()),
                     hide_index=True, key="judge_confusion")

    if view.run["scope"] == judge.SCOPE_POOL:
        labeled = [s for s in pool.quality.studies() if s["labeled_items"]]
        st.subheader("Pool-wide quality")
        if not labeled:
            st.info("Label a study on the Label page (and judge its items) to get pool-wide rates that combine "
                    "the judge's verdicts with people's labels.", icon=":material/fact_check:")
        else:
            study = st.selectbox("People's labels from", [s["id"] for s in labeled], key="judge_rates_study",
                                 format_func=lambda i: next(f"{s['name']} ({s['labeled_items']} labeled)"
                                                            for s in labeled if s["id"] == i))
            try:
                rates = judge.pool_rates(pool, run_id, study)
            except ValueError as exc:
                st.warning(str(exc), icon=":material/info:")   # one sentence: why no rate, what to do
            else:
                st.caption(calibration.RATES_PROMISE)
                first = next(iter(rates.values()))
                studied = quality.study_results(pool, study)
                people = studied.overall.set_index("measure")
                st.caption(f"Counted: {first.n_human} labeled items (split and unsure ones count as not-yes, beside "
                           f"each rate), {first.n_judge:,} other judged items, among them the "
                           f"{studied.items - studied.labeled} study items nobody labeled; {first.unreadable:,} "
                           "without a readable verdict (a cell of their own, its rate taken from people's labels "
                           "on such items, not dropped).")
                frame = calibration.rates_frame(rates, MEASURE_LABELS)
                st.altair_chart(charts.yes_rates_by_group(frame, "Estimate"))
                st.dataframe(pd.DataFrame([{
                    "measure": MEASURE_LABELS.get(q, q),
                    "judge + people (%)": f"{100 * r.estimate:.0f} ({100 * r.low:.0f} to {100 * r.high:.0f})",
                    "people only (%)": "–" if r.human_estimate is None else
                    f"{100 * r.human_estimate:.0f} ({100 * r.human_low:.0f} to {100 * r.human_high:.0f})",
                    "paper (%)": "–" if r.paper_rate is None else f"{100 * r.paper_rate:.0f}",
                    "labeled": r.n_human,
                    "split / unsure (not-yes)": f"{int(people.loc[q, 'split'])} / {int(people.loc[q, 'unsure'])}"
                    if q in people.index else "–",
                    "judged": r.n_judge, "unreadable": r.unreadable} for q, r in rates.items()]),
                    hide_index=True, key="judge_pool_rates")

live_view()
