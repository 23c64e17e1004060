"""chkdctl commands, one module per area (mirrors chkd.daemon.handlers). Each exports COMMANDS."""
