"""`python -m ragchat`: the `ragchat` command."""

import sys

from ragchat.cli.main import main

sys.exit(main())
