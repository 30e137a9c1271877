"""Log formats: one JSON object per line in production, a readable line in a terminal."""

import logging

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class ConsoleFormatter(logging.Formatter):
    """Render `time level logger message key=value ...`, the JSON lines' fields in a line.

    For people reading a terminal (LOG_FORMAT=text, the default with DJANGO_DEBUG on):
    the `extra=` fields (`order_id`, `event_id`, ...) follow the message in the order
    they were given; a traceback, if any, follows on the next lines.
    """

    def __init__(self):
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        )
        line = (
            f"{self.formatTime(record, self.datefmt)}.{int(record.msecs):03d} "
            f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        if fields:
            line += "  " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line
