"""The ``xai-tui`` command: the Textual app and the headless subcommands."""
