"""``python app.py`` with a gate, for the browser test of a queued job's cancel: while the file named by
``SIGMA_TEST_GATE`` exists, a job that holds the queue's slot waits at its next denoising step (``Jobs.check``)
and marks that it does with ``<gate>.held``; deleting the gate lets it go on. So the test holds the one slot for
exactly as long as it needs, on a fast machine or a loaded one, instead of hoping a long job outlasts its clicks."""

import os
import sys
import time
from pathlib import Path

from sigma_studio.cli.main import main
from sigma_studio.webui.jobs import Jobs

GATE = Path(os.environ["SIGMA_TEST_GATE"])
_check = Jobs.check


def _gated_check(self: Jobs, token: str | None) -> None:
    while GATE.exists():  # the test deletes the gate: a wait on a state the test sets, in the test's server only
        GATE.with_name(GATE.name + ".held").touch()
        time.sleep(0.05)
    _check(self, token)


if __name__ == "__main__":
    Jobs.check = _gated_check
    main(["webui", *sys.argv[1:]])
