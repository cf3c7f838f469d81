"""``python -m safefcgi`` runs the same command line as the console script."""

import sys

from safefcgi.cli import main

sys.exit(main())
