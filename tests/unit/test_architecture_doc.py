"""docs/ARCHITECTURE.md stays true to the code where a test can tell."""

from __future__ import annotations

import re
from pathlib import Path

from bot.store import keys

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "ARCHITECTURE.md").read_text()


def test_every_key_the_doc_lists_is_built_by_keys_py():
    built = " ".join(
        str(v)
        for v in (
            keys.state_key("x"),
            keys.slack_key("x"),
            keys.output_key("x", "s"),
            keys.progress_key("x", "s"),
            keys.claim_key("x", 1),
            keys.active_run_key("p", "r"),
            keys.table_lock_key("p", "t"),
            keys.due_buckets(),
            keys.channel_key("C"),
            keys.channel_pace_key("C"),
            keys.requester_key("x"),
            keys.export_key("x"),
            keys.partner_history("p"),
            keys.requester_history("U"),
            keys.home_key("U"),
            keys.event_receipt_key("Ev"),
        )
    )
    listed = set(re.findall(r"`([A-Z]+#)[^`]*`", DOC)) | set(re.findall(r"/ `([A-Z]+)#?[^`]*`", DOC))
    assert listed, "the doc lists the table's keys"
    for prefix in listed:
        assert prefix in built or prefix.rstrip("#") in built, (
            f"ARCHITECTURE.md lists {prefix}, keys.py builds none"
        )
    for prefix in (
        "EXEC#",
        "CLAIM#",
        "OUTPUT#",
        "PROGRESS#",
        "ACTIVE#",
        "TABLE#",
        "PARTNER#",
        "REQUESTER#",
        "HOME#",
        "EVENT#",
    ):
        assert f"`{prefix}" in DOC or f"/ `{prefix}" in DOC, f"keys.py builds {prefix}, the doc omits it"


def test_every_module_the_doc_names_exists():
    for package, modules in re.findall(r"\| `bot/(\w+)/` \| (.+) \|", DOC):
        for module in re.findall(r"`(\w+\.py)`", modules):
            assert (REPO / "bot" / package / module).exists(), f"ARCHITECTURE.md names bot/{package}/{module}"


def test_the_layers_the_doc_states_are_the_ones_ci_enforces():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    for layer in layers:
        for name in re.split(r"\s*[|:]\s*", layer):
            assert f"`{name.removeprefix('bot.')}`" in DOC, f"{name} is a layer CI enforces; the doc omits it"
