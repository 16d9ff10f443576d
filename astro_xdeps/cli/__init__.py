"""``astro-xdeps``: the operator's command line.

Every command that talks to a deployment takes ``--conn-id`` (default ``xdeps_default``,
then ``DEPLOYMENT_URL``/``API_TOKEN``). Exit codes: 0 success, 1 the check or action
failed, 2 bad usage or configuration.

Each command's module registers its own subparser (``add_parser``) with its handler
(``set_defaults(func=...)``); :mod:`astro_xdeps.cli.main` builds the parser and turns an
uncaught :class:`~astro_xdeps.exceptions.XdepsError` into exit code 2. The command modules import
only this package, never ``main``.
"""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_conn_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conn-id",
        default="xdeps_default",
        help="Airflow connection of the target deployment (default: xdeps_default, "
        "else the DEPLOYMENT_URL and API_TOKEN environment variables)",
    )
