# Interval store: record layout, NOR-flash append log, slot index (docs/flash-log.md).
