"""Secrets never reach logs, errors or reports: every value registered here is masked."""

from __future__ import annotations

import re

_secrets: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)", re.I)


def register_secret(value: str | None) -> None:
    if value and len(value) >= 3:
        _secrets.add(value)


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
