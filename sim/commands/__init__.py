"""One module per ``tiosim`` subcommand, each with ``add_parser(subparsers)``."""
