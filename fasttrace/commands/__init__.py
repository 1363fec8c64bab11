"""Subcommands of the fasttrace command line, one module each."""
