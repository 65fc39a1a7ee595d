"""Every change a person makes to the pool: the rules, the words, the audit and the undo.

Pages and the CLI call these functions; the store (`selfinstruct/store/audit.py`) only reads and
writes the rows. One exception type (`ActionError`, a plain sentence for the user; `UndoRefused`
is one), one outcome type (`Outcome`) and one audit format:

* Every change writes **one audit row per target it changed**: `action`, `target_kind`
  (model.CANDIDATE, INSTANCE, SEED_TASK), `target_id`, the person's `reason`, and the target's
  whole state (`store.audit.STATE_COLUMNS`) in `before` and `after`. `after` also carries the
  call's **batch** key (`after.batch`): the rows of one call share it, so a bulk action is undone
  at once. A target that does not exist (a deleted seed task) is `{"absent": true}`.
* **Undo** (`undo`, `undo_batch`) restores `before` when the target still has its `after` state,
  writes an `undo` row (`after.undoes` names the entry) and sets the entry's `undone_by`; else it
  refuses, naming the later change. Undo rows and imports are not undone.
* Older rows read the same way: the Rejects page's rows (partial states, `after.batch`) and the
  Pool page's (whole states, no batch: each row is a batch of its own, keyed `#<id>`; an instance
  edit kept its task's state inside as `task`) are listed and undone by the same code.

An import writes one row for the whole import (`import_seeds`, target kind `seed_task`, no
target id) with the origin, the count and the new ids as ranges (`after.id_ranges`), so a
100K-task import stays one insert loop and one audit row. It cannot be undone here: delete the
tasks on the Seed tasks page (each deletion is audited and undoable).
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import duckdb

from .model import (ACCEPTED, APPROVED, BULK_APPROVED, BY_HUMAN, CANDIDATE, CONFIRMED, INSTANCE, KEPT, REJECTED,
                    REMOVED, RESCUED, SEED_TASK, TOPIC_MARK, is_accepted, is_human_approved)
from .store.audit import STATE_COLUMNS

# Action names (audit_log.action).
RESCUE, CONFIRM = "rescue", "confirm"
EDIT_CANDIDATE, EDIT_INSTANCE, APPROVE, REMOVE, REMOVE_INSTANCE = (
    "edit_candidate", "edit_instance", "approve", "remove", "remove_instance")
EDIT_SEED, DELETE_SEED, IMPORT_SEEDS = "edit_seed", "delete_seed", "import_seeds"
REMOVE_DUPLICATES = "remove_duplicates"                 # duplicate groups (semantic.py): one change
DEDUP_ACTIONS = (REMOVE_DUPLICATES,)                    # the Duplicates view's log
UNDO = "undo"
# Whole-topic actions (Topics page): one call, one batch, one undo.
REMOVE_TOPIC, APPROVE_TOPIC, MARK_TOPIC, UNMARK_TOPIC = "remove_topic", "approve_topic", "mark_topic", "unmark_topic"
REJECTS_ACTIONS = (RESCUE, CONFIRM)                     # the Rejects page's log
POOL_ACTIONS = (EDIT_CANDIDATE, EDIT_INSTANCE, APPROVE, REMOVE, REMOVE_INSTANCE)   # the Pool page's
SEED_ACTIONS = (EDIT_SEED, DELETE_SEED)
TOPIC_ACTIONS = (REMOVE_TOPIC, APPROVE_TOPIC, MARK_TOPIC, UNMARK_TOPIC)             # the Topics page's
UNDOABLE = REJECTS_ACTIONS + POOL_ACTIONS + SEED_ACTIONS + TOPIC_ACTIONS + DEDUP_ACTIONS
SEED_FIELDS = ("instruction", "name", "is_classification", "input", "output")

_UNPARSEABLE = "unparseable"    # the pipeline's reason for raw text it could not read (filters.py)
_META = ("batch", "undoes", "absent")
_NOUN = {CANDIDATE: "candidate", INSTANCE: "instance", SEED_TASK: "seed task", TOPIC_MARK: "topic mark"}


class ActionError(Exception):
    """An action that cannot be done, in one plain sentence a user can act on."""


class UndoRefused(ActionError):
    """An undo that would overwrite a later change, or has nothing to undo."""


@dataclass
class Outcome:
    """What one call did: the targets changed (`done`; for an undo, the entries undone), the
    ones left alone with why (`skipped`), the audit rows written, and the call's batch key."""

    action: str
    batch: str
    done: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    audit_ids: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.done)


