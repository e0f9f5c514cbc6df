"""``python -m keymon`` and the ``keymon`` console script."""

import gc
import sys


def main() -> int:
    """Import the command line and run it.

    The cyclic garbage collector is paused while keymon's modules are imported: the imports
    create a few hundred thousand objects that live as long as the process (classes, schemas,
    functions), and the collector's passes over them while they were being created were about
    a sixth of a ``keymon check``'s start-up CPU (132 passes). They are then frozen
    (:func:`gc.freeze`): later passes skip them. The collector is on again before any command
    runs.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        from keymon.cli import main as cli_main
    finally:
        if enabled:
            gc.freeze()
            gc.enable()
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
