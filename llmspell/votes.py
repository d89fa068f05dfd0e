"""A stored arena vote and its JSONL form, the shape public arena datasets use (Chatbot Arena's conversations).

One line per vote: ``question_id``, ``model_a``, ``model_b`` (``model_c``... for a round of more), ``winner``
(``model_a``, ``model_b``, ``tie`` or ``tie (bothbad)``), ``judge``, ``conversation_a`` / ``conversation_b`` as
role/content messages, ``turn``, ``anony``, ``tstamp``; what only llmspell knows (backend, quantization, digest,
stats, options, category, system prompt) rides along under ``llmspell``, so an export read back is the same vote.
"""

from __future__ import annotations

import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from llmspell.errors import InvalidOptions
from llmspell.ratings import Ballot
from llmspell.types import Options, Stats

#: the letters answers are shown under, in order
LETTERS = string.ascii_uppercase[:4]
#: the choices besides an answer's letter: every answer equally good, or every answer bad
TIE, BAD = "tie", "bad"
_WINNER_WIRE = {TIE: "tie", BAD: "tie (bothbad)"}


@dataclass(frozen=True)
class Answer:
    """One answer of a voted round: which model gave it (and exactly which build of it), what, and how fast."""

    model: str
    backend: str
    quantization: str | None
    digest: str | None
    content: str
    stats: Stats | None = None

    @property
    def label(self) -> str:
        """The name the leaderboard ranks: the model and where it ran (``smollm2:135m@llamacpp``)."""
        return f"{self.model}@{self.backend}"


@dataclass(frozen=True)
class Vote:
    """A blind round's outcome: the prompt, the answers in the order shown (A, B, ...) and the user's choice."""

    prompt: str
    answers: tuple[Answer, ...]
    #: the index of the better answer (0 = A), or "tie", or "bad" (every answer bad)
    winner: int | str
    options: Options = field(default_factory=Options)
    system: str | None = None
    category: str | None = None
    judge: str = "user"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if isinstance(self.winner, int) and not 0 <= self.winner < len(self.answers):
            raise InvalidOptions(f"no answer {self.winner} in a round of {len(self.answers)}")
        if isinstance(self.winner, str) and self.winner not in (TIE, BAD):
            raise InvalidOptions(f"unknown vote {self.winner!r}", hint="vote for an answer's letter, tie or bad")

    @property
    def ballot(self) -> Ballot:
        """What the rating fit reads of this vote."""
        return Ballot(tuple(a.label for a in self.answers), self.winner)

    @property
    def winner_text(self) -> str:
        """The choice as a user reads it: "A", "B", "tie" or "both bad"."""
        if isinstance(self.winner, int):
            return LETTERS[self.winner]
        return "both bad" if self.winner == BAD else "tie"

    def to_json(self) -> dict[str, Any]:
        """The JSONL line of this vote (see the module's docstring)."""
        line: dict[str, Any] = {"question_id": self.id}
        for n, a in enumerate(self.answers):
            line[f"model_{LETTERS[n].lower()}"] = a.label
        line["winner"] = (
            f"model_{LETTERS[self.winner].lower()}" if isinstance(self.winner, int) else _WINNER_WIRE[self.winner]
        )
        line["judge"] = self.judge
        for n, a in enumerate(self.answers):
            line[f"conversation_{LETTERS[n].lower()}"] = [
                *([{"role": "system", "content": self.system}] if self.system else []),
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": a.content},
            ]
        line.update(turn=1, anony=True, tstamp=self.created)
        line["llmspell"] = {
            "category": self.category,
            "options": self.options.to_dict(),
            "answers": [
                {
                    "model": a.model,
                    "backend": a.backend,
                    "quantization": a.quantization,
                    "digest": a.digest,
                    "stats": a.stats.to_dict() if a.stats else None,
                }
                for a in self.answers
            ],
        }
        return line

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> Vote:
        """A vote from a JSONL line this module wrote, or from a public arena dataset's line (two models, no
        llmspell part: the model names are taken as they are); raises InvalidOptions naming what is wrong."""
        try:
            extra = line.get("llmspell") or {}
            details = extra.get("answers") or []
            answers = []
            for n, letter in enumerate(LETTERS.lower()):
                if f"model_{letter}" not in line:
                    break
                label = str(line[f"model_{letter}"])
                convo = line.get(f"conversation_{letter}") or []
                said = [m["content"] for m in convo if m.get("role") == "assistant"]
                info = details[n] if n < len(details) else {}
                model, _, backend = label.rpartition("@") if "@" in label else (label, "", "")
                answers.append(
                    Answer(
                        info.get("model") or model,
                        info.get("backend") or backend or "unknown",
                        info.get("quantization"),
                        info.get("digest"),
                        said[-1] if said else "",
                        Stats(**{k: v for k, v in info["stats"].items() if k in Stats.__dataclass_fields__})
                        if info.get("stats")
                        else None,
                    )
                )
            if len(answers) < 2:
                raise InvalidOptions("a vote needs model_a and model_b")
            first = line.get("conversation_a") or []
            prompt = next((m["content"] for m in first if m.get("role") == "user"), "")
            system = next((m["content"] for m in first if m.get("role") == "system"), None)
            wire = str(line["winner"])
            winner: int | str
            if wire.startswith("model_") and len(wire) == 7 and wire[-1].upper() in LETTERS:
                winner = LETTERS.index(wire[-1].upper())
            elif wire in ("tie", "tie (bothbad)"):
                winner = BAD if wire == "tie (bothbad)" else TIE
            else:
                raise InvalidOptions(f"unknown winner {wire!r}")
            return cls(
                prompt=prompt,
                answers=tuple(answers),
                winner=winner,
                options=Options.from_dict(extra.get("options") or {}),
                system=system,
                category=extra.get("category"),
                judge=str(line.get("judge") or "user"),
                id=str(line.get("question_id") or uuid.uuid4().hex),
                created=float(line.get("tstamp") or time.time()),
            )
        except InvalidOptions:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidOptions(f"not an arena vote: {type(exc).__name__}: {exc}") from None
