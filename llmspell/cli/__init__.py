"""The llmspell command-line face."""
