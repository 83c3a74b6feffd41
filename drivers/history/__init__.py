"""History stores: the embedded SQLite history, the InfluxDB outbox and sender, the site lock.

Rule: every store failure leaves as the store's own error type; times are aware UTC datetimes.
"""
