"""The door's side of the network: outbox publisher, rule sync, commands, status, discovery.

`Uplink` is what the daemon starts; everything else is a part it wires together.
"""

from accessd.uplink.service import Uplink

__all__ = ["Uplink"]
