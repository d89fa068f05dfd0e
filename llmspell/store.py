"""SQLite history of conversations: every message is written as it happens, so a crash loses nothing.

One file (``config.history_path()``), WAL journal, one short transaction per change. An answer being
streamed is a row from its first token on (``begin_answer`` / ``update_answer`` / ``finish_answer``), so
a face killed mid-answer leaves the partial text, marked unfinished, for the next start to show.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmspell import config
from llmspell.chat import Conversation, Entry
from llmspell.errors import LLMSpellError
from llmspell.types import Options, Stats, ToolCall
from llmspell.votes import Answer, Vote

#: the schema's history, in order: migration N brings a database from user_version N-1 to N. A database written
#: before versions existed reads 0 and has the tables of migration 1 already (hence IF NOT EXISTS there). Add a
#: change as a new entry at the end; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    # 1: conversations and their messages, as the first release wrote them
    """
    CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        system TEXT,
        options TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        model TEXT,
        stats TEXT,
        -- 'done', 'streaming' (the writer stopped mid-answer), 'cancelled', 'failed' (the backend raised)
        state TEXT NOT NULL DEFAULT 'done',
        created REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
    """,
    # 2: every face lists conversations newest first; without this the list reads the whole table
    """
    CREATE INDEX IF NOT EXISTS conversations_by_updated ON conversations(updated DESC);
    """,
    # 3: the arena's blind votes; a vote and its answers are written in one transaction, so a crash mid-round
    # leaves every earlier vote whole and no half of this one
    """
    CREATE TABLE IF NOT EXISTS arena_votes (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        prompt TEXT NOT NULL,
        system TEXT,
        category TEXT,
        options TEXT NOT NULL,
        -- a position ('0', '1', ...: the answer shown as A, B, ...), 'tie' or 'bad' (both bad)
        winner TEXT NOT NULL,
        judge TEXT NOT NULL DEFAULT 'user',
        -- 1 when the answers ran at once, sharing the cores (their speeds are not those of a model alone)
        parallel INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS arena_answers (
        vote_id TEXT NOT NULL REFERENCES arena_votes(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        model TEXT NOT NULL,
        backend TEXT NOT NULL,
        quantization TEXT,
        digest TEXT,
        content TEXT NOT NULL,
        stats TEXT,
        PRIMARY KEY (vote_id, position)
    );
    CREATE INDEX IF NOT EXISTS arena_votes_by_created ON arena_votes(created);
    """,
    # 4: how many messages at the head of a conversation are no longer sent (it outgrew the model's context)
    """
    ALTER TABLE conversations ADD COLUMN context_from INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: tool calls: an assistant step's calls (JSON, the OpenAI shape), and on a tool message the id of the call it
    # answers and what the call came to (JSON: name, arguments, ok, error, seconds, refused, cancelled)
    """
    ALTER TABLE messages ADD COLUMN tool_calls TEXT;
    ALTER TABLE messages ADD COLUMN tool_call_id TEXT;
    ALTER TABLE messages ADD COLUMN tool TEXT;
    """,
)

#: the schema version this llmspell writes
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class ConversationRow:
    """One line of the history list: a stored conversation without its messages."""

    id: str
    title: str
    model: str
    updated: float
    messages: int


class StoreError(LLMSpellError):
    """The history file cannot be read or written."""

    kind = "store_error"


def _stats_json(stats: Stats | None) -> str | None:
    if stats is None:
        return None
    return json.dumps({k: v for k, v in stats.to_dict().items() if k in Stats.__dataclass_fields__})


def _stats_from(text: str | None) -> Stats | None:
    return Stats(**json.loads(text)) if text else None


def _calls_json(calls: tuple[ToolCall, ...]) -> str | None:
    return json.dumps([c.to_dict() for c in calls], ensure_ascii=False) if calls else None


def _calls_from(text: str | None) -> tuple[ToolCall, ...]:
    return tuple(ToolCall.coerce(c) for c in json.loads(text)) if text else ()


def _tool_json(tool: dict[str, Any] | None) -> str | None:
    return json.dumps(tool, ensure_ascii=False, default=str) if tool is not None else None


class Store:
    """The conversation history; safe to use from several threads (one connection, one lock)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config.history_path()
        self._lock = threading.Lock()
        try:
            config.writable_folder(self.path.parent, "the history")
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL skips the fsync per commit (a dozen a second while answers stream); in WAL mode a commit
            # still survives the process being killed, only a power cut may lose the last few
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the history file {self.path} cannot be used: {exc}",
                hint="move it aside (it is only history) and start again",
            ) from None

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one migration per transaction, so a crash leaves a known version."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._db.close()
            raise StoreError(
                f"the history file {self.path} was written by a newer llmspell (schema {version}; this one knows "
                f"up to {SCHEMA_VERSION})",
                hint="upgrade llmspell, or point LLMSPELL_HOME at another folder",
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            statements = [x.strip() for x in MIGRATIONS[number - 1].split(";") if x.strip()]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    self._db.execute(statement)
                # PRAGMA takes no parameters; number is our own int
                self._db.execute(f"PRAGMA user_version = {number:d}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def version(self) -> int:
        """The schema version of the open file."""
        with self._reading() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads; a file damaged past its header is this error, not an internal one."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as exc:
                damaged = any(w in str(exc) for w in ("malformed", "not a database", "corrupt"))
                raise StoreError(
                    f"the history file {self.path} cannot be read: {exc}",
                    hint="move it aside (it is only history) and start again"
                    if damaged
                    else "try again; if it goes on, check the disk and what else has the file open",
                ) from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                with contextlib.suppress(sqlite3.Error):  # a damaged file may refuse the rollback too
                    self._db.execute("ROLLBACK")
                raise StoreError(
                    f"writing the history {self.path} failed: {exc}",
                    hint="if the file is damaged, move it aside (it is only history) and start again",
                ) from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    def save(self, conv: Conversation) -> None:
        """Create or update a conversation's own fields (not its messages)."""
        conv.updated = time.time()
        if not conv.title:
            first = next((e.content for e in conv.entries if e.role == "user"), "")
            conv.title = (first.splitlines()[0][:60] if first else "") or "New conversation"
        with self._tx() as db:
            db.execute(
                "INSERT INTO conversations (id, title, model, system, options, created, updated, context_from) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET title=excluded.title, "
                "model=excluded.model, system=excluded.system, options=excluded.options, updated=excluded.updated, "
                "context_from=excluded.context_from",
                (
                    conv.id,
                    conv.title,
                    conv.model,
                    conv.system,
                    json.dumps(conv.options.to_dict()),
                    conv.created,
                    conv.updated,
                    conv.context_from,
                ),
            )

    def add(self, conv: Conversation, entry: Entry) -> Entry:
        """Append a finished message to a conversation (saving the conversation, and any of its messages made in
        memory, first)."""
        conv.entries.append(entry)
        self.persist(conv)
        return entry

    def persist(self, conv: Conversation) -> None:
        """Store the messages of ``conv`` that are not stored yet, in order (a copy of a conversation made in
        memory is written with its first turn, so a copy nobody used leaves nothing in the history)."""
        new = [e for e in conv.entries if e.id is None]
        if not new:
            return
        self.save(conv)
        with self._tx() as db:
            for e in new:
                cur = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, model, stats, state, created, tool_calls, "
                    "tool_call_id, tool) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conv.id,
                        e.role,
                        e.content,
                        e.model,
                        _stats_json(e.stats),
                        e.state,
                        e.created,
                        _calls_json(e.tool_calls),
                        e.tool_call_id,
                        _tool_json(e.tool),
                    ),
                )
                e.id = cur.lastrowid

    def begin_answer(self, conv: Conversation, model: str) -> Entry:
        """Start an assistant message that will grow while it streams."""
        return self.add(conv, Entry("assistant", "", model=model, state="streaming"))

    def update_answer(self, entry: Entry, text: str) -> None:
        """Store the text received so far (call every few hundred milliseconds, not per token)."""
        entry.content = text
        with self._tx() as db:
            db.execute("UPDATE messages SET content=? WHERE id=?", (text, entry.id))

    def finish_answer(
        self,
        entry: Entry,
        text: str,
        stats: Stats | None,
        *,
        cancelled: bool = False,
        failed: bool = False,
        tool_calls: tuple[ToolCall, ...] = (),
    ) -> None:
        """Store the whole answer, its stats and the tools it called; a cancelled or failed one keeps its partial
        text, marked so."""
        entry.content, entry.stats, entry.tool_calls = text, stats, tool_calls
        entry.state = "failed" if failed else "cancelled" if cancelled else "done"
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET content=?, stats=?, state=?, tool_calls=? WHERE id=?",
                (text, _stats_json(stats), entry.state, _calls_json(tool_calls), entry.id),
            )

    def list(self, limit: int = 100) -> list[ConversationRow]:
        """The most recently updated conversations, newest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT c.id, c.title, c.model, c.updated, COUNT(m.id) FROM conversations c "
                "LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.updated DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [ConversationRow(*r) for r in rows]

    def load(self, conv_id: str) -> Conversation:
        """A conversation with all its messages; an id prefix of 6+ characters is enough."""
        with self._reading() as db:
            query = (
                "SELECT id, title, model, system, options, created, updated, context_from FROM conversations WHERE id "
            )
            rows = db.execute(query + "= ?", (conv_id,)).fetchall()
            if not rows and len(conv_id) >= 6:
                # an id is hex: % and _ typed by a user are characters to match, not wildcards
                pattern = conv_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                rows = db.execute(query + "LIKE ? ESCAPE '\\'", (pattern + "%",)).fetchall()
            if len(rows) != 1:
                raise StoreError(
                    f"no conversation {conv_id!r}" if not rows else f"{conv_id!r} matches several conversations",
                    hint="list them with the history command of your face",
                )
            cid, title, model, system, options, created, updated, context_from = rows[0]
            msgs = db.execute(
                "SELECT id, role, content, model, stats, state, created, tool_calls, tool_call_id, tool FROM messages "
                "WHERE conversation_id=? ORDER BY id",
                (cid,),
            ).fetchall()
        entries = [
            Entry(
                r[1],
                r[2],
                r[3],
                _stats_from(r[4]),
                r[5],
                r[0],
                r[6],
                tool_calls=_calls_from(r[7]),
                tool_call_id=r[8],
                tool=json.loads(r[9]) if r[9] else None,
            )
            for r in msgs
        ]
        return Conversation(
            model, system, Options.from_dict(json.loads(options)), title, entries, cid, created, updated, context_from
        )

    def find(self, key: str) -> Conversation:
        """A conversation by what a user types: "latest", a title (any case), an id or an id prefix."""
        if key == "latest":
            recent = self.list(1)
            if not recent:
                raise StoreError("there is no saved conversation to resume", hint="start one with: llmspell chat MODEL")
            return self.load(recent[0].id)
        folded = key.casefold()
        for row in self.list(100_000):
            if row.title.casefold() == folded:
                return self.load(row.id)
        return self.load(key)

    def delete(self, conv_id: str) -> None:
        """Remove a conversation and its messages."""
        conv = self.load(conv_id)
        with self._tx() as db:
            db.execute("DELETE FROM conversations WHERE id=?", (conv.id,))

    # ----- arena votes -----------------------------------------------------------------------------------

    def add_vote(self, vote: Vote) -> None:
        """Store a vote with its answers, all or nothing; a vote already stored (same id) is left as it is."""
        self.add_votes([vote])

    def add_votes(self, votes: builtins.list[Vote]) -> int:
        """Store several votes in one transaction (an import: all of them or none); returns how many were new."""
        added = 0
        with self._tx() as db:
            for vote in votes:
                added += self._insert_vote(db, vote)
        return added

    @staticmethod
    def _insert_vote(db: sqlite3.Connection, vote: Vote) -> int:
        if db.execute("SELECT 1 FROM arena_votes WHERE id=?", (vote.id,)).fetchone():
            return 0
        db.execute(
            "INSERT INTO arena_votes (id, created, prompt, system, category, options, winner, judge, parallel) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                vote.id,
                vote.created,
                vote.prompt,
                vote.system,
                vote.category,
                json.dumps(vote.options.to_dict()),
                str(vote.winner),
                vote.judge,
                int(vote.parallel),
            ),
        )
        db.executemany(
            "INSERT INTO arena_answers (vote_id, position, model, backend, quantization, digest, content, stats) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (vote.id, n, a.model, a.backend, a.quantization, a.digest, a.content, _stats_json(a.stats))
                for n, a in enumerate(vote.answers)
            ],
        )
        return 1

    def votes(self, category: str | None = None) -> builtins.list[Vote]:
        """Every stored vote, oldest first (only those tagged ``category`` when one is given)."""
        where, params = ("WHERE category = ?", (category,)) if category else ("", ())
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, created, prompt, system, category, options, winner, judge, parallel FROM arena_votes "
                f"{where} ORDER BY created, id",
                params,
            ).fetchall()
            answers: dict[str, list[Answer]] = {}
            for r in db.execute(
                "SELECT vote_id, model, backend, quantization, digest, content, stats FROM arena_answers "
                "ORDER BY vote_id, position"
            ):
                answers.setdefault(r[0], []).append(Answer(r[1], r[2], r[3], r[4], r[5], _stats_from(r[6])))
        return [
            Vote(
                id=r[0],
                created=r[1],
                prompt=r[2],
                system=r[3],
                category=r[4],
                options=Options.from_dict(json.loads(r[5])),
                winner=int(r[6]) if r[6].isdigit() else r[6],
                judge=r[7],
                parallel=bool(r[8]),
                answers=tuple(answers.get(r[0], ())),
            )
            for r in rows
        ]

    def categories(self) -> builtins.list[str]:
        """The tags the stored votes carry, sorted."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT DISTINCT category FROM arena_votes WHERE category IS NOT NULL ORDER BY category"
            ).fetchall()
        return [r[0] for r in rows]
