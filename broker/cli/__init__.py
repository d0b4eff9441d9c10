"""The command line: one module per command group; each parses, calls one use case, prints."""

from broker.cli.main import main

__all__ = ["main"]
