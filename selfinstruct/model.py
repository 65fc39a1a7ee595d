"""The domain model: the product's words and the rules that decide them, each defined once.

Everything else imports from here: the store builds its SQL from the fragments below, the
pages and the CLI show the labels, the pipeline writes the statuses. Nothing here imports
from the rest of the package, so any module may depend on it.

The rules, in words (docs/architecture.md repeats them):

- A candidate is **accepted** when its status is 'accepted' (by the filters or by a person);
  it is **rescued** when a person put a rejected candidate in the pool (status 'accepted',
  review 'rescued'); it is **human-approved** when it is accepted and a person vouched for it
  (rescued on Rejects, or approved/edited on Pool).
- An instance is in the pool when its status is 'kept'.
- **Majority rule** (quality labels): the answer to a question about an item is the answer
  given by more than half of the labels it received; a question a person left unanswered
  counts as "unsure". With no such answer the item is "split". An item is **labeled invalid**
  when the majority answer to "valid task?" is "no" (for its instruction), or to "input
  appropriate?" or "output acceptable?" (for its instance). The Label page, the Pool page and
  the export all use this one rule.
- **Items labeled in several studies** (`SEVERAL_STUDIES_RULE`): a study's results use that
  study's labels only; "labeled invalid" (the export's filter, the Label page's count across
  studies) takes the majority over all of an item's labels from every study together.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

# ---------------------------------------------------------------------------
# Defaults of the method (Wang et al. 2023)
# ---------------------------------------------------------------------------
ROUGE_THRESHOLD = 0.7       # a candidate this similar (ROUGE-L F) to anything in the pool is rejected
# The second novelty gate (issue 24): a candidate whose cosine with a pool instruction is above
# this, in the bundled embedder's vectors, is the same task reworded (reason semantic_dup), and
# the duplicate groups use it too. Chosen on half of our hand-written pairs as the lowest value
# grouping at most 1 in 10 related-but-different tasks (bench/README.md, "An honest default":
# on the other half it groups none of those, but only 7 of 25 rewordings); None turns it off.
COSINE_THRESHOLD = 0.77
MIN_WORDS = 4               # the paper drops instructions of 3 words or fewer
MAX_WORDS = 150
# Tasks a text-only model cannot do (the paper's list), and Alpaca's additions.
PAPER_KEYWORDS: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures",
    "file", "files", "map", "maps", "draw", "plot", "go to",
)
ALPACA_EXTRA_KEYWORDS: tuple[str, ...] = ("video", "audio", "music", "flowchart", "diagram")
ALPACA_KEYWORDS: tuple[str, ...] = PAPER_KEYWORDS + ALPACA_EXTRA_KEYWORDS

# ---------------------------------------------------------------------------
# Candidates (generated instructions) and instances
# ---------------------------------------------------------------------------
ACCEPTED = "accepted"
REJECTED = "rejected"
CANDIDATE_STATUSES = (ACCEPTED, REJECTED)
KEPT = "kept"
INSTANCE_STATUSES = (KEPT, REJECTED)
REMOVED = "removed"         # the reason of an item a person took out of the pool

# Who decided a candidate's status.
BY_FILTER = "filter"
BY_HUMAN = "human"

# A candidate's review (NULL: nobody looked at it yet).
CONFIRMED = "confirmed"     # a person agreed with the filter's rejection
RESCUED = "rescued"         # a person put a rejected candidate in the pool
APPROVED = "approved"       # a person vouched for an accepted candidate (approved or edited it)
HUMAN_APPROVED_REVIEWS = (RESCUED, APPROVED)
# Approved with a whole topic at once (Topics page): recorded, but kept apart from a person's
# item-by-item approval, so it is not "human-approved" (no export or filter counts it as such).
BULK_APPROVED = "bulk_approved"
# The Rejects page's views of its items.
PENDING = "pending"
ALL = "all"
REVIEW_STATES = (PENDING, CONFIRMED, RESCUED, ALL)
REVIEW_LABELS = {PENDING: "To review", CONFIRMED: "Confirmed", RESCUED: "Rescued", ALL: "All"}

# The kinds of thing an action changes (audit_log.target_kind).
CANDIDATE = "candidate"
INSTANCE = "instance"
SEED_TASK = "seed_task"
TOPIC_MARK = "topic_mark"   # a mark ("avoid") a person put on a topic (store/topics.py)


def sql_literal(value: str) -> str:
    """A constant of this module as a SQL string literal (our own words only: never user text)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(values: Iterable[str]) -> str:
    return "(" + ", ".join(sql_literal(v) for v in values) + ")"


def is_accepted(candidate: Mapping) -> bool:
    return candidate["status"] == ACCEPTED


def accepted_sql(alias: str = "c") -> str:
    return f"{alias}.status = {sql_literal(ACCEPTED)}"


def is_rescued(candidate: Mapping) -> bool:
    return candidate["status"] == ACCEPTED and candidate.get("review") == RESCUED


