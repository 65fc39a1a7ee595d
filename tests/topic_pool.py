"""A hand-made pool with four topics of known sizes, for the topics tests (not a test module)."""
from __future__ import annotations

from selfinstruct.model import ACCEPTED, REJECTED

# Four families of tasks, each phrased from its own words, so any sensible embedder separates them.
FAMILIES = {
    "cooking": ["Suggest a recipe for {} soup seasoned with {}, garlic and onions.",
                ["tomato", "pumpkin", "lentil", "onion", "carrot", "potato", "mushroom", "pea", "leek",
                 "corn", "bean", "squash", "celery", "spinach"],
                ["basil", "thyme", "parsley", "rosemary", "ginger", "chili", "mint", "dill", "sage",
                 "oregano", "cumin", "coriander", "pepper", "fennel"]],
    "code": ["Write a Python function that {} a {} and returns the result.",
             ["sorts", "reverses", "flattens", "parses", "validates", "compresses", "encodes", "hashes",
              "filters", "merges", "splits", "serializes"],
             ["linked list", "binary tree", "JSON string", "dictionary", "matrix", "CSV row", "stack", "queue",
              "integer array", "heap", "graph", "byte buffer"]],
    "poetry": ["Compose a short poem about {} under the {} sky, with rhyme.",
               ["falling leaves", "the quiet sea", "a lonely lighthouse", "spring blossoms", "a sleeping cat",
                "mountain snow", "city rain", "a summer meadow", "old friendship", "a candle flame"],
               ["evening", "starry", "autumn", "winter", "stormy", "morning", "golden", "silver", "violet", "misty"]],
    "math": ["Calculate the {} of a {} with the given measurements, showing each step.",
             ["area", "perimeter", "volume", "surface area", "diagonal", "circumference", "height", "radius"],
             ["triangle", "rectangle", "cylinder", "sphere", "cube", "cone", "trapezoid", "hexagon"]],
}
# (seeds, accepted, rejected) per family: the topics' sizes are seeds + accepted.
SIZES = {"cooking": (3, 9, 2), "code": (2, 8, 2), "poetry": (2, 5, 3), "math": (1, 4, 0)}


def texts(family: str, n: int, start: int = 0) -> list[str]:
    template, first, second = FAMILIES[family]
    return [template.format(first[i % len(first)], second[(i * 5 + 1) % len(second)]) for i in range(start, start + n)]


def build(pool) -> dict[str, dict[str, list[int]]]:
    """Fill `pool`; returns family -> {"seeds": ids, "accepted": ids, "rejected": ids}."""
    from selfinstruct.seeds import SeedTask

    out: dict[str, dict[str, list[int]]] = {}
    seed_tasks, owners = [], []
    for family, (n_seed, _, _) in SIZES.items():
        for text in texts(family, n_seed):
            seed_tasks.append(SeedTask(instruction=text, instances=[{"input": "", "output": "An answer."}]))
            owners.append(family)
    seed_ids = pool.seeds.insert_seed_tasks(seed_tasks, origin="test")
    for family in SIZES:
        out[family] = {"seeds": [i for i, f in zip(seed_ids, owners) if f == family], "accepted": [], "rejected": []}
    cid = pool.bulk.next_id("candidates")
    rows = {"id": [], "instruction": [], "status": [], "reason": []}
    for family, (n_seed, n_acc, n_rej) in SIZES.items():
        for status, n, start in ((ACCEPTED, n_acc, n_seed), (REJECTED, n_rej, n_seed + n_acc)):
            for text in texts(family, n, start):
                rows["id"].append(cid)
                rows["instruction"].append(text)
                rows["status"].append(status)
                rows["reason"].append(None if status == ACCEPTED else "rouge")
                out[family]["accepted" if status == ACCEPTED else "rejected"].append(cid)
                cid += 1
    pool.bulk.bulk_insert("candidates", rows)
    accepted = [i for i, status in zip(rows["id"], rows["status"]) if status == ACCEPTED]
    pool.bulk.bulk_insert("instances", {"candidate_id": accepted, "position": [0] * len(accepted),
                                   "input": [""] * len(accepted), "output": ["An answer."] * len(accepted)})
    return out
