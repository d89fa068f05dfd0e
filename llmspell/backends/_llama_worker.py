"""One loaded GGUF model owned by one thread: requests queue to it, tokens stream back, cancel stops it."""

from __future__ import annotations

import codecs
import ctypes
import logging
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmspell.backends._llama_tools import LazyGrammar
from llmspell.backends._threads import ThreadBudget
from llmspell.errors import (
    Cancelled,
    GenerationError,
    InsufficientResources,
    InvalidOptions,
    LLMSpellError,
    ModelFileCorrupt,
    PromptTooLong,
)
from llmspell.options import ENGINE_DEFAULTS
from llmspell.types import MAX_KEEP_ALIVE, Chunk, Embeddings, Options, Stats, StopReason, TokenLogprob

log = logging.getLogger(__name__)

# Sampling defaults when a request leaves an option unset: llama.cpp's own (llama-server, llama-cli).
DEFAULTS = ENGINE_DEFAULTS
#: restoring a saved state only pays off when it saves this many prompt tokens over what is in the context
_MIN_RESTORE_GAIN = 16
#: a context is saved before being overwritten when it would lose at least this many tokens (a save of a few
#: hundred tokens takes about 3 ms on smollm2, re-reading them 100 ms or more)
_MIN_SAVE_TOKENS = 16

Emit = Callable[[Any], None]


@dataclass
class Job:
    """One request for the worker: how to build the prompt tokens, the options, and where chunks go."""

    prompt: str
    #: True for a chat prompt rendered from a template (special tokens parsed, BOS as the template says)
    chat: bool
    add_bos: bool
    options: Options
    stop: tuple[str, ...]
    grammar: Any
    emit: Emit
    model_name: str
    num_ctx: int
    #: threads asked for explicitly (Options.num_threads); None lets the budget split the cores
    threads: int | None
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    #: texts to embed instead of a prompt to answer (a worker loaded for embeddings takes only these)
    embed: EmbedRequest | None = None
    #: a grammar that applies only from a trigger on (a tool call's opening), for tool_choice "auto"
    lazy: LazyGrammar | None = None
    #: the text that opens a tool call: when it is one token (a control token, like Mistral's [TOOL_CALLS]) its
    #: text is part of the answer, and writing it starts the lazy grammar
    tool_opening: str = ""


@dataclass(frozen=True)
class EmbedRequest:
    """Texts for an embedding worker, and whether a text longer than the context is cut (or refused)."""

    texts: tuple[str, ...]
    truncate: bool = True


@dataclass
class Report:
    """What the last job did, for stats and for checking cancellation from outside."""

    phase: str = "idle"  # prefill, generate, done
    prompt_tokens: int = 0
    prompt_eval_tokens: int = 0
    evaluated_at_abort: int | None = None
    generated_tokens: int = 0
    stop_reason: str = ""
    restored_state: bool = False
    saved_state: bool = False
    #: every thread count the job ran with (it changes when other models start or stop generating)
    threads_used: set[int] = field(default_factory=set)


@dataclass
class _SavedState:
    ids: np.ndarray
    data: Any  # ctypes buffer
    nbytes: int


_log_callback: Any = None


def quiet_engine() -> None:
    """Send llama.cpp's own log lines to Python logging (debug) instead of stderr, where they garble faces."""
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp
    import llama_cpp._logger

    engine_log = logging.getLogger("llmspell.llama_cpp")

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]  # a ctypes callback type
    def _forward(level: int, text: bytes, _user: Any) -> None:
        engine_log.debug(text.decode("utf-8", errors="replace").rstrip())

    _log_callback = _forward  # referenced for the life of the process: llama.cpp keeps the raw pointer
    llama_cpp.llama_log_set(_forward, ctypes.c_void_p(0))
    # llama-cpp-python silences a load (verbose=False) by pointing the whole process's stdout and stderr, file
    # descriptors and sys.* alike, at /dev/null for as long as the load takes. Another thread's output is lost
    # meanwhile (a TUI's screen updates, a server's log), and two loads at once restore each other's /dev/null,
    # leaving both streams silenced for good. The engine's lines already come here, so nothing needs hiding.
    import llama_cpp.llama
    import llama_cpp.llama_chat_format

    for module in (llama_cpp.llama, llama_cpp._internals, llama_cpp.llama_chat_format):
        if hasattr(module, "suppress_stdout_stderr"):
            module.suppress_stdout_stderr = _KeepStreams  # type: ignore[attr-defined]


