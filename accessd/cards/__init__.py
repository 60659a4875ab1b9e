"""Cards that cannot be cloned: NTAG 424 DNA and MIFARE DESFire EV2/EV3 with AES (docs/cards.md).

Pure protocol code (crypto, channel, keys, sun, secure, ntag424, desfire) under the door's
glue (reader: what an NFC reader does with a card; gate: the controller's checks; host: the
host's jobs). `testing` holds software cards for tests, benchmarks and demos only.
"""
