"""``python -m cds_server``: the command line (see :mod:`cds_server.tools.cli`)."""

import sys

from cds_server.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