class _KeepStreams:
    """Takes the place of llama-cpp-python's ``suppress_stdout_stderr``: leaves stdout and stderr alone."""

    def __init__(self, disable: bool = True) -> None:
        self.disable = disable

    def __enter__(self) -> _KeepStreams:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    neq = np.flatnonzero(a[:n] != b[:n])
    return int(neq[0]) if len(neq) else n


class ModelWorker:
    """Owns one ``Llama``; the only thread that ever touches it."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        threads: int,
        gpu_layers: int,
        keep_alive: float,
        state_cache_bytes: int,
        on_exit: Callable[[ModelWorker], None],
        name: str = "",
        budget: ThreadBudget | None = None,
        embedding: bool = False,
        pooling: int | None = None,
    ) -> None:
        self.path = path
        #: loaded to compute embeddings (a context that pools its outputs), not to generate
        self.embedding = embedding
        #: llama.cpp's pooling type for embeddings; None lets the model's own metadata decide
        self.pooling = pooling
        #: the name users gave the model, shown by `loaded()`
        self.name = name or path.stem
        self.n_ctx = n_ctx
        self.threads = threads
        self.budget = budget or ThreadBudget(threads)
        self.gpu_layers = gpu_layers
        self.keep_alive = keep_alive
        self.state_cache_bytes = state_cache_bytes
        self.on_exit = on_exit
        self.llama: Any = None
        self.load_time = 0.0
        self.last_used = time.monotonic()
        self.report = Report()
        self.alive = True
        #: why loading failed, for a caller that comes after the queue was drained
        self.load_error: BaseException | None = None
        self.busy = False
        #: True from taking a job until its last chunk is sent (``busy`` stays set a moment longer): a request
        #: arriving after that answer ended is queued here rather than starting a second copy of the model
        self.answering = False
        #: the prompt of the last job submitted (the backend routes a conversation back to the instance holding it)
        self.last_prompt = ""
        #: held by the backend while it decides whether to submit to this worker or retire it
        self.lock = threading.Lock()
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._current: Job | None = None
        self._states: OrderedDict[int, _SavedState] = OrderedDict()
        self._state_seq = 0
        self._pending_load = 0.0
        self._cancel_event: threading.Event | None = None
        self._abort_cb: Any = None
        self._null_cb: Any = None
        self._thread = threading.Thread(target=self._run, name=f"llama:{path.name}", daemon=True)
        self._thread.start()

    # ----- called from other threads -------------------------------------------------

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the worker is retiring (the caller makes a new one)."""
        with self.lock:
            if not self.alive:
                return False
            self.last_prompt = job.prompt
            self._q.put(job)
            return True

    def stop(self, wait: bool = True) -> None:
        """Unload now: the answer in progress is cancelled, queued requests fail with Cancelled; optionally wait."""
        with self.lock:
            self.alive = False
            current = self._current
            if current is not None:
                current.cancel.set()
            self._drain(Cancelled("the model was unloaded before this request ran"))
            self._q.put(None)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)

    @property
    def pending(self) -> int:
        """Jobs waiting in the queue."""
        return self._q.qsize()

    # ----- the worker thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load(self.n_ctx)
        except BaseException as exc:  # a failed load must reach every waiting caller, not kill the thread silently
            with self.lock:
                self.alive = False
                self.load_error = exc
            self._drain(exc)
            self.on_exit(self)
            return
        while True:
            # bounded here too: a keep-alive the timers cannot hold (NaN, inf, 1e300) raised OverflowError in the
            # wait below, which ended this thread with the model still registered, so every later request hung
            keep = self.keep_alive
            try:
                if keep < 0 or keep != keep:
                    # until unloaded (before, this took the no-wait branch: -1 unloaded the model at once)
                    job = self._q.get()
                elif keep == 0:
                    job = self._q.get_nowait()
                else:
                    job = self._q.get(timeout=min(keep, MAX_KEEP_ALIVE))
            except queue.Empty:
                with self.lock:
                    if not self._q.empty():
                        continue
                    self.alive = False
                break
            if job is None:
                break
            self.busy = self.answering = True
            self._current = job
            try:
                self._serve(job)
            except BaseException as exc:
                log.debug("job failed", exc_info=True)
                self.answering = False
                self._send(job, exc if isinstance(exc, LLMSpellError) else GenerationError(f"generation failed: {exc}"))
            finally:
                self._current = None
                self.busy = self.answering = False
                self.last_used = time.monotonic()
        self._drain(Cancelled("the model was unloaded before this request ran"))
        self._close()
        self.on_exit(self)

    def _drain(self, exc: BaseException) -> None:
        while True:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._send(job, exc)

    @staticmethod
    def _send(job: Job, item: Any) -> bool:
        try:
            job.emit(item)
            return True
        except RuntimeError:  # the consumer's event loop is closed: nobody is listening any more
            job.cancel.set()
            return False

    def _load(self, n_ctx: int) -> None:
        start = time.perf_counter()  # the first import of the engine is part of what loading costs
        from llama_cpp import Llama

        quiet_engine()
        self._close()
        extra: dict[str, Any] = {}
        if self.embedding:
            import llama_cpp

            # a text is read in one batch: a model that attends both ways (BERT) needs every token in one ubatch
            extra = {"embedding": True, "n_batch": n_ctx, "n_ubatch": n_ctx}
            extra["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if self.pooling is None else self.pooling
        try:
            self.llama = Llama(
                **{
                    "model_path": str(self.path),
                    "n_ctx": n_ctx,
                    "n_batch": min(512, n_ctx),
                    "n_threads": self.threads,
                    "n_threads_batch": self.threads,
                    "n_gpu_layers": self.gpu_layers,
                    "verbose": False,
                    **extra,
                }
            )
        except MemoryError:
            raise InsufficientResources(
                f"not enough memory to load {self.path.name} with a {n_ctx}-token context",
                hint="close other programs, lower num_ctx, or choose a smaller quantization",
            ) from None
        except ValueError as exc:
            raise ModelFileCorrupt(
                f"llama.cpp could not load {self.path}: {exc}",
                hint="the file was not changed; re-download it or pull the model again",
            ) from None
        self.n_ctx = n_ctx
        self.load_time = time.perf_counter() - start
        self._pending_load += self.load_time
        self._states.clear()
        import llama_cpp

        @llama_cpp.ggml_abort_callback  # type: ignore[untyped-decorator]  # a ctypes callback type
        def _abort(_data: Any) -> bool:
            event = self._cancel_event
            return event is not None and event.is_set()

        self._abort_cb = _abort  # kept referenced: llama.cpp holds only the raw pointer
        self._null_cb = llama_cpp.ggml_abort_callback()

    def _close(self) -> None:
        if self.llama is not None:
            self.llama.close()
            self.llama = None
            self._states.clear()

    def _set_abort_callback(self, on: bool) -> None:
        import llama_cpp

        # installed only while a prompt is evaluated: during generation a per-token check is enough and the
        # callback (hundreds of calls per token) would cost throughput
        llama_cpp.llama_set_abort_callback(self.llama._ctx.ctx, self._abort_cb if on else self._null_cb, None)

    # ----- prefix reuse across conversations -----------------------------------------

    def _save_current(self) -> None:
        import llama_cpp

        llm = self.llama
        n = llm.n_tokens
        ids = np.array(llm.input_ids[:n], dtype=np.intc)
        for key, st in list(self._states.items()):
            # a state that is a prefix of the one being saved is superseded by it
            if len(st.ids) <= n and _common_prefix(st.ids, ids) == len(st.ids):
                del self._states[key]
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(ctx, buf, size)
        self._state_seq += 1
        self._states[self._state_seq] = _SavedState(ids=ids, data=buf, nbytes=int(written))
        self.report.saved_state = True
        total = sum(s.nbytes for s in self._states.values())
        while total > self.state_cache_bytes and len(self._states) > 1:
            _, old = self._states.popitem(last=False)
            total -= old.nbytes

    def _restore(self, key: int) -> None:
        import llama_cpp

        st = self._states.pop(key)
        llm = self.llama
        if llama_cpp.llama_state_set_data(llm._ctx.ctx, st.data, st.nbytes) != st.nbytes:
            raise GenerationError("restoring a saved conversation state failed")
        llm.input_ids[: len(st.ids)] = st.ids
        llm.n_tokens = len(st.ids)
        llm._requires_eval = True
        self.report.restored_state = True

    def _prepare_context(self, tokens: np.ndarray) -> int:
        """Make the context hold the longest available prefix of ``tokens``; return how many are reused."""
        llm = self.llama
        current = np.asarray(llm.input_ids[: llm.n_tokens])
        have = _common_prefix(current, tokens)
        best_key, best = None, have
        for key, st in self._states.items():
            lp = _common_prefix(st.ids, tokens)
            if lp > best:
                best_key, best = key, lp
        diverging = llm.n_tokens - have >= _MIN_SAVE_TOKENS
        if best_key is not None and best - have >= _MIN_RESTORE_GAIN:
            if diverging:
                self._save_current()
            self._restore(best_key)
            have = best
        elif diverging and self.state_cache_bytes > 0:
            self._save_current()
        # llama-cpp-python re-evaluates the last prompt token when the whole prompt is cached
        return have - 1 if have == len(tokens) else have

    # ----- generation --------------------------------------------------------------------

    def _serve(self, job: Job) -> None:

        if job.cancel.is_set():
            return
        self.report = Report(phase="prefill")
        if job.num_ctx != self.n_ctx:
            self._load(job.num_ctx)
        llm = self.llama
        self.budget.enter()
        try:
            if job.embed is not None:
                self._embed(job, job.embed, llm)
            else:
                self._generate(job, llm)
        finally:
            self.budget.leave()

    def _embed(self, job: Job, request: EmbedRequest, llm: Any) -> None:
        """One vector per text (pooled as the model says, else the mean of its tokens), sent as one Embeddings.
        Texts are packed into as few decodes as the batch holds, each its own sequence, as llama-server does:
        one text per decode was 10-16% slower on short texts."""
        import llama_cpp

        self._set_threads(job, llm)
        load_time, self._pending_load = self._pending_load, 0.0
        start = time.perf_counter()
        n_embd = llm.n_embd()
        if llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_RANK:
            # a reranker gives one score per text, not a vector: reading a vector would read past its output
            raise InvalidOptions(
                f"{job.model_name} is a reranker: it scores texts against a query and gives no embeddings",
                hint="use an embedding model (nomic-embed-text, bge-m3) or any chat model",
            )
        pooled = llm.pooling_type() != llama_cpp.LLAMA_POOLING_TYPE_NONE
        # without pooling the engine gives a row per token: one text per decode keeps the rows apart simply
        max_seqs = min(int(llm.context_params.n_seq_max), 64) if pooled else 1
        vectors: list[list[float]] = []
        total = 0
        packed: list[tuple[int, list[int]]] = []

        def decode() -> None:
            llm._batch.reset()
            for seq, (_, tokens) in enumerate(packed):
                llm._batch.add_sequence(tokens, seq, True)
            llm._ctx.kv_cache_clear()
            try:
                llm._ctx.decode(llm._batch)
            except RuntimeError as exc:
                if job.cancel.is_set():
                    raise Cancelled("the embedding was cancelled") from None
                which = ", ".join(str(i + 1) for i, _ in packed)
                raise GenerationError(f"llama.cpp failed while embedding text(s) {which}: {exc}") from None
            for seq, (_, tokens) in enumerate(packed):
                if pooled:
                    ptr = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, seq)
                    vectors.append([float(x) for x in ptr[:n_embd]])
                else:
                    ptr = llama_cpp.llama_get_embeddings(llm._ctx.ctx)
                    rows = np.ctypeslib.as_array(ptr, shape=(len(tokens) * n_embd,)).reshape(len(tokens), n_embd)
                    vectors.append(rows.mean(axis=0).astype(float).tolist())
            packed.clear()
            if job.cancel.is_set():
                raise Cancelled("the embedding was cancelled")

        # a text given twice is read once: within one request the same text always gets the same vector (packed
        # at another place of a batch it would differ in the last float digits)
        unique = list(dict.fromkeys(request.texts))
        counts = {text: request.texts.count(text) for text in unique} if len(unique) < len(request.texts) else {}
        self._cancel_event = job.cancel
        self._set_abort_callback(True)
        try:
            first = {text: i for i, text in reversed(list(enumerate(request.texts)))}
            for text in unique:
                i = first[text]  # its place in the request, as messages name it
                if job.cancel.is_set():
                    raise Cancelled("the embedding was cancelled")
                try:
                    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
                except RuntimeError as exc:
                    raise GenerationError(f"could not tokenize text {i + 1}: {exc}") from None
                if len(tokens) > self.n_ctx:
                    if not request.truncate:
                        raise PromptTooLong(
                            f"text {i + 1} is {len(tokens)} tokens but the context window is {self.n_ctx}",
                            hint="shorten it or raise num_ctx; or let it be cut (truncate, the default)",
                        )
                    tokens = tokens[: self.n_ctx]
                if not tokens:
                    raise InvalidOptions(f"text {i + 1} is empty", hint="send some text to embed")
                total += len(tokens) * counts.get(text, 1)
                if packed and (sum(len(t) for _, t in packed) + len(tokens) > self.n_ctx or len(packed) >= max_seqs):
                    decode()
                packed.append((i, tokens))
            if packed:
                decode()
        finally:
            self._set_abort_callback(False)
            self._cancel_event = None
            llm._batch.reset()
        if counts:
            by_text = dict(zip(unique, vectors, strict=True))
            vectors = [by_text[text] for text in request.texts]
        end = time.perf_counter()
        self.report.phase = "done"
        self.answering = False
        self._send(
            job,
            Embeddings(vectors, job.model_name, prompt_tokens=total, load_time=load_time, total_time=end - start),
        )

    def _set_threads(self, job: Job, llm: Any) -> None:
        n = job.threads or self.budget.share()
        if n != llm.n_threads:
            llm._ctx.set_n_threads(n, n)
            llm.n_threads = llm.n_threads_batch = n
        self.report.threads_used.add(n)

    def _generate(self, job: Job, llm: Any) -> None:
        import llama_cpp

        self._set_threads(job, llm)
        load_time, self._pending_load = self._pending_load, 0.0
        start = time.perf_counter()
        try:
            prompt_tokens = llm.tokenize(job.prompt.encode("utf-8"), add_bos=job.add_bos, special=job.chat)
        except RuntimeError as exc:
            raise GenerationError(f"could not tokenize the prompt: {exc}") from None
        n_prompt = len(prompt_tokens)
        if n_prompt == 0:
            raise InvalidOptions("the prompt is empty", hint="send some text")
        # a chat prompt must leave room for an answer (a conversation near the limit got answers of a few tokens,
        # shorter each turn, and never the chance to leave its oldest turns out); a raw completion may fill it
        reserve = min(job.options.max_tokens or 256, self.n_ctx // 4) if job.chat else 0
        if n_prompt + reserve > self.n_ctx:
            answer_room = f", with room for a {reserve}-token answer," if n_prompt < self.n_ctx else ""
            raise PromptTooLong(
                f"the prompt is {n_prompt} tokens{answer_room} but the context window is {self.n_ctx}",
                hint="raise num_ctx (e.g. --num-ctx 8192) or start a new conversation",
                size=n_prompt,
                limit=self.n_ctx,
            )
        # the prompt is accepted: an empty chunk says so before the prefill, which takes long for a long prompt (a
        # server sends its status line now, and a face knows the request left the queue)
        if not self._send(job, Chunk(model=job.model_name)):
            return
        room = self.n_ctx - n_prompt
        max_new = min(job.options.max_tokens or room, room)
        reused = self._prepare_context(np.asarray(prompt_tokens, dtype=np.intc))
        self.report.prompt_tokens = n_prompt
        self.report.prompt_eval_tokens = n_prompt - reused

        opts = job.options
        seed = opts.seed if opts.seed is not None and opts.seed >= 0 else random.getrandbits(32)
        llm.set_seed(seed)

        def get(name: str) -> float:
            value = getattr(opts, name)
            return DEFAULTS[name] if value is None else value

        vocab = llm._model.vocab
        stop_ids = self._stop_token_ids(job.stop)
        text_stops = tuple(s for s in job.stop if s)
        hold = max((len(s) for s in text_stops), default=0)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        generated = 0
        first_at: float | None = None
        reason: StopReason = "length"
        self._cancel_event = job.cancel
        self._set_abort_callback(True)
        special_ids = self._control_token_ids(job.tool_opening) if job.tool_opening else set()
        constrained = job.grammar is not None or job.lazy is not None
        if constrained:
            # Llama.generate's own chain checks every token of the vocabulary against the grammar, and knows no lazy
            # grammar: the sampler here checks the token it chose first (the instance attribute shadows the method
            # until the answer ends)
            lazy = (
                LazyGrammar(job.lazy.grammar, job.lazy.patterns, (*job.lazy.tokens, *special_ids))
                if job.lazy is not None
                else None
            )
            llm._init_sampler = lambda **kw: _GrammarFirst(llm, kw, job.grammar, lazy)
        gen = llm.generate(
            prompt_tokens,
            temp=float(get("temperature")),
            top_k=int(get("top_k")),
            top_p=float(get("top_p")),
            min_p=float(get("min_p")),
            repeat_penalty=float(get("repeat_penalty")),
            frequency_penalty=float(get("frequency_penalty")),
            presence_penalty=float(get("presence_penalty")),
            grammar=None,  # applied by _GrammarFirst
        )
        want_logprobs = opts.logprobs is not None
        held: list[TokenLogprob] = []  # for tokens whose text is held back (a stop string may start there)
        try:
            for token in gen:
                if first_at is None:
                    first_at = time.perf_counter()
                    self._set_abort_callback(False)
                    self.report.phase = "generate"
                self._set_threads(job, llm)  # another model may have started or finished meanwhile
                if job.cancel.is_set():
                    reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token) or token in stop_ids:
                    reason = "stop"
                    break
                generated += 1
                piece = llm._model.detokenize([token], special=token in special_ids)
                if want_logprobs:
                    held.append(_token_logprob(llm, token, piece, opts.logprobs or 0))
                text = decoder.decode(piece)
                if text_stops:
                    pending += text
                    cut = min((i for i in (pending.find(s) for s in text_stops) if i >= 0), default=-1)
                    if cut >= 0:
                        pending = pending[:cut]
                        reason = "stop"
                        break
                    safe = _safe_prefix(pending, text_stops, hold)
                    text, pending = pending[:safe], pending[safe:]
                if text:
                    chunk = Chunk(text=text, model=job.model_name, logprobs=tuple(held) if not pending else ())
                    if not pending:
                        held = []
                    if not self._send(job, chunk):
                        reason = "cancelled"
                        break
                if generated >= max_new:
                    reason = "length"
                    break
                if job.cancel.is_set():
                    reason = "cancelled"
                    break
        except RuntimeError as exc:
            if job.cancel.is_set():
                reason = "cancelled"
                self.report.evaluated_at_abort = llm.n_tokens
                # an aborted decode may leave cells past n_tokens; drop them so the next request starts clean
                llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
            else:
                raise GenerationError(f"llama.cpp failed while generating: {exc}") from None
        finally:
            gen.close()
            if constrained:
                del llm._init_sampler
            self._set_abort_callback(False)
            self._cancel_event = None
        end = time.perf_counter()
        # the bytes of a character cut by the token budget are dropped: decoding them would end the answer in U+FFFD
        tail = pending if reason != "cancelled" else ""
        first = first_at if first_at is not None else end
        stats = Stats(
            prompt_tokens=n_prompt,
            prompt_eval_tokens=n_prompt - reused,
            generated_tokens=generated,
            load_time=load_time,
            # from the request to its first token, waiting in the queue included, loading the model not
            time_to_first_token=max(0.0, first - job.submitted - load_time),
            prompt_eval_time=first - start,
            generation_time=end - first if first_at is not None else 0.0,
            total_time=end - job.submitted,
            stop_reason=reason,
        )
        self.report.phase = "done"
        self.report.generated_tokens = generated
        self.report.stop_reason = reason
        self.answering = False
        self._send(
            job, Chunk(text=tail, done=True, stats=stats, model=job.model_name, logprobs=tuple(held) if tail else ())
        )

    def _control_token_ids(self, text: str) -> set[int]:
        """The id of ``text`` when it is one control token (Mistral's [TOOL_CALLS], Qwen's <tool_call>), else none:
        a plain one-token text such as llama3's "{" would trigger the lazy grammar anywhere in an answer."""
        special = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        plain = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return {special[0]} if len(special) == 1 and len(plain) > 1 else set()

    def _stop_token_ids(self, stops: tuple[str, ...]) -> set[int]:
        """Stop strings that are single special tokens (e.g. <end_of_turn>) are matched by id."""
        ids = set()
        for s in stops:
            toks = self.llama.tokenize(s.encode("utf-8"), add_bos=False, special=True)
            if len(toks) == 1:
                ids.add(toks[0])
        return ids


