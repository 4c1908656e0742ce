"""Allow `python -m livepolicy.agent`."""

import sys

from livepolicy.agent.main import run_agent

sys.exit(run_agent())
