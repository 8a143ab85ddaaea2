"""The `recurrent` command line. Each command lives in its own module and registers itself here."""
