"""A logging filter removing credentials from URLs that libraries log.

HTTP libraries put request URLs in log lines (httpx: "HTTP Request: POST https://...?usersig=...")
and in exception texts (aiohttp's connect timeouts and bad responses), and a Desk
URL carries the admin UserSig, a bearer credential valid for a day (docs/protocol.md B.1, B.2). IVH
and
command-channel URLs carry a signature (docs/protocol.md A.2). Attach the filter to the log
*handlers*
(a logger's own filters do not see records propagated from child loggers).
"""

from __future__ import annotations

import logging
import re

_SECRET_PARAMS = re.compile(r"\b(usersig|signature)=[^&\s\"'>]*", re.IGNORECASE)
# `scheme://user:password@`: the password of any URL with user information (mqtt.url may hold
# one, docs/configuration.md "Credentials in mqtt.url").
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@\"'<>]*):[^/\s@\"'<>]*@")


def redact_query(text: str) -> str:
    """`text` with the values of `usersig=` and `signature=`, and the password of every URL
    with user information, replaced by `***`."""
    return _USERINFO.sub(r"\1:***@", _SECRET_PARAMS.sub(r"\1=***", text))


class RedactQueryFilter(logging.Filter):
    """Rewrites any record whose message holds `usersig=` or `signature=` values."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        message = record.getMessage()
        redacted = redact_query(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
