"""Built-in SAE architectures, one module each."""