# The SQL twins are never NULL (a NULL review is "not reviewed"), so NOT and OR behave.
def rescued_sql(alias: str = "c") -> str:
    return f"({alias}.status = {sql_literal(ACCEPTED)} AND {alias}.review IS NOT DISTINCT FROM {sql_literal(RESCUED)})"


def is_human_approved(candidate: Mapping) -> bool:
    return candidate["status"] == ACCEPTED and candidate.get("review") in HUMAN_APPROVED_REVIEWS


def human_approved_sql(alias: str = "c") -> str:
    return (f"({alias}.status = {sql_literal(ACCEPTED)} "
            f"AND coalesce({alias}.review IN {sql_in(HUMAN_APPROVED_REVIEWS)}, false))")


def kept_sql(alias: str = "i") -> str:
    return f"{alias}.status = {sql_literal(KEPT)}"


def instance_in_pool_sql(alias: str = "i") -> str:
    """An instance the pool holds: kept, and belonging to a seed task or an accepted candidate
    (a rejected or removed task's instances are not in the pool, though they stay 'kept')."""
    return (f"({kept_sql(alias)} AND ({alias}.seed_id IS NOT NULL OR EXISTS (SELECT 1 FROM candidates pc "
            f"WHERE pc.id = {alias}.candidate_id AND {accepted_sql('pc')})))")


# ---------------------------------------------------------------------------
# Runs and rounds
# ---------------------------------------------------------------------------
CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"
INTERRUPTED = "interrupted"
FAILED = "failed"
FINISHED = "finished"
RUN_STATUSES = (CREATED, RUNNING, PAUSED, STOPPED, INTERRUPTED, FAILED, FINISHED)
# Ended before its rounds were done: waiting for someone to resume it.
UNFINISHED_STATUSES = (INTERRUPTED, PAUSED, FAILED, STOPPED)
# What `--resume` accepts: an unfinished run, or a finished one to continue with more rounds.
RESUMABLE_STATUSES = UNFINISHED_STATUSES + (FINISHED,)
# A run in one of these has ended for good until resumed (its finished_at is set).
ENDED_STATUSES = (FINISHED, STOPPED, FAILED)

# A round's step (rounds.step).
STEP_GENERATE = "generate"
STEP_CLASSIFY = "classify"
STEP_DONE = "done"
ROUND_STEPS = (STEP_GENERATE, STEP_CLASSIFY, STEP_DONE)


# The export's formats, by the name --format and the Export page take (export.FORMAT_INFO says
# what each is); here so that the CLI can list them without importing the export package.
EXPORT_FORMATS: tuple[str, ...] = ("selfinstruct", "alpaca", "chat", "prompt-completion", "parquet", "csv")

# NUL (U+0000) in text: CSV readers and spreadsheets stop at it and a seed file may not hold it,
# so model text that has one holds U+FFFD (the replacement character) instead: the parsers apply
# it to what they read (their v2), every export to what it writes (pools from before v2).
NUL_REPLACEMENT = "\ufffd"


def without_nul(text: str) -> str:
    return text.replace("\x00", NUL_REPLACEMENT) if "\x00" in text else text


# A round is done when its step is `done`: its instruction requests are all applied and its
# follow-ups (classification, instances) decided. A round planned or half answered is not done,
# whichever page or command counts (Home, Generate, the CLI, the dataset card).
def is_round_done(step: str | None) -> bool:
    return step == STEP_DONE


def round_done_sql(alias: str = "") -> str:
    """is_round_done as a SQL condition on `rounds` (`alias` the table's alias, if any)."""
    return f"{alias + '.' if alias else ''}step = {sql_literal(STEP_DONE)}"

# ---------------------------------------------------------------------------
# Quality study: the paper's three questions and the majority rule
# ---------------------------------------------------------------------------
QUESTIONS = ("valid_task", "input_ok", "output_ok")
YES, NO, UNSURE = "yes", "no", "unsure"
ANSWERS = (YES, NO, UNSURE)
SPLIT = "split"             # no answer has more than half of the labels
QUESTION_TEXT = {
    "valid_task": "Does the instruction describe a valid task?",
    "input_ok": "Is the input appropriate for the instruction?",
    "output_ok": "Is the output a correct and acceptable response to the instruction and input?",
}
ALL_VALID = "all_valid"     # the fourth measure: all three answers "yes"
MEASURES = QUESTIONS + (ALL_VALID,)
MEASURE_LABELS = {
    "valid_task": "Valid task",
    "input_ok": "Input appropriate",
    "output_ok": "Output acceptable",
    ALL_VALID: "All three valid",
}
# Share of "yes" in the paper's study of 200 GPT-3 generations (Table 2 of Wang et al. 2023).
PAPER_RATES = {"valid_task": 0.92, "input_ok": 0.79, "output_ok": 0.58, ALL_VALID: 0.54}
MAX_OVERLAP = 50            # annotators per item a study may ask for, at most
# How long the item on an annotator's screen stays reserved for them (renewed by every answer they
# give on it): long enough to read and judge an item, short enough that an abandoned tab frees it.
LABEL_LEASE_S = 300
# How many "no" labels make an item invalid: the majority rule, or any single "no".
INVALID_RULES = ("majority", "any")
# An item labeled in several studies, in the words every page that counts labels shows.
SEVERAL_STUDIES_RULE = ("An item labeled in several studies: a study's results (the Label page's figures, the judge's "
                        "agreement and pool-wide rates) use that study's labels only; 'labeled invalid' (the export "
                        "filter and the count across studies) takes the majority over all of an item's labels from "
                        "every study together, so an item 'no' in one study and 'yes' in two others is not invalid.")


