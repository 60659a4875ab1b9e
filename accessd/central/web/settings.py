"""The web's settings as plain data, so that `accessd central web` can hand them to uvicorn's
worker processes (through the environment) and each worker loads the key and the broker
password itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accessd.central.memberops import Publishing
from accessd.central.web.core import WebConfig


def config_from_json(data: dict[str, Any]) -> WebConfig:
    from accessd.credentials import read_secret_file
    from accessd.protocol.signing import OfficeKey
    from accessd.protocol.transport import BrokerSettings

    key = OfficeKey.load(Path(data["key"])) if data.get("key") else None
    settings = None
    broker = data.get("broker")
    if broker:
        password = read_secret_file(Path(broker["password_file"])) \
            if broker.get("password_file") else ""
        settings = BrokerSettings(
            host=broker["host"], port=int(broker["port"]), username=broker["username"],
            password=password, tls=bool(broker["tls"]),
            ca_file=Path(broker["ca_file"]) if broker.get("ca_file") else None,
            cert_file=Path(broker["cert_file"]) if broker.get("cert_file") else None,
            key_file=Path(broker["key_file"]) if broker.get("key_file") else None)
    return WebConfig(store=data["store"],
                     publishing=Publishing(key, settings, data.get("prefix", "accessd")),
                     timezone=data.get("timezone", "Europe/Paris"),
                     poll_s=float(data.get("poll_s", 0.1)),
                     retention=bool(data.get("retention", True)),
                     pool_size=int(data.get("pool_size", 8)))
