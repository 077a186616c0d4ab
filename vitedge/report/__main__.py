"""`python -m vitedge.report write|gate ...`: the entry point; the commands are in vitedge.report.cli."""
import sys

from vitedge.report.cli import main

sys.exit(main())
