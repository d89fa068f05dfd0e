"""Ratings from blind votes: a Bradley-Terry fit with bootstrap intervals, on the arena's familiar 1000-point scale.

A vote between N answers counts as pairwise games: the winner beat each of the others; a tie (or "both bad")
is half a win for each side of every pair, as Chatbot Arena counts ties. The fit maximises the Bradley-Terry
likelihood with a weak Gaussian prior on the log-strengths, so a model that won every vote gets a large,
finite rating instead of an infinite one, and the ratings average 1000. Intervals come from refitting on
votes drawn with replacement (a percentile bootstrap, seeded, so the same votes always give the same board).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: the points one natural-log unit of strength is worth: 400 points = 10:1 odds, as Elo and the arena use
SCALE = 400 / math.log(10)
#: the rating of an average model
BASE = 1000.0
#: the weak prior's precision on log-strengths; with tens of votes it no longer moves a rating visibly
PRIOR = 0.05
#: what a game scores for its first model: a win, a tie, a loss
WIN, TIE, LOSS = 1.0, 0.5, 0.0


@dataclass(frozen=True)
class Game:
    """One pairwise outcome: ``score`` is what ``a`` got against ``b`` (1 win, 0.5 tie, 0 loss)."""

    a: str
    b: str
    score: float


@dataclass(frozen=True)
class Ballot:
    """One vote as the fit reads it: the models in the order shown and the choice (an index, "tie" or "bad")."""

    models: tuple[str, ...]
    winner: int | str

    def games(self) -> list[Game]:
        """The pairwise games this vote stands for."""
        if isinstance(self.winner, int):
            champion = self.models[self.winner]
            return [Game(champion, m, WIN) for i, m in enumerate(self.models) if i != self.winner]
        return [
            Game(self.models[i], self.models[j], TIE)
            for i in range(len(self.models))
            for j in range(i + 1, len(self.models))
        ]


@dataclass
class Standing:
    """One model's line on the leaderboard."""

    model: str
    rating: float
    #: the bootstrap's 95% interval; equal to the rating when there were too few votes to resample
    low: float
    high: float
    votes: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0
    #: median generation speed and first-token time over the model's voted answers (None when unknown)
    tokens_per_s: float | None = None
    ttft: float | None = None
    rank: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def win_rate(self) -> float:
        """Wins plus half the ties, over the games played (0 when none)."""
        played = self.wins + self.losses + self.ties
        return (self.wins + 0.5 * self.ties) / played if played else 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``llmspell arena leaderboard --json``)."""
        return {
            "rank": self.rank,
            "model": self.model,
            "rating": round(self.rating, 1),
            "ci_low": round(self.low, 1),
            "ci_high": round(self.high, 1),
            "votes": self.votes,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "win_rate": round(self.win_rate, 4),
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s, 1),
            "ttft_s": None if self.ttft is None else round(self.ttft, 4),
        }


def fit(games: Sequence[Game], models: Sequence[str] | None = None, prior: float = PRIOR) -> dict[str, float]:
    """Bradley-Terry ratings of every model in ``games`` (and ``models``), on the 1000-point scale."""
    names, first, second, score = _encode(games, models)
    if not names:
        return {}
    won, played = _tables(len(names), first, second, score, np.ones(len(games)))
    theta = _strengths(won, played, prior)
    return {m: BASE + SCALE * float(theta[i]) for i, m in enumerate(names)}


def _encode(
    games: Sequence[Game], models: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The models in name order, and each game as arrays: first model's index, second's, first's score."""
    names = sorted({g.a for g in games} | {g.b for g in games} | set(models or ()))
    index = {m: i for i, m in enumerate(names)}
    first = np.array([index[g.a] for g in games], dtype=np.intp)
    second = np.array([index[g.b] for g in games], dtype=np.intp)
    score = np.array([g.score for g in games], dtype=float)
    return names, first, second, score


