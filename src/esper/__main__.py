"""`python -m esper` (and `torchrun -m esper`): the `esper` command."""

import sys

try:
    from esper.cli.main import main
except KeyboardInterrupt:
    # Ctrl-C in the first instant, while the command line code is still being imported: there is
    # nothing to save yet, so the same one line and status as a Ctrl-C anywhere else.
    print("esper: interrupted", file=sys.stderr)
    exec("")  # clears CPython's uncaught-Ctrl-C mark, as explained below
    sys.exit(130)


def _forget_interrupts_already_handled() -> None:
    """Clear CPython's "ended by an uncaught Ctrl-C" mark before exiting with our own status.

    CPython sets that mark whenever a KeyboardInterrupt leaves code run from a string
    (`exec("...")`, which some libraries call while they are imported), even when a caller
    catches the exception afterwards, and it never clears it while the program runs. Under
    `python -m` (and so `torchrun -m`, whose ranks start that way) the interpreter reads the
    mark after the module has finished and then kills itself with SIGINT, overriding the
    status we return: a run that handled Ctrl-C and returned 130 ended as "killed by SIGINT"
    (status -2 for a parent process). A script run by path exits through another route that
    never reads the mark, which is why only the `-m` form showed it. Every evaluation of a
    string resets the mark first, so evaluating an empty one clears it; a KeyboardInterrupt
    that escapes main() never reaches this line and still ends the process by SIGINT.
    """
    exec("")


try:
    status: int | str | None = main()
except SystemExit as request:  # argparse's usage errors, --help and --version
    status = request.code
_forget_interrupts_already_handled()
sys.exit(status)
