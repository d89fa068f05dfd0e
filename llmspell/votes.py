"""A stored arena vote and its JSONL form, the shape public arena datasets use (Chatbot Arena's conversations).

One line per vote: ``question_id``, ``model_a``, ``model_b`` (``model_c``... for a round of more), ``winner``
(``model_a``, ``model_b``, ``tie`` or ``tie (bothbad)``), ``judge``, ``conversation_a`` / ``conversation_b`` as
role/content messages, ``turn``, ``anony``, ``tstamp``; what only llmspell knows (backend, quantization, digest,
stats, options, category, system prompt) rides along under ``llmspell``, so an export read back is the same vote.
"""

from __future__ import annotations

import dataclasses
import math
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, get_args

from llmspell.errors import InvalidOptions
from llmspell.ratings import Ballot
from llmspell.types import Options, Stats, StopReason

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
    #: the answers ran at once, sharing the cores (their speeds are not those of a model alone)
    parallel: bool = False

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
            "parallel": self.parallel,
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
    def from_json(cls, line: object) -> Vote:
        """A vote from a JSONL line this module wrote, or from a public arena dataset's line (two models, no
        llmspell part: the model names are taken as they are); every field is checked, and what is wrong is
        raised as InvalidOptions naming the field."""
        data = _mapping(line, "the line")
        extra = _mapping(data.get("llmspell") or {}, "llmspell")
        details = extra.get("answers") or []
        if not isinstance(details, list):
            raise InvalidOptions("llmspell.answers must be a list")
        answers = []
        for n, letter in enumerate(LETTERS.lower()):
            if f"model_{letter}" not in data:
                break
            label = _text(data[f"model_{letter}"], f"model_{letter}")
            if not label:
                raise InvalidOptions(f"model_{letter} is empty")
            convo = _messages(data.get(f"conversation_{letter}"), f"conversation_{letter}")
            said = [m["content"] for m in convo if m["role"] == "assistant"]
            if not said:
                raise InvalidOptions(f"conversation_{letter} has no answer (an assistant message)")
            info = _mapping(details[n] if n < len(details) else {}, f"llmspell.answers[{n}]")
            model, _, backend = label.rpartition("@") if "@" in label else (label, "", "")
            where = f"llmspell.answers[{n}]"
            answers.append(
                Answer(
                    _text(info.get("model") or model, f"{where}.model"),
                    _text(info.get("backend") or backend or "unknown", f"{where}.backend"),
                    _maybe_text(info.get("quantization"), f"{where}.quantization"),
                    _maybe_text(info.get("digest"), f"{where}.digest"),
                    said[-1] if said else "",
                    _stats(info.get("stats"), f"{where}.stats"),
                )
            )
        if len(answers) < 2:
            raise InvalidOptions("a vote needs model_a and model_b")
        labels = [a.label for a in answers]
        if len(set(labels)) != len(labels):
            raise InvalidOptions(f"a vote between a model and itself ({', '.join(labels)})")
        first = _messages(data.get("conversation_a"), "conversation_a")
        prompt = next((m["content"] for m in first if m["role"] == "user"), "")
        if not prompt:
            raise InvalidOptions("conversation_a has no prompt (a user message)")
        question = data.get("question_id")
        if not isinstance(question, str) or not question:
            # the id is what keeps a file imported twice from counting its votes twice
            raise InvalidOptions("question_id is missing", hint="every vote needs its own id")
        system = next((m["content"] for m in first if m["role"] == "system"), None)
        wire = data.get("winner")
        winner: int | str
        if isinstance(wire, str) and wire.startswith("model_") and len(wire) == 7 and wire[-1].upper() in LETTERS:
            winner = LETTERS.index(wire[-1].upper())
        elif wire in ("tie", "tie (bothbad)"):
            winner = BAD if wire == "tie (bothbad)" else TIE
        else:
            raise InvalidOptions(f"unknown winner {wire!r}", hint="model_a, model_b, tie or tie (bothbad)")
        created = data.get("tstamp", time.time())
        if isinstance(created, bool) or not isinstance(created, int | float) or not math.isfinite(created):
            raise InvalidOptions(f"tstamp must be a time in seconds, not {created!r}")
        options = extra.get("options") or {}
        return cls(
            prompt=prompt,
            answers=tuple(answers),
            winner=winner,
            options=Options.from_dict(_mapping(options, "llmspell.options")),
            system=system,
            category=_maybe_text(extra.get("category"), "llmspell.category"),
            judge=_text(data.get("judge") or "user", "judge"),
            id=question,
            created=float(created),
            parallel=extra.get("parallel") is True,
        )


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidOptions(f"{where} must be an object, not {type(value).__name__}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidOptions(f"{where} must be text, not {type(value).__name__}")
    return value


def _maybe_text(value: object, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _messages(value: object, where: str) -> list[dict[str, str]]:
    """A conversation as role/content messages whose content is text."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidOptions(f"{where} must be a list of messages")
    for n, m in enumerate(value):
        _mapping(m, f"{where}[{n}]")
        _text(m.get("role"), f"{where}[{n}].role")
        _text(m.get("content"), f"{where}[{n}].content")
    return value


#: the kind of each stored stats figure: token counts are whole numbers, times finite seconds
_STAT_KINDS = {f.name: f.type for f in dataclasses.fields(Stats)}


def _stats(value: object, where: str) -> Stats | None:
    """Stats as exported: each figure of the right kind (unknown derived keys like tokens/s are ignored)."""
    if value is None:
        return None
    data = _mapping(value, where)
    fields: dict[str, Any] = {}
    for name, kind in _STAT_KINDS.items():
        if name not in data:
            continue
        v = data[name]
        if name == "stop_reason":
            if v not in get_args(StopReason):
                raise InvalidOptions(f"{where}.stop_reason must be one of {', '.join(get_args(StopReason))}")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise InvalidOptions(f"{where}.{name} must be true or false, not {v!r}")
            fields[name] = v
            continue
        elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InvalidOptions(f"{where}.{name} must be a number of at least 0, not {v!r}")
        elif kind == "int" and not float(v).is_integer():
            raise InvalidOptions(f"{where}.{name} must be a whole number, not {v!r}")
        fields[name] = int(v) if kind == "int" else float(v) if name != "stop_reason" else v
    return Stats(**fields)
