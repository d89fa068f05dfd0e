"""The HTTP face: Ollama-API and OpenAI-API server over the core (`llmspell serve`)."""
