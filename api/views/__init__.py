"""HTTP endpoints. Each view parses input, calls one service or selector, renders output.

One module per subject; the hot views (the purchase, the order poll, the event read,
the waiting room's join and states) stand beside their neighbours on the lean base of
api/lean.py. Every view is importable from here (api/urls.py routes `views.<Name>`).
"""

from api.views.accounts import *  # noqa: F403
from api.views.buyer_page import *  # noqa: F403
from api.views.events import *  # noqa: F403
from api.views.ops import *  # noqa: F403
from api.views.orders import *  # noqa: F403
from api.views.waiting_room import *  # noqa: F403
from api.views.waitlist import *  # noqa: F403
