"""The version of mnist-bp, in one place (the package, the CLI and the download User-Agent)."""

__version__ = "0.1.0"
