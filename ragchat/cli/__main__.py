"""`python -m ragchat.cli`: the `ragchat` command."""

import sys

from ragchat.cli.main import main

sys.exit(main())
