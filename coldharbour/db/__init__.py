"""PostgreSQL: names, schema/migrations, connections, the single writer, read-only queries."""
