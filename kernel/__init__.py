"""The llmspell Jupyter kernel (import name llmspell_kernel); the kernel itself arrives with its issue."""
