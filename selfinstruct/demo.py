"""DemoModel: the offline demo "model". It replays a bundled corpus; it is not a language model.

`respond(text)` recognises which stage's prompt it was given (see `parsing.read_prompt`)
and answers in the layout `parsing` reads for that stage:

- instructions: corpus instructions sampled at random (every tag mixed, so every filter
  has work), continuing the prompt's numbered list where it left off;
- classify: the corpus entry's `is_classification`, or a keyword guess for tasks the
  corpus does not know;
- instances: the corpus entry's instances, input-first or output-first as the prompt asks;
  a task the corpus does not know gets one placeholder example marked "(demo)";
- batch: complete corpus tasks (instruction, one instance) in the batch layout.

Now and then an answer is styled like a chat model (preamble, markdown, closing remark;
`chatty_rate`) or malformed (a rambling paragraph, or an answer cut mid-item;
`malformed_rate`), so the forgiving parsers and the pipeline's error paths get exercised.
Answers are deterministic for (seed, text, request_seed).

Corpus: one JSON object per line, ``{"instruction", "is_classification", "instances":
[{"input", "output"}], "tag", "of"?, "breaks"?}``.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

from .datadir import DEFAULT_CORPUS_PATH
from .parsing import read_prompt
from .prompts import (
    STAGE_BATCH, STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_INSTRUCTIONS, MAX_INSTANCES,
    NO_INPUT, one_line, render_batch_task, render_instances,
)


UNKNOWN_STAGE_ANSWER = (
    "This is the offline demo model. It only answers the prompts that selfinstruct builds, "
    "so it has nothing prepared for this one.")
NO_EXAMPLE_OUTPUT = "(demo) No prepared example for this task."
NO_EXAMPLE_LABEL = "(demo) No prepared label for this task."

_CLASSIFY_HINTS = re.compile(
    r"\b(?:classify|classification|categori[sz]e|label|which of|true or false|yes or no|"
    r"positive or negative|sentiment|spam|decide (?:whether|if)|tell (?:me )?(?:whether|if)|"
    r"detect (?:whether|if)|determine (?:whether|if)|identify (?:whether|if)|"
    r"check (?:whether|if))\b|^\s*is (?:it|this|there)\b", re.I)

_RAMBLES = (
    "I could keep going with tasks like these, but it is hard to say which ones would be "
    "most useful without knowing what the assistant is meant for. Perhaps a few about "
    "cooking, some about travel and a handful about arithmetic would do. Then again, variety "
    "may matter more than volume. It might be best to start small and see what works.",
    "I think the list above already covers a lot of ground. Some of the tasks are about "
    "writing, others about reasoning, and a few could go either way. Before adding more, it "
    "may help to decide what kind of help people will actually ask for. Let us talk it through.",
    "Hmm, that is an interesting list. Tasks like these can be made harder or easier "
    "depending on the details, and the same idea can often be phrased in many ways. I am not "
    "sure which direction you want to take, so I will stop here for now.",
)


def load_corpus(path: str | Path) -> list[dict]:
    """Read a demo corpus file; a bad line raises ValueError naming the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"The demo corpus {path} does not exist.")
    entries = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) \
                    or not row["instruction"].strip():
                raise ValueError(f"{path}, line {lineno}: needs a non-empty \"instruction\".")
            instances = row.get("instances") or []
            if not isinstance(instances, list) or not all(
                    isinstance(i, dict) and isinstance(i.get("output", ""), str)
                    and isinstance(i.get("input", ""), str) for i in instances):
                raise ValueError(f"{path}, line {lineno}: \"instances\" must be a list of "
                                 "{\"input\", \"output\"} objects.")
            row["instances"] = [{"input": i.get("input", ""), "output": i.get("output", "")}
                                for i in instances]
            row["is_classification"] = bool(row.get("is_classification", False))
            entries.append(row)
    return entries


def guess_is_classification(instruction: str) -> bool:
    """The demo's keyword guess for a task the corpus does not know."""
    return bool(_CLASSIFY_HINTS.search(instruction or ""))


