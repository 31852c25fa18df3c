"""The stand-in's file upload is Slack's current flow, as strict as Slack: files.getUploadURLExternal,
the bytes POSTed to a short-lived loopback upload URL (exactly `length` of them), then
files.completeUploadExternal with channel_id and thread_ts, each file completed once."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from bot.local import slack_api
from bot.local.slack_api import ARCHIVED_CHANNEL, OUTSIDE_CHANNEL, SlackStandIn

from .test_slack_stand_in import ACME, TOKEN, raw, refusal


@pytest.fixture
def slack():
    stand_in = SlackStandIn(token=TOKEN)
    stand_in.start()
    yield stand_in
    stand_in.stop()


def thread(client: WebClient) -> str:
    return str(client.chat_postMessage(channel=ACME, text="parent")["ts"])


def post(url: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST", headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_files_upload_v2_puts_both_files_in_the_thread(slack):
    client = raw(slack)
    ts = thread(client)
    answer = client.files_upload_v2(
        file_uploads=[
            {"filename": "evidence.md", "content": "# héllo", "title": "Evidence (Markdown)"},
            {"filename": "evidence.json", "content": '{"a": 1}'},
        ],
        channel=ACME,
        thread_ts=ts,
        initial_comment="Evidence file",
    )
    assert [f["title"] for f in answer["files"]] == ["Evidence (Markdown)", "evidence.json"]
    (reply,) = slack.thread(ACME, ts)[1:]
    assert reply["text"] == "Evidence file" and [f["name"] for f in reply["files"]] == [
        "evidence.md",
        "evidence.json",
    ]
    assert {u.content for u in slack.uploaded(ACME, ts)} == {"# héllo".encode(), b'{"a": 1}'}
    methods = [c.method for c in slack.calls]
    assert methods[-3:] == [
        "files.getUploadURLExternal",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]


def test_the_upload_url_is_loopback_only_and_short_lived(slack, monkeypatch):
    client = raw(slack)
    issued = client.files_getUploadURLExternal(filename="a.txt", length=3)
    url = urllib.parse.urlsplit(issued["upload_url"])
    assert url.hostname == "127.0.0.1" and url.path.startswith("/upload/v1/")
    monkeypatch.setattr(slack_api, "UPLOAD_URL_SECONDS", 0.0)
    late = client.files_getUploadURLExternal(filename="b.txt", length=3)
    status, body = post(late["upload_url"], b"abc")
    assert status == 404 and "expired" in body
    assert (
        refusal(client.files_completeUploadExternal, files=[{"id": late["file_id"]}])["error"]
        == "file_not_found"
    )


def test_the_bytes_must_be_exactly_the_length_announced(slack):
    client = raw(slack)
    issued = client.files_getUploadURLExternal(filename="a.txt", length=5)
    status, body = post(issued["upload_url"], b"abc")
    assert status == 400 and "length mismatch" in body
    assert (
        refusal(client.files_completeUploadExternal, files=[{"id": issued["file_id"]}])["error"]
        == "file_not_found"
    )
    assert post(issued["upload_url"], b"abcde") == (200, "OK - 5")
    assert post(issued["upload_url"], b"abcde")[0] == 404, "an upload URL takes one file"


def test_a_multipart_upload_is_taken_as_curl_sends_it(slack):
    client = raw(slack)
    issued = client.files_getUploadURLExternal(filename="a.txt", length=4)
    body = (
        b'--XyZ\r\ncontent-disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"content-type: text/plain\r\n\r\nabcd\r\n--XyZ--\r\n"
    )
    assert post(issued["upload_url"], body, "multipart/form-data; boundary=XyZ") == (200, "OK - 4")


def test_bad_arguments_get_slacks_errors(slack):
    client = raw(slack)
    assert refusal(client.api_call, api_method="files.getUploadURLExternal", params={"filename": "a"})[
        "error"
    ] == ("invalid_arguments")
    assert refusal(client.files_getUploadURLExternal, filename="a", length=0)["error"] == "missing_argument"
    assert refusal(client.files_getUploadURLExternal, filename="a", length=2**31)["error"] == (
        "file_upload_size_restricted"
    )
    answer = refusal(client.api_call, api_method="files.completeUploadExternal", params={"channel_id": ACME})
    assert answer["error"] == "invalid_arguments"
    assert answer["response_metadata"]["messages"] == ["[ERROR] missing required field: files"]


def uploaded(client: WebClient) -> str:
    issued = client.files_getUploadURLExternal(filename="a.txt", length=1)
    assert post(issued["upload_url"], b"a")[0] == 200
    return str(issued["file_id"])


@pytest.mark.parametrize(
    ("channel", "error"),
    [
        ("U0DEVONCALL", "invalid_arguments"),  # a user id is not a channel id
        ("C0NOWHERE1", "invalid_channel"),
        (OUTSIDE_CHANNEL, "not_in_channel"),
        (ARCHIVED_CHANNEL, "posting_to_channel_denied"),
    ],
)
def test_a_channel_the_bot_cannot_share_in_is_refused_and_the_file_stays_unshared(slack, channel, error):
    client = raw(slack)
    file_id = uploaded(client)
    answer = refusal(client.files_completeUploadExternal, files=[{"id": file_id}], channel_id=channel)
    assert answer["error"] == error
    if error == "invalid_arguments":
        assert "^[CGDZ][A-Z0-9]{8,}$ [json-pointer:/channel_id]" in answer["response_metadata"]["messages"][0]
    assert slack.uploaded() == []
    client.files_completeUploadExternal(files=[{"id": file_id}], channel_id=ACME)  # still completable
    assert [u.file_id for u in slack.uploaded(ACME)] == [file_id]


def test_a_file_is_completed_once_and_a_thread_must_exist(slack):
    client = raw(slack)
    file_id = uploaded(client)
    answer = refusal(
        client.files_completeUploadExternal, files=[{"id": file_id}], channel_id=ACME, thread_ts="1.000001"
    )
    assert answer["error"] == "invalid_arguments"
    client.files_completeUploadExternal(files=[{"id": file_id}], channel_id=ACME, thread_ts=thread(client))
    again = refusal(client.files_completeUploadExternal, files=[{"id": file_id}], channel_id=ACME)
    assert again["error"] == "file_not_found"


def test_without_files_write_the_flow_stops_at_its_first_call(slack):
    narrow = SlackStandIn(token=TOKEN, scopes=("commands", "chat:write"))
    narrow.start()
    try:
        with pytest.raises(SlackApiError) as refused:
            raw(narrow).files_upload_v2(content="x", filename="x.md", channel=ACME)
    finally:
        narrow.stop()
    assert (
        refused.value.response["error"] == "missing_scope"
        and refused.value.response["needed"] == "files:write"
    )


def test_slack_sdk_reports_a_refused_upload(slack, monkeypatch):
    monkeypatch.setattr(slack_api, "UPLOAD_URL_SECONDS", 0.0)
    with pytest.raises((SlackRequestError, urllib.error.HTTPError)):
        raw(slack).files_upload_v2(content="x", filename="x.md", channel=ACME)
