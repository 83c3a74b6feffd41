"""Field protocols: Modbus TCP and OPC-UA drivers behind one ``DeviceClient`` seam.

Rule: every library failure leaves this package as a typed ``DriverError``; codecs are pure.
"""
