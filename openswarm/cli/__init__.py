"""Command-line interface: thin over the layers below."""
