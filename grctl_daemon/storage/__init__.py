"""Storage behind one interface (base.Storage); SQLite is the default backend."""
