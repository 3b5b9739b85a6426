"""One module per ``pfha`` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. ``cli.main`` finds them here, so adding a subcommand is adding a file.

Every command module is imported each time ``pfha`` starts (to list the commands), so its top
level imports only the standard library's light modules and :mod:`pfha.errors`; what
``add_arguments`` and ``run`` need they import themselves (``add_arguments`` runs only for the
chosen command). A command whose whole body needs a heavy package keeps it in a module whose
name starts with ``_`` (``_demo``), which is not a command and is imported by ``run``.
``tests/unit/test_cli_startup.py`` checks this.
"""
