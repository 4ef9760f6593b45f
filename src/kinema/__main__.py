"""``python -m kinema`` and ``torchrun -m kinema``: the ``kinema`` command line."""

from kinema.cli import main

main()