class _Skip(Exception):
    """One item of a bulk action is left alone (the message says why, as a clause)."""


def _new_batch() -> str:
    return uuid.uuid4().hex[:12]


@contextmanager
def _transaction(pool) -> Iterator[None]:
    try:
        with pool.transaction():
            yield
    except duckdb.TransactionException as exc:
        raise ActionError(
            "The pool was changed by something else at the same moment (probably a running "
            f"round); nothing was saved. Try again. ({exc.__class__.__name__})") from None


def _stored(state: dict | None, **meta) -> dict:
    """A state as an audit row stores it (with the batch and other keys for `after`)."""
    return {**({"absent": True} if state is None else state), **meta}


def _state_of(stored: Any) -> dict | None:
    """The state an audit row recorded (None: the target did not exist)."""
    if stored is None or stored.get("absent"):
        return None
    return {k: v for k, v in stored.items() if k not in _META}


# ---------------------------------------------------------------------------
# The one change primitive
# ---------------------------------------------------------------------------
def _record(pool, action: str, kind: str, target_id: int, before: dict | None, after: dict | None, *,
            actor: str, reason: str | None, batch: str) -> int:
    pool.audit.write_state(kind, target_id, after)
    return pool.audit.append_audit(actor, action, kind, target_id, reason, _stored(before),
                             _stored(after, batch=batch))


def _change(pool, action: str, kind: str, ids: Iterable[int], decide: Callable[[dict], dict | None], *,
            actor: str, reason: str | None, one: bool = False, batch: str | None = None) -> Outcome:
    """Apply `decide(before) -> after` to each target, audited, in one transaction. `decide`
    raises `_Skip` to leave one item alone (reported in `skipped`) or `ActionError` to stop the
    whole call; with `one`, a missing target stops the call too. `batch` joins another call's
    batch (a whole-topic action changing two kinds of target is undone at once)."""
    outcome = Outcome(action, batch or _new_batch())
    reason = (reason or "").strip() or None
    with _transaction(pool):
        for target_id in dict.fromkeys(int(i) for i in ids):
            before = pool.audit.read_state(kind, target_id)
            try:
                if before is None:
                    if one:
                        raise ActionError(f"There is no {_NOUN[kind]} {target_id}.")
                    raise _Skip(f"there is no {_NOUN[kind]} {target_id}")
                after = decide(before)
            except _Skip as skip:
                outcome.skipped.append((target_id, str(skip)))
                continue
            outcome.audit_ids.append(_record(pool, action, kind, target_id, before, after, actor=actor,
                                             reason=reason, batch=outcome.batch))
            outcome.done.append(target_id)
    return outcome


def _change_many(pool, action: str, kind: str, ids: Iterable[int], decide: Callable[[dict], dict], *,
                 actor: str, reason: str | None, batch: str | None = None) -> Outcome:
    """`_change` for many candidates or instances at once (the Rejects actions): the same
    `decide`, the same skips, the same audit rows (one per target changed, whole states, one
    batch) in one transaction, but read, written and audited with one statement each instead of
    three per target, so "all 100,000 that match" takes seconds. `decide` may only raise `_Skip`."""
    outcome = Outcome(action, batch or _new_batch())
    reason = (reason or "").strip() or None
    ids = list(dict.fromkeys(int(i) for i in ids))
    with _transaction(pool):
        states = pool.audit.read_states(kind, ids)
        changes: list[tuple[int, dict, dict]] = []
        for target_id in ids:
            before = states.get(target_id)
            try:
                if before is None:
                    raise _Skip(f"there is no {_NOUN[kind]} {target_id}")
                changes.append((target_id, before, decide(before)))
            except _Skip as skip:
                outcome.skipped.append((target_id, str(skip)))
        pool.audit.write_states(kind, [(target_id, after) for target_id, _, after in changes])
        outcome.audit_ids = pool.audit.append_audits(actor, action, kind, [
            (target_id, reason, _stored(before), _stored(after, batch=outcome.batch))
            for target_id, before, after in changes])
        outcome.done = [target_id for target_id, _, _ in changes]
    return outcome


