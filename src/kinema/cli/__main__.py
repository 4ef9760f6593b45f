"""``python -m kinema.cli``: the ``kinema`` command line."""

from kinema.cli import main

main()
