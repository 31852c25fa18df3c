"""The manifest asks for exactly the scopes the code's Slack calls need, per Slack's own spec.

`slack_web_api_spec.json` is an extract of Slack's OpenAPI spec (slackapi/slack-api-specs,
web-api/slack_web_openapi_v2_without_examples.json): each method the bot or the stand-in knows,
with the scopes and errors the spec names.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml
from slack_sdk import WebClient

from bot.local.slack_api import WEB_API_METHODS

ROOT = Path(__file__).resolve().parents[3]
SPEC = json.loads((Path(__file__).with_name("slack_web_api_spec.json")).read_text(encoding="utf-8"))[
    "methods"
]
# The spec predates granular bot scopes: its `chat:write:bot` is `chat:write` for a bot token.
GRANULAR = {"chat:write:bot": "chat:write"}
# Errors Slack documents today that the 2020 spec does not list for the method.
DOCUMENTED_SINCE = {
    "chat.postMessage": {"invalid_blocks", "thread_not_found"},
    "chat.update": {"invalid_blocks"},
    "chat.postEphemeral": {"invalid_blocks"},
    "conversations.history": {"not_in_channel"},
    "conversations.replies": {"not_in_channel"},
    "usergroups.users.list": {"no_such_subteam"},
    "users.info": set(),
    "conversations.open": set(),
    "auth.test": set(),
    "files.getUploadURLExternal": set(),
    # Slack answers it for a channel the bot is not in (slackapi issues; the method page omits it).
    "files.completeUploadExternal": {"not_in_channel"},
    # The spec lists no errors for views.open; docs.slack.dev/reference/methods/views.open does.
    "views.open": {
        "invalid_arguments",
        "invalid_trigger_id",
        "expired_trigger_id",
        "exchanged_trigger_id",
        "view_too_large",
    },
    # Nor for views.update; its method page (and the spec's older method docs) list these.
    "views.update": {"invalid_arguments", "hash_conflict", "not_found", "view_too_large"},
    # Nor for views.publish; docs.slack.dev/reference/methods/views.publish lists hash_conflict,
    # not_enabled (the Home tab is off) and view_too_large, and shows invalid_arguments
    # ("invalid `user_id`") as its typical error.
    "views.publish": {"invalid_arguments", "hash_conflict", "not_enabled", "view_too_large"},
}
# slack_sdk helpers that make several Web API calls: what each one calls.
COMPOSITE = {"files.upload.v2": {"files.getUploadURLExternal", "files.completeUploadExternal"}}
MANIFEST_ONLY = {"commands"}  # the slash command itself, not a Web API call


def methods_the_bot_calls() -> set[str]:
    """`client.chat_postMessage` and `api_call("chat.postMessage")` anywhere in bot/ (the local
    tools in bot/local talk to the stand-in, not to Slack for the bot)."""
    found: set[str] = set()
    for path in (ROOT / "bot").rglob("*.py"):
        if "local" in path.relative_to(ROOT / "bot").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "api_call"
            ):
                if node.args and isinstance(node.args[0], ast.Constant):
                    found.add(str(node.args[0].value))
            elif isinstance(
                node, ast.Attribute
            ):  # called, or handed on to be called (`self._call(c.chat_update, ...)`)
                name = node.attr
                if "_" in name and not name.startswith("_") and callable(getattr(WebClient, name, None)):
                    found.add(name.replace("_", "."))
    for helper, methods in COMPOSITE.items():
        if helper in found:
            found = (found - {helper}) | methods
    return found


def manifest_scopes() -> set[str]:
    manifest = yaml.safe_load((ROOT / "slack-manifest.yaml").read_text(encoding="utf-8"))
    return set(manifest["oauth_config"]["scopes"]["bot"])


def test_the_code_calls_the_methods_the_publisher_and_the_buttons_need():
    called = methods_the_bot_calls()
    assert {"chat.postMessage", "chat.update", "conversations.history", "conversations.replies"} <= called
    assert {"conversations.open", "chat.postEphemeral", "usergroups.users.list"} <= called
    assert {"files.getUploadURLExternal", "files.completeUploadExternal"} <= called  # files_upload_v2
    assert {"views.open", "views.update", "views.publish"} <= called  # start form, App Home


def test_the_manifest_subscribes_app_home_opened_on_the_one_request_url_with_the_home_tab_on():
    manifest = yaml.safe_load((ROOT / "slack-manifest.yaml").read_text(encoding="utf-8"))
    events = manifest["settings"]["event_subscriptions"]
    assert events["bot_events"] == ["app_home_opened"]
    assert events["request_url"] == manifest["settings"]["interactivity"]["request_url"]
    assert events["request_url"] == manifest["features"]["slash_commands"][0]["url"]
    home = manifest["features"]["app_home"]
    assert home["home_tab_enabled"] is True
    assert home["messages_tab_enabled"] is True, "refusals of Home clicks are DMs"


def test_every_method_the_bot_calls_is_one_the_stand_in_answers_as_slack_would():
    assert methods_the_bot_calls() <= set(WEB_API_METHODS)


def test_the_manifest_asks_for_exactly_the_scopes_of_the_methods_the_code_calls():
    needed = {scope for method in methods_the_bot_calls() for scope in WEB_API_METHODS[method].scopes}
    assert manifest_scopes() == needed | MANIFEST_ONLY


def test_the_stand_ins_scopes_are_the_ones_slacks_spec_names():
    for method, known in WEB_API_METHODS.items():
        spec_scopes = {GRANULAR.get(s, s) for s in SPEC[method]["scopes"]} - {"none"}
        assert set(known.scopes) <= spec_scopes, method
        assert bool(known.scopes) == bool(spec_scopes), method


def test_the_stand_in_answers_only_errors_slack_documents_for_the_method():
    for method, known in WEB_API_METHODS.items():
        documented = set(SPEC[method]["errors"]) | DOCUMENTED_SINCE[method]
        assert known.errors - {"no_text", "msg_too_long"} <= documented, method