# ---------------------------------------------------------------------------
# Rejects: rescue and confirm
# ---------------------------------------------------------------------------
def rescue(pool, ids: Iterable[int], *, actor: str, reason: str | None = None,
           instruction: str | None = None) -> Outcome:
    """Put rejected candidates in the pool (accepted, decided by a person, review rescued;
    the filter's reason stays). `instruction` replaces the text of one candidate (to rescue an
    unparseable fragment after editing it); unparseable ones are skipped without it."""
    ids = list(ids)
    new_text = None if instruction is None else instruction.strip()
    if instruction is not None:
        if len(ids) != 1:
            raise ValueError("An edited instruction can only be given for one candidate.")
        if not new_text:
            raise ActionError("The edited instruction is empty.")

    def decide(before: dict) -> dict:
        if before["status"] != REJECTED:
            raise _Skip(f"it is already {before['status']}")
        if before["reason"] == _UNPARSEABLE and new_text is None:
            raise _Skip("it is raw model text that could not be parsed; edit it into an instruction first")
        after = {**before, "status": ACCEPTED, "decided_by": BY_HUMAN, "review": RESCUED}
        if new_text is not None:
            after["instruction"] = new_text
        return after

    return _change_many(pool, RESCUE, CANDIDATE, ids, decide, actor=actor, reason=reason)


def confirm(pool, ids: Iterable[int], *, actor: str, reason: str | None = None) -> Outcome:
    """Agree with the filter: review confirmed; the candidate stays rejected."""
    def decide(before: dict) -> dict:
        if before["status"] != REJECTED:
            raise _Skip(f"it is {before['status']}"
                        + (" (undo the rescue instead)" if before["review"] == RESCUED else ""))
        if before["review"] == CONFIRMED:
            raise _Skip("it is already confirmed")
        return {**before, "review": CONFIRMED}

    return _change_many(pool, CONFIRM, CANDIDATE, ids, decide, actor=actor, reason=reason)


def rescue_instances(pool, ids: Iterable[int], *, actor: str, reason: str | None = None) -> Outcome:
    """Keep rejected instances (kept; their reason stays as the mark of a rescue). Unparseable
    instance rows (raw model text) are skipped."""
    def decide(before: dict) -> dict:
        if before["status"] != REJECTED:
            raise _Skip(f"it is already {before['status']}")
        if before["reason"] == _UNPARSEABLE:
            raise _Skip("it is raw model text that could not be read as an input/output pair")
        return {**before, "status": KEPT}

    return _change_many(pool, RESCUE, INSTANCE, ids, decide, actor=actor, reason=reason)


# ---------------------------------------------------------------------------
# Pool: edit, approve, remove (one item each)
# ---------------------------------------------------------------------------
def _in_pool(before: dict | None, candidate_id: int) -> dict:
    if before is None:
        raise ActionError(f"There is no candidate {candidate_id}.")
    if not is_accepted(before):
        raise ActionError(f"Candidate {candidate_id} is not in the accepted pool (it is {before['status']}).")
    return before


def _vouched(state: dict) -> dict:
    """A person touched this accepted item: decided by a human, reviewed approved unless it
    already carries a review (a rescue stays a rescue)."""
    return {**state, "decided_by": BY_HUMAN, "review": state["review"] or APPROVED}


def edit_instruction(pool, candidate_id: int, instruction: str, *, actor: str,
                     reason: str | None = None) -> Outcome:
    """Change an accepted instruction's text; the item counts as human-approved afterwards."""
    text = (instruction or "").strip()
    if not text:
        raise ActionError("An instruction cannot be empty.")

    def decide(before: dict) -> dict:
        _in_pool(before, candidate_id)
        if text == before["instruction"]:
            raise ActionError("The instruction is unchanged.")
        return _vouched({**before, "instruction": text})

    return _change(pool, EDIT_CANDIDATE, CANDIDATE, [candidate_id], decide, actor=actor, reason=reason, one=True)


def approve(pool, candidate_id: int, *, actor: str, reason: str | None = None) -> Outcome:
    """Mark an accepted item as checked by a person (review approved)."""
    def decide(before: dict) -> dict:
        _in_pool(before, candidate_id)
        if is_human_approved(before) and before["decided_by"] == BY_HUMAN:
            raise ActionError(f"Candidate {candidate_id} is already human-approved.")
        return {**before, "decided_by": BY_HUMAN, "review": APPROVED}

    return _change(pool, APPROVE, CANDIDATE, [candidate_id], decide, actor=actor, reason=reason, one=True)


