"""Laterne's drivers, in two wings: ``field`` (Modbus TCP, OPC-UA) and ``history`` (SQLite,
InfluxDB outbox, the site lock); ``backoff`` is the reconnect policy both use.

Rule: drivers import only ``laterne.models`` (and each other), never the controller.
"""
