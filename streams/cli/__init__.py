"""The `recstream` command line: our commands, then faust's."""
