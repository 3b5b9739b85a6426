"""One module per ``pfha`` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. ``cli.main`` finds them here, so adding a subcommand is adding a file.
"""