class DemoModel:
    """Answers the prompts built by `prompts` from a bundled corpus."""

    def __init__(self, corpus_path: str | Path | None = None, seed: int = 0, *,
                 chatty_rate: float = 1 / 8, malformed_rate: float = 1 / 25):
        self.corpus_path = Path(corpus_path) if corpus_path else DEFAULT_CORPUS_PATH
        self.seed = seed
        self.chatty_rate = chatty_rate
        self.malformed_rate = malformed_rate
        self.corpus: list[dict] = load_corpus(self.corpus_path)
        self._exact: dict[str, dict] = {}
        self._folded: dict[str, dict] = {}
        for entry in self.corpus:
            key = one_line(entry["instruction"])
            self._exact.setdefault(key, entry)
            self._folded.setdefault(key.casefold(), entry)
        self._with_instances = [e for e in self.corpus if e["instances"]]

    # ------------------------------------------------------------------ public

    def lookup(self, instruction: str) -> dict | None:
        """The corpus entry for an instruction (whitespace- then case-insensitive)."""
        key = one_line(instruction or "")
        return self._exact.get(key) or self._folded.get(key.casefold())

    def respond(self, text: str, *, request_seed: int = 0) -> str:
        material = f"{self.seed}\x1f{request_seed}\x1f{text}".encode("utf-8")
        rng = random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))
        # Both draws always happen, so the rates change the style but not what is sampled.
        malformed = rng.random() < self.malformed_rate
        chatty = rng.random() < self.chatty_rate and not malformed
        style = "malformed" if malformed else ("chatty" if chatty else "plain")
        payload = read_prompt(text)
        if payload is None:
            return UNKNOWN_STAGE_ANSWER
        if payload.stage == STAGE_INSTRUCTIONS:
            return self._instructions(payload, rng, style)
        if payload.stage == STAGE_CLASSIFY:
            return self._classify(payload, rng, style)
        if payload.stage == STAGE_INSTANCES:
            return self._instances(payload, rng, style)
        if payload.stage == STAGE_BATCH:
            return self._batch(payload, rng, style)
        return UNKNOWN_STAGE_ANSWER

    def __call__(self, text: str, request_seed: int = 0) -> str:
        return self.respond(text, request_seed=request_seed)

    # ------------------------------------------------------------------ stages

    def _sample(self, pool: list[dict], exclude: list[str], k: int,
                rng: random.Random) -> list[dict]:
        skip = {one_line(x).casefold() for x in exclude}
        candidates = [e for e in pool if one_line(e["instruction"]).casefold() not in skip]
        return rng.sample(candidates, min(max(k, 0), len(candidates)))

    def _instructions(self, payload, rng: random.Random, style: str) -> str:
        picked = self._sample(self.corpus, payload.examples, payload.num_to_generate or 8, rng)
        texts = [one_line(e["instruction"]) for e in picked]
        start = payload.start_index or 1
        if not texts:
            return ""
        if style == "malformed":
            if rng.random() < 0.5 or len(texts) < 2:
                return rng.choice(_RAMBLES)
            texts = texts[: rng.randint(2, len(texts))]
            words = texts[-1].split()
            texts[-1] = " ".join(words[: max(1, len(words) // 2)])
            return " " + "\n".join([texts[0]] + [f"{start + k}. {t}"
                                                 for k, t in enumerate(texts[1:], 1)])
        if style == "chatty":
            # Single newlines only: a chat request may still carry the "\n\n" stop.
            variant = rng.randrange(3)
            if variant == 0:
                body = [f"**{start + k}.** {t}" for k, t in enumerate(texts)]
                return ("Sure! Here are some more tasks for your list:\n" + "\n".join(body)
                        + "\nLet me know if you would like more ideas!")
            if variant == 1:
                body = [f"Task {start + k}: {t}" for k, t in enumerate(texts)]
                return "Here are the new tasks:\n" + "\n".join(body) + "\nI hope these help."
            body = [f"- {t}" for t in texts]
            return ("Of course! Continuing the list:\n" + "\n".join(body)
                    + "\nFeel free to ask for more.")
        return " " + "\n".join([texts[0]] + [f"{start + k}. {t}"
                                             for k, t in enumerate(texts[1:], 1)])

    def _classify(self, payload, rng: random.Random, style: str) -> str:
        entry = self.lookup(payload.instruction or "")
        yes = entry["is_classification"] if entry else guess_is_classification(
            payload.instruction or "")
        if style == "malformed":
            return rng.choice(("That depends on how the task is used.",
                               "Hard to tell without seeing the inputs."))
        if style == "chatty":
            return ("**Yes**, the answer comes from a small, fixed set of labels." if yes
                    else "No. The task asks for open-ended text rather than a label.")
        return " Yes" if yes else " No"

    def _instances(self, payload, rng: random.Random, style: str) -> str:
        output_first = bool(payload.is_classification)
        entry = self.lookup(payload.instruction or "")
        if entry and entry["instances"]:
            instances = entry["instances"][:MAX_INSTANCES]
        else:
            instances = [{"input": "",
                          "output": NO_EXAMPLE_LABEL if output_first else NO_EXAMPLE_OUTPUT}]
        if style == "malformed":
            if rng.random() < 0.5:
                return ("This is a good task. One could imagine many different inputs for it, "
                        "depending on who is asking and why.")
            full = "\n" + render_instances(instances, output_first=output_first)[len("Example 1"):]
            return full[: max(1, int(len(full) * rng.uniform(0.3, 0.8)))]
        if style == "chatty":
            blocks = []
            for k, inst in enumerate(instances, 1):
                fields = [("Input", inst["input"] or NO_INPUT), ("Output", inst["output"])]
                if output_first:
                    fields = [("Label", inst["output"]), fields[0]]
                lines = [f"**Example {k}**"]
                for name, value in fields:   # "**Input:** value", markdown style
                    value = value.strip("\n").rstrip()
                    lines.append(f"**{name}:**\n{value}" if "\n" in value
                                 else f"**{name}:** {value.strip()}")
                blocks.append("\n".join(lines))
            return ("Here are some examples for this task:\n\n" + "\n\n".join(blocks)
                    + "\n\nI hope these examples help!")
        return "\n" + render_instances(instances, output_first=output_first)[len("Example 1\n"):]

    def _batch(self, payload, rng: random.Random, style: str) -> str:
        exclude = [ex.get("instruction", "") for ex in payload.examples]
        picked = self._sample(self._with_instances, exclude, payload.num_to_generate or 20, rng)
        start = payload.start_index or 1
        tasks = []
        for entry in picked:
            inst = rng.choice(entry["instances"])
            tasks.append({"instruction": entry["instruction"], "input": inst["input"],
                          "output": inst["output"]})
        if not tasks:
            return ""
        if style == "malformed":
            if rng.random() < 0.5:
                return rng.choice(_RAMBLES)
            full = self._batch_text(tasks, start)
            return full[: max(1, int(len(full) * rng.uniform(0.3, 0.9)))]
        if style == "chatty":
            blocks = [f"**Task {start + k}**\n" + render_batch_task(None, t)
                      for k, t in enumerate(tasks)]
            return ("Sure! Here are the new tasks:\n\n" + "\n\n".join(blocks)
                    + "\n\nLet me know if you need more tasks.")
        return self._batch_text(tasks, start)

    @staticmethod
    def _batch_text(tasks: list[dict], start: int) -> str:
        blocks = [render_batch_task(None, tasks[0])]
        blocks += [render_batch_task(start + k, t) for k, t in enumerate(tasks[1:], 1)]
        return "\n" + "\n\n".join(blocks)




# -- an endless supply of new tasks, for load tests ------------------------------------------
_VERBS = ("Write", "Summarize", "Explain", "Describe", "Compare", "List", "Draft", "Outline",
          "Suggest", "Rewrite", "Plan", "Critique", "Translate", "Design", "Recommend", "Estimate",
          "Argue", "Predict", "Illustrate", "Question", "Rank", "Simplify", "Defend", "Review")
_THINGS = ("a short letter", "three tips", "a two-line poem", "a checklist", "a brief story",
           "a job advert", "a study plan", "a weekly menu", "a product review", "a riddle",
           "a packing list", "a speech opening", "a slogan", "a tweet", "a one-page guide",
           "a quiz question", "a haiku", "a debate motion", "a budget", "a travel itinerary",
           "a cover note", "a warning label", "a lesson outline", "a short dialogue",
           "a book blurb", "a set of rules", "a recipe card", "an apology", "a thank-you note",
           "a news headline", "a fable", "a limerick", "a survey question", "a safety briefing")
_TOPICS = ("tide pools", "solar panels", "sourdough bread", "chess openings", "city cycling",
           "honeybees", "old lighthouses", "rainwater tanks", "board game nights", "glaciers",
           "public libraries", "night trains", "vegetable gardens", "volcano safety",
           "paper recycling", "choir practice", "winter running", "bird migration", "pottery",
           "street markets", "mountain huts", "coral reefs", "local elections", "tea ceremonies",
           "bicycle repair", "desert plants", "museum visits", "first aid kits", "kite flying",
           "river cleanups", "fermented foods", "sleep habits", "map reading", "lunar eclipses")
_AUDIENCES = ("for children", "for retirees", "for new employees", "for tourists", "for nurses",
              "for first-year students", "for farmers", "for a school newsletter", "for teenagers",
              "for beginners", "for a busy parent", "for a town council", "for shop owners",
              "for volunteers", "for software testers", "for a radio show", "for pen pals")


class SyntheticModel(DemoModel):
    """DemoModel whose instruction answers are new tasks made from word lists, so a pool keeps
    growing as it would with a real model (the bundled corpus runs dry after a few hundred
    tasks). For load tests and benchmarks; the other stages answer as DemoModel does."""

    def _sample(self, pool: list[dict], exclude: list[str], k: int,
                rng: random.Random) -> list[dict]:
        if pool is not self.corpus:
            return super()._sample(pool, exclude, k, rng)
        return [{"instruction": f"{rng.choice(_VERBS)} {rng.choice(_THINGS)} about {rng.choice(_TOPICS)} "
                                f"{rng.choice(_AUDIENCES)}.", "is_classification": False, "instances": []}
                for _ in range(max(k, 0))]
