"""The grctl daemon: socket server, state machine, storage, timers and dispatch."""