class _GrammarFirst:
    """The sampler ``Llama.generate`` uses for an answer held to a grammar (from its start, or lazily from a trigger
    on): it picks a token as the free chain would (penalties, then greedy or top-k, typical, top-p, min-p,
    temperature), checks only that token against the grammar, and only when the grammar refuses it picks again with
    the grammar applied to every candidate, as llama.cpp's own sampler does. Llama.generate's chain applied the
    grammar to the whole vocabulary at every token: 2x the time of a forced call on gemma3's 262k tokens."""

    def __init__(self, llm: Any, kw: dict[str, Any], grammar: Any, lazy: LazyGrammar | None) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.llm = llm
        # llama-cpp-python's wrappers are untyped
        self.free = _internals.LlamaSampler()  # type: ignore[no-untyped-call]
        self.free.add_penalties(
            n_vocab=llm._n_vocab,
            penalty_last_n=llm.last_n_tokens_size,
            penalty_repeat=kw["repeat_penalty"],
            penalty_freq=kw["frequency_penalty"],
            penalty_present=kw["presence_penalty"],
        )
        temp = kw["temp"]
        if temp < 0.0:
            self.free.add_dist(llm._seed)
        elif temp == 0.0:
            self.free.add_greedy()  # type: ignore[no-untyped-call]
        else:
            self.free.add_top_k(kw["top_k"])
            self.free.add_typical(kw["typical_p"], 1)
            self.free.add_top_p(kw["top_p"], 1)
            self.free.add_min_p(kw["min_p"], 1)
            self.free.add_temp(temp)
            self.free.add_dist(llm._seed)
        self.grammar = _internals.LlamaSampler()  # type: ignore[no-untyped-call]
        if lazy is not None:
            self.grammar.add_grammar_lazy_patterns(llm._model, lazy.grammar, list(lazy.patterns), list(lazy.tokens))
        else:
            self.grammar.add_grammar(llm._model, grammar)
        self.candidates = _internals.LlamaTokenDataArray(n_vocab=llm._n_vocab)
        self.one = (llama_cpp.llama_token_data * 1)()
        self.one_array = llama_cpp.llama_token_data_array(data=self.one, size=1, selected=-1, sorted=False)

    def sample(self, ctx: Any, idx: int) -> int:
        """The next token: the free choice when the grammar takes it, else the best the grammar allows."""
        import ctypes

        import llama_cpp

        n_vocab = self.llm._n_vocab
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, idx), shape=(n_vocab,))
        candidates = self.candidates
        candidates.copy_logits(logits)
        every = ctypes.byref(candidates.candidates)
        llama_cpp.llama_sampler_apply(self.free.sampler, every)
        token = int(candidates.candidates_data.id[candidates.candidates.selected])
        entry = self.one[0]
        entry.id, entry.logit, entry.p = token, 1.0, 0.0  # type: ignore[assignment]  # ctypes takes the int
        self.one_array.size, self.one_array.selected, self.one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self.grammar.sampler, ctypes.byref(self.one_array))
        if not np.isfinite(entry.logit):
            candidates.copy_logits(logits)
            llama_cpp.llama_sampler_apply(self.grammar.sampler, every)
            llama_cpp.llama_sampler_apply(self.free.sampler, every)
            token = int(candidates.candidates_data.id[candidates.candidates.selected])
        llama_cpp.llama_sampler_accept(self.grammar.sampler, token)
        llama_cpp.llama_sampler_accept(self.free.sampler, token)
        return token


