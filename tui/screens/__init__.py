"""Screens of llmspell-tui."""
