"""``python -m cds_server``: the command line (see :mod:`cds_server.cli`)."""

import sys

from cds_server.cli import main

if __name__ == "__main__":
    sys.exit(main())
