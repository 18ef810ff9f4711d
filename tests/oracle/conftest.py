"""Fixtures of the oracle tests: a private, empty user oracle root for every test module.

The loader looks in the user oracle folder (``$PREFRL_ORACLE_DIR``) before the shipped checkpoints, so a
developer's own trained oracles must not change what these tests load, and the tests must not write
there. Module scope: module-scoped fixtures that load an oracle see the private root too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefrl.oracle.loading import ORACLE_DIR_ENV


@pytest.fixture(scope="module", autouse=True)
def private_user_oracles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$PREFRL_ORACLE_DIR`` set to an empty folder while the module runs."""
    root = tmp_path_factory.mktemp("user_oracles")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ORACLE_DIR_ENV, str(root))
        yield root


@pytest.fixture(autouse=True)
def fresh_echo() -> Iterator[None]:
    """Remove the stdout handler ``prefrl oracle`` puts on the ``prefrl.oracle`` logger after each test:
    it holds the stdout of the test that ran the command (pytest swaps stdout per test)."""
    yield
    log = logging.getLogger("prefrl.oracle")
    for handler in [h for h in log.handlers if getattr(h, "prefrl_echo", False)]:
        log.removeHandler(handler)
    log.setLevel(logging.NOTSET)
