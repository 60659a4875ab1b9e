"""Choose the gpiozero pin factory named in the configuration.

The backend comes from `[pins] factory`, never from a guess: "mock" is only ever used when it
is written there (or in GPIOZERO_PIN_FACTORY, for "default"), so a daemon that cannot reach
real GPIO fails at start with a clear message instead of silently driving a fake relay.
"""

from __future__ import annotations

import importlib
import logging
import warnings

from gpiozero import Device
from gpiozero.pins import Factory

from accessd.errors import HardwareError

log = logging.getLogger(__name__)

#: name in the configuration -> (module, class); imported only when chosen.
FACTORIES: dict[str, tuple[str, str]] = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
    "mock": ("gpiozero.pins.mock", "MockFactory"),
}

#: the Python package each backend needs, for the error message.
_NEEDS = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO", "pigpio": "pigpio (and the pigpiod daemon)"}


def factory_names() -> tuple[str, ...]:
    return ("default", *FACTORIES)


def make_pin_factory(name: str) -> Factory:
    """Return the pin factory called `name`; raise `HardwareError` if it cannot start.

    "default" is gpiozero's own choice (GPIOZERO_PIN_FACTORY, else lgpio, rpigpio, pigpio,
    native) and becomes gpiozero's shared `Device.pin_factory`, exactly as if a device had
    been built without one. Any other name builds a private factory the caller must close.
    """
    if name == "default":
        return _default_factory()
    try:
        module_name, class_name = FACTORIES[name]
    except KeyError:
        raise HardwareError(
            f"unknown pin factory {name!r}; use one of {', '.join(factory_names())}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        need = _NEEDS.get(name, module_name)
        raise HardwareError(f"pin factory {name!r} needs {need}: {exc}") from exc
    try:
        factory = getattr(module, class_name)()
    except Exception as exc:  # each backend fails its own way (OSError, lgpio.error, ...)
        raise HardwareError(f"pin factory {name!r} could not start: {exc}") from exc
    if name == "mock":
        log.warning("GPIO pin factory is 'mock': no real relay or door contact is driven")
    return factory


def _default_factory() -> Factory:
    if Device.pin_factory is not None:
        return Device.pin_factory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            factory = Device._default_pin_factory()
        except Exception as exc:
            tried = "; ".join(str(w.message) for w in caught)
            detail = f" ({tried})" if tried else ""
            raise HardwareError(
                f"no GPIO pin factory could start: {exc}{detail}; install lgpio on a "
                "Raspberry Pi, or set [pins] factory"
            ) from exc
    for w in caught:
        log.debug("gpiozero: %s", w.message)
    if type(factory).__name__ == "MockFactory":
        log.warning("GPIOZERO_PIN_FACTORY selects the mock: no real GPIO is driven")
    Device.pin_factory = factory
    return factory
