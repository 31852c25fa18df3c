"""Text that came from people or data, made safe for Slack's mrkdwn before it meets our markup."""

from __future__ import annotations


def escape(text: str) -> str:
    """Slack's three escapes (&, <, >): such text can never become a mention, a link or markup
    of ours. Used wherever a message quotes a user's value, a partner's data or an AWS error."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
