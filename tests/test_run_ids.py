"""Run ids cannot be guessed from a config (64 random bits), and a Space's page shows no server paths."""

import re
from pathlib import Path

from studio.config import RunConfig
from studio.runs import new_run_id
from studio.ui.session import shown_folder


def test_two_runs_of_one_config_in_one_second_get_different_unpredictable_ids():
    cfg = RunConfig().validate()
    ids = {new_run_id(cfg) for _ in range(50)}  # all inside (at most) a couple of seconds
    assert len(ids) == 50
    for run_id in ids:
        random_part = run_id.rsplit("-", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{16}", random_part)  # 64 bits from secrets.token_hex


def test_no_server_path_on_a_space(monkeypatch):
    folder = Path("/srv/secret/outputs/20260101-000000-digits-optimal-ddim50-0123456789abcdef")
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert shown_folder(folder) == str(folder)
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    assert shown_folder(folder) == folder.name
