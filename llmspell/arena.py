"""The arena: blind rounds between the user's own models, votes, and the leaderboard made from them.

A round puts one prompt to two (up to four) models drawn from a pool, shown only as A, B, ... in a random order
that is recorded; every answer gets the same options, seed, context size and token budget. Only a round whose
answers all finished can be voted; the vote (prompt, answers in the order shown, models with backend,
quantization and digest, options, stats) is one transaction in the store, so a crash mid-round loses no earlier
vote. Every face (the TUI's arena screen, the REPL's /arena, the kernel's %arena, ``llmspell arena``) drives an
:class:`Arena` and only draws; the names stay out of what a face shows until :attr:`Round.vote` is set.

Rounds are one prompt each, not stored as conversations: a blind answer kept in the history would show its
model's name there before the vote.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from llmspell.chat import Conversation
from llmspell.compare import CompareEvent, StreamMetrics, Target, compare, error_text
from llmspell.errors import InvalidOptions, LLMSpellError
from llmspell.files import write_whole
from llmspell.options import ENGINE_DEFAULTS
from llmspell.ratings import Standing, leaderboard, median
from llmspell.session import check_model
from llmspell.types import Options
from llmspell.votes import BAD, LETTERS, TIE, Answer, Vote

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.store import Store

#: the token budget of every answer in a round when no max_tokens is set (the same for every model)
DEFAULT_MAX_TOKENS = 512
#: what a user may type to vote, besides an answer's letter
CHOICES = {"tie": TIE, "t": TIE, "=": TIE, "bad": BAD, "both bad": BAD, "x": BAD}


@dataclass(frozen=True)
class Contender:
    """A model of the pool: the name it is ranked under and what is known of its build."""

    label: str
    model: str
    backend: str
    quantization: str | None = None
    digest: str | None = None


@dataclass
class Round:
    """One blind round: the prompt, the contenders in the order shown, their answers as they stream, the vote."""

    prompt: str
    contenders: list[Contender]
    options: Options
    system: str | None = None
    category: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: each answer as it streams, in the order shown (filled by :meth:`stream`)
    metrics: list[StreamMetrics] = field(default_factory=list)
    #: set once the user voted; until then a face shows letters, never names
    vote: Vote | None = None
    #: whether the answers ran at once (sharing the cores) or one after another; speeds differ between the two
    parallel: bool = False
    #: told when the answers have ended (the arena counts failures with it)
    on_end: Callable[[Round], None] | None = field(default=None, repr=False, compare=False)

    @property
    def letters(self) -> list[str]:
        """What the answers are shown as: A, B, ..."""
        return list(LETTERS[: len(self.contenders)])

    async def stream(self, hub: Hub, *, parallel: bool = True) -> AsyncGenerator[CompareEvent, None]:
        """Every answer's events (the event's index is the answer's position); closing the stream cancels them."""
        self.parallel = parallel
        targets = [Target(Conversation(c.label, self.system, self.options)) for c in self.contenders]
        events = compare(hub, targets, self.prompt, store=None, parallel=parallel)
        try:
            async for event in events:
                if not self.metrics:
                    self.metrics = [StreamMetrics(i, c.label) for i, c in enumerate(self.contenders)]
                self.metrics[event.index] = event.metrics
                yield event
        finally:
            await events.aclose()
            if not self.metrics:  # closed before any answer began
                self.metrics = [StreamMetrics(i, c.label) for i, c in enumerate(self.contenders)]
            for m in self.metrics:
                if m.status in ("waiting", "streaming"):  # closed before this answer began or ended
                    m.status = "cancelled"
            if self.on_end is not None:
                self.on_end(self)

    @property
    def finished(self) -> bool:
        """Whether every answer has ended, one way or another."""
        return len(self.metrics) == len(self.contenders) and all(
            m.status in ("done", "cancelled", "error") for m in self.metrics
        )

    def problem(self) -> str | None:
        """Why this round cannot be voted (an answer failed, was stopped or is still running), None when it can."""
        if self.vote is not None:
            return "this round is already voted; send the next prompt"
        if len(self.metrics) != len(self.contenders):
            return "the answers have not started yet"
        for letter, m in zip(self.letters, self.metrics, strict=True):
            if m.status == "error":
                # the error itself is shown under the answer; it may name the model, so not here too
                return f"answer {letter} failed, so this round cannot be voted; send the next prompt"
            if m.status == "cancelled":
                return f"answer {letter} was stopped before its end, so this round cannot be voted; send it again"
            if m.status != "done":
                return f"answer {letter} is still being written"
        return None

    def reveal(self) -> list[tuple[str, str, StreamMetrics | None]]:
        """Each answer's letter, model and stream metrics; only after the vote (raises before it)."""
        if self.vote is None:
            raise InvalidOptions("the names are shown after the vote", hint="vote first")
        metrics: list[StreamMetrics | None] = list(self.metrics) or [None] * len(self.contenders)
        return [(letter, c.label, m) for letter, c, m in zip(self.letters, self.contenders, metrics, strict=True)]