def _tables(
    k: int, first: np.ndarray, second: np.ndarray, score: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``won[i, j]``: what i scored against j, summed over the (weighted) games; ``played[i, j]``: how many."""
    won = np.zeros((k, k))
    played = np.zeros((k, k))
    np.add.at(won, (first, second), weight * score)
    np.add.at(won, (second, first), weight * (1.0 - score))
    np.add.at(played, (first, second), weight)
    np.add.at(played, (second, first), weight)
    return won, played


def _strengths(won: np.ndarray, played: np.ndarray, prior: float) -> np.ndarray:
    """The log-strengths maximising the penalised Bradley-Terry likelihood.

    Newton's method: the problem is concave, so it converges in a few steps from any start; a step that would
    lower the likelihood is halved (a guard for lopsided records).
    """

    def objective(theta: np.ndarray) -> float:
        diff = theta[:, None] - theta[None, :]
        # log sigmoid, written so that large differences do not overflow
        return float(-(won * np.logaddexp(0.0, -diff)).sum() - 0.5 * prior * (theta @ theta))

    theta = np.zeros(len(won))
    current = objective(theta)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = (won - played * p).sum(axis=1) - prior * theta
        weight = played * p * (1.0 - p)
        hessian = weight - np.diag(weight.sum(axis=1) + prior)
        step = np.linalg.solve(hessian, -grad)
        size = 1.0
        while True:
            candidate = theta + size * step
            value = objective(candidate)
            if value >= current - 1e-12:
                break
            size /= 2
            if size < 1e-6:  # no step along Newton's direction helps: this is the optimum, to rounding
                return theta
        theta, current = candidate, value
        if float(np.abs(step).max()) * size < 1e-9:
            break
    return theta


def leaderboard(
    ballots: Sequence[Ballot],
    *,
    rounds: int = 200,
    seed: int = 0,
    speed: dict[str, tuple[float | None, float | None]] | None = None,
) -> list[Standing]:
    """Every voted model ranked by rating, with 95% bootstrap intervals, vote counts and (from ``speed``) its
    median tokens/s and first-token time. ``rounds`` refits on resampled votes; 0 leaves the intervals empty."""
    games = [(n, g) for n, b in enumerate(ballots) for g in b.games()]
    names, first, second, score = _encode([g for _, g in games])
    if not names:
        return []
    index = {m: i for i, m in enumerate(names)}
    won, played = _tables(len(names), first, second, score, np.ones(len(games)))
    ratings = dict(zip(names, (BASE + SCALE * _strengths(won, played, PRIOR)).tolist(), strict=True))
    ballot_of = np.array([n for n, _ in games], dtype=np.intp)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds if len(ballots) > 1 else 0):
        # resampling votes with replacement = giving each vote a multinomial count of copies
        copies = rng.multinomial(len(ballots), np.full(len(ballots), 1.0 / len(ballots)))
        won, played = _tables(len(names), first, second, score, copies[ballot_of].astype(float))
        theta = BASE + SCALE * _strengths(won, played, PRIOR)
        # a model absent from a resample has no rating there: left out of that round, not counted as average
        theta[played.sum(axis=1) == 0] = np.nan
        samples.append(theta)
    table = np.array(samples) if samples else np.empty((0, len(names)))
    standings = []
    for model in names:
        rating = ratings[model]
        column = table[:, index[model]]
        column = column[~np.isnan(column)]
        low, high = (
            (float(np.percentile(column, 2.5)), float(np.percentile(column, 97.5))) if len(column) else (rating, rating)
        )
        tps, ttft = (speed or {}).get(model, (None, None))
        standings.append(Standing(model, rating, min(low, rating), max(high, rating), tokens_per_s=tps, ttft=ttft))
    by_model = {s.model: s for s in standings}
    for ballot in ballots:
        for m in set(ballot.models):
            by_model[m].votes += 1
    for _, g in games:
        a, b = by_model[g.a], by_model[g.b]
        if g.score == TIE:
            a.ties, b.ties = a.ties + 1, b.ties + 1
        elif g.score == WIN:
            a.wins, b.losses = a.wins + 1, b.losses + 1
        else:
            a.losses, b.wins = a.losses + 1, b.wins + 1
    standings.sort(key=lambda s: (-s.rating, s.model))
    for rank, s in enumerate(standings, 1):
        s.rank = rank
    return standings


def median(values: Iterable[float]) -> float | None:
    """The median of ``values``, None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def interval_bars(standings: Sequence[Standing], width: int = 40) -> tuple[list[str], str]:
    """Each model's 95% interval drawn in ``width`` characters (``├──●──┤``, on one shared scale), and an axis
    line under them with the lowest and highest rating shown; for a terminal or a TUI screen."""
    if not standings:
        return [], ""
    width = max(width, 12)
    lo = min(s.low for s in standings)
    hi = max(s.high for s in standings)
    span = (hi - lo) or 1.0

    def at(value: float) -> int:
        return min(width - 1, max(0, round((value - lo) / span * (width - 1))))

    bars = []
    for s in standings:
        cells = [" "] * width
        left, right, mid = at(s.low), at(s.high), at(s.rating)
        for x in range(left, right + 1):
            cells[x] = "─"
        cells[left], cells[right] = "├", "┤"
        cells[mid] = "●"
        bars.append("".join(cells).rstrip())
    low_text, high_text = f"{lo:.0f}", f"{hi:.0f}"
    axis = low_text + " " * max(1, width - len(low_text) - len(high_text)) + high_text
    return bars, axis
