"""The ``grctl`` command line (typer + rich)."""
