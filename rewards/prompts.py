"""Versioned yes/no prompts for VLM success detection.

A prompt's text, its yes/no answer words and its version are hashed together; the name, version and
hash go into the backend's ``model_version`` and every cache key, so editing a prompt can never reuse
answers given to the old one (bump ``version`` when you edit the text, the hash catches a forgotten bump).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class YesNoPrompt:
    name: str
    version: int
    system: str
    template: str  # user text; ``{instruction}`` is the task, ``{cameras}`` the camera names
    yes: tuple[str, ...] = ("yes",)  # answer words, compared lowercased and stripped of spaces/punctuation
    no: tuple[str, ...] = ("no",)

    @property
    def digest(self) -> str:
        """First 12 hex digits of the sha256 of everything that shapes the answer."""
        blob = json.dumps([self.name, self.version, self.system, self.template, self.yes, self.no])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"{self.name}.v{self.version}-{self.digest}"

    def render(self, instruction: str, cameras: list[str]) -> str:
        task = instruction.strip() or "the task shown"
        return self.template.format(instruction=task, cameras=", ".join(cameras))


SUCCESS_V1 = YesNoPrompt(
    name="success",
    version=1,
    system="You are a strict judge of robot manipulation. Answer with exactly one word: yes or no.",
    template=("The images are the robot's current camera views ({cameras}). Task: {instruction}. "
              "Has the robot completed the task in the last image of each camera? Answer yes or no."),
)

PROMPTS: dict[str, YesNoPrompt] = {"success": SUCCESS_V1}


def get_prompt(name: str) -> YesNoPrompt:
    if name not in PROMPTS:
        raise ValueError(f"prompt {name!r}: expected one of {', '.join(PROMPTS)}")
    return PROMPTS[name]