def remove(pool, candidate_id: int, *, actor: str, reason: str | None = None) -> Outcome:
    """Take an item out of the accepted pool: rejected, reason removed, decided by a person."""
    def decide(before: dict) -> dict:
        _in_pool(before, candidate_id)
        return {**before, "status": REJECTED, "reason": REMOVED, "decided_by": BY_HUMAN}

    return _change(pool, REMOVE, CANDIDATE, [candidate_id], decide, actor=actor, reason=reason, one=True)


def _generated_instance(pool, instance_id: int) -> dict:
    state = pool.audit.read_state(INSTANCE, instance_id)
    if state is None or state["candidate_id"] is None:
        raise ActionError(f"There is no generated instance {instance_id}.")
    return state


def remove_instance(pool, instance_id: int, *, actor: str, reason: str | None = None) -> Outcome:
    """Drop one kept instance of a generated task (rejected, reason removed)."""
    def decide(before: dict) -> dict:
        _generated_instance(pool, instance_id)
        if before["status"] != KEPT:
            raise ActionError(f"Instance {instance_id} is not kept (it is {before['status']}).")
        return {**before, "status": REJECTED, "reason": REMOVED}

    return _change(pool, REMOVE_INSTANCE, INSTANCE, [instance_id], decide, actor=actor, reason=reason, one=True)


def edit_instance(pool, instance_id: int, *, input: str, output: str, actor: str,
                  reason: str | None = None) -> Outcome:
    """Change a generated instance's input and output; its task counts as human-approved
    afterwards. Two rows in one batch when the task was not vouched for yet: the instance's
    edit, then the task's approval."""
    new_input, new_output = (input or "").strip(), (output or "").strip()
    if not new_output:
        raise ActionError("An instance needs an output.")
    outcome = Outcome(EDIT_INSTANCE, _new_batch())
    reason = (reason or "").strip() or None
    with _transaction(pool):
        before = _generated_instance(pool, instance_id)
        task_id = before["candidate_id"]
        task_before = _in_pool(pool.audit.read_state(CANDIDATE, task_id), task_id)
        if (new_input, new_output) == (before["input"], before["output"]):
            raise ActionError("The instance is unchanged.")
        after = {**before, "input": new_input, "output": new_output}
        outcome.audit_ids.append(_record(pool, EDIT_INSTANCE, INSTANCE, instance_id, before, after,
                                         actor=actor, reason=reason, batch=outcome.batch))
        outcome.done.append(int(instance_id))
        task_after = _vouched(task_before)
        if task_after != task_before:
            outcome.audit_ids.append(_record(pool, APPROVE, CANDIDATE, task_id, task_before, task_after,
                                             actor=actor, reason=reason, batch=outcome.batch))
    return outcome


# ---------------------------------------------------------------------------
# Seed tasks
# ---------------------------------------------------------------------------
def edit_seed(pool, seed_id: int, *, actor: str, reason: str | None = None, **changes: Any) -> Outcome:
    """Change a seed's instruction, name, is_classification and/or its first instance
    (`input`, `output`; one is added when it has none)."""
    unknown = set(changes) - set(SEED_FIELDS)
    if unknown:
        raise ValueError(f"Cannot change {sorted(unknown)} of a seed task.")

    def decide(before: dict) -> dict:
        after = {**before, **{k: v for k, v in changes.items() if k in ("instruction", "name", "is_classification")}}
        if "input" in changes or "output" in changes:
            first = {"input": changes.get("input", before["input"]) or "",
                     "output": changes.get("output", before["output"]) or ""}
            after["instances"] = [first, *before["instances"][1:]]
            after["input"], after["output"] = first["input"], first["output"]
        return after

    return _change(pool, EDIT_SEED, SEED_TASK, [seed_id], decide, actor=actor, reason=reason, one=True)


def delete_seeds(pool, seed_ids: Iterable[int], *, actor: str, reason: str | None = None) -> Outcome:
    """Delete seed tasks with their instances (missing ones are skipped); undo brings them back."""
    return _change(pool, DELETE_SEED, SEED_TASK, seed_ids, lambda before: None, actor=actor, reason=reason)