def _safe_prefix(text: str, stops: tuple[str, ...], hold: int) -> int:
    """How much of ``text`` can be sent without possibly splitting a stop sequence."""
    for k in range(min(hold - 1, len(text)), 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return len(text) - k
    return len(text)


def _token_logprob(llm: Any, token: int, piece: bytes, top: int) -> TokenLogprob:
    """The log-probability of ``token`` where it was sampled, from the model's own distribution (before
    temperature and the samplers), and the ``top`` likeliest tokens there."""
    import llama_cpp

    # the logits of the last decode, which the token was sampled from (llama-cpp-python keeps them in
    # ``scores`` only with logits_all, which would cost every prompt token a row)
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)
    peak = float(logits.max())
    lse = peak + float(np.log(np.exp(logits - peak).sum()))
    best: tuple[tuple[str, float, tuple[int, ...]], ...] = ()
    if top > 0:
        ids = np.argpartition(-logits, top)[:top]
        ids = ids[np.argsort(-logits[ids])]
        out = []
        for i in ids:
            raw = llm._model.detokenize([int(i)], special=False)
            out.append((raw.decode("utf-8", errors="replace"), float(logits[i]) - lse, tuple(raw)))
        best = tuple(out)
    return TokenLogprob(piece.decode("utf-8", errors="replace"), float(logits[token]) - lse, tuple(piece), best)
