"""What becomes of a model's answer, decided without side effects: an instruction accepted or
rejected (and why, with its nearest pool items), the instances kept. The engine decides each
answer as it arrives; re-filter decides a finished run's stored answers again with new settings.
Both call these, so the same answer always gets the same decision."""
from __future__ import annotations

from . import parsing, prompts
from .filters import InstructionFilter, filter_instances, find_echoes
from .model import ACCEPTED, KEPT, REJECTED
from .novelty import NoveltyIndex, rouge_l, tokenize

TOP_K_EVIDENCE = 10


def decide_round(requests: list[dict], instruction_filter: InstructionFilter, index: NoveltyIndex,
                 threshold: float, *, batch: bool, semantic=None) -> list[dict]:
    """Parse a round's answered requests and decide every candidate, in order, adding
    the accepted ones to `index` as it goes (so a round cannot accept two copies).
    `semantic` (a semantic.SemanticIndex): the second gate, after ROUGE; every item of an
    answer is embedded (and its vector stored) whatever its fate."""
    rows: list[dict] = []
    for request in requests:
        if request["response"] is None:
            continue
        text = request["response"]
        prompt = stored_prompt(request)
        parsed = parsing.parse_answer(prompt.stage, text, prompt, finish_reason=request.get("finish_reason"),
                                      version=stored_parser_version(request))
        if batch:
            items = [(t["instruction"], t) for t in parsed.tasks]
        else:
            items = [(item, None) for item in parsed.items]
        # Echoes are judged before the filters: an example with words added can pass them all.
        echoes = find_echoes([i for i, _ in items], parsing.prompt_examples(prompt),
                             restarted=getattr(parsed, "restarted", False),
                             start_index=(prompt.meta or {}).get("start_index"))
        gate = semantic.answer([i for i, _ in items]) if semantic is not None and items else None
        for k, (instruction, task) in enumerate(items):
            if k in echoes:
                why = echoes[k]
                row = {"instruction": instruction, "status": REJECTED, "reason": why.reason,
                       "details": {"message": why.message, **why.evidence}}
            else:
                row = decide_instruction(instruction, instruction_filter, index, threshold,
                                         gate=gate, slot=k)
            row["request_id"] = request["id"]
            row["position"] = len(rows)
            if task is not None:
                row["is_classification"] = False
                if row["status"] == ACCEPTED:
                    row["instances"] = decide_instances_list([{"input": task.get("input", ""),
                                                               "output": task.get("output", "")}])
            rows.append(row)
        fragments = list(parsed.unparseable)
        if not items and not fragments and text.strip():
            fragments = [text]
        for fragment in fragments:
            rows.append({
                "request_id": request["id"], "position": len(rows), "instruction": fragment,
                "status": REJECTED, "reason": "unparseable",
                "details": {"message": "The model's answer could not be read as a task.",
                            "finish_reason": request.get("finish_reason")},
            })
    return rows


def decide_instruction(instruction: str, instruction_filter: InstructionFilter, index: NoveltyIndex,
                       threshold: float, *, gate=None, slot: int = 0) -> dict:
    rejection = instruction_filter.check(instruction)
    if rejection is not None:
        return {"instruction": instruction, "status": REJECTED, "reason": rejection.reason,
                "details": {"message": rejection.message, **rejection.evidence}}
    # The best score decides; only a reject pays for the top-10 evidence (4x dearer).
    best_score, best_id = index.max_similarity(instruction)
    row = {"instruction": instruction, "max_rouge": best_score,
           "nearest_text": index.text(best_id) if best_id is not None else None}
    if best_score > threshold:
        evidence = [{"text": index.text(i), "score": score}
                    for i, score in index.most_similar(instruction, k=TOP_K_EVIDENCE)]
        row.update(status=REJECTED, reason="rouge", details={
            "message": f"ROUGE-L {best_score:.3f} with a pool instruction is above the threshold {threshold}.",
            "threshold": threshold, "nearest": evidence})
    else:
        nearest = [{"text": row["nearest_text"], "score": best_score}] if best_id is not None else []
        row.update(status=ACCEPTED, reason=None, details={"threshold": threshold, "nearest": nearest})
        if gate is not None:
            cosine, near = gate.nearest(slot)
            limit = gate.index.threshold
            if cosine is not None:
                row["details"].update(cosine=cosine, cosine_nearest=near, cosine_threshold=limit,
                                      embedder=gate.index.embedder.name)
            if cosine is not None and limit is not None and cosine > limit:
                pair_rouge = rouge_l(tokenize(near), tokenize(instruction))
                row.update(status=REJECTED, reason="semantic_dup", nearest_text=near, details={
                    "message": f"Cosine {cosine:.3f} with a pool instruction is above the threshold {limit} "
                               f"({gate.index.embedder.name}); ROUGE-L between them is {pair_rouge:.3f}.",
                    "cosine": cosine, "cosine_threshold": limit, "embedder": gate.index.embedder.name,
                    "rouge_l": pair_rouge, "threshold": threshold,
                    "nearest": [{"text": near, "score": pair_rouge, "cosine": cosine}]})
                return row
            gate.accept(slot)
        index.add(instruction)
    return row


def decide_instances_list(instances: list[dict]) -> list[dict]:
    kept, rejected = filter_instances(instances)
    rows = [{**inst, "status": KEPT} for inst in kept]
    rows += [{**inst, "status": REJECTED, "reason": why.reason,
              "details": {"message": why.message, **why.evidence}} for inst, why in rejected]
    return rows


def decide_instances(text: str, is_classification: bool, max_instances: int,
                     finish_reason: str | None = None, prompt: prompts.Prompt | None = None,
                     parser_version: str | None = None) -> list[dict]:
    """`prompt`: the stored request's prompt (a structured one is parsed as JSON);
    `parser_version`: the instances parser to read it with (None: the current one)."""
    parsed = parsing.parse_answer(prompts.STAGE_INSTANCES, text, prompt, finish_reason=finish_reason,
                                  is_classification=is_classification, version=parser_version)
    rows = decide_instances_list(parsed.instances[:max_instances])
    if not parsed.instances and text.strip():
        details = {"message": "The model's answer could not be read as input/output examples."}
        if parsed.unparseable:
            details["why"] = parsed.unparseable[0]
        rows.append({"input": "", "output": text, "status": REJECTED, "reason": "unparseable",
                     "details": details})
    return rows


# -- a stored request, read back ------------------------------------------------------------------
def stored_prompt(row: dict) -> prompts.Prompt:
    meta = row["meta"] or {}
    return prompts.Prompt(stage=row["stage"], version=row["prompt_version"], text=row["prompt"],
                          system=meta.get("system"), stop=tuple(meta["stop"]) if meta.get("stop") else None,
                          meta=meta.get("prompt_meta") or {}, schema=meta.get("schema"))


def stored_parser_version(row: dict) -> str:
    """The parser version that reads a stored request's answer (`parsing.parser_version_of`): the
    one stored when it was applied, or today's for a request not applied yet."""
    return parsing.parser_version_of(row["stage"], row.get("parser_version"), applied=row.get("applied_at") is not None)


def is_structured(row: dict) -> bool:
    """Whether a stored request asks for JSON (its schema is stored with it)."""
    return bool((row.get("meta") or {}).get("schema"))