def majority(answers: Sequence[str | None]) -> str:
    """The majority answer to one question, or SPLIT; an unanswered question (None) counts as
    "unsure"."""
    answers = [a or UNSURE for a in answers]
    if not answers:
        return SPLIT
    answer, top = Counter(answers).most_common(1)[0]
    return answer if 2 * top > len(answers) else SPLIT


def labeled_no_sql(column: str, rule: str = "majority", alias: str = "l") -> str:
    """An aggregate (over one item's label rows) that is true when the item counts as "no" on
    `column`: the SQL twin of `majority(...) == NO` (unanswered rows count in the total)."""
    if column not in QUESTIONS:
        raise ValueError(f"column must be one of {QUESTIONS}, not {column!r}")
    if rule not in INVALID_RULES:
        raise ValueError(f"rule must be one of {INVALID_RULES}, not {rule!r}")
    no = f"count(*) FILTER (WHERE {alias}.{column} = {sql_literal(NO)})"
    return f"{no} > 0" if rule == "any" else f"2 * {no} > count(*)"


def labeled_invalid(labels: Sequence[Mapping], questions: Sequence[str], rule: str = "majority") -> bool:
    """True when one item's labels make it invalid on any of `questions` (the Python twin of
    `labeled_no_sql`)."""
    for q in questions:
        answers = [row.get(q) for row in labels]
        if (NO in answers) if rule == "any" else majority(answers) == NO:
            return True
    return False


# ---------------------------------------------------------------------------
# Duplicate groups: which item of a group of near-duplicates stays
# ---------------------------------------------------------------------------
KEEP_RULE = ("a seed task, else a human-approved item, else one the latest judge run called a valid "
             "task, else the earliest")


def keep_rank(item: Mapping) -> tuple:
    """The keep rule as a sort key (smallest stays): a seed task, else a human-approved
    candidate, else one whose latest judge verdict says "yes" to "valid task?", else the
    earliest (seed tasks before candidates, then by id). `item` has kind (SEED_TASK or
    CANDIDATE), id, and for candidates status, review and judge_valid (the latest verdict)."""
    if item["kind"] == SEED_TASK:
        tier = 0
    elif is_human_approved(item):
        tier = 1
    elif item.get("judge_valid") == YES:
        tier = 2
    else:
        tier = 3
    return (tier, 0 if item["kind"] == SEED_TASK else 1, int(item["id"]))


def keep_rank_sql(kind: str, item_id: str, candidate: str = "c", judge_valid: str = "j.valid") -> str:
    """keep_rank as a SQL ORDER BY list (smallest first), for rows with a `kind` and `item_id`
    expression, the candidate's columns under alias `candidate` (NULL for a seed task) and
    `judge_valid`, its latest verdict's answer to "valid task?" (the export's per-topic cap)."""
    seed = f"{kind} = {sql_literal(SEED_TASK)}"
    return (f"CASE WHEN {seed} THEN 0 WHEN coalesce({human_approved_sql(candidate)}, false) THEN 1 "
            f"WHEN {judge_valid} IS NOT DISTINCT FROM {sql_literal(YES)} THEN 2 ELSE 3 END, "
            f"CASE WHEN {seed} THEN 0 ELSE 1 END, {item_id}")


# Which questions judge which part of an item.
INSTRUCTION_QUESTIONS = ("valid_task",)
INSTANCE_QUESTIONS = ("input_ok", "output_ok")


# The words above as SQL literals, for the store's queries: f"WHERE c.status = {SQL.ACCEPTED}".
class SQL:
    ACCEPTED = sql_literal(ACCEPTED)
    REJECTED = sql_literal(REJECTED)
    KEPT = sql_literal(KEPT)
    REMOVED = sql_literal(REMOVED)
    RESCUED = sql_literal(RESCUED)
    CONFIRMED = sql_literal(CONFIRMED)
    APPROVED = sql_literal(APPROVED)
    BY_HUMAN = sql_literal(BY_HUMAN)
    BY_FILTER = sql_literal(BY_FILTER)
    RUNNING = sql_literal(RUNNING)
    STEP_DONE = sql_literal(STEP_DONE)
    YES = sql_literal(YES)
    NO = sql_literal(NO)
    CANDIDATE = sql_literal(CANDIDATE)
    INSTANCE = sql_literal(INSTANCE)
