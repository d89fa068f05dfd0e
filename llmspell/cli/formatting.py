"""Text the command line prints for the core's values (an answer's statistics in Ollama's --verbose form)."""

from __future__ import annotations

from llmspell.types import Stats


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.2f}ms" if seconds < 1 else f"{seconds:.3f}s"


def format_stats(stats: Stats) -> str:
    """Ollama's --verbose block, plus the first-token time and stop reason."""
    return "\n".join(
        [
            f"total duration:       {_fmt_s(stats.total_time)}",
            f"load duration:        {_fmt_s(stats.load_time)}",
            f"prompt eval count:    {stats.prompt_eval_tokens} token(s)"
            + (f" ({stats.cached_tokens} reused)" if stats.cached_tokens else ""),
            f"prompt eval duration: {_fmt_s(stats.prompt_eval_time)}",
            f"prompt eval rate:     {stats.prompt_tokens_per_s:.2f} tokens/s",
            f"eval count:           {stats.generated_tokens} token(s)",
            f"eval duration:        {_fmt_s(stats.generation_time)}",
            f"eval rate:            {stats.generation_tokens_per_s:.2f} tokens/s",
            f"time to first token:  {_fmt_s(stats.time_to_first_token)}",
            f"stop reason:          {stats.stop_reason}",
        ]
        + (["token counts:         counted here (the server sent no usage)"] if stats.estimated else [])
    )
