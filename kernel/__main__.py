"""`python -m llmspell_kernel install [...]` installs the kernel spec; `python -m llmspell_kernel -f FILE` runs it."""

from __future__ import annotations

import sys


def main() -> int:
    """Dispatch to the installer or start the kernel (Jupyter starts it with -f CONNECTION_FILE)."""
    if len(sys.argv) > 1 and sys.argv[1] == "install":
        from llmspell_kernel.install import main as install_main

        return install_main(sys.argv[2:])
    from ipykernel.kernelapp import IPKernelApp

    from llmspell_kernel.kernel import LLMSpellKernel

    IPKernelApp.launch_instance(kernel_class=LLMSpellKernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
