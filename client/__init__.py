"""Thin clients of chkdd: the Client, chkdctl, chkd-shim, the demo agent. Never imports the daemon."""
