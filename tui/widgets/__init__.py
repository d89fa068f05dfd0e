"""Widgets of llmspell-tui, grouped by feature."""
