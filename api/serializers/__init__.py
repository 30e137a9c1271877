"""Shapes of the API's input and output. Validation of form only; rules live in core.

One module per subject; every name is importable from here too (views use
`from api import serializers as s`, settings name `api.serializers.TokenObtainSerializer`).
"""

from api.serializers.accounts import *  # noqa: F403
from api.serializers.events import *  # noqa: F403
from api.serializers.fields import *  # noqa: F403
from api.serializers.orders import *  # noqa: F403
