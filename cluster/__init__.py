"""The running server: replicated commands, the state machine, Raft glue,
request handling, delivery, heartbeats, monitoring and the command line."""
