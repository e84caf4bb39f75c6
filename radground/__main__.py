"""``python -m radground``: the same as the ``radground`` command."""

from radground.cli import main

main()
