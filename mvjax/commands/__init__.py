"""Subcommands of the mvjax CLI that belong to no larger program."""
