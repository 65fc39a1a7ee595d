"""The codemod that moved the pool's queries from one class of mixins to per-area objects.

`Pool` used to inherit every query from nine mixins (162 public methods). Each area is now its own
object reached from the pool (`pool.runs.get(7)`, `pool.judge.verdicts(3)`), and an area that needs
another area says so (`self.pool.audit.read_state(...)`). This script rewrites call sites and the
store's own classes from the table below; it is idempotent, so it can be run again over code written
against the old names. It knows a pool only by the expression in front of the dot (POOL_RECEIVERS):
anything else (`asyncio.run`, an argparse namespace's `.run`) is left alone.

    pip install libcst
    python tools/pool_areas.py [AREA ...]      # no areas: all of them
    python tools/pool_areas.py --check         # exit 1, naming the files, if any old name is left
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import libcst as cst

ROOT = Path(__file__).resolve().parents[1]

# area -> (store module, class, {old method name: new name})
AREAS: dict[str, tuple[str, str, dict[str, str]]] = {
    "seeds": ("seeds", "SeedQueries", {n: n for n in (
        "insert_seed_tasks", "stage_seed_instances", "drop_staged_seeds", "seed_tasks", "seed_table",
        "pool_instructions", "existing_instructions", "_insert_staged")}),
    "runs": ("runs", "RunQueries", {
        "create_run": "create", "run": "get", "runs": "all", "set_run_status": "set_status",
        "update_run_config": "update_config", "set_run_structured": "set_structured",
        "mark_interrupted_runs": "mark_interrupted", "run_usage": "usage", "run_rounds": "rounds",
        "run_candidates": "candidates", **{n: n for n in (
            "parse_health", "pool_size_before_run", "accepted_count", "create_round", "rounds_done",
            "set_round_step", "round_summaries", "reject_reasons_by_round", "run_pace", "run_activity",
            "error_summary", "machine_instructions_until", "machine_instructions", "newest_accepted",
            "rouge_scores", "pool_instructions_before_run", "redecide_candidates")}}),
    "requests": ("requests", "RequestQueries", {n: n for n in (
        "add_round", "requests_for", "request_history", "open_requests", "record_answer", "record_failure",
        "apply_answer", "add_followups", "candidates_needing_followups", "add_batch", "update_batch",
        "batches", "release_batch_requests", "add_candidates", "_insert_requests", "_insert_candidate",
        "_insert_instances")}),
    "review": ("review", "ReviewQueries", {n: n for n in (
        "reject_reasons", "reject_counts", "reject_total", "reject_rows", "reject_ids", "reject_rounds",
        "reject_runs", "candidate_detail", "instance_detail", "review_history", "rouge_whatif",
        "cosine_whatif", "rouge_histogram", "rouge_thresholds", "keyword_rejects", "_reject_where",
        "_reject_from")}),
    "quality": ("quality", "QualityQueries", {n: n for n in (
        "quality_scope", "study_candidates", "create_study", "studies", "study", "study_item",
        "study_progress", "hold_item", "claim_next", "release_lease", "study_leases", "study_team_progress",
        "study_annotators", "save_label", "study_labels", "study_texts", "study_export_rows",
        "labeled_candidate_ids", "invalid_candidates_sql", "invalid_instances_sql", "invalid_candidate_ids",
        "invalid_instance_ids", "candidate_label_summary", "_hold", "_save_label")}),
    "judge": ("judge", "JudgeQueries", {
        "judge_pool_items": "pool_items", "judge_study_items": "study_items", "judge_item_texts": "item_texts",
        "judge_answer_tokens": "answer_tokens", "create_judge_run": "create_run", "judge_run": "run",
        "judge_runs": "runs", "set_judge_run_status": "set_status", "set_judge_run_structured": "set_structured",
        "mark_interrupted_judge_runs": "mark_interrupted", "judge_open_items": "open_items",
        "record_judge_answer": "record_answer", "record_judge_failure": "record_failure",
        "judge_progress": "progress", "judge_usage": "usage", "judge_verdicts": "verdicts",
        "latest_judge_verdicts": "latest_verdicts", "update_judge_run_config": "update_config"}),
    "evaluations": ("evaluate", "EvaluateQueries", {
        "create_evaluation": "create", "evaluation": "get", "evaluations": "all",
        "set_evaluation_status": "set_status", "mark_interrupted_evaluations": "mark_interrupted",
        "set_evaluation_judge": "set_judge", "set_evaluation_judge_structured": "set_judge_structured",
        "eval_instructions": "instructions", "eval_answers": "answers", "eval_open_answers": "open_answers",
        "record_eval_answer": "record_answer", "record_eval_failure": "record_failure",
        "eval_progress": "progress", "eval_usage_by_model": "usage_by_model", "save_eval_rating": "save_rating",
        "eval_ratings": "ratings", "eval_open_prerates": "open_prerates", "record_eval_prerate": "record_prerate",
        "record_eval_prerate_failure": "record_prerate_failure", "eval_prerates": "prerates",
        "eval_prerate_progress": "prerate_progress"}),
    "explore": ("explore", "ExploreQueries", {n: n for n in (
        "export_counts", "export_preview", "export_reader", "export_instructions", "export_run_ids",
        "export_length_stats", "export_judged", "seed_instruction_texts", "label_summary", "explore_version",
        "pool_browse_count", "pool_browse", "pool_item", "pool_runs", "_instance_conditions",
        "_task_conditions", "_export_sql", "_browse_where")}),
    "audit": ("audit", "AuditQueries", {"audit_entries": "entries", **{n: n for n in (
        "read_state", "write_state", "append_audit", "audit_entry", "set_undone_by", "later_audit",
        "batch_entry_ids", "audit_batches", "read_states", "write_states", "append_audits", "audit_rows",
        "set_undone_by_many", "_seed_state", "_write_seed")}}),
    "bulk": ("bulk", "BulkQueries", {n: n for n in (
        "next_id", "bulk_insert", "set_round_times", "checkpoint", "candidate_ids", "study_item_ids",
        "bulk_summary", "run_figures", "request_timeline", "_bulk_columns")}),
}
# What stays on Pool itself (store/core.py): an area's method reaches these through `self.pool`.
POOL_OWN = {"open", "close", "cursor", "transaction", "schema_version", "counts", "path", "read_only",
            "_q", "_rows", "_scalar", "_frame", "_audit", "_con", "_local", "_migrate"}
# The expressions that hold a Pool in this code base (found by listing every receiver of an old name).
POOL_RECEIVERS = {"pool", "self.pool", "demo_pool", "seeded", "app_pool(app_env)", "app_pool(demo_app_env)",
                  "current_pool()", "killed", "live", "manager.pool", "p", "state.pool", "fresh", "self._pool"}

POOL_OWN |= set(AREAS) | {"embeddings", "topics"}
OLD_TO_AREA = {old: (area, new) for area, (_, _, names) in AREAS.items() for old, new in names.items()}


def _code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


class CallSites(cst.CSTTransformer):
    """`pool.judge_run(3)` -> `pool.judge.run(3)` wherever the receiver is a pool."""

    def __init__(self, areas: set[str]):
        self.areas = areas
        self.areas_seen: set[int] = set()
        self.called: set[int] = set()

    def visit_Call(self, node: cst.Call) -> None:
        self.called.add(id(node.func))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        # `pool.runs.get` after the move: `pool.runs` is the area now, not the old method runs()
        if node.attr.value in AREAS and _code(node.value) in POOL_RECEIVERS:
            self.areas_seen.add(id(node))

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.BaseExpression:
        name = updated.attr.value
        if name not in OLD_TO_AREA or _code(original.value) not in POOL_RECEIVERS:
            return updated
        if name in AREAS and id(original) in self.areas_seen and id(original) not in self.called:
            return updated
        area, new = OLD_TO_AREA[name]
        if area not in self.areas:
            return updated
        return updated.with_changes(value=cst.Attribute(value=updated.value, attr=cst.Name(area)),
                                    attr=cst.Name(new))


class AreaClass(cst.CSTTransformer):
    """Inside one area's class: its methods renamed, `self.<pool's own>` -> `self.pool.<...>`, and a
    call into another area spelled out (`self.read_state` -> `self.pool.audit.read_state`)."""

    def __init__(self, area: str, cls: str, areas: set[str]):
        self.area, self.cls, self.areas = area, cls, areas
        self.names = AREAS[area][2]
        self.inside = 0

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if node.name.value == self.cls:
            self.inside += 1

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        if original.name.value != self.cls:
            return updated
        self.inside -= 1
        if not updated.bases:       # a mixin of Pool becomes an area object over the pool
            return updated.with_changes(bases=[cst.Arg(cst.Name("Queries"))],
                                        lpar=cst.LeftParen(), rpar=cst.RightParen())
        return updated

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        old = original.name.value
        if self.inside and old in self.names and self.names[old] != old:
            return updated.with_changes(name=cst.Name(self.names[old]))
        return updated

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.BaseExpression:
        if not self.inside or not (isinstance(original.value, cst.Name) and original.value.value == "self"):
            return updated
        name = updated.attr.value
        if name == "pool" or name.startswith("__"):
            return updated
        if name in self.names.values() and name not in self.names:
            return updated          # already renamed
        if name in self.names:
            new = self.names[name]
            return updated if new == name else updated.with_changes(attr=cst.Name(new))
        if name in POOL_OWN:
            return updated.with_changes(value=cst.Attribute(value=cst.Name("self"), attr=cst.Name("pool")))
        if name in OLD_TO_AREA:
            area, new = OLD_TO_AREA[name]
            if area not in self.areas:      # still a mixin of Pool: reach it on the pool for now
                return updated.with_changes(value=cst.Attribute(value=cst.Name("self"), attr=cst.Name("pool")))
            return updated.with_changes(
                value=cst.Attribute(value=cst.Attribute(value=cst.Name("self"), attr=cst.Name("pool")),
                                    attr=cst.Name(area)), attr=cst.Name(new))
        return updated          # a class attribute of its own (_EXPORT_ORDER)


def _import_queries(tree: cst.Module) -> cst.Module:
    """`from .core import Queries` in an area's module (added to its import from .core, if any)."""
    code = tree.code
    if re.search(r"from \.core import[^\n]*\bQueries\b", code):
        return tree
    if "from .core import " in code:
        code = code.replace("from .core import ", "from .core import Queries, ", 1)
    else:
        code = code.replace("\n\n\nclass ", "\nfrom .core import Queries\n\n\nclass ", 1)
    return cst.parse_module(code)


def python_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "build"}
    return sorted(p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)
                  and p.resolve() != Path(__file__).resolve())


def migrated() -> set[str]:
    """The areas whose class is already an area object (`class X(Queries)`)."""
    store = ROOT / "selfinstruct" / "store"
    return {area for area, (module, cls, _) in AREAS.items()
            if (store / f"{module}.py").exists() and f"class {cls}(Queries)" in (store / f"{module}.py").read_text()}


def rewrite(areas: set[str], *, write: bool = True) -> list[Path]:
    """Rewrite (or with write=False only list) the files that still use an old name."""
    changed = []
    store = ROOT / "selfinstruct" / "store"
    areas = areas | migrated()
    for path in python_files():
        source = path.read_text()
        tree = cst.parse_module(source)
        for area in areas:
            module, cls, _ = AREAS[area]
            if path == store / f"{module}.py":
                inner = AreaClass(area, cls, areas)
                tree = tree.visit(inner)
                tree = _import_queries(tree)
        tree = tree.visit(CallSites(areas))
        if tree.code != source:
            changed.append(path)
            if write:
                path.write_text(tree.code)
                print(f"rewrote {path.relative_to(ROOT)}")
    return changed


if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    chosen = {a for a in sys.argv[1:] if a != "--check"} or set(AREAS)
    unknown = chosen - set(AREAS)
    if unknown:
        sys.exit(f"unknown areas: {sorted(unknown)}; known: {sorted(AREAS)}")
    changed = rewrite(chosen, write=not check)
    if check:
        for path in changed:
            print(f"old pool method names in {path.relative_to(ROOT)}")
        sys.exit(1 if changed else 0)
    print(f"{len(changed)} files rewritten")
