"""The CLI's log lines: a warning is shown once a command, however many requests of a loop draw it."""

from __future__ import annotations

import logging


def test_a_repeated_warning_is_shown_once_and_errors_always(capsys):
    from sigma_studio.cli import render

    render.setup_logging(False)
    try:
        log = logging.getLogger("sigma_studio.test")
        for _ in range(3):
            log.warning("this model was not trained to read box layouts")
        log.warning("another warning")
        log.error("a failure")
        log.error("a failure")
        err = capsys.readouterr().err
    finally:
        logging.getLogger().handlers.clear()
    assert err.count("warning: this model was not trained to read box layouts") == 1
    assert err.count("warning: another warning") == 1
    assert err.count("error: a failure") == 2
    render.setup_logging(False)  # the next command shows it again
    try:
        logging.getLogger("sigma_studio.test").warning("another warning")
        assert capsys.readouterr().err.count("warning: another warning") == 1
        render.setup_logging(False, once=False)  # a server (sigma webui) shows every one
        for _ in range(2):
            logging.getLogger("sigma_studio.test").warning("another warning")
        assert capsys.readouterr().err.count("warning: another warning") == 2
    finally:
        logging.getLogger().handlers.clear()
