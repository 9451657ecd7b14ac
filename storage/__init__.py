"""Everything strom keeps on disk: Kafka RecordBatch v2 codec, segmented partition logs,
recovery and retention, and the durable Raft store (DESIGN.md §4, §5)."""
