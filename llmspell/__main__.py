"""``python -m llmspell`` runs the llmspell command."""

import sys

from llmspell.cli.main import main

sys.exit(main())
