"""The ``edge`` command for admins over SSH: a thin layer over the library.

Every command takes ``--db``, ``--config`` (or ``$EDGE_DB``, ``$EDGE_CONFIG``)
and ``--json``. Exit codes: 0 done, 1 refused (bad input, no face, unknown
name, …), 2 usage or configuration error. Any :class:`EdgeError` becomes one
line on stderr, never a traceback. Heavy modules are imported inside the
commands so ``edge --help`` and ``edge list`` start fast.

This module is the parser and dispatch: the ``edge`` group and its commands,
gathered from modules by theme: :mod:`edge.cli_people`, :mod:`edge.cli_recognition`,
:mod:`edge.cli_data`, :mod:`edge.cli_ops` and :mod:`edge.cli_fleet`; what they share
(options, context, failures) is :mod:`edge.cli_common`.
"""

from __future__ import annotations

import click

from . import cli_data, cli_fleet, cli_ops, cli_people, cli_recognition


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-access")
def main() -> None:
    """edge-access: enroll, remove and audit people; run and check the door."""


for _command in (
    # people
    cli_people.enroll,
    cli_people.list_,
    cli_people.remove,
    cli_people.rename,
    cli_people.forget,
    cli_people.set_,
    cli_people.disable,
    cli_people.enable,
    # recognition
    cli_recognition.verify,
    cli_recognition.identify,
    cli_recognition.eval_,
    cli_recognition.liveness,
    # audit and data
    cli_data.events,
    cli_data.export_,
    cli_data.import_,
    cli_data.backup,
    cli_data.restore,
    cli_data.reembed,
    cli_data.key,
    # operations
    cli_ops.run,
    cli_ops.status,
    cli_ops.models,
    cli_ops.doctor,
    cli_ops.bench,
    cli_ops.sync_,
    cli_ops.console_group,
    # several doors
    cli_fleet.fleet_group,
):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
