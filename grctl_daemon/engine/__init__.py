"""The pure state machine of runs: no I/O, no clock of its own."""
