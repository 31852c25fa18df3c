"""SnapStart on the ingress: a snapshot holds a ready world but no secret and no connection, and
every sandbox restored from it renews what must be its own (clients, credentials, secrets, owner
ids), as the Lambda Python runtime drives the hooks of `snapshot_restore_py`."""

from __future__ import annotations

import sys

import pytest
import snapshot_restore_py

from bot.handlers import ingress
from bot.handlers.services import Sandbox, Services
from tests.unit.handlers.test_secret_rotation import NEW, OLD, listing, secret  # noqa: F401


@pytest.fixture
def hooks(monkeypatch):
    """The runtime's registries, empty for this test (the module keeps them process-wide)."""
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])


def run_hooks(registered) -> None:
    """What the Lambda runtime does at the snapshot and at each restore."""
    for func, args, kwargs in registered:
        func(*args, **kwargs)


def answer(sandbox: Sandbox, event: dict) -> int:
    return int(ingress.answer(event, sandbox())["statusCode"])


def test_a_restored_sandbox_renews_what_is_its_own_and_keeps_the_catalog(secret, hooks):  # noqa: F811
    sandbox = Sandbox(lambda: Services.for_function(lean=True))
    assert ingress.register_snapstart_hooks(sandbox)
    ingress.warm(sandbox)  # what the module does at init on Lambda
    snapshotted = sandbox()
    assert answer(sandbox, listing(OLD)) == 200
    client = snapshotted.store.client
    owner = snapshotted.executor.owner
    assert snapshotted.store.get("rb-notarunyet") is None
    assert client._idle, "a table call leaves its connection open for the next one"

    run_hooks(snapshot_restore_py.get_before_snapshot())
    assert client._idle == [], "no connection in the snapshot"
    assert snapshotted.secrets._secrets is None, "no secret in the snapshot"
    assert snapshotted._app is None, "no app built with a secret"

    secret(NEW)  # rotated between the snapshot and this restore
    run_hooks(snapshot_restore_py.get_after_restore())
    restored = sandbox()
    assert restored is not snapshotted
    assert restored.catalog is snapshotted.catalog, "the catalog is what the snapshot saves"
    assert restored.store.client is not client
    assert restored.executor.owner != owner, "claims of two restored sandboxes never share an owner"
    assert restored.secrets().signing_secret == NEW, "the restore read the secret as it is now"
    assert restored._app is not None, "the app is ready before the first request"
    assert answer(sandbox, listing(NEW)) == 200
    assert answer(sandbox, listing(OLD)) == 401


def test_two_sandboxes_restored_from_one_snapshot_share_nothing_but_the_catalog(secret, hooks):  # noqa: F811
    sandbox = Sandbox(lambda: Services.for_function(lean=True))
    ingress.warm(sandbox)
    snapshotted = sandbox()
    snapshotted.before_snapshot()
    first, second = snapshotted.after_restore(), snapshotted.after_restore()
    assert first.catalog is second.catalog is snapshotted.catalog
    assert first.store.client is not second.store.client
    assert first.secrets is not second.secrets
    assert first.sessions is not second.sessions
    assert first.executor.owner != second.executor.owner


def test_without_the_runtimes_hooks_nothing_is_registered(monkeypatch):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # an import of it now fails
    assert ingress.register_snapstart_hooks(Sandbox(lambda: Services.for_function(lean=True))) is False


def test_the_functions_build_their_world_at_init_on_lambda_only(monkeypatch):
    from bot.handlers import services

    monkeypatch.delenv("AWS_LAMBDA_INITIALIZATION_TYPE", raising=False)
    assert not services.on_lambda()  # tests and the local pipeline build on first use
    for kind in ("on-demand", "provisioned-concurrency", "snap-start"):
        monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", kind)
        assert services.on_lambda()
