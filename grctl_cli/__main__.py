"""``python -m grctl_cli``: the same as the ``grctl`` command (``worker --reload`` runs it so)."""

from grctl_cli.app import main

main()
