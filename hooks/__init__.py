"""The registry of CDS services: discovery, routing and validation all derive from it.

Each module declares one service for one hook; adding a hook is adding a
module and one line here.
"""

from __future__ import annotations

from hooks import appointment_book, order_dispatch, order_select, order_sign
from hooks.base import HookService, OrderTarget

SERVICES: dict[str, HookService] = {
    module.SERVICE.id: module.SERVICE for module in (order_sign, order_select, order_dispatch, appointment_book)
}

__all__ = ["SERVICES", "HookService", "OrderTarget"]
