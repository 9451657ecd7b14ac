"""`python -m strom.node.cli ...`: the `strom` command (local clusters start their nodes so)."""

import logging
import sys

from strom.node.cli.main import main

logging.basicConfig(level=logging.WARNING)
sys.exit(main())