# ---------------------------------------------------------------------------
# Duplicate groups: one change for every group
# ---------------------------------------------------------------------------
def remove_duplicates(pool, candidate_ids: Iterable[int], seed_ids: Iterable[int] = (), *, actor: str,
                      reason: str | None = None) -> Outcome:
    """Take the near-duplicates of duplicate groups out of the pool as ONE audited change (one
    batch: one undo brings them all back). Accepted candidates are removed as `remove` does
    them (rejected, reason removed, decided by a person); seed tasks only when a person named
    them in `seed_ids` (deleted, as `delete_seeds` does). Items no longer in the pool are
    skipped, with why."""
    outcome = Outcome(REMOVE_DUPLICATES, _new_batch())
    reason = (reason or "").strip() or None
    ids = list(dict.fromkeys(int(i) for i in candidate_ids))
    with _transaction(pool):
        states = pool.audit.read_states(CANDIDATE, ids)
        changes = []
        for target_id in ids:
            before = states.get(target_id)
            if before is None:
                outcome.skipped.append((target_id, f"there is no candidate {target_id}"))
            elif not is_accepted(before):
                outcome.skipped.append((target_id, f"candidate {target_id} is not in the pool (it is {before['status']})"))
            else:
                changes.append((target_id, before, {**before, "status": REJECTED, "reason": REMOVED,
                                                    "decided_by": BY_HUMAN}))
        pool.audit.write_states(CANDIDATE, [(t, after) for t, _, after in changes])
        outcome.audit_ids = pool.audit.append_audits(actor, REMOVE_DUPLICATES, CANDIDATE, [
            (t, reason, _stored(before), _stored(after, batch=outcome.batch)) for t, before, after in changes])
        outcome.done = [t for t, _, _ in changes]
        for seed_id in dict.fromkeys(int(i) for i in seed_ids):
            before = pool.audit.read_state(SEED_TASK, seed_id)
            if before is None:
                outcome.skipped.append((seed_id, f"there is no seed task {seed_id}"))
                continue
            outcome.audit_ids.append(_record(pool, REMOVE_DUPLICATES, SEED_TASK, seed_id, before, None,
                                             actor=actor, reason=reason, batch=outcome.batch))
            outcome.done.append(seed_id)
    return outcome


