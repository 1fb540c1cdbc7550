"""The ``sigma`` command line: a thin Typer + Rich layer over :mod:`model`."""