def parse_choice(text: str, size: int) -> int | str:
    """A typed vote: an answer's letter (A, B, ...), "tie" / "t" / "=", or "bad" / "x" (every answer bad)."""
    word = text.strip().lower()
    if len(word) == 1 and word.upper() in LETTERS[:size]:
        return LETTERS.index(word.upper())
    if word in CHOICES:
        return CHOICES[word]
    letters = "/".join(LETTERS[:size])
    raise InvalidOptions(f"{text.strip()!r} is not a vote", hint=f"vote {letters}, tie or bad (both bad)")


def speeds(votes: Iterable[Vote]) -> dict[str, tuple[float | None, float | None]]:
    """Each model's median generation speed and first-token time over its voted answers that ran alone (one
    after another); a model only ever measured side by side (sharing the cores) gets none, rather than a figure
    that cannot be set beside the others."""
    rates: dict[str, list[float]] = {}
    firsts: dict[str, list[float]] = {}
    for vote in votes:
        if vote.parallel:
            continue
        for a in vote.answers:
            if a.stats is not None and a.stats.generated_tokens > 1:
                rates.setdefault(a.label, []).append(a.stats.generation_tokens_per_s)
                firsts.setdefault(a.label, []).append(a.stats.time_to_first_token)
    return {m: (median(rates.get(m, ())), median(firsts.get(m, ()))) for m in set(rates) | set(firsts)}


def board(votes: Sequence[Vote], *, rounds: int = 200) -> list[Standing]:
    """The leaderboard of ``votes``: Bradley-Terry ratings, 95% intervals, vote counts and speeds."""
    return leaderboard([v.ballot for v in votes], rounds=rounds, speed=speeds(votes))


#: the leaderboard's columns, as every face shows them
BOARD_HEADERS = ("#", "model", "rating", "95% interval", "votes", "W/L/T", "tok/s", "TTFT")


