"""`python -m esper` (and `torchrun -m esper`): the `esper` command."""

import sys

from esper.cli.main import main

sys.exit(main())
