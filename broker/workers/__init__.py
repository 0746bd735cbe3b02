"""Worker processes: `[server] workers = N` runs one broker as N processes on one shared
PostgreSQL store, all serving the same gRPC port (SO_REUSEPORT), under a supervising process
that restarts a worker that dies and stops them all when it stops (`supervisor`); which ports
each worker binds is decided in one place (`plan`)."""