def ttft_text(seconds: float | None) -> str:
    """A first-token time as people read it: milliseconds under a second, else seconds; "-" when unknown."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def board_rows(standings: Sequence[Standing]) -> list[list[str]]:
    """Each standing as the cells of its leaderboard row (plain text), the same in every face."""
    return [
        [
            str(s.rank),
            s.model,
            f"{s.rating:.0f}",
            f"{s.low:.0f} to {s.high:.0f}" if s.high > s.low else "-",
            str(s.votes),
            f"{s.wins}/{s.losses}/{s.ties}",
            "-" if s.tokens_per_s is None else f"{s.tokens_per_s:.1f}",
            ttft_text(s.ttft),
        ]
        for s in standings
    ]


def load_board(store: Store, category: str | None = None, *, rounds: int = 200) -> tuple[int, list[Standing]]:
    """The stored votes (of one category) and their leaderboard: how many votes, and the standings."""
    votes = store.votes(category)
    return len(votes), board(votes, rounds=rounds)


def export_votes(votes: Iterable[Vote], out: IO[str]) -> int:
    """Write ``votes`` as JSONL to ``out``; returns how many."""
    count = 0
    for vote in votes:
        out.write(json.dumps(vote.to_json(), ensure_ascii=False) + "\n")
        count += 1
    return count


def export_file(votes: Iterable[Vote], path: Path | str) -> int:
    """Write ``votes`` as JSONL to ``path``, whole or not at all (written beside it, then renamed)."""
    return write_whole(path, lambda f: export_votes(votes, f))


def read_votes(lines: Iterable[str], where: str = "the input") -> list[Vote]:
    """Votes from JSONL lines; a bad line is an error naming its number (nothing is taken from a bad file)."""
    votes = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            votes.append(Vote.from_json(json.loads(line)))
        except (InvalidOptions, ValueError, TypeError) as exc:
            if isinstance(exc, InvalidOptions):
                message = exc.message
            elif isinstance(exc, json.JSONDecodeError):
                message = f"not JSON: {exc.msg}"
            else:  # a value Options or Stats refuse
                message = f"not an arena vote: {exc}"
            raise InvalidOptions(
                f"{where}, line {number}: {message}", hint="each line must be one vote as `arena export` writes it"
            ) from None
    return votes


class Arena:
    """Blind rounds over a pool of models, with votes kept in the store; every face drives one of these."""

    def __init__(
        self,
        hub: Hub,
        store: Store | None = None,
        *,
        size: int | None = None,
        options: Options | None = None,
        system: str | None = None,
        category: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.hub = hub
        self.store = store
        self.size = size or hub.config.arena_size
        if not 2 <= self.size <= len(LETTERS):
            raise InvalidOptions(f"a round has 2 to {len(LETTERS)} answers, not {self.size}")
        self.options = options or Options()
        self.system = system
        self.category = category
        self.pool: list[Contender] = []
        #: models the pool asked for that cannot be used now, with why (a face may show them)
        self.skipped: list[tuple[str, str]] = []
        self.rng = random.Random(seed)
        self._appearances: Counter[str] = Counter()
        self._pairs: Counter[frozenset[str]] = Counter()
        #: answers that failed, per model, in this arena: a model that keeps failing leaves the pool
        self._failures: Counter[str] = Counter()
        #: models taken out of the pool after failing, with why (a face shows them once; see take_dropped)
        self.dropped: list[tuple[str, str]] = []

    # ----- the pool --------------------------------------------------------------------------------------

    async def set_pool(self, specs: Sequence[str] | None = None) -> list[Contender]:
        """Use ``specs`` (default: the config's pool, else every model on this machine) as the pool; each is
        checked and named once, so two spellings of one model are one contender and a model is never drawn
        against itself. Raises when fewer than two different usable models remain."""
        names = list(specs or self.hub.config.arena_pool)
        if not names:
            models, _failed = await self.hub.list_all()
            names = [f"{m.name}@{m.backend}" for m in models]
        pool: dict[str, Contender] = {}
        digests: dict[str, str] = {}
        skipped: list[tuple[str, str]] = []
        for spec in dict.fromkeys(n.strip() for n in names if n.strip()):
            try:
                contender = await self._contender(spec)
            except LLMSpellError as exc:
                skipped.append((spec, error_text(exc)))
                continue
            if contender.label in pool:
                continue
            # one file reached two ways (Ollama's store read by the embedded engine, say) is one model
            same = digests.get(contender.digest or "")
            if same is not None:
                skipped.append((spec, f"the same file as {same}"))
                continue
            pool[contender.label] = contender
            if contender.digest:
                digests[contender.digest] = contender.label
        if len(pool) < 2:
            why = "; ".join(f"{s}: {e}" for s, e in skipped)
            raise InvalidOptions(
                f"the arena needs at least two different models that can be used now (have {len(pool)})"
                + (f"; {why}" if why else ""),
                hint="name two or more downloaded models, e.g. smollm2:135m gemma3:270m",
            )
        self.pool, self.skipped = list(pool.values()), skipped
        self._failures.clear()
        await asyncio.to_thread(self._count_exposure)
        return self.pool

    async def _contender(self, spec: str) -> Contender:
        info = await check_model(self.hub, spec)
        backend, parsed = await self.hub.resolve(spec)
        if info is None:
            info = await backend.info(parsed)
        if info.has_chat_template is False:
            raise InvalidOptions(
                f"{spec} has no chat template (a base model: it continues text, it does not answer)",
                hint="the arena is for chat models",
            )
        model = await backend.canonical_name(parsed)
        digest = info.sha256 or info.extra.get("digest")
        if not digest:
            # a server's model details leave the digest out (Ollama's /api/show); its model list has it
            listed = {m.name: m for m in await backend.list_models()}
            found = listed.get(model) or listed.get(parsed.tag)
            digest = found.sha256 if found is not None else None
        if isinstance(digest, str):
            digest = digest.removeprefix("sha256:")
        return Contender(f"{model}@{backend.name}", model, backend.name, info.quantization, digest)

    def _count_exposure(self) -> None:
        """How often each model of the pool, and each pair, has been voted on already (all categories)."""
        self._appearances.clear()
        self._pairs.clear()
        if self.store is not None:
            for vote in self.store.votes():
                self._count([a.label for a in vote.answers])

    def _count(self, labels: list[str]) -> None:
        self._appearances.update(labels)
        self._pairs.update(frozenset((x, y)) for i, x in enumerate(labels) for y in labels[i + 1 :])

    def _ended(self, round_: Round) -> None:
        """A round's answers ended: count the failures; a model failing twice leaves the pool (while two remain),
        so a model that cannot answer is not drawn into every round for being the least voted."""
        for c, m in zip(round_.contenders, round_.metrics, strict=False):
            if m.status != "error":
                continue
            self._failures[c.label] += 1
            if self._failures[c.label] >= 2 and c in self.pool and len(self.pool) > 2:
                self.pool.remove(c)
                self.dropped.append((c.label, f"left the pool after {self._failures[c.label]} failed answers"))

    def take_dropped(self) -> list[tuple[str, str]]:
        """The models that left the pool since the last call, with why (for a face to say once)."""
        dropped, self.dropped = self.dropped, []
        return dropped

    def exposure(self) -> dict[str, int]:
        """How many rounds each model of the pool has been in: the stored votes, and the rounds drawn here."""
        return {c.label: self._appearances[c.label] for c in self.pool}

    # ----- rounds ----------------------------------------------------------------------------------------

    def draw(self) -> list[Contender]:
        """The next round's models in the order shown: the least-voted first, each next one the least-voted
        and least-often met by those already drawn (random among equals), then shuffled into A, B, ..."""
        if len(self.pool) < 2:
            raise InvalidOptions("the arena has no pool yet", hint="name two or more models for it")
        chosen: list[Contender] = []
        while len(chosen) < min(self.size, len(self.pool)):
            left = [c for c in self.pool if c not in chosen]
            chosen.append(
                min(
                    left,
                    key=lambda c: (
                        self._appearances[c.label],
                        sum(self._pairs[frozenset((c.label, o.label))] for o in chosen),
                        self.rng.random(),
                    ),
                )
            )
        self.rng.shuffle(chosen)
        # a draw is exposure too, voted or not (a skipped or failed round must not bring the same models back)
        self._count([c.label for c in chosen])
        return chosen

    def round_options(self) -> Options:
        """Options every answer of a round shares: the engine's sampling defaults, then the config's, then this
        arena's; a seed drawn when none is set, the config's context size and a token budget made explicit, so
        no backend's own default makes one answer differ from another."""
        opts = Options.from_dict(ENGINE_DEFAULTS).merged(self.hub.config.options).merged(self.options)
        changes: dict[str, object] = {}
        if opts.seed is None or opts.seed < 0:
            changes["seed"] = self.rng.randrange(2**31)
        if opts.num_ctx is None:
            changes["num_ctx"] = self.hub.config.num_ctx
        if opts.max_tokens is None:
            changes["max_tokens"] = DEFAULT_MAX_TOKENS
        return opts.with_values(changes) if changes else opts

    def start(self, prompt: str) -> Round:
        """A new blind round for ``prompt`` (stream it with :meth:`Round.stream`)."""
        if not prompt.strip():
            raise InvalidOptions("an empty prompt", hint="type the prompt the models should answer")
        return Round(prompt, self.draw(), self.round_options(), self.system, self.category, on_end=self._ended)

    def vote(self, round_: Round, choice: int | str) -> Vote:
        """Record the user's choice for a finished round and reveal it; a round with a failed or stopped answer,
        or one already voted, is refused with the reason."""
        problem = round_.problem()
        if problem is not None:
            raise InvalidOptions(problem)
        if isinstance(choice, str):
            choice = parse_choice(choice, len(round_.contenders))
        answers = tuple(
            Answer(c.model, c.backend, c.quantization, c.digest, m.text, m.stats)
            for c, m in zip(round_.contenders, round_.metrics, strict=True)
        )
        vote = Vote(
            round_.prompt,
            answers,
            choice,
            round_.options,
            round_.system,
            round_.category,
            id=round_.id,
            parallel=round_.parallel,
        )
        if self.store is not None:
            self.store.add_vote(vote)
        round_.vote = vote
        return vote

    def leaderboard(self, category: str | None = None, *, rounds: int = 200) -> list[Standing]:
        """The leaderboard of every stored vote (of one category when given)."""
        return load_board(self.store, category, rounds=rounds)[1] if self.store is not None else []