def _ranges(ids: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def import_seeds(pool, tasks: Iterable[Any], *, origin: str, actor: str) -> Outcome:
    """Insert seed tasks (objects with instruction, instances, is_classification, name,
    source_id, or a bulk import the store has staged (`store.seeds.StagedSeeds`); `seeds.py`
    validates them first) in one transaction, with one audit row for the whole import. `done`
    holds the new ids."""
    tasks = tasks if hasattr(tasks, "table") and hasattr(tasks, "count") else list(tasks)
    outcome = Outcome(IMPORT_SEEDS, _new_batch())
    with _transaction(pool):
        outcome.done = pool.seeds.insert_seed_tasks(tasks, origin=origin)
        outcome.audit_ids.append(pool.audit.append_audit(
            actor, IMPORT_SEEDS, SEED_TASK, None, None, None,
            {"origin": origin, "count": len(outcome.done), "id_ranges": _ranges(outcome.done),
             "batch": outcome.batch}))
    return outcome


# ---------------------------------------------------------------------------
# Whole topics (Topics page): the members of one topic of a stored topic set
# ---------------------------------------------------------------------------
def _topic(pool, set_id: int, topic: int) -> dict:
    found = pool.topics.get_set(set_id)
    if found is None:
        raise ActionError(f"There is no topic set {set_id}; compute the topics again.")
    if not any(int(t["topic"]) == int(topic) for t in pool.topics.topics(set_id)):
        raise ActionError(f"Topic set {set_id} has no topic {topic}.")
    return found


def remove_topic(pool, set_id: int, topic: int, *, actor: str, include_seeds: bool = False,
                 reason: str | None = None) -> Outcome:
    """Take every accepted candidate of a topic out of the pool (as `remove` does one), and delete
    its seed tasks too only when `include_seeds` (a person ticked them): one batch, one undo."""
    _topic(pool, set_id, topic)

    def decide(before: dict) -> dict:
        if before["status"] != ACCEPTED:
            raise _Skip(f"it is {before['status']}")
        return {**before, "status": REJECTED, "reason": REMOVED, "decided_by": BY_HUMAN}

    with _transaction(pool):
        ids = pool.topics.topic_member_ids(set_id, topic, kind=CANDIDATE, accepted_only=True)
        outcome = _change_many(pool, REMOVE_TOPIC, CANDIDATE, ids, decide, actor=actor, reason=reason)
        if include_seeds:
            seeds = pool.topics.topic_member_ids(set_id, topic, kind=SEED_TASK)
            more = _change(pool, REMOVE_TOPIC, SEED_TASK, seeds, lambda before: None, actor=actor,
                           reason=reason, batch=outcome.batch)
            outcome.done += more.done
            outcome.skipped += more.skipped
            outcome.audit_ids += more.audit_ids
    if not outcome.audit_ids:
        raise ActionError(f"Topic {topic} holds nothing left to remove.")
    return outcome


def approve_topic(pool, set_id: int, topic: int, *, actor: str, reason: str | None = None) -> Outcome:
    """Approve every accepted candidate of a topic at once, recorded as a bulk approval (review
    `bulk_approved`, action `approve_topic`), apart from a person's item-by-item approval: items a
    person already vouched for keep their review."""
    _topic(pool, set_id, topic)

    def decide(before: dict) -> dict:
        if before["status"] != ACCEPTED:
            raise _Skip(f"it is {before['status']}")
        if before["review"] in (RESCUED, APPROVED, BULK_APPROVED):
            raise _Skip(f"it is already {before['review'].replace('_', ' ')}")
        return {**before, "decided_by": BY_HUMAN, "review": BULK_APPROVED}

    with _transaction(pool):
        ids = pool.topics.topic_member_ids(set_id, topic, kind=CANDIDATE, accepted_only=True)
        return _change_many(pool, APPROVE_TOPIC, CANDIDATE, ids, decide, actor=actor, reason=reason)


def mark_topic(pool, set_id: int, topic: int, *, actor: str, mark: str = "avoid", reason: str | None = None) -> Outcome:
    """Mark a topic "avoid": steered generation never draws in-context examples from it. The mark
    keeps its set and topic, so it means the same items when topics are computed again."""
    from .topics import AVOID, avoided

    if mark != AVOID:
        raise ValueError(f"the only mark is {AVOID!r}, not {mark!r}")
    found = _topic(pool, set_id, topic)
    if int(topic) in avoided(pool, set_id):
        raise ActionError(f"Topic {topic} is already marked {mark}.")
    outcome = Outcome(MARK_TOPIC, _new_batch())
    name = next(t["model_name"] or t["name"] for t in pool.topics.topics(set_id) if int(t["topic"]) == int(topic))
    with _transaction(pool):
        mark_id = pool.topics.add_mark(embedder=found["embedder"], mark=mark, name=name,
                                       centroid=pool.topics.centroids(set_id)[int(topic) - 1], set_id=set_id,
                                       topic=topic)
        outcome.audit_ids.append(pool.audit.append_audit(actor, MARK_TOPIC, TOPIC_MARK, mark_id, (reason or "").strip() or None,
                                                   _stored(None), _stored(pool.audit.read_state(TOPIC_MARK, mark_id),
                                                                          batch=outcome.batch)))
        outcome.done.append(mark_id)
    return outcome


def unmark_topic(pool, set_id: int, topic: int, *, actor: str, reason: str | None = None) -> Outcome:
    """Lift the "avoid" marks whose region holds this topic's centroid."""
    from .topics import avoid_marks, in_avoided

    found = _topic(pool, set_id, topic)
    centroid = pool.topics.centroids(set_id)[int(topic) - 1:int(topic)]
    on_topic = [m["id"] for m in avoid_marks(pool, found["embedder"]) if in_avoided(pool, centroid, [m])[0]]
    if not on_topic:
        raise ActionError(f"Topic {topic} is not marked.")
    return _change(pool, UNMARK_TOPIC, TOPIC_MARK, on_topic, lambda before: {**before, "active": False},
                   actor=actor, reason=reason)


# ---------------------------------------------------------------------------
# Undo: one primitive for every action
# ---------------------------------------------------------------------------
def _describe(entry: dict) -> str:
    what = _NOUN.get(entry["target_kind"], entry["target_kind"] or "item")
    return f"{entry['action']} of {what} {entry['target_id']}"


def _undoable(entry: dict) -> None:
    """Refuse an entry that is not an open change of a target (before its target is read)."""
    audit_id, action, kind, target_id = entry["id"], entry["action"], entry["target_kind"], entry["target_id"]
    if action == UNDO:
        raise UndoRefused(f"Entry #{audit_id} is itself an undo; to go back, make the change again.")
    if action not in UNDOABLE or kind not in STATE_COLUMNS or target_id is None:
        extra = (" Delete the imported seed tasks on the Seed tasks page instead."
                 if action == IMPORT_SEEDS else "")
        raise UndoRefused(f"Entry #{audit_id} ({action}) cannot be undone.{extra}")
    if entry["undone_by"] is not None:
        raise UndoRefused(f"Entry #{audit_id} ({_describe(entry)}) was already undone by entry "
                          f"#{entry['undone_by']}.")


def _restored(pool, entry: dict, now: dict | None) -> dict | None:
    """The state undoing `entry` gives its target, whose state is `now`; refused (naming the
    later change) when the target no longer has the entry's `after` state."""
    audit_id, kind, target_id = entry["id"], entry["target_kind"], entry["target_id"]
    noun = f"{_NOUN[kind]} {target_id}"
    cols = STATE_COLUMNS[kind]
    want, restore = _state_of(entry["after"]), _state_of(entry["before"])
    if want is not None and now is None:
        raise UndoRefused(f"Cannot undo #{audit_id}: the {noun} no longer exists.")
    if want is None:
        differs = [] if now is None else ["it exists again"]
    else:
        differs = [f"{k} is now {now.get(k)!r} (was {want[k]!r})" for k in want
                   if k in cols and now.get(k) != want[k]]
    if differs:
        later = pool.audit.later_audit(kind, target_id, audit_id)
        by = f" by entry #{later['id']} ({later['action']}, {later['actor']})" if later else ""
        raise UndoRefused(f"Cannot undo #{audit_id}: the {noun} changed since{by}: {', '.join(differs)}. "
                          "Undo the later change first, or act on it again.")
    return None if restore is None else {**(now or {}), **{k: v for k, v in restore.items() if k in cols}}


def _undo_entry(pool, entry: dict, *, actor: str, batch: str) -> list[int]:
    """Undo one audit row (inside the caller's transaction); the undo rows written."""
    _undoable(entry)
    audit_id, kind, target_id = entry["id"], entry["target_kind"], entry["target_id"]
    now = pool.audit.read_state(kind, target_id)
    new = _restored(pool, entry, now)
    pool.audit.write_state(kind, target_id, new)
    written = [pool.audit.append_audit(actor, UNDO, kind, target_id, f"undo of #{audit_id}", _stored(now),
                                 _stored(new, batch=batch, undoes=audit_id))]
    # A Pool-page instance edit from before one row per target kept its task's state inside.
    task_before, task_after = (entry["before"] or {}).get("task"), (entry["after"] or {}).get("task")
    if kind == INSTANCE and isinstance(task_before, dict) and isinstance(task_after, dict):
        task_id = (entry["before"] or {}).get("candidate_id") or (now or {}).get("candidate_id")
        task_now = pool.audit.read_state(CANDIDATE, task_id) if task_id is not None else None
        if task_now is not None and all(task_now.get(k) == task_after.get(k) for k in STATE_COLUMNS[CANDIDATE]):
            task_new = {**task_now, **{k: task_before[k] for k in STATE_COLUMNS[CANDIDATE] if k in task_before}}
            pool.audit.write_state(CANDIDATE, task_id, task_new)
            written.append(pool.audit.append_audit(actor, UNDO, CANDIDATE, task_id, f"undo of #{audit_id}",
                                             _stored(task_now), _stored(task_new, batch=batch, undoes=audit_id)))
    pool.audit.set_undone_by(audit_id, written[0])
    return written


def _undo_at_once(pool, audit_ids: Sequence[int], *, actor: str, outcome: Outcome) -> bool:
    """`undo_batch`'s loop in a few statements, for a batch of distinct candidates and instances
    with no nested task state (what the Rejects actions write): the same checks, refusals,
    undo rows and `undone_by`. Returns False, having written nothing, for any other batch."""
    entries = pool.audit.audit_rows(audit_ids)
    keys = [(e["target_kind"], e["target_id"]) for e in entries]
    if (len(entries) != len(audit_ids) or len(set(keys)) != len(keys)
            or any(kind not in (CANDIDATE, INSTANCE) or target_id is None for kind, target_id in keys)
            or any(isinstance((e[side] or {}).get("task"), dict) for e in entries for side in ("before", "after"))):
        return False
    now = {kind: pool.audit.read_states(kind, [t for k, t in keys if k == kind]) for kind in {k for k, _ in keys}}
    plan: list[tuple[dict, dict, dict]] = []
    for entry in entries:
        try:
            _undoable(entry)
            before = now[entry["target_kind"]].get(entry["target_id"])
            new = _restored(pool, entry, before)
        except UndoRefused as exc:
            outcome.skipped.append((entry["id"], str(exc)))
            continue
        if new is None:           # a candidate or instance is never deleted: leave it to the loop
            outcome.skipped.clear()
            return False
        plan.append((entry, before, new))
    written: dict[int, int] = {}
    for kind in (CANDIDATE, INSTANCE):
        mine = [p for p in plan if p[0]["target_kind"] == kind]
        pool.audit.write_states(kind, [(e["target_id"], new) for e, _, new in mine])
        ids = pool.audit.append_audits(actor, UNDO, kind, [
            (e["target_id"], f"undo of #{e['id']}", _stored(before), _stored(new, batch=outcome.batch, undoes=e["id"]))
            for e, before, new in mine])
        written.update((e["id"], undo_id) for (e, _, _), undo_id in zip(mine, ids))
    pool.audit.set_undone_by_many(list(written.items()))
    for entry, _, _ in plan:
        outcome.done.append(entry["id"])
        outcome.audit_ids.append(written[entry["id"]])
    return True


def undo(pool, audit_id: int, *, actor: str) -> Outcome:
    """Undo one audit entry: restore its `before` when the target still has its `after`
    state. Raises `UndoRefused` (naming the later change) otherwise."""
    outcome = Outcome(UNDO, _new_batch())
    with _transaction(pool):
        entry = pool.audit.audit_entry(int(audit_id))
        if entry is None:
            raise UndoRefused(f"There is no audit entry #{audit_id}.")
        outcome.audit_ids = _undo_entry(pool, entry, actor=actor, batch=outcome.batch)
        outcome.done.append(int(audit_id))
    return outcome


def undo_batch(pool, batch: str, *, actor: str) -> Outcome:
    """Undo every open entry of one call (a bulk action, an instance edit with its task's
    approval), newest first; entries that cannot be undone are in `skipped` (by audit id,
    with the reason) and the rest still are."""
    outcome = Outcome(UNDO, _new_batch())
    with _transaction(pool):
        ids = pool.audit.batch_entry_ids(batch, actions=UNDOABLE)
        if not ids:
            raise UndoRefused("Nothing left to undo in that action.")
        if _undo_at_once(pool, ids, actor=actor, outcome=outcome):
            return outcome
        for audit_id in ids:
            try:
                outcome.audit_ids += _undo_entry(pool, pool.audit.audit_entry(audit_id), actor=actor,
                                                 batch=outcome.batch)
            except UndoRefused as exc:
                outcome.skipped.append((audit_id, str(exc)))
                continue
            outcome.done.append(audit_id)
    return outcome


def history(pool, actions: Sequence[str] = REJECTS_ACTIONS, *, undos: bool = True,
            limit: int = 10) -> list[dict]:
    """Recent calls of these actions, one row per batch, newest first (with `undos`, also the
    undos of them): batch, id (= first_id), created_at, actor, action, target_kind, target_id,
    reason, items, open (rows not undone yet), target_ids."""
    return pool.audit.audit_batches(actions, undo_action=UNDO if undos else None, limit=limit)


__all__ = ["ActionError", "Outcome", "UndoRefused", "approve", "approve_topic", "mark_topic", "remove_topic",
           "unmark_topic", "APPROVE_TOPIC", "MARK_TOPIC", "REMOVE_TOPIC", "TOPIC_ACTIONS", "UNMARK_TOPIC", "confirm", "delete_seeds", "edit_instance",
           "edit_instruction", "edit_seed", "history", "import_seeds", "remove", "remove_duplicates",
           "remove_instance", "rescue",
           "rescue_instances", "undo", "undo_batch", "APPROVE", "CONFIRM", "DELETE_SEED", "EDIT_CANDIDATE",
           "EDIT_INSTANCE", "EDIT_SEED", "IMPORT_SEEDS", "POOL_ACTIONS", "REJECTS_ACTIONS", "REMOVE",
           "REMOVE_DUPLICATES", "DEDUP_ACTIONS",
           "REMOVE_INSTANCE", "RESCUE", "SEED_ACTIONS", "UNDO", "UNDOABLE"]
