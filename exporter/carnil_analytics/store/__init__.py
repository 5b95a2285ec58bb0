"""The SQL store, the system of record: schema, transactions, ingest and read queries."""
