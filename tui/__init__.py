"""llmspell-tui: the full-screen Textual face (import name llmspell_tui)."""
