"""`python -m veritrain` = the `veritrain` command."""

import sys

from veritrain.cli import main

sys.exit(main())
