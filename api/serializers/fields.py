"""Fields and validators every input shape shares: strict JSON types, one-line text."""

import re

from rest_framework import serializers

from core.models import User

MAX_TOTAL_TICKETS = 1_000_000
# Every C0/C1 control character, tab and newline included: names and venues are one line.
# So are the Unicode line and paragraph separators, and the bidirectional overrides and
# isolates, which make a name display as something else ("Trojan Source" spoofing).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: no strings, floats or booleans."""

    default_error_messages = {"invalid": "A JSON integer is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string: no numbers coerced into text."""

    default_error_messages = {"invalid": "A JSON string is required."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class UsernameField(StrictCharField):
    """A username, NFKC-normalized as Django's own forms do.

    Without it "ａｄｍｉｎ" (fullwidth) would be an account of its own beside "admin".
    """

    def to_internal_value(self, data):
        return User.normalize_username(super().to_internal_value(data))


def no_control_characters(value: str) -> None:
    if _CONTROL_CHARS.search(value):
        raise serializers.ValidationError("Control characters are not allowed.")
