"""The ``grctl`` command line (typer + rich)."""

import gc

# A command is a short process that mostly imports: with the default threshold (700) the cyclic
# collector runs hundreds of times on objects that all live until exit (~10 ms a command,
# bench --only cli). Long-lived commands (``grctl worker``) put the default back.
DEFAULT_GC_THRESHOLD = gc.get_threshold()
gc.set_threshold(100_000, 50, 100)
