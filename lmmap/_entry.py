"""The ``lmmap`` console script: imports the CLI inside a Ctrl-C guard.

Importing the command line takes a noticeable moment; a Ctrl-C during it
would otherwise print an interpreter traceback before :func:`lmmap.cli.main`
has a chance to turn it into one line.
"""

import sys


def main(argv=None):
    try:
        from lmmap.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main(argv)
