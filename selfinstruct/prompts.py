"""Prompt builders for every stage of the Self-Instruct loop (our own wording).

A `Prompt` is mode-agnostic: `llm.LLMClient` sends `text` as the prompt of the
completions endpoint, or as one user message (after `system`, when set) to the
chat completions endpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Stage names, stored with every request.
STAGE_INSTRUCTIONS = "instructions"   # continue a numbered list of tasks
STAGE_CLASSIFY = "classify"           # is this a classification task? yes/no
STAGE_INSTANCES = "instances"         # write input/output examples for one task
STAGE_BATCH = "batch"                 # Alpaca-style: complete tasks in one go
STAGES = (STAGE_INSTRUCTIONS, STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_BATCH)


@dataclass(frozen=True)
class Prompt:
    stage: str
    version: str          # e.g. "instructions-v1"; stored with every request
    text: str             # the prompt body
    system: str | None = None          # chat mode only
    stop: tuple[str, ...] | None = None  # stop sequences (completion mode)
    meta: dict = field(default_factory=dict, compare=False)  # e.g. {"start_index": 9}

    def as_messages(self) -> list[dict]:
        messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.text})
        return messages

    def full_text(self) -> str:
        """Everything the model sees, as one string (what is stored and what the
        offline server answers from)."""
        return f"{self.system}\n\n{self.text}" if self.system else self.text
