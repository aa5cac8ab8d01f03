"""Built-in CLI commands, one module per command (or command group)."""
