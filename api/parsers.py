"""The one request parser: JSON, strictly. Hostile bodies are 400s, never server errors."""

import codecs

from django.utils.http import parse_header_parameters
from rest_framework import parsers
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.utils import json


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """Build a JSON object, refusing a key given twice.

    Parsers disagree about `{"quantity": 1, "quantity": 9}` (first wins, last wins,
    error), so a proxy, a log or a client library may read one value while we act on
    the other.
    """
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise ParseError(f"JSON parse error - duplicate key {key!r}.")
        obj[key] = value
    return obj


def _loads(text_or_stream, *, strict: bool = True):
    load = json.load if hasattr(text_or_stream, "read") else json.loads
    try:
        return load(
            text_or_stream,
            parse_constant=json.strict_constant if strict else None,
            object_pairs_hook=_object_without_duplicate_keys,
        )
    except RecursionError:
        raise ParseError("JSON parse error - the body is nested too deeply.") from None
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from None


def request_json(request):
    """Parse a Django request's body as `JSONParser` would, without DRF's Request.

    For the lean views (api/lean.py): no body or no Content-Type reads as `{}` (as
    DRF does), another media type is a 415, and every refusal of the parser applies.
    """
    content_type = request.META.get("CONTENT_TYPE")
    body = request.body  # Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE here
    if not body or not content_type:
        return {}
    media_type, params = parse_header_parameters(content_type)
    if media_type.lower() != JSONParser.media_type:
        raise UnsupportedMediaType(content_type)
    try:
        text = body.decode(params.get("charset") or "utf-8")
    except (LookupError, UnicodeDecodeError) as exc:
        raise ParseError(f"JSON parse error - {exc}") from None
    return _loads(text)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with two more refusals: over-deep nesting and duplicate keys.

    NaN and Infinity are refused as in DRF (`STRICT_JSON`); Django checks the body's size
    (`DATA_UPLOAD_MAX_MEMORY_SIZE`) before any of this runs. Override `parse` only to
    accept more; everything refused here is a 400 `malformed_request`.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        return _loads(codecs.getreader(encoding)(stream), strict=self.strict)
