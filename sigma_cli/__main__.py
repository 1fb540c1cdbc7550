"""``python -m sigma_studio.cli``: the ``sigma`` command, for launchers that take a module (torchrun -m)."""

from .main import main

main()
