"""`python -m vitedge.report write|check ...`: the entry point; the commands are in vitedge.report.cli."""
import sys

from vitedge.report.cli import main

sys.exit(main())
