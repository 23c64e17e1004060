"""chkd-mcp: chkd's MCP server (the official SDK, stdio). Only this package imports `mcp`."""
