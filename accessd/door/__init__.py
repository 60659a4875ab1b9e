"""The door: lock relay, door contact, exit button and feedback, behind gpiozero.

- `pins`      chooses the gpiozero pin factory named in the configuration (never the mock
              unless asked for);
- `lock`      `LockRelay`, the strike or magnetic lock, locked from the first pin write;
- `monitor`   `DoorStateMachine` (pure: opened, forced, held open, closed) and `DoorInputs`
              (the contact and the exit button on real pins);
- `feedback`  optional LEDs and buzzer;
- `hardware`  `DoorHardware`, everything above built from the configuration, closed locked;
- `lockdown`  `python -m accessd.door.lockdown`, drives the relay to locked after a crash.

Nothing here imports a hardware backend at import time: the package loads on any machine.
"""
