"""chkdd: the daemon. Owns the database, the process table, git operations and merges."""
