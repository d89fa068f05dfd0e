"""The llmspell Jupyter kernel (import name llmspell_kernel): a cell is a prompt to a local LLM."""

from __future__ import annotations

__version__ = "0.1.0"

#: the kernel spec's name, as `jupyter kernelspec list` shows it
KERNEL_NAME = "llmspell"
#: the name Jupyter's kernel picker shows
DISPLAY_NAME = "LLMSpell (local LLM)"
#: the environment variable the kernel spec sets from ``install --default-model``
DEFAULT_MODEL_ENV = "LLMSPELL_KERNEL_MODEL"

__all__ = ["DEFAULT_MODEL_ENV", "DISPLAY_NAME", "KERNEL_NAME", "__version__"]
